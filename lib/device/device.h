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

#include "lib/core/status.h"
#include "lib/core/types.h"

namespace weft::bootstrap {
class Bootstrap;
}

namespace weft::device {

// True when this library was built with CUDA support.
bool built();

// Fork safety (lib/engine/fork_safety.cc): hold / release the process-wide device locks (pointer
// cache, host slots, the one-time driver lookup) across fork().
void forkLock();
void forkUnlock();

enum class MemKind { kHost = 0, kDevice = 1 };

// The kind of memory at p (host when p is null, CUDA is absent, or the driver does not know p).
// Device answers are cached per allocation (address range), so repeated calls cost a lookup.
MemKind classify(const void* p);

struct DeviceCommOptions {
  uint64_t timeoutMs = 0;      // a GPU wait on a peer gives up after this (0 = only abort ends it)
  uint64_t initTimeoutMs = 0;  // bounds the bootstrap exchange
  size_t stageBytes = 0;       // staging bytes per half (0 = default)
};

class DeviceComm {
 public:
  // Collective: every rank of the bootstrap calls it. Device state is created when every rank is a
  // thread of this process on the same GPU (the current device of the calling thread); otherwise
  // *out stays null and *whyNot says why (a device call then fails with weftInvalidUsage).
  static Status create(bootstrap::Bootstrap& bs, const DeviceCommOptions& opts, std::unique_ptr<DeviceComm>* out,
                       std::string* whyNot);
  virtual ~DeviceComm() = default;

  // Stream-ordered all-reduce of device buffers (send == recv: in place). Returns once launched.
  virtual Status allReduce(const void* send, void* recv, size_t count, DataType type, RedOp op, void* stream) = 0;
  // Any thread: make every GPU wait of this communicator give up.
  virtual void abort() = 0;
  // The error a kernel recorded (success when none).
  virtual Status asyncError() const = 0;
};

// For benchmarks and tests: dst = a OP b on the device (the kernel the all-reduce uses), and a plain
// elementwise copy kernel; stream-ordered. Fails when CUDA is not built.
Status reduceOnDevice(DataType type, RedOp op, void* dst, const void* a, const void* b, size_t count, void* stream);

}  // namespace weft::device
