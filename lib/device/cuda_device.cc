// Device buffers with CUDA: pointer classification and the per-communicator device state (staging,
// flags, host-mapped abort word and error record) for ranks that are threads of one process on one
// GPU. Built only when CUDA is (WEFT_CUDA); device_stub.cc stands in otherwise.
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <link.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "collectives/device/kernels.h"
#include "lib/bootstrap/bootstrap.h"
#include "lib/core/config.h"
#include "lib/core/log.h"
#include "lib/core/util.h"
#include "lib/device/device.h"
#include "lib/device/protocol.h"

namespace weft::device {
namespace {

constexpr uint64_t kNsPerMs = 1000000;
constexpr size_t kDefaultStageBytes = 8u << 20;

// libcuda in the process means the application uses CUDA; without it no pointer can be a device
// pointer, and nothing here initialises CUDA. RTLD_NOLOAD never loads anything.
// Asking dlopen on every call is not free: each miss looks the name up in ld.so.cache (an
// mmap/munmap pair: two page faults and a TLB shootdown per call, milliseconds on a busy VM). So
// the question is asked again only when the process has loaded more objects since the last "no"
// (dl_iterate_phdr's dlpi_adds counter, read from the first object without a system call).
bool driverLoaded() {
  static std::atomic<bool> seen{false};
  static std::atomic<unsigned long long> noAtAdds{0};
  if (seen.load(std::memory_order_relaxed)) return true;
  unsigned long long adds = 0;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t size, void* data) -> int {
        if (size >= offsetof(dl_phdr_info, dlpi_adds) + sizeof info->dlpi_adds)
          *static_cast<unsigned long long*>(data) = info->dlpi_adds;
        return 1;  // the counters are the same in every entry: stop at the first
      },
      &adds);
  if (adds != 0 && noAtAdds.load(std::memory_order_relaxed) == adds) return false;
  void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (h == nullptr) {
    noAtAdds.store(adds, std::memory_order_relaxed);
    return false;
  }
  dlclose(h);
  seen.store(true, std::memory_order_relaxed);
  return true;
}

using PointerGetAttributesFn = CUresult (*)(unsigned, CUpointer_attribute*, void**, CUdeviceptr);

PointerGetAttributesFn pointerGetAttributes() {
  static std::once_flag once;
  static PointerGetAttributesFn fn = nullptr;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuPointerGetAttributes", &p, 12000, cudaEnableDefault, &q) == cudaSuccess &&
        q == cudaDriverEntryPointSuccess)
      fn = reinterpret_cast<PointerGetAttributesFn>(p);
    else
      cudaGetLastError();  // clear it: the application's next runtime call must not see our failure
  });
  return fn;
}

// Device allocations seen so far: start -> end. Host pointers are never cached (the driver answers
// them without an error, and host memory can be freed and reused as anything).
std::shared_mutex gCacheMu;
std::map<uintptr_t, uintptr_t> gDeviceRanges;

// Host-mapped slots (abort word at 0, error record at 64) from pinned pages that are never freed
// or reused: a slot outlives its communicator, so a peer's kernel that still polls it reads the
// "aborted" its destroy left there. 128 bytes per communicator.
std::mutex gSlotMu;
char* gSlotPage = nullptr;
size_t gSlotNext = 0;
constexpr size_t kSlotBytes = 128, kSlotPage = 64 * 1024;

std::string hostSlot(void** host, void** dev) {
  std::lock_guard<std::mutex> g(gSlotMu);
  if (gSlotPage == nullptr || gSlotNext + kSlotBytes > kSlotPage) {
    void* p = nullptr;
    cudaError_t e = cudaHostAlloc(&p, kSlotPage, cudaHostAllocMapped | cudaHostAllocPortable);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return std::string("cudaHostAlloc: ") + cudaGetErrorString(e);
    }
    std::memset(p, 0, kSlotPage);
    gSlotPage = static_cast<char*>(p);
    gSlotNext = 0;
  }
  char* h = gSlotPage + gSlotNext;
  void* d = nullptr;
  cudaError_t e = cudaHostGetDevicePointer(&d, h, 0);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("cudaHostGetDevicePointer: ") + cudaGetErrorString(e);
  }
  gSlotNext += kSlotBytes;
  *host = h;
  *dev = d;
  return "";
}

const char* cudaName(int e) { return cudaGetErrorString(static_cast<cudaError_t>(e)); }

Status cudaFail(const char* what, int e) {
  return Status(Code::kUnhandledCuda, std::string(what) + " failed: " + cudaName(e));
}

}  // namespace

bool built() { return true; }

MemKind classify(const void* p) {
  if (p == nullptr || !driverLoaded()) return MemKind::kHost;
  const auto a = reinterpret_cast<uintptr_t>(p);
  {
    std::shared_lock<std::shared_mutex> g(gCacheMu);
    auto it = gDeviceRanges.upper_bound(a);
    if (it != gDeviceRanges.begin()) {
      --it;
      if (a < it->second) return MemKind::kDevice;
    }
  }
  PointerGetAttributesFn fn = pointerGetAttributes();
  if (fn == nullptr) return MemKind::kHost;
  CUpointer_attribute attrs[3] = {CU_POINTER_ATTRIBUTE_MEMORY_TYPE, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR,
                                  CU_POINTER_ATTRIBUTE_RANGE_SIZE};
  unsigned int memType = 0;
  CUdeviceptr start = 0;
  size_t size = 0;
  void* out[3] = {&memType, &start, &size};
  if (fn(3, attrs, out, static_cast<CUdeviceptr>(a)) != CUDA_SUCCESS) return MemKind::kHost;
  if (memType != CU_MEMORYTYPE_DEVICE && memType != CU_MEMORYTYPE_UNIFIED) return MemKind::kHost;
  if (size != 0) {
    std::unique_lock<std::shared_mutex> g(gCacheMu);
    gDeviceRanges[static_cast<uintptr_t>(start)] = static_cast<uintptr_t>(start) + size;
  }
  return MemKind::kDevice;
}

namespace {

struct RankInfo {
  uint64_t hostId;
  int32_t pid;
  int32_t ok;      // 1 = this rank has device state
  int32_t device;
  int32_t sms;
  uint64_t stage;  // device address of its staging (2 halves)
  uint64_t flags;  // device address of its flags
  uint64_t stageBytes;
  uint64_t abortWord;  // device address of its host-mapped abort word
  uint64_t abortHost;  // host address of the same word (same process)
  char whyNot[64];
};

class CudaComm final : public DeviceComm {
 public:
  ~CudaComm() override { release(); }

  Status init(bootstrap::Bootstrap& bs, const DeviceCommOptions& opts, std::string* whyNot) {
    const int rank = bs.rank(), n = bs.nranks();
    std::vector<RankInfo> all(static_cast<size_t>(n));
    RankInfo& me = all[static_cast<size_t>(rank)];
    std::memset(&me, 0, sizeof me);
    me.hostId = bs.peer(rank).hostId;
    me.pid = static_cast<int32_t>(getpid());
    std::string local = setupLocal(opts, &me);
    me.ok = local.empty() ? 1 : 0;
    std::snprintf(me.whyNot, sizeof me.whyNot, "%s", local.c_str());
    WEFT_TRY(bs.allGather(all.data(), sizeof(RankInfo), nowNs() + opts.initTimeoutMs * kNsPerMs));
    std::string why;
    if (n > kMaxRanks) why = "more than " + std::to_string(kMaxRanks) + " ranks share the device path";
    for (int p = 0; p < n && why.empty(); ++p) {
      const RankInfo& r = all[static_cast<size_t>(p)];
      if (!r.ok) why = "rank " + std::to_string(p) + " has no CUDA device (" + r.whyNot + ")";
      else if (r.hostId != me.hostId || r.pid != me.pid)
        why = "rank " + std::to_string(p) + " is another process: device buffers between processes need CUDA IPC, "
              "not built yet (ranks must be threads of one process)";
      else if (r.device != me.device)
        why = "rank " + std::to_string(p) + " uses GPU " + std::to_string(r.device) + " and this rank GPU " +
              std::to_string(me.device) + ": only ranks sharing one GPU are supported yet";
      else if (r.stageBytes != me.stageBytes)
        why = "ranks disagree on WEFT_CUDA_STAGE_BYTES";
    }
    if (!why.empty()) {
      *whyNot = why;
      release();
      return Status::ok();
    }
    dc_.rank = rank;
    dc_.nranks = n;
    dc_.stageBytes = me.stageBytes;
    for (int p = 0; p < n; ++p) {
      dc_.stage[p] = reinterpret_cast<char*>(all[static_cast<size_t>(p)].stage);
      dc_.flags[p] = reinterpret_cast<uint64_t*>(all[static_cast<size_t>(p)].flags);
      if (p != rank) {
        dc_.peerAbort[p] = reinterpret_cast<volatile uint32_t*>(all[static_cast<size_t>(p)].abortWord);
        peerAbortHost_[p] = reinterpret_cast<uint32_t*>(all[static_cast<size_t>(p)].abortHost);
      }
    }
    dc_.control = dc_.flags[rank] + kMaxBlocks;
    dc_.timeoutNs = opts.timeoutMs * kNsPerMs;
    // Peers' kernels wait on each other: every rank's grid must fit on the GPU at once.
    maxBlocks_ = std::max(1, std::min(kMaxBlocks, me.sms / n));
    WEFT_INFO(INIT, "device path: rank %d of %d on GPU %d, %d blocks max, %zu staging bytes x2", rank, n, me.device,
              maxBlocks_, static_cast<size_t>(dc_.stageBytes));
    ready_ = true;
    return Status::ok();
  }

  Status allReduce(const void* send, void* recv, size_t count, DataType type, RedOp op, void* stream) override {
    if (!ready_) return invalidUsage("device buffers are not usable on this communicator");
    WEFT_TRY(asyncError());
    // A peer that was aborted or destroyed has set its abort word (its memory may be gone): never
    // launch a kernel that would read it.
    for (int p = 0; p < dc_.nranks; ++p)
      if (p != dc_.rank && peerAbortHost_[p] != nullptr && __atomic_load_n(peerAbortHost_[p], __ATOMIC_ACQUIRE) != 0)
        return remoteError("rank " + std::to_string(p) + " of this communicator was aborted or destroyed");
    if (count == 0) return Status::ok();
    const uint64_t bytes = static_cast<uint64_t>(count) * typeSize(type);
    if (dc_.nranks == 1 && op != RedOp::kAvg) {
      if (send == recv) return Status::ok();
      int e = cudaMemcpyAsync(recv, send, bytes, cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(stream));
      return e == 0 ? Status::ok() : cudaFail("cudaMemcpyAsync", e);
    }
    const bool vec = ((reinterpret_cast<uintptr_t>(send) | reinterpret_cast<uintptr_t>(recv)) & 15u) == 0;
    // About 32 KiB per block per round (four 16-byte vectors per thread), capped by the grid bound.
    const uint64_t roundBytes = std::min<uint64_t>(bytes, dc_.stageBytes);
    const uint64_t perBlock = static_cast<uint64_t>(kBlockThreads) * 16 * 4;
    const int nblocks = static_cast<int>(std::clamp<uint64_t>((roundBytes + perBlock - 1) / perBlock, 1, maxBlocks_));
    int e = launchOneShot(dc_, nblocks, type, op, send, recv, bytes, vec, stream);
    return e == 0 ? Status::ok() : cudaFail("the all-reduce kernel launch", e);
  }

  void abort() override {
    if (abortHost_ != nullptr) __atomic_store_n(abortHost_, 1u, __ATOMIC_RELEASE);
  }

  Status asyncError() const override {
    if (errorHost_ == nullptr) return Status::ok();
    const uint32_t code = __atomic_load_n(&errorHost_->code, __ATOMIC_ACQUIRE);
    if (code == 0) return Status::ok();
    const std::string where = "rank " + std::to_string(dc_.rank) + "'s GPU kernel waited on rank " +
                              std::to_string(errorHost_->peer) + " (block " + std::to_string(errorHost_->block) +
                              ", round " + std::to_string(errorHost_->seq) + ")";
    if (code == kWaitTimedOut)
      return Status(Code::kTimeout, where + " for longer than " + std::to_string(dc_.timeoutNs / kNsPerMs) +
                                        " ms (WEFT_TIMEOUT_MS); is that rank alive and calling the same collective?");
    if (code == kWaitPeerAborted)
      return Status(Code::kRemote, where + ", which was aborted or destroyed meanwhile");
    return Status(Code::kRemote, where + " and was aborted (weftCommAbort)");
  }

 private:
  // This rank's own resources; "" on success, else why not.
  std::string setupLocal(const DeviceCommOptions& opts, RankInfo* me) {
    if (!driverLoaded()) return "CUDA is not loaded in this process";
    int dev = -1;
    if (cudaGetDevice(&dev) != cudaSuccess) {
      cudaGetLastError();
      return "no current CUDA device";
    }
    me->device = dev;
    int sms = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    me->sms = sms;
    size_t stage = opts.stageBytes ? opts.stageBytes : kDefaultStageBytes;
    stage = (stage + 15) & ~static_cast<size_t>(15);
    me->stageBytes = stage;
    const size_t flagBytes = sizeof(uint64_t) * (kMaxBlocks + 16);  // flags, control[2], 16-byte aligned end
    void* mem = nullptr;
    int e = cudaMalloc(&mem, flagBytes + 2 * stage);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return std::string("cudaMalloc: ") + cudaName(e);
    }
    devMem_ = mem;
    void* host = nullptr;
    void* hostDev = nullptr;
    std::string slotWhy = hostSlot(&host, &hostDev);
    if (!slotWhy.empty()) return slotWhy;
    abortHost_ = static_cast<uint32_t*>(host);
    errorHost_ = reinterpret_cast<ErrorRecord*>(static_cast<char*>(host) + 64);
    dc_.abortWord = static_cast<volatile uint32_t*>(hostDev);
    dc_.error = reinterpret_cast<ErrorRecord*>(static_cast<char*>(hostDev) + 64);
    // Zero the flags before any peer can see them (the all-gather comes after).
    if ((e = cudaMemset(mem, 0, flagBytes)) != cudaSuccess || (e = cudaDeviceSynchronize()) != cudaSuccess) {
      cudaGetLastError();
      return std::string("cudaMemset: ") + cudaName(e);
    }
    me->flags = reinterpret_cast<uint64_t>(mem);
    me->abortWord = reinterpret_cast<uint64_t>(hostDev);
    me->abortHost = reinterpret_cast<uint64_t>(host);
    me->stage = reinterpret_cast<uint64_t>(static_cast<char*>(mem) + flagBytes);
    return "";
  }

  void release() {
    // Kernels still waiting on a peer give up at the abort word; cudaFree waits for the device.
    abort();
    if (devMem_ != nullptr) cudaFree(devMem_);
    devMem_ = nullptr;
    // The host slot (abort word, error record) is kept: peers' kernels may still poll this abort
    // word, and it must read "aborted", never freed memory.
    ready_ = false;
  }

  DevComm dc_;
  int maxBlocks_ = 1;
  bool ready_ = false;
  void* devMem_ = nullptr;
  uint32_t* abortHost_ = nullptr;
  uint32_t* peerAbortHost_[kMaxRanks] = {};
  ErrorRecord* errorHost_ = nullptr;
};

}  // namespace

Status DeviceComm::create(bootstrap::Bootstrap& bs, const DeviceCommOptions& opts, std::unique_ptr<DeviceComm>* out,
                          std::string* whyNot) {
  auto c = std::make_unique<CudaComm>();
  DeviceCommOptions o = opts;
  if (o.stageBytes == 0) o.stageBytes = static_cast<size_t>(config::getInt("WEFT_CUDA_STAGE_BYTES"));
  WEFT_TRY(c->init(bs, o, whyNot));
  if (whyNot->empty()) *out = std::move(c);
  return Status::ok();
}

Status reduceOnDevice(DataType type, RedOp op, void* dst, const void* a, const void* b, size_t count, void* stream) {
  int e = launchReduce2(type, op, dst, a, b, count, stream);
  return e == 0 ? Status::ok() : cudaFail("the reduction kernel launch", e);
}

}  // namespace weft::device
