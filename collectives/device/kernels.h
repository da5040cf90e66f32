// Launchers of the device collective kernels (collectives/device/kernels.cu). Plain C++: no CUDA
// header needed; streams are cudaStream_t passed as void*. Each returns a cudaError_t value (0 = the
// launch was queued).
#pragma once

#include <cstddef>
#include <cstdint>

#include "lib/core/types.h"
#include "lib/device/protocol.h"

namespace weft::device {

// One collective call (protocol.h runCall) over the ranks of c: `nblocks` blocks (every rank passes
// the same). Copy collectives pass op kSum (the type only sets the element size of misaligned moves).
int launchColl(const DevComm& c, const CallDesc& d, int nblocks, DataType type, RedOp op, void* stream);

// One point-to-point launch (protocol.h runP2p; p2p_plan.h planP2p gives d and nblocks).
int launchP2p(const DevComm& c, const P2pDesc& d, int nblocks, void* stream);

// dst = a OP b elementwise (kAvg: the sum, as the host's reduce()).
int launchReduce2(DataType type, RedOp op, void* dst, const void* a, const void* b, size_t count, void* stream);

// Loads every collective and point-to-point kernel into the current device's context now. With lazy
// loading, a kernel's first launch may have to synchronise the context to load it; if a peer
// thread's kernel is already waiting for this rank's launch, that is a deadlock (until the
// deadline). So the kernels are loaded at a communicator's init instead, before any of them runs.
int preloadKernels();

// An empty kernel (the launch floor in benchmarks).
int launchEmpty(void* stream);

}  // namespace weft::device
