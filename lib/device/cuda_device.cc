// Device buffers with CUDA: pointer classification and the per-communicator device state (staging,
// flags, host-mapped abort word and error record) for ranks that are threads of one process on one
// GPU. Built only when CUDA is (WEFT_CUDA); device_stub.cc stands in otherwise.
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <link.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <set>
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
#include "transports/cuda_ipc/cuda_ipc.h"

namespace weft::device {
namespace {

constexpr uint64_t kNsPerMs = 1000000;
constexpr size_t kDefaultStageBytes = 8u << 20;
constexpr size_t kDefaultP2pBytes = 512u << 10;

// libcuda in the process means the application uses CUDA; without it no pointer can be a device
// pointer, and nothing here initialises CUDA. The loaded objects are listed (dl_iterate_phdr), not
// dlopen'ed with RTLD_NOLOAD: that maps and unmaps /etc/ld.so.cache on every call (system calls
// on every host collective), and a fork() in the middle of it gave the child a dangling cache
// pointer (a crash in its next dlopen, tests/mp/fork_test.cc). The listing stops at its first
// object while the loader's load count (dlpi_adds) is the one of the last negative answer.
// gDriverMu is held across fork() (forkLock): no thread of ours is inside the loader then.
std::mutex gDriverMu;
std::atomic<bool> gDriverSeen{false};
unsigned long long gDriverAdds = ~0ull;  // the loader's load count at the last negative answer

struct DriverScan {
  unsigned long long known = 0, adds = 0;
  bool first = true, unchanged = false, found = false;
};

int scanLoaded(dl_phdr_info* info, size_t size, void* arg) {
  auto* s = static_cast<DriverScan*>(arg);
  if (s->first) {
    s->first = false;
    if (size >= offsetof(dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs) {
      s->adds = info->dlpi_adds;
      if (s->adds == s->known) {
        s->unchanged = true;
        return 1;
      }
    }
  }
  const char* name = info->dlpi_name;
  if (name == nullptr || *name == '\0') return 0;
  const char* slash = std::strrchr(name, '/');
  const char* base = slash ? slash + 1 : name;
  if (std::strncmp(base, "libcuda.so", 10) == 0) {
    s->found = true;
    return 1;
  }
  return 0;
}

bool driverLoaded() {
  if (gDriverSeen.load(std::memory_order_relaxed)) return true;
  std::lock_guard<std::mutex> g(gDriverMu);
  if (gDriverSeen.load(std::memory_order_relaxed)) return true;
  DriverScan s;
  s.known = gDriverAdds;
  dl_iterate_phdr(scanLoaded, &s);
  if (s.found) {
    gDriverSeen.store(true, std::memory_order_relaxed);
    return true;
  }
  if (!s.unchanged) gDriverAdds = s.adds;
  return false;
}

using PointerGetAttributesFn = CUresult (*)(unsigned, CUpointer_attribute*, void**, CUdeviceptr);

// A mutex and a flag rather than std::call_once, so that fork() can hold it (forkLock): a child
// must never find the one-time lookup half done by a thread that is not there.
std::mutex gEntryMu;
std::atomic<bool> gEntryDone{false};
PointerGetAttributesFn gEntryFn = nullptr;

PointerGetAttributesFn pointerGetAttributes() {
  if (gEntryDone.load(std::memory_order_acquire)) return gEntryFn;
  std::lock_guard<std::mutex> g(gEntryMu);
  if (!gEntryDone.load(std::memory_order_relaxed)) {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuPointerGetAttributes", &p, 12000, cudaEnableDefault, &q) == cudaSuccess &&
        q == cudaDriverEntryPointSuccess)
      gEntryFn = reinterpret_cast<PointerGetAttributesFn>(p);
    else
      cudaGetLastError();  // clear it: the application's next runtime call must not see our failure
    gEntryDone.store(true, std::memory_order_release);
  }
  return gEntryFn;
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

// This process's identity among the ranks: a random 64-bit id, drawn once per process (again in a
// forked child). A pid is no identity: containers of one pod share the host id (boot id, network
// namespace) but each has its own pid namespace, so two processes may have the same pid.
std::mutex gPidMu;  // a leaf, held across fork() (forkLock)
uint64_t processId() {
  static pid_t owner = -1;
  static uint64_t id = 0;
  std::lock_guard<std::mutex> g(gPidMu);
  if (owner != getpid()) {
    owner = getpid();
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, 0) != static_cast<ssize_t>(sizeof r))  // fallback: time, pid, an address
      r = static_cast<uint64_t>(nowNs()) * 0x9e3779b97f4a7c15ull ^ static_cast<uint64_t>(owner) << 32 ^
          reinterpret_cast<uintptr_t>(&r);
    id = r | 1;  // never 0
  }
  return id;
}

const char* cudaName(int e) { return cudaGetErrorString(static_cast<cudaError_t>(e)); }

Status cudaFail(const char* what, int e) {
  return Status(Code::kUnhandledCuda, std::string(what) + " failed: " + cudaName(e));
}

}  // namespace

bool built() { return true; }

// Outer to inner: the lookup may run while nothing else is held; the slot lock is held around
// CUDA calls; the cache lock is a leaf.
void forkLock() {
  gEntryMu.lock();
  gSlotMu.lock();
  gCacheMu.lock();
  gDriverMu.lock();  // leaves
  gPidMu.lock();
}
void forkUnlock(bool inChild) {
  gPidMu.unlock();
  gDriverMu.unlock();
  // A pthread rwlock's write unlock is recognised by the writer's tid; the child's only thread has
  // another tid than the parent's thread that locked it, so unlocking would leave it held (seen as a
  // hang in every classify() of a forked child once libcuda is loaded). The child has one thread
  // and the lock is free in its copy of the world: construct a fresh one over it.
  if (inChild) new (&gCacheMu) std::shared_mutex();
  else gCacheMu.unlock();
  gSlotMu.unlock();
  gEntryMu.unlock();
}

int currentDevice() {
  if (!driverLoaded()) return -1;
  int dev = -1;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return dev;
}

void selectDevice(int dev) {
  if (dev >= 0 && driverLoaded() && cudaSetDevice(dev) != cudaSuccess) cudaGetLastError();
}

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

BufferInfo describe(const void* p) {
  BufferInfo b;
  if (p == nullptr || !driverLoaded()) return b;
  PointerGetAttributesFn fn = pointerGetAttributes();
  if (fn == nullptr) return b;
  CUpointer_attribute attrs[4] = {CU_POINTER_ATTRIBUTE_MEMORY_TYPE, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR,
                                  CU_POINTER_ATTRIBUTE_RANGE_SIZE, CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE};
  unsigned int memType = 0;
  CUdeviceptr start = 0;
  size_t size = 0;
  int capable = 1;
  void* out[4] = {&memType, &start, &size, &capable};
  if (fn(4, attrs, out, reinterpret_cast<CUdeviceptr>(p)) != CUDA_SUCCESS &&
      fn(3, attrs, out, reinterpret_cast<CUdeviceptr>(p)) != CUDA_SUCCESS)  // a driver without the IPC attribute
    return b;
  if (memType != CU_MEMORYTYPE_DEVICE && memType != CU_MEMORYTYPE_UNIFIED) return b;
  b.kind = MemKind::kDevice;
  b.ipcCapable = capable != 0;
  b.base = static_cast<uintptr_t>(start);
  b.size = size;
  return b;
}

namespace {
struct WinInfo {
  uint64_t hostId;
  uint64_t procId;    // processId()
  int32_t device;     // 1 = device memory
  int32_t hasHandle;  // 1 = ipc is valid
  uint64_t base;      // allocation base in its process
  uint64_t offset;    // buf - base
  uint64_t size;
  cuda_ipc::Handle ipc;
};
}  // namespace

Status openWindow(bootstrap::Bootstrap& bs, void* buf, size_t size, uint64_t deadlineNs, Window* w, std::string* note) {
  const int n = bs.nranks(), rank = bs.rank();
  w->buf = buf;
  w->size = size;
  w->info = describe(buf);
  std::vector<WinInfo> all(static_cast<size_t>(n));
  WinInfo& me = all[static_cast<size_t>(rank)];
  std::memset(&me, 0, sizeof me);
  me.hostId = bs.peer(rank).hostId;
  me.procId = processId();
  me.size = size;
  if (w->info.kind == MemKind::kDevice) {
    me.device = 1;
    me.base = w->info.base;
    me.offset = reinterpret_cast<uintptr_t>(buf) - w->info.base;
    if (!w->info.ipcCapable) {
      *note = "the buffer is memory CUDA IPC cannot export (cuMem / expandable segments): peers in other processes "
              "read it through staging";
    } else if (cuda_ipc::exportHandle(reinterpret_cast<void*>(w->info.base), &me.ipc).empty()) {
      me.hasHandle = 1;
    }
  }
  WEFT_TRY(bs.allGather(all.data(), sizeof(WinInfo), deadlineNs));
  if (n > kMaxWindowRanks) return Status::ok();
  for (int p = 0; p < n; ++p) {
    const WinInfo& r = all[static_cast<size_t>(p)];
    if (p == rank || !r.device || r.hostId != me.hostId) continue;
    if (r.procId == me.procId) {
      w->peer[p] = reinterpret_cast<void*>(r.base + r.offset);
      continue;
    }
    if (!r.hasHandle || !driverLoaded()) continue;
    void* mapped = nullptr;
    std::string why = cuda_ipc::openHandle(r.ipc, r.hostId ^ r.procId, &mapped);
    if (!why.empty()) {
      if (note->empty()) *note = "rank " + std::to_string(p) + "'s window is not mapped here (" + why + "): staged";
      continue;
    }
    w->opened[p] = mapped;
    w->peer[p] = static_cast<char*>(mapped) + r.offset;
  }
  return Status::ok();
}

void closeWindow(Window* w) {
  for (void*& p : w->opened) {
    if (p != nullptr) cuda_ipc::closeHandle(p);
    p = nullptr;
  }
}

namespace {

// Makes `dev` current for a scope and restores the caller's device after (one thread may drive
// several communicators on different GPUs; both calls are legal during stream capture).
class DeviceScope {
 public:
  explicit DeviceScope(int dev) {
    if (dev < 0 || cudaGetDevice(&saved_) != cudaSuccess) {
      cudaGetLastError();
      saved_ = -1;
      return;
    }
    if (saved_ == dev) {
      saved_ = -1;
    } else if (cudaSetDevice(dev) != cudaSuccess) {
      cudaGetLastError();
      saved_ = -1;
    }
  }
  ~DeviceScope() {
    if (saved_ >= 0 && cudaSetDevice(saved_) != cudaSuccess) cudaGetLastError();
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int saved_ = -1;
};

struct RankInfo {
  uint64_t hostId;
  uint64_t procId;  // processId(): ranks with the same one are threads of one process
  int32_t pid;      // names rank 0's shared segment only
  int32_t ok;      // 1 = this rank has device state
  int32_t device;  // ordinal in its own process
  int32_t sms;
  char busId[32];  // PCI bus id of its GPU (ordinals differ between processes)
  uint64_t stage;  // device address of its staging (2 halves), in its own process
  uint64_t flags;  // device address of its flags (the allocation's base), in its own process
  uint64_t stageBytes;
  uint64_t p2p;        // device address of its point-to-point region, in its own process
  uint64_t p2pBytes;
  uint64_t abortWord;  // device address of its host-mapped abort word (same process only)
  uint64_t abortHost;  // host address of the same word (same process only)
  uint64_t nonce;      // rank 0: names the shared abort-word segment
  uint64_t twoShotBytes;  // rank 0's is used by all (every rank must pick the same algorithm)
  cuda_ipc::Handle ipc;  // its allocation (flags, control, staging), for peers in other processes
  char whyNot[96];
};

// After the pairwise checks every rank says whether it can run (so all agree).
struct Verdict {
  int32_t ok;
  char why[156];
};

constexpr size_t kSegmentBytes = 4096;  // kMaxRanks slots of kSlotBytes
static_assert(kMaxRanks * kSlotBytes <= kSegmentBytes, "segment slots");
static_assert(sizeof(ErrorRecord) <= kSlotBytes - 64, "the error record sits at 64 in a slot");

std::string segmentName(const RankInfo& r0) {
  char b[64];
  std::snprintf(b, sizeof b, "/weft-dev-%d-%016llx", r0.pid, static_cast<unsigned long long>(r0.nonce));
  return b;
}

class CudaComm final : public DeviceComm {
 public:
  ~CudaComm() override { release(); }

  Status init(bootstrap::Bootstrap& bs, const DeviceCommOptions& opts, std::string* whyNot) {
    bs_ = &bs;
    const int rank = bs.rank(), n = bs.nranks();
    const uint64_t deadline = nowNs() + opts.initTimeoutMs * kNsPerMs;
    std::vector<RankInfo> all(static_cast<size_t>(n));
    RankInfo& me = all[static_cast<size_t>(rank)];
    std::memset(&me, 0, sizeof me);
    me.hostId = bs.peer(rank).hostId;
    me.pid = static_cast<int32_t>(getpid());
    me.procId = processId();
    me.twoShotBytes = opts.twoShotBytes;
    nranks_ = n;
    std::string local = n > kMaxRanks ? "more than " + std::to_string(kMaxRanks) + " ranks" : setupLocal(opts, &me);
    if (local.empty() && rank == 0 && n > 1) {
      // The shared abort words, in case some rank is another process (unlinked below either way).
      me.nonce = (static_cast<uint64_t>(nowNs()) * 0x9e3779b97f4a7c15ull) ^ reinterpret_cast<uintptr_t>(this);
      segName_ = segmentName(me);
      void *h = nullptr, *d = nullptr;
      local = cuda_ipc::sharedSegment(segName_, true, kSegmentBytes, &h, &d);
      if (local.empty()) segCreated_ = segMapped_ = true;
    }
    me.ok = local.empty() ? 1 : 0;
    std::snprintf(me.whyNot, sizeof me.whyNot, "%s", local.c_str());
    Status s = bs.allGather(all.data(), sizeof(RankInfo), deadline);
    if (!s) {
      unlinkSegment();
      dropSegment();
      return s;
    }
    std::string why;
    for (int p = 0; p < n && why.empty(); ++p) {
      const RankInfo& r = all[static_cast<size_t>(p)];
      if (!r.ok) why = "rank " + std::to_string(p) + " has no device path (" + r.whyNot + ")";
      else if (r.hostId != me.hostId) why = "rank " + std::to_string(p) + " is on another host: device buffers work inside a node only";
      else if (r.stageBytes != me.stageBytes) why = "ranks disagree on WEFT_CUDA_STAGE_BYTES";
      else if (r.p2pBytes != me.p2pBytes) why = "ranks disagree on WEFT_CUDA_P2P_BYTES";
    }
    if (!why.empty()) {
      // Every rank saw the same infos, so every rank stops here alike (host-only programs: one
      // exchange per communicator, no CUDA call).
      unlinkSegment();
      dropSegment();
      *whyNot = why;
      release();
      return Status::ok();
    }
    // Pairwise: map every peer (same process: its pointers; another process: CUDA IPC), peer access
    // between different GPUs.
    why = connectPeers(all);
    // Every rank learns every rank's verdict: one refusal refuses the device path everywhere.
    std::vector<Verdict> verdicts(static_cast<size_t>(n));
    Verdict& mine = verdicts[static_cast<size_t>(rank)];
    std::memset(&mine, 0, sizeof mine);
    mine.ok = why.empty() ? 1 : 0;
    std::snprintf(mine.why, sizeof mine.why, "%s", why.c_str());
    s = bs.allGather(verdicts.data(), sizeof(Verdict), deadline);
    unlinkSegment();  // every rank that maps it has done so by now
    if (!s || !multiProcess_) dropSegment();  // all threads of one process: the segment is not used
    if (!s) return s;
    for (int p = 0; p < n && why.empty(); ++p)
      if (!verdicts[static_cast<size_t>(p)].ok) why = std::string("rank ") + std::to_string(p) + ": " + verdicts[static_cast<size_t>(p)].why;
    if (!why.empty()) {
      dropSegment();  // refused everywhere: no kernel polls it
      *whyNot = why;
      release();
      return Status::ok();
    }
    // No rank launches a kernel before every rank has finished its init's device work: rank 0's
    // cudaHostUnregister of the unused segment (dropSegment above) waits for the whole device, and a
    // peer thread's first kernel, already waiting for rank 0, would hold it until that kernel's
    // deadline (seen on an H200: the first call of thread ranks timed out).
    s = bs.barrier(deadline);
    if (!s) return s;
    dc_.timeoutNs = opts.timeoutMs * kNsPerMs;
    twoShotBytes_ = static_cast<size_t>(all[0].twoShotBytes);
    // Peers' kernels wait on each other: the grids of all ranks on one GPU must fit on it at once.
    maxBlocks_ = kMaxBlocks;
    for (int p = 0; p < n; ++p) {
      int onGpu = 0;
      for (int q = 0; q < n; ++q) onGpu += std::strcmp(all[static_cast<size_t>(p)].busId, all[static_cast<size_t>(q)].busId) == 0;
      maxBlocks_ = std::min(maxBlocks_, all[static_cast<size_t>(p)].sms / std::max(1, onGpu));
    }
    maxBlocks_ = std::max(1, maxBlocks_);
    WEFT_INFO(INIT, "device path: rank %d of %d on GPU %d (%s), %s, %d blocks max, %zu staging bytes x2, two-shot from %zu bytes, "
              "point-to-point %zu bytes x2 per peer, %d blocks per peer and direction",
              rank, n, me.device, me.busId, multiProcess_ ? "ranks in several processes (CUDA IPC)" : "ranks are threads of one process",
              maxBlocks_, static_cast<size_t>(dc_.stageBytes), twoShotBytes_, static_cast<size_t>(dc_.p2pBytes),
              p2pBlocksPerPeer(maxBlocks_, n));
    ready_ = true;
    // A peer found dead (or a failure reported) ends the kernels waiting on it at once, not at the
    // deadline: the hook sets that peer's abort word (or, for a reported failure, this rank's).
    // It captures only words that are never freed.
    std::array<uint32_t*, kMaxRanks> peerWords{};
    for (int p = 0; p < n; ++p) peerWords[static_cast<size_t>(p)] = peerAbortHost_[p];
    uint32_t* own = abortHost_;
    bs.setFailureHook([own, peerWords](int dead) {
      if (dead >= 0 && dead < kMaxRanks && peerWords[static_cast<size_t>(dead)] != nullptr)
        __atomic_store_n(peerWords[static_cast<size_t>(dead)], 1u, __ATOMIC_RELEASE);
      else if (dead < 0 && own != nullptr)
        __atomic_store_n(own, 1u, __ATOMIC_RELEASE);
    });
    return Status::ok();
  }

  Status run(const DeviceCall& call) override {
    WEFT_TRY(usable());
    if (call.count == 0) return Status::ok();
    DeviceScope onDevice(dev_);  // the communicator's GPU, whatever the calling thread's is
    const int n = dc_.nranks;
    const uint64_t es = typeSize(call.type);
    const uint64_t bytes = static_cast<uint64_t>(call.count) * es;
    cudaStream_t stream = static_cast<cudaStream_t>(call.stream);
    if (sharesGpuInProcess_) WEFT_TRY(checkStream(stream));
    if (n == 1) {
      // One rank: every collective is a copy (an average of one value is that value).
      if (call.recv == nullptr || call.send == call.recv) return Status::ok();
      int e = cudaMemcpyAsync(call.recv, call.send, bytes, cudaMemcpyDeviceToDevice, stream);
      return e == 0 ? Status::ok() : cudaFail("cudaMemcpyAsync", e);
    }
    CallDesc d;
    d.bytes = bytes;
    d.root = call.root;
    d.avg = call.op == RedOp::kAvg ? 1 : 0;
    d.send = static_cast<const char*>(call.send);
    d.recv = static_cast<char*>(call.recv);
    RedOp op = call.op;
    switch (call.coll) {
      case CollType::kAllReduce:
        d.kind = twoShotBytes_ != 0 && bytes >= twoShotBytes_ ? kCollAllReduceTwoShot : kCollAllReduceOneShot;
        break;
      case CollType::kReduceScatter: d.kind = kCollReduceScatter; break;
      case CollType::kReduce: d.kind = kCollReduce; break;
      case CollType::kAllGather: d.kind = kCollAllGather; op = RedOp::kSum; break;
      case CollType::kBroadcast: d.kind = kCollBroadcast; op = RedOp::kSum; break;
      default: return invalidUsage(std::string(collName(call.coll)) + " does not take device buffers yet");
    }
    // About 32 KiB of staging per block per round (four 16-byte vectors per thread), capped by the
    // grid bound. Every rank computes the same grid (same sizes): block ownership must agree.
    const uint64_t perRound = d.kind == kCollReduceScatter
                                  ? static_cast<uint64_t>(n) * std::min<uint64_t>(bytes, chunkBytes(dc_, d))
                                  : std::min<uint64_t>(bytes, dc_.stageBytes);
    const uint64_t perBlock = static_cast<uint64_t>(kBlockThreads) * 16 * 4;
    const int nblocks = static_cast<int>(std::clamp<uint64_t>((perRound + perBlock - 1) / perBlock, 1, maxBlocks_));
    return launchOrdered(stream, "the collective kernel", [&] { return launchColl(dc_, d, nblocks, call.type, op, stream); });
  }

  Status runP2p(const std::vector<P2pCall>& calls) override {
    WEFT_TRY(usable());
    P2pDesc d;
    int nblocks = 0;
    WEFT_TRY(planP2p(dc_.rank, dc_.nranks, maxBlocks_, dc_.p2pBytes, calls, &d, &nblocks));
    if (d.nops == 0) return Status::ok();
    DeviceScope onDevice(dev_);
    cudaStream_t stream = static_cast<cudaStream_t>(calls[0].stream);
    if (sharesGpuInProcess_) WEFT_TRY(checkStream(stream));
    return launchOrdered(stream, "the point-to-point kernel", [&] { return launchP2p(dc_, d, nblocks, stream); });
  }
  void abort() override {
    aborted_.store(true);
    if (abortHost_ != nullptr) __atomic_store_n(abortHost_, 1u, __ATOMIC_RELEASE);
  }

  Status asyncError() const override {
    if (errorHost_ == nullptr) return Status::ok();
    const uint32_t code = __atomic_load_n(&errorHost_->code, __ATOMIC_ACQUIRE);
    if (code == 0) return Status::ok();
    const std::string me = "rank " + std::to_string(dc_.rank);
    const std::string peer = "rank " + std::to_string(errorHost_->peer);
    const std::string round = ", round " + std::to_string(errorHost_->seq) + ")";
    if (code == kWaitMismatch)
      return invalidUsage(me + "'s receive from " + peer + " expects " + std::to_string(errorHost_->mine) + " bytes, but " +
                          peer + "'s matching send (the same position in posting order between the two) has " +
                          std::to_string(errorHost_->theirs) + " bytes (pair round " + std::to_string(errorHost_->seq) +
                          "): counts and types of a send and its receive must agree");
    std::string where;
    if (errorHost_->what == kWhatSend)
      where = me + "'s GPU kernel, sending to " + peer + ", waited for it to free staging (pair block " +
              std::to_string(errorHost_->block) + round;
    else if (errorHost_->what == kWhatRecv)
      where = me + "'s GPU kernel, receiving from " + peer + ", waited for its send (pair block " +
              std::to_string(errorHost_->block) + round;
    else
      where = me + "'s GPU kernel waited on " + peer + " (block " + std::to_string(errorHost_->block) + round;
    if (code == kWaitTimedOut)
      return Status(Code::kTimeout, where + " for longer than " + std::to_string(dc_.timeoutNs / kNsPerMs) +
                                        " ms (WEFT_TIMEOUT_MS); is that rank alive and calling the same " +
                                        (errorHost_->what == kWhatColl ? "collective?" : "sends and receives?"));
    if (code == kWaitPeerAborted)
      return Status(Code::kRemote, where + ", which was aborted or destroyed meanwhile, or whose own GPU kernel gave up "
                                           "(a timeout, or a receive whose count did not match this rank's send: that "
                                           "rank's weftCommGetAsyncError says which)");
    return Status(Code::kRemote, where + " and was aborted (weftCommAbort)");
  }

 private:
  // This rank's own resources; "" on success, else why not.
  std::string setupLocal(const DeviceCommOptions& opts, RankInfo* me) {
    if (!driverLoaded()) return "CUDA is not loaded in this process";
    int dev = opts.device;
    if (dev >= 0) {
      // A non-blocking init runs on its own thread: select the creating thread's device here.
      cudaError_t e = cudaSetDevice(dev);
      if (e != cudaSuccess) {
        cudaGetLastError();
        return "cudaSetDevice(" + std::to_string(dev) + "): " + cudaName(e);
      }
    } else if (cudaGetDevice(&dev) != cudaSuccess) {
      cudaGetLastError();
      return "no current CUDA device";
    }
    dev_ = dev;
    me->device = dev;
    int sms = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    me->sms = sms;
    {
      // Load every kernel once per process and device, before any of ours can run (kernels.h).
      static std::mutex mu;
      static std::set<int> loaded;
      std::lock_guard<std::mutex> g(mu);
      if (loaded.count(dev) == 0) {
        const int e = preloadKernels();
        if (e != 0) {
          cudaGetLastError();
          return std::string("loading the collective kernels: ") + cudaName(e);
        }
        loaded.insert(dev);
      }
    }
    if (cudaDeviceGetPCIBusId(me->busId, sizeof me->busId, dev) != cudaSuccess) {
      cudaGetLastError();
      std::snprintf(me->busId, sizeof me->busId, "ordinal-%d", dev);
    }
    size_t stage = opts.stageBytes ? opts.stageBytes : kDefaultStageBytes;
    stage = std::max<size_t>(4096, (stage + 15) & ~static_cast<size_t>(15));  // >= kMaxRanks granules
    me->stageBytes = stage;
    size_t p2p = opts.p2pBytes ? opts.p2pBytes : kDefaultP2pBytes;
    p2p = std::max<size_t>(4096, (p2p + 15) & ~static_cast<size_t>(15));
    me->p2pBytes = p2p;
    const size_t flagBytes = sizeof(uint64_t) * (kMaxBlocks + 16);  // flags, control[kControlWords], 16-byte aligned end
    // Layout: flags and control, collective staging (2 halves), the point-to-point region (flags,
    // sequences, staging per destination: protocol.h), each part 256-byte aligned.
    const size_t p2pOff = (flagBytes + 2 * stage + 255) / 256 * 256;
    const size_t total = p2pOff + p2pRegionBytes(nranks_, p2p);
    void* mem = nullptr;
    int e = cudaMalloc(&mem, total);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return std::string("cudaMalloc: ") + cudaName(e);
    }
    devMem_ = mem;
    if ((e = cudaEventCreateWithFlags(&done_, cudaEventDisableTiming)) != cudaSuccess ||
        (e = cudaEventCreateWithFlags(&capDone_, cudaEventDisableTiming)) != cudaSuccess) {
      cudaGetLastError();
      return std::string("cudaEventCreate: ") + cudaName(e);
    }
    // Zero the flags before any peer can see them (the all-gather comes after).
    if ((e = cudaMemset(mem, 0, flagBytes)) != cudaSuccess ||
        (e = cudaMemset(static_cast<char*>(mem) + p2pOff, 0, kP2pStageOff)) != cudaSuccess ||
        (e = cudaDeviceSynchronize()) != cudaSuccess) {
      cudaGetLastError();
      return std::string("cudaMemset: ") + cudaName(e);
    }
    // Exported for peers in other processes (used only if there are any).
    std::string ipcWhy = cuda_ipc::exportHandle(mem, &me->ipc);
    if (!ipcWhy.empty()) std::memset(&me->ipc, 0, sizeof me->ipc);
    me->flags = reinterpret_cast<uint64_t>(mem);
    me->stage = reinterpret_cast<uint64_t>(static_cast<char*>(mem) + flagBytes);
    me->p2p = reinterpret_cast<uint64_t>(static_cast<char*>(mem) + p2pOff);
    void* host = nullptr;
    void* hostDev = nullptr;
    std::string slotWhy = hostSlot(&host, &hostDev);
    if (!slotWhy.empty()) return slotWhy;
    me->abortWord = reinterpret_cast<uint64_t>(hostDev);
    me->abortHost = reinterpret_cast<uint64_t>(host);
    return "";
  }

  // The device path can take a call now: ready, no error recorded, no peer gone.
  Status usable() {
    if (!ready_) return invalidUsage("device buffers are not usable on this communicator");
    WEFT_TRY(asyncError());
    // A peer that was aborted or destroyed has set its abort word (its memory may be gone): never
    // launch a kernel that would read it.
    for (int p = 0; p < dc_.nranks; ++p)
      if (p != dc_.rank && peerAbortHost_[p] != nullptr && __atomic_load_n(peerAbortHost_[p], __ATOMIC_ACQUIRE) != 0)
        return remoteError("rank " + std::to_string(p) +
                           " of this communicator was aborted or destroyed, or one of its GPU kernels gave up (a timeout, "
                           "or a receive whose count did not match this rank's send: that rank's weftCommGetAsyncError "
                           "says which)");
    return Status::ok();
  }

  // Launches (launch() returns a cudaError_t) after this communicator's previous call.
  // Calls of one communicator share its staging, flags and counters: they must run one after the
  // other. Stream order gives that on one stream; a call on another stream first waits for the
  // previous call (an event recorded after each launch). Inside a stream capture the event is one
  // recorded in the same capture (legal there: a join of two captured streams), so parallel
  // branches of one captured graph are ordered too; an eager event is never waited on inside a
  // capture (not allowed in global mode): a graph is ordered with eager calls by the stream it is
  // launched on, the application's.
  template <class Launch>
  Status launchOrdered(cudaStream_t stream, const char* what, Launch launch) {
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    unsigned long long captureId = 0;
    int e = cudaStreamGetCaptureInfo(stream, &cs, &captureId);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return cudaFail("cudaStreamGetCaptureInfo", e);
    }
    if (cs == cudaStreamCaptureStatusInvalidated)
      return invalidUsage("the stream's capture has been invalidated (an earlier error during the capture)");
    const bool capturing = cs == cudaStreamCaptureStatusActive;
    if (!capturing && launched_ && stream != lastStream_) e = cudaStreamWaitEvent(stream, done_, 0);
    else if (capturing && capLaunched_ && captureId == capId_ && stream != capStream_) e = cudaStreamWaitEvent(stream, capDone_, 0);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return cudaFail("cudaStreamWaitEvent (ordering after this communicator's previous call)", e);
    }
    e = launch();
    if (e != cudaSuccess) {
      cudaGetLastError();
      return cudaFail((std::string(what) + " launch").c_str(), e);
    }
    e = cudaEventRecord(capturing ? capDone_ : done_, stream);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return cudaFail((std::string("cudaEventRecord (after ") + what + ")").c_str(), e);
    }
    if (capturing) {
      capLaunched_ = true;
      capId_ = captureId;
      capStream_ = stream;
    } else {
      launched_ = true;
      lastStream_ = stream;
    }
    return Status::ok();
  }

  // Fills dc_ from every rank's info; "" or why not.
  std::string connectPeers(const std::vector<RankInfo>& all) {
    const int n = static_cast<int>(all.size());
    const int rank = bs_->rank();
    const RankInfo& me = all[static_cast<size_t>(rank)];
    dc_.rank = rank;
    dc_.nranks = n;
    dc_.stageBytes = me.stageBytes;
    dc_.p2pBytes = me.p2pBytes;
    for (int p = 0; p < n; ++p) multiProcess_ |= all[static_cast<size_t>(p)].procId != me.procId;
    // Abort words and error records: this process's pinned slots when every rank is a thread of it;
    // else slots of the shared segment (rank p at p * kSlotBytes), which every process maps.
    char* segHost = nullptr;
    char* segDev = nullptr;
    if (multiProcess_) {
      void *h = nullptr, *d = nullptr;
      segName_ = segmentName(all[0]);
      std::string w = cuda_ipc::sharedSegment(segName_, false, kSegmentBytes, &h, &d);
      if (!w.empty()) return w;
      segMapped_ = true;
      segHost = static_cast<char*>(h);
      segDev = static_cast<char*>(d);
    }
    for (int p = 0; p < n; ++p) {
      const RankInfo& r = all[static_cast<size_t>(p)];
      const bool samePid = r.procId == me.procId;
      const bool sameGpu = std::strcmp(r.busId, me.busId) == 0;
      if (p != rank && sameGpu && samePid) sharesGpuInProcess_ = true;
      if (p != rank && sameGpu && !samePid) {
        // Kernels of two processes on one GPU run at the same time only under MPS; time-sliced,
        // every flag hand-off between them would wait for a context switch.
        int mps = 0;
        if (cudaDeviceGetAttribute(&mps, cudaDevAttrMpsEnabled, me.device) != cudaSuccess) {
          cudaGetLastError();
          mps = 0;
        }
        if (!mps)
          return "rank " + std::to_string(p) + " is another process on the same GPU " + me.busId +
                 " and MPS is not running (cudaDevAttrMpsEnabled = 0): without MPS their kernels are time-sliced, "
                 "never resident together; start nvidia-cuda-mps-control -d, or give each process its own GPU";
      }
      if (!sameGpu) {
        dc_.sysScope = 1;
        int peerDev = -1, can = 0;
        if (cudaDeviceGetByPCIBusId(&peerDev, r.busId) != cudaSuccess) {
          cudaGetLastError();
          return "rank " + std::to_string(p) + "'s GPU " + r.busId + " is not visible to rank " + std::to_string(rank) +
                 " (CUDA_VISIBLE_DEVICES): peer access cannot be checked";
        }
        if (cudaDeviceCanAccessPeer(&can, me.device, peerDev) != cudaSuccess || !can) {
          cudaGetLastError();
          return "GPU " + std::string(me.busId) + " (rank " + std::to_string(rank) + ") cannot access GPU " + r.busId +
                 " (rank " + std::to_string(p) + ") peer-to-peer (cudaDeviceCanAccessPeer): device buffers between them "
                 "are not supported";
        }
        if (samePid) {
          cudaError_t e = cudaDeviceEnablePeerAccess(peerDev, 0);
          if (e != cudaSuccess && e != cudaErrorPeerAccessAlreadyEnabled) return std::string("cudaDeviceEnablePeerAccess: ") + cudaName(e);
          cudaGetLastError();
        }
      }
      char* base = nullptr;
      if (p == rank || samePid) {
        base = reinterpret_cast<char*>(r.flags);
      } else {
        void* mapped = nullptr;
        std::string w = cuda_ipc::openHandle(r.ipc, r.hostId ^ r.procId, &mapped);
        if (!w.empty()) return "rank " + std::to_string(p) + "'s staging: " + w;
        opened_[p] = mapped;
        base = static_cast<char*>(mapped);
      }
      dc_.flags[p] = reinterpret_cast<uint64_t*>(base);
      dc_.stage[p] = base + (r.stage - r.flags);
      dc_.p2p[p] = base + (r.p2p - r.flags);
      if (multiProcess_) {
        if (p != rank) {
          dc_.peerAbort[p] = reinterpret_cast<volatile uint32_t*>(segDev + static_cast<size_t>(p) * kSlotBytes);
          peerAbortHost_[p] = reinterpret_cast<uint32_t*>(segHost + static_cast<size_t>(p) * kSlotBytes);
        }
      } else if (p != rank) {
        dc_.peerAbort[p] = reinterpret_cast<volatile uint32_t*>(r.abortWord);
        peerAbortHost_[p] = reinterpret_cast<uint32_t*>(r.abortHost);
      }
    }
    char* host = multiProcess_ ? segHost + static_cast<size_t>(rank) * kSlotBytes : reinterpret_cast<char*>(me.abortHost);
    char* dev = multiProcess_ ? segDev + static_cast<size_t>(rank) * kSlotBytes : reinterpret_cast<char*>(me.abortWord);
    abortHost_ = reinterpret_cast<uint32_t*>(host);
    errorHost_ = reinterpret_cast<ErrorRecord*>(host + 64);
    dc_.abortWord = reinterpret_cast<volatile uint32_t*>(dev);
    dc_.error = reinterpret_cast<ErrorRecord*>(dev + 64);
    dc_.control = dc_.flags[rank] + kMaxBlocks;
    return "";
  }

  void dropSegment() {
    if (segMapped_) cuda_ipc::dropSegment(segName_);
    segMapped_ = false;
  }

  void unlinkSegment() {
    if (segCreated_) cuda_ipc::unlinkSegment(segName_);
    segCreated_ = false;
  }

  // Another rank of this communicator is a thread of this process on this GPU: its kernel must run
  // next to this one. The legacy default stream (0, cudaStreamLegacy) and blocking streams
  // (created without cudaStreamNonBlocking; cudaStreamPerThread is one) wait for each other's work: one rank's kernel would
  // wait for the other's to end, which waits for this one: a hang until the deadline.
  Status checkStream(cudaStream_t stream) {
    if (stream == nullptr || stream == cudaStreamLegacy)
      return invalidUsage("ranks of this communicator share GPU " + std::to_string(dev_) +
                          " in this process: the legacy default stream (0) serialises their kernels (a hang); pass a "
                          "stream created with cudaStreamNonBlocking");
    // A captured call's graph is launched on whatever stream the application picks at replay, so the
    // capturing stream's flags do not matter there (and querying them during a capture is refused:
    // "operation not permitted when stream is capturing", which invalidates the capture).
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &cs) != cudaSuccess) {
      cudaGetLastError();
      cs = cudaStreamCaptureStatusNone;
    }
    if (cs != cudaStreamCaptureStatusNone) return Status::ok();
    // Another thread (a peer rank) may be capturing in global mode: this query must not count as
    // an unsafe call against its capture.
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    cudaThreadExchangeStreamCaptureMode(&mode);
    unsigned flags = 0;
    const cudaError_t e = cudaStreamGetFlags(stream, &flags);
    cudaThreadExchangeStreamCaptureMode(&mode);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return cudaFail("cudaStreamGetFlags", e);
    }
    if ((flags & cudaStreamNonBlocking) == 0)
      return invalidUsage("ranks of this communicator share GPU " + std::to_string(dev_) +
                          " in this process: a blocking stream waits for the legacy default stream, which serialises "
                          "their kernels (a hang); create the stream with cudaStreamNonBlocking");
    return Status::ok();
  }

  // This rank's launched calls have ended (the last eager launch's event; a communicator whose calls
  // were all captured into graphs has nothing to wait for here: replays are the application's).
  bool syncOwn() {
    if (!launched_ || done_ == nullptr) return true;
    const bool ok = cudaEventSynchronize(done_) == cudaSuccess;
    cudaGetLastError();
    return ok;
  }

  void release() {
    DeviceScope onDevice(dev_);
    unlinkSegment();
    if (bs_ != nullptr && ready_) bs_->setFailureHook({});
    // Peers read this rank's staging from other processes or other GPUs (where freeing it does not
    // wait for their kernels): then every rank meets here first.
    const bool shared = multiProcess_ || dc_.sysScope != 0;
    if (ready_ && !aborted_.load()) {
      // A clean destroy: this rank's queued calls run to their end before its abort word is raised
      // (raised first, the last call would stop and its peers fail with "peer aborted").
      bool quiet = syncOwn();
      if (quiet) closeOpened();  // this rank's mappings of peers' staging, before they free it
      if (shared) {
        // Every rank gets here with its own kernels done and its mappings closed; without that (a
        // peer gone, aborted) the memory stays allocated: never freed under a peer's kernel.
        quiet = quiet && bs_ != nullptr && bs_->barrier(nowNs() + 10 * 1000 * kNsPerMs).isOk();
      }
      if (!quiet) {
        WEFT_INFO(INIT, "device path: rank %d leaves its staging allocated (no clean destroy with every peer)", dc_.rank);
        aborted_.store(true);
      }
    }
    // Kernels still waiting on a peer give up at the abort word; peers see it too.
    if (abortHost_ != nullptr) __atomic_store_n(abortHost_, 1u, __ATOMIC_RELEASE);
    if (!(shared && aborted_.load())) {
      closeOpened();
      // cudaFree waits for the device (ranks that are threads of this process on this GPU included).
      if (devMem_ != nullptr) cudaFree(devMem_);
      devMem_ = nullptr;
    }
    if (done_ != nullptr) cudaEventDestroy(done_);
    if (capDone_ != nullptr) cudaEventDestroy(capDone_);
    done_ = capDone_ = nullptr;
    cudaGetLastError();
    // The host slots (abort word, error record) are kept: peers' kernels may still poll this abort
    // word, and it must read "aborted", never freed memory.
    ready_ = false;
  }

  void closeOpened() {
    for (void*& p : opened_) {
      if (p != nullptr) cuda_ipc::closeHandle(p);
      p = nullptr;
    }
  }

  bootstrap::Bootstrap* bs_ = nullptr;
  DevComm dc_;
  int maxBlocks_ = 1;
  int nranks_ = 0;
  int dev_ = -1;  // this rank's CUDA device
  size_t twoShotBytes_ = 0;
  bool ready_ = false;
  bool multiProcess_ = false;
  bool sharesGpuInProcess_ = false;  // another rank is a thread of this process on this GPU
  std::atomic<bool> aborted_{false};  // set by weftCommAbort from any thread
  bool segCreated_ = false;
  bool segMapped_ = false;  // this communicator mapped segName_ (dropped where no kernel can use it)
  std::string segName_;
  void* devMem_ = nullptr;
  cudaEvent_t done_ = nullptr;  // recorded after every eager launch (orders calls, see run())
  bool launched_ = false;       // done_ has been recorded at least once
  cudaStream_t lastStream_ = nullptr;
  cudaEvent_t capDone_ = nullptr;  // the same, recorded inside a stream capture
  bool capLaunched_ = false;
  unsigned long long capId_ = 0;   // the capture capDone_ was last recorded in
  cudaStream_t capStream_ = nullptr;
  void* opened_[kMaxRanks] = {};
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
  if (o.twoShotBytes == 0) o.twoShotBytes = static_cast<size_t>(config::getInt("WEFT_CUDA_TWOSHOT_BYTES"));
  if (o.p2pBytes == 0) o.p2pBytes = static_cast<size_t>(config::getInt("WEFT_CUDA_P2P_BYTES"));
  WEFT_TRY(c->init(bs, o, whyNot));
  if (whyNot->empty()) *out = std::move(c);
  return Status::ok();
}

Status reduceOnDevice(DataType type, RedOp op, void* dst, const void* a, const void* b, size_t count, void* stream) {
  int e = launchReduce2(type, op, dst, a, b, count, stream);
  return e == 0 ? Status::ok() : cudaFail("the reduction kernel launch", e);
}

}  // namespace weft::device
