// Shared-memory transport for two ranks on the same host, behind the messaging interface
// (transports/transport.h). See shm_transport.cc for the design: a memfd passed over an abstract
// AF_UNIX socket, a single-producer/single-consumer ring of slots, eventfd wake-ups armed by a waiter
// flag, and peer death seen as EOF on the unix socket (or the peer's pidfd).
#pragma once

#include <cstddef>
#include <memory>

#include "transports/transport.h"

namespace weft::transport {

namespace shm {
// Ring geometry (fixed; exposed for tests and logs). Each slot starts with a 64-byte header.
inline constexpr size_t kSlotBytes = 64 * 1024;
inline constexpr size_t kSlotHeaderBytes = 64;
inline constexpr size_t kSlotPayloadBytes = kSlotBytes - kSlotHeaderBytes;
inline constexpr size_t kSlotCount = 32;
}  // namespace shm

// The shared-memory transport (Linux: memfd_create, SCM_RIGHTS, eventfd). Both ends must run on the
// same host, as the same user, in the same network namespace (abstract unix sockets are per netns).
std::unique_ptr<MessagingTransport> createShmTransport(Status* status);

}  // namespace weft::transport
