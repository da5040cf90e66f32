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

// An empty kernel (the launch floor in benchmarks).
int launchEmpty(void* stream);

}  // namespace weft::device
