// The 128-byte unique id: the root's address, a 128-bit random secret and the library version,
// with a checksum so that a corrupted or foreign id is refused with a clear error.
#pragma once

#include <cstdint>

#include "lib/core/net.h"
#include "lib/core/status.h"

namespace weft::bootstrap {

inline constexpr size_t kUniqueIdBytes = 128;
inline constexpr size_t kSecretBytes = 16;
inline constexpr uint32_t kIdMagic = 0x54464557;  // "WEFT"
// Bumped whenever the bootstrap wire protocol changes.
inline constexpr uint32_t kProtocolVersion = 1;

struct UniqueId {
  uint32_t protocol = kProtocolVersion;
  uint32_t libraryVersion = 0;
  unsigned char secret[kSecretBytes] = {};
  net::SockAddr root;
};

void encodeUniqueId(const UniqueId& id, unsigned char out[kUniqueIdBytes]);
Status decodeUniqueId(const unsigned char in[kUniqueIdBytes], UniqueId* id);

}  // namespace weft::bootstrap
