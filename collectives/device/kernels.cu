// The device collective kernels: every collective over the ranks of a communicator on the device
// path (one kernel per type and op running protocol.h's runCall: staging halves and flags), and the plain two-input reduction used by benchmarks and the
// element-exact tests. Every (type, op) pair is instantiated; avg is the sum kernel plus the divide
// post-op.
#include <cuda_runtime.h>

#include "collectives/device/kernels.h"
#include "collectives/device/ops.cuh"

namespace weft::device {
namespace {

struct GlobalTimer {
  __device__ uint64_t operator()() const {
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
  }
};

// 16 bytes seen as elements.
template <class S>
union Vec {
  uint4 v;
  S e[16 / sizeof(S)];
};

template <class Tr, class Op>
__device__ __forceinline__ uint4 combineVec(uint4 a, uint4 b) {
  using S = typename Tr::S;
  Vec<S> x, y;
  x.v = a;
  y.v = b;
#pragma unroll
  for (int i = 0; i < static_cast<int>(16 / sizeof(S)); ++i) x.e[i] = ops::combine<Tr, Op>(x.e[i], y.e[i]);
  return x.v;
}

template <class Tr>
__device__ __forceinline__ uint4 divideVec(uint4 a, int n) {
  using S = typename Tr::S;
  Vec<S> x;
  x.v = a;
#pragma unroll
  for (int i = 0; i < static_cast<int>(16 / sizeof(S)); ++i) x.e[i] = ops::divideBy<Tr>(x.e[i], n);
  return x.v;
}

// Loads that skip L1 (peers write staging from other kernels and processes; L2 is the coherence
// point on one GPU, and peer memory is not cached in L1 across the acquire).
__device__ __forceinline__ uint4 ldcg(const char* p) { return __ldcg(reinterpret_cast<const uint4*>(p)); }
template <class S>
__device__ __forceinline__ S ldS(const char* p) { return *reinterpret_cast<const volatile S*>(p); }
template <class S>
__device__ __forceinline__ void stS(char* p, S v) { *reinterpret_cast<S*>(p) = v; }

// The GPU executor of protocol.h's runCall: thread g of `stride` threads owns staging granules
// G = g (mod stride). A granule is moved as one 16-byte vector when every pointer of the range is
// 16-byte aligned and the granule whole, else element by element.
template <class Tr, class Op>
struct DevExec {
  using S = typename Tr::S;
  int block;
  int grid;
  uint64_t g, stride;

  // Point-to-point (protocol.h runP2p): ownership by block idx of count, and the block-wide steps.
  __device__ __forceinline__ void own(int idx, int count) {
    g = static_cast<uint64_t>(idx) * kBlockThreads + threadIdx.x;
    stride = static_cast<uint64_t>(count) * kBlockThreads;
  }

  __device__ __forceinline__ bool begin(const DevComm& c, int peer, uint64_t* sbase, uint64_t* rbase) {
    __shared__ uint64_t sSeq[2];
    __shared__ int sOk;
    if (threadIdx.x == 0) sOk = p2pBegin(c, peer, &sSeq[0], &sSeq[1]) ? 1 : 0;
    __syncthreads();
    *sbase = sSeq[0];
    *rbase = sSeq[1];
    const bool ok = sOk != 0;
    __syncthreads();  // sSeq/sOk are not rewritten before every thread read them (one launch reads once)
    return ok;
  }

  __device__ __forceinline__ uint32_t await(const DevComm& c, const uint64_t* flag, uint64_t value, int peer, int pb,
                                            uint64_t seq, uint32_t what, const uint64_t* hdr, uint64_t want) {
    __shared__ uint32_t sWait;
    if (threadIdx.x == 0) sWait = p2pLeaderWait(c, flag, value, peer, pb, seq, what, hdr, want, GlobalTimer{});
    __syncthreads();
    const uint32_t w = sWait;
    __syncthreads();  // sWait is rewritten by the next await
    return w;
  }

  __device__ __forceinline__ void post(const DevComm& c, uint64_t* flag, uint64_t value, uint64_t* hdr, uint64_t hdrValue) {
    if (c.sysScope) __threadfence_system();
    else __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) p2pLeaderPost(c, flag, value, hdr, hdrValue);
  }

  __device__ __forceinline__ void end(const DevComm& c, const P2pDesc& d) {
    __syncthreads();
    if (threadIdx.x == 0) finishP2p(c, d, gridDim.x);
  }

  __device__ __forceinline__ uint64_t base(const DevComm& c) {
    __shared__ uint64_t sBase;
    if (threadIdx.x == 0) sBase = callStart(c);
    __syncthreads();
    return sBase;
  }

  __device__ __forceinline__ void copy(char* dst, const char* src, uint64_t lo, uint64_t hi) {
    const bool vec = ((reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src)) & 15u) == 0;
    for (uint64_t G = firstOwned(lo, g, stride); G * kGranule < hi; G += stride) {
      const uint64_t x = G * kGranule - lo;
      const uint64_t nb = minU(kGranule, hi - G * kGranule);
      if (vec && nb == kGranule) {
        *reinterpret_cast<uint4*>(dst + x) = ldcg(src + x);
      } else if (sizeof(S) == 1) {
        // Bytes (point-to-point copies any type): the widest access the pointers allow.
        const uintptr_t a = reinterpret_cast<uintptr_t>(dst + x) | reinterpret_cast<uintptr_t>(src + x);
        uint64_t e = 0;
        if ((a & 7u) == 0)
          for (; e + 8 <= nb; e += 8) stS<uint64_t>(dst + x + e, ldS<uint64_t>(src + x + e));
        if ((a & 3u) == 0)
          for (; e + 4 <= nb; e += 4) stS<uint32_t>(dst + x + e, ldS<uint32_t>(src + x + e));
        for (; e < nb; ++e) stS<uint8_t>(dst + x + e, ldS<uint8_t>(src + x + e));
      } else {
        for (uint64_t e = 0; e < nb; e += sizeof(S)) stS<S>(dst + x + e, ldS<S>(src + x + e));
      }
    }
  }

  __device__ __forceinline__ void reduce(char* dst, char* dst2, const char* const* srcs, int n, uint64_t lo,
                                         uint64_t hi, int avg) {
    uintptr_t any = reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(dst2);
    for (int p = 0; p < n; ++p) any |= reinterpret_cast<uintptr_t>(srcs[p]);
    const bool vec = (any & 15u) == 0;
    for (uint64_t G = firstOwned(lo, g, stride); G * kGranule < hi; G += stride) {
      const uint64_t x = G * kGranule - lo;
      const uint64_t nb = minU(kGranule, hi - G * kGranule);
      if (vec && nb == kGranule) {
        uint4 acc = ldcg(srcs[0] + x);
        for (int p = 1; p < n; ++p) acc = combineVec<Tr, Op>(acc, ldcg(srcs[p] + x));
        if (avg) acc = divideVec<Tr>(acc, n);
        *reinterpret_cast<uint4*>(dst + x) = acc;
        if (dst2 != nullptr) *reinterpret_cast<uint4*>(dst2 + x) = acc;
      } else {
        for (uint64_t e = 0; e < nb; e += sizeof(S)) {
          S acc = ldS<S>(srcs[0] + x + e);
          for (int p = 1; p < n; ++p) acc = ops::combine<Tr, Op>(acc, ldS<S>(srcs[p] + x + e));
          if (avg) acc = ops::divideBy<Tr>(acc, n);
          stS<S>(dst + x + e, acc);
          if (dst2 != nullptr) stS<S>(dst2 + x + e, acc);
        }
      }
    }
  }

  __device__ __forceinline__ uint32_t sync(const DevComm& c, uint64_t pub, uint64_t wait) {
    __shared__ uint32_t sStatus;
    if (c.sysScope) __threadfence_system();
    else __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
      publish(c, block, pub);
      sStatus = waitPeers(c, block, wait, GlobalTimer{});
    }
    __syncthreads();
    return sStatus;
  }

  __device__ __forceinline__ void finish(const DevComm& c, uint64_t rounds) {
    __syncthreads();
    if (threadIdx.x == 0) finishCall(c, gridDim.x, rounds);
  }
};

// One block per SM is the design (grid <= SMs / ranks on the GPU), so ptxas may use up to 128
// registers: with the default bound it capped at 64 and spilled (up to 328 bytes) in the narrow
// float kernels; with this one no kernel spills (sm_90, -Xptxas -v; 128-byte stack: the pointer
// arrays of runCall).
template <class Tr, class Op>
__global__ void __launch_bounds__(kBlockThreads, 1) collKernel(DevComm c, CallDesc d) {
  DevExec<Tr, Op> x;
  x.block = static_cast<int>(blockIdx.x);
  x.grid = static_cast<int>(gridDim.x);
  x.g = static_cast<uint64_t>(blockIdx.x) * kBlockThreads + threadIdx.x;
  x.stride = static_cast<uint64_t>(gridDim.x) * kBlockThreads;
  runCall(c, d, x);
}

// Point-to-point (protocol.h runP2p): one launch per group of sends and receives. Copies only,
// whatever the types: bytes, moved 16 at a time where aligned.
__global__ void __launch_bounds__(kBlockThreads, 1) p2pKernel(DevComm c, P2pDesc d) {
  DevExec<ops::Native<uint8_t>, ops::Sum> x;
  x.block = static_cast<int>(blockIdx.x);
  x.grid = static_cast<int>(gridDim.x);
  x.own(x.block, x.grid);
  runP2p(c, d, x);
}

template <class Tr, class Op>
__global__ void __launch_bounds__(kBlockThreads)
    reduce2Kernel(char* dst, const char* a, const char* b, uint64_t count, int vec) {
  using S = typename Tr::S;
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * kBlockThreads;
  const uint64_t first = static_cast<uint64_t>(blockIdx.x) * kBlockThreads + threadIdx.x;
  uint64_t done = 0;
  if (vec) {
    constexpr uint64_t kPer = 16 / sizeof(S);
    const uint64_t units = count / kPer;
    const uint4* x = reinterpret_cast<const uint4*>(a);
    const uint4* y = reinterpret_cast<const uint4*>(b);
    uint4* d = reinterpret_cast<uint4*>(dst);
    for (uint64_t u = first; u < units; u += stride) d[u] = combineVec<Tr, Op>(x[u], y[u]);
    done = units * kPer;
  }
  const S* x = reinterpret_cast<const S*>(a);
  const S* y = reinterpret_cast<const S*>(b);
  S* d = reinterpret_cast<S*>(dst);
  for (uint64_t e = done + first; e < count; e += stride) d[e] = ops::combine<Tr, Op>(x[e], y[e]);
}

__global__ void emptyKernel() {}

template <class Tr>
struct ForType {
  template <template <class, class> class K>
  static void* pick(RedOp op) {
    switch (op) {
      case RedOp::kSum:
      case RedOp::kAvg: return reinterpret_cast<void*>(K<Tr, ops::Sum>::fn);
      case RedOp::kProd: return reinterpret_cast<void*>(K<Tr, ops::Prod>::fn);
      case RedOp::kMax: return reinterpret_cast<void*>(K<Tr, ops::Max>::fn);
      case RedOp::kMin: return reinterpret_cast<void*>(K<Tr, ops::Min>::fn);
    }
    return nullptr;
  }
};

template <class Tr, class Op>
struct CollK {
  static constexpr auto fn = collKernel<Tr, Op>;
};
template <class Tr, class Op>
struct Reduce2K {
  static constexpr auto fn = reduce2Kernel<Tr, Op>;
};

template <template <class, class> class K>
void* kernelFor(DataType type, RedOp op) {
  switch (type) {
    case DataType::kInt8: return ForType<ops::Native<int8_t>>::pick<K>(op);
    case DataType::kUint8: return ForType<ops::Native<uint8_t>>::pick<K>(op);
    case DataType::kInt32: return ForType<ops::Native<int32_t>>::pick<K>(op);
    case DataType::kUint32: return ForType<ops::Native<uint32_t>>::pick<K>(op);
    case DataType::kInt64: return ForType<ops::Native<long long>>::pick<K>(op);
    case DataType::kUint64: return ForType<ops::Native<unsigned long long>>::pick<K>(op);
    case DataType::kFloat16: return ForType<ops::Half>::pick<K>(op);
    case DataType::kFloat32: return ForType<ops::Native<float>>::pick<K>(op);
    case DataType::kFloat64: return ForType<ops::Native<double>>::pick<K>(op);
    case DataType::kBfloat16: return ForType<ops::Bf16>::pick<K>(op);
    case DataType::kFloat8e4m3: return ForType<ops::E4m3>::pick<K>(op);
    case DataType::kFloat8e5m2: return ForType<ops::E5m2>::pick<K>(op);
  }
  return nullptr;
}

}  // namespace

int launchColl(const DevComm& c, const CallDesc& d, int nblocks, DataType type, RedOp op, void* stream) {
  void* fn = kernelFor<CollK>(type, op);
  if (fn == nullptr) return static_cast<int>(cudaErrorInvalidValue);
  DevComm cc = c;
  CallDesc dd = d;
  void* args[] = {&cc, &dd};
  return static_cast<int>(cudaLaunchKernel(fn, dim3(static_cast<unsigned>(nblocks)), dim3(kBlockThreads), args, 0,
                                           static_cast<cudaStream_t>(stream)));
}

int launchP2p(const DevComm& c, const P2pDesc& d, int nblocks, void* stream) {
  DevComm cc = c;
  P2pDesc dd = d;
  void* args[] = {&cc, &dd};
  return static_cast<int>(cudaLaunchKernel(reinterpret_cast<void*>(p2pKernel), dim3(static_cast<unsigned>(nblocks)),
                                           dim3(kBlockThreads), args, 0, static_cast<cudaStream_t>(stream)));
}

int launchReduce2(DataType type, RedOp op, void* dst, const void* a, const void* b, size_t count, void* stream) {
  if (count == 0) return 0;
  void* fn = kernelFor<Reduce2K>(type, op);
  if (fn == nullptr) return static_cast<int>(cudaErrorInvalidValue);
  const size_t es = typeSize(type);
  const bool vec = ((reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(b)) & 15u) == 0;
  int dev = 0, sms = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  const uint64_t work = vec ? count * es / 16 + 1 : count;
  uint64_t blocks = (work + kBlockThreads - 1) / kBlockThreads;
  const uint64_t maxBlocks = static_cast<uint64_t>(sms > 0 ? sms : 1) * 4;
  if (blocks > maxBlocks) blocks = maxBlocks;
  char* d = static_cast<char*>(dst);
  const char* x = static_cast<const char*>(a);
  const char* y = static_cast<const char*>(b);
  uint64_t n = count;
  int v = vec ? 1 : 0;
  void* args[] = {&d, &x, &y, &n, &v};
  return static_cast<int>(cudaLaunchKernel(fn, dim3(static_cast<unsigned>(blocks)), dim3(kBlockThreads), args, 0,
                                           static_cast<cudaStream_t>(stream)));
}

int preloadKernels() {
  // cudaFuncGetAttributes loads a function that lazy loading (CUDA_MODULE_LOADING=LAZY, the default
  // since CUDA 12.2) has not loaded yet.
  cudaFuncAttributes attr;
  for (int t = 0; t < kNumDataTypes; ++t)
    for (RedOp op : {RedOp::kSum, RedOp::kProd, RedOp::kMax, RedOp::kMin}) {
      void* fn = kernelFor<CollK>(static_cast<DataType>(t), op);
      if (fn == nullptr) continue;
      const cudaError_t e = cudaFuncGetAttributes(&attr, fn);
      if (e != cudaSuccess) return static_cast<int>(e);
    }
  const cudaError_t e = cudaFuncGetAttributes(&attr, reinterpret_cast<const void*>(p2pKernel));
  return static_cast<int>(e);
}

int launchEmpty(void* stream) {
  emptyKernel<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>();
  return static_cast<int>(cudaGetLastError());
}

}  // namespace weft::device
