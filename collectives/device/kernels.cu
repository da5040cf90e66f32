// The device collective kernels: one-shot all-reduce over ranks that share a GPU (staging halves and
// flags of lib/device/protocol.h), and the plain two-input reduction used by benchmarks and the
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

// Loads that skip L1 (peers write staging from other kernels; L2 is the coherence point).
__device__ __forceinline__ uint4 ldcg(const uint4* p) { return __ldcg(p); }
template <class S>
__device__ __forceinline__ S ldcgScalar(const S* p) { return *static_cast<const volatile S*>(p); }

template <class Tr, class Op>
__global__ void __launch_bounds__(kBlockThreads)
    oneShotKernel(DevComm c, const char* __restrict__ send, char* __restrict__ recv, uint64_t bytes, int vec, int avg) {
  using S = typename Tr::S;
  __shared__ uint64_t sBase;
  __shared__ uint32_t sStatus;
  const int b = blockIdx.x;
  const int t = threadIdx.x;
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * kBlockThreads;
  const uint64_t first = static_cast<uint64_t>(b) * kBlockThreads + t;
  if (t == 0) sBase = callBase(c);
  __syncthreads();
  const uint64_t base = sBase;
  const uint64_t rounds = roundsFor(c, bytes);
  const uint64_t unit = vec ? 16 : sizeof(S);
  const int nb = static_cast<int>(gridDim.x);
  for (uint64_t k = 0; k < rounds; ++k) {
    const uint64_t seq = base + 1 + k;
    const uint64_t off = k * c.stageBytes;
    const uint64_t rb = bytes - off < c.stageBytes ? bytes - off : c.stageBytes;
    const Share sh = shareOf(rb, unit);
    char* mine = stageSlot(c, c.rank, seq);
    // 1. Copy in.
    if (vec) {
      const uint4* src = reinterpret_cast<const uint4*>(send + off);
      uint4* dst = reinterpret_cast<uint4*>(mine);
      for (uint64_t u = first; u < sh.units; u += stride) dst[u] = src[u];
    } else {
      const S* src = reinterpret_cast<const S*>(send + off);
      S* dst = reinterpret_cast<S*>(mine);
      for (uint64_t u = first; u < sh.units; u += stride) dst[u] = src[u];
    }
    const bool tail = sh.tailBytes != 0 && b == tailOwner(sh, nb, kBlockThreads);
    if (tail) {
      const S* src = reinterpret_cast<const S*>(send + off + sh.tailBegin);
      S* dst = reinterpret_cast<S*>(mine + sh.tailBegin);
      for (uint64_t e = t; e < sh.tailBytes / sizeof(S); e += kBlockThreads) dst[e] = src[e];
    }
    __threadfence();
    __syncthreads();
    // 2-3. Publish, wait for the peers.
    if (t == 0) {
      publish(c, b, seq);
      sStatus = waitPeers(c, b, seq, GlobalTimer{});
    }
    __syncthreads();
    if (sStatus != kWaitReady) return;
    // 4. Reduce in rank order.
    if (vec) {
      uint4* out = reinterpret_cast<uint4*>(recv + off);
      for (uint64_t u = first; u < sh.units; u += stride) {
        uint4 acc = ldcg(reinterpret_cast<const uint4*>(stageSlot(c, 0, seq)) + u);
        for (int p = 1; p < c.nranks; ++p)
          acc = combineVec<Tr, Op>(acc, ldcg(reinterpret_cast<const uint4*>(stageSlot(c, p, seq)) + u));
        if (avg) acc = divideVec<Tr>(acc, c.nranks);
        out[u] = acc;
      }
    } else {
      S* out = reinterpret_cast<S*>(recv + off);
      for (uint64_t u = first; u < sh.units; u += stride) {
        S acc = ldcgScalar(reinterpret_cast<const S*>(stageSlot(c, 0, seq)) + u);
        for (int p = 1; p < c.nranks; ++p)
          acc = ops::combine<Tr, Op>(acc, ldcgScalar(reinterpret_cast<const S*>(stageSlot(c, p, seq)) + u));
        if (avg) acc = ops::divideBy<Tr>(acc, c.nranks);
        out[u] = acc;
      }
    }
    if (tail) {
      S* out = reinterpret_cast<S*>(recv + off + sh.tailBegin);
      for (uint64_t e = t; e < sh.tailBytes / sizeof(S); e += kBlockThreads) {
        S acc = ldcgScalar(reinterpret_cast<const S*>(stageSlot(c, 0, seq) + sh.tailBegin) + e);
        for (int p = 1; p < c.nranks; ++p)
          acc = ops::combine<Tr, Op>(acc, ldcgScalar(reinterpret_cast<const S*>(stageSlot(c, p, seq) + sh.tailBegin) + e));
        if (avg) acc = ops::divideBy<Tr>(acc, c.nranks);
        out[e] = acc;
      }
    }
  }
  __syncthreads();
  if (t == 0) finishCall(c, gridDim.x, rounds);
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
struct OneShotK {
  static constexpr auto fn = oneShotKernel<Tr, Op>;
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

int launchOneShot(const DevComm& c, int nblocks, DataType type, RedOp op, const void* send, void* recv,
                  uint64_t bytes, bool vec, void* stream) {
  void* fn = kernelFor<OneShotK>(type, op);
  if (fn == nullptr) return static_cast<int>(cudaErrorInvalidValue);
  DevComm cc = c;
  const char* s = static_cast<const char*>(send);
  char* r = static_cast<char*>(recv);
  int v = vec ? 1 : 0;
  int avg = op == RedOp::kAvg ? 1 : 0;
  void* args[] = {&cc, &s, &r, &bytes, &v, &avg};
  return static_cast<int>(cudaLaunchKernel(fn, dim3(static_cast<unsigned>(nblocks)), dim3(kBlockThreads), args, 0,
                                           static_cast<cudaStream_t>(stream)));
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

int launchEmpty(void* stream) {
  emptyKernel<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>();
  return static_cast<int>(cudaGetLastError());
}

}  // namespace weft::device
