// Device (CUDA) buffers: pointer classification and the per-communicator device state. This header
// needs no CUDA header; in a build without CUDA (WEFT_CUDA=OFF or no nvcc) every pointer is host
// memory and no communicator has device state.
//
// Loading: libweft links the CUDA runtime statically and never the driver; the driver is reached
// through the runtime (cudaGetDriverEntryPointByVersion). A process that has not loaded libcuda
// itself cannot hold device pointers, so classify() answers "host" without touching CUDA there, and
// host-only programs never initialise CUDA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <vector>

#include "lib/core/status.h"
#include "lib/core/types.h"
#include "lib/device/p2p_plan.h"

namespace weft::bootstrap {
class Bootstrap;
}

namespace weft::device {

// True when this library was built with CUDA support.
bool built();

// Fork safety (lib/engine/fork_safety.cc): hold / release the process-wide device locks (pointer
// cache, host slots, the one-time driver lookup) across fork(). inChild: the forked child's handler
// (a lock the parent's thread write-locked cannot be unlocked by the child's thread, whose tid
// differs: glibc would take it for a reader's unlock and leave it held; the child re-creates it).
void forkLock();
void forkUnlock(bool inChild);

enum class MemKind { kHost = 0, kDevice = 1 };
inline constexpr int kMaxWindowRanks = 64;

// The kind of memory at p (host when p is null, CUDA is absent, or the driver does not know p).
// Device answers are cached per allocation (address range), so repeated calls cost a lookup.
MemKind classify(const void* p);

struct DeviceCommOptions {
  uint64_t timeoutMs = 0;      // a GPU wait on a peer gives up after this (0 = only abort ends it)
  uint64_t initTimeoutMs = 0;  // bounds the bootstrap exchange
  size_t stageBytes = 0;       // staging bytes per half (0 = default)
  size_t twoShotBytes = 0;     // all-reduces of at least this many bytes use the two-shot (0 = never)
  size_t p2pBytes = 0;         // point-to-point staging bytes per half per destination (0 = default)
  int device = -1;             // the CUDA device of the thread that created the communicator (-1: the
                               // calling thread's current one); init may run on another thread
};

// The calling thread's current CUDA device; -1 without CUDA or while libcuda is not loaded (then no
// CUDA call is made).
int currentDevice();
// Makes `dev` the calling thread's current CUDA device (nothing for -1 or without CUDA).
void selectDevice(int dev);

// One device-buffer call (buffers already validated by the API layer). root: broadcast/reduce.
struct DeviceCall {
  CollType coll = CollType::kAllReduce;
  const void* send = nullptr;
  void* recv = nullptr;
  size_t count = 0;  // as the API: all-reduce/broadcast/reduce count, all-gather sendcount, reduce-scatter recvcount
  DataType type = DataType::kFloat32;
  RedOp op = RedOp::kSum;
  int root = 0;
  void* stream = nullptr;
};

class DeviceComm {
 public:
  // Collective: every rank of the bootstrap calls it. Device state is created when every rank is on
  // this host with a CUDA device (opts.device, else the calling thread's current one), at most kMaxRanks ranks, and
  // ranks on different GPUs can access each other peer-to-peer; ranks in other processes are reached
  // through CUDA IPC (transports/cuda_ipc). Otherwise *out stays null and *whyNot says why, the same
  // on every rank (a device call then fails with weftInvalidUsage).
  static Status create(bootstrap::Bootstrap& bs, const DeviceCommOptions& opts, std::unique_ptr<DeviceComm>* out,
                       std::string* whyNot);
  virtual ~DeviceComm() = default;

  // A stream-ordered collective on device buffers (all-reduce, all-gather, reduce-scatter, broadcast,
  // reduce; in place as the API defines it). Returns once launched.
  virtual Status run(const DeviceCall& call) = 0;
  // Stream-ordered sends and receives on device buffers: one kernel for all of them (one ungrouped
  // call, or every device send/receive of this communicator in one group), on their stream
  // (planP2p's rules: one stream, sends to itself matched, in-place forms). Returns once launched.
  virtual Status runP2p(const std::vector<P2pCall>& calls) = 0;
  // Any thread: make every GPU wait of this communicator give up.
  virtual void abort() = 0;
  // The error a kernel recorded (success when none).
  virtual Status asyncError() const = 0;
};

// Registration (weftCommRegister / weftCommWindowRegister). What the driver says of [p, p + size).
struct BufferInfo {
  MemKind kind = MemKind::kHost;
  bool ipcCapable = false;  // CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE (cuMem memory: false)
  uintptr_t base = 0;       // the allocation's range
  size_t size = 0;
};
BufferInfo describe(const void* p);

// A window: collective registration of one buffer per rank; peers' device buffers in other
// processes are opened once through CUDA IPC (peer[p] = its address in this process; null where
// not opened: host memory, memory CUDA IPC cannot export, this process's own ranks).
struct Window {
  void* buf = nullptr;
  size_t size = 0;
  BufferInfo info;
  void* peer[kMaxWindowRanks] = {};
  void* opened[kMaxWindowRanks] = {};  // what to close
};
// Collective over the bootstrap: every rank passes its buffer. *note: an INFO-worthy remark.
Status openWindow(bootstrap::Bootstrap& bs, void* buf, size_t size, uint64_t deadlineNs, Window* w, std::string* note);
void closeWindow(Window* w);

// For benchmarks and tests: dst = a OP b on the device (the kernel the all-reduce uses), and a plain
// elementwise copy kernel; stream-ordered. Fails when CUDA is not built.
Status reduceOnDevice(DataType type, RedOp op, void* dst, const void* a, const void* b, size_t count, void* stream);

}  // namespace weft::device
