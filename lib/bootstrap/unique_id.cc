#include "lib/bootstrap/unique_id.h"

#include <cstring>

#include "lib/core/util.h"

namespace weft::bootstrap {

// Layout: magic u32 | protocol u32 | library version u32 | secret 16 | root address 28 |
//         zero padding | checksum u64 (FNV-1a of bytes 0..119) at offset 120.
namespace {
constexpr size_t kAddrOff = 28;
constexpr size_t kSumOff = 120;
}  // namespace

void encodeUniqueId(const UniqueId& id, unsigned char out[kUniqueIdBytes]) {
  std::memset(out, 0, kUniqueIdBytes);
  uint32_t magic = kIdMagic;
  std::memcpy(out, &magic, 4);
  std::memcpy(out + 4, &id.protocol, 4);
  std::memcpy(out + 8, &id.libraryVersion, 4);
  std::memcpy(out + 12, id.secret, kSecretBytes);
  id.root.toWire(out + kAddrOff);
  uint64_t sum = hash64(out, kSumOff);
  std::memcpy(out + kSumOff, &sum, 8);
}

Status decodeUniqueId(const unsigned char in[kUniqueIdBytes], UniqueId* id) {
  uint32_t magic;
  std::memcpy(&magic, in, 4);
  if (magic != kIdMagic) {
    return invalidArgument(
        "the unique id is not a weft id (bad magic): pass every rank the bytes weftGetUniqueId "
        "produced on one process");
  }
  uint64_t sum, want = hash64(in, kSumOff);
  std::memcpy(&sum, in + kSumOff, 8);
  if (sum != want) {
    return invalidArgument(
        "the unique id is corrupted (checksum mismatch): it was changed on its way to this rank; "
        "pass the 128 bytes unchanged");
  }
  std::memcpy(&id->protocol, in + 4, 4);
  std::memcpy(&id->libraryVersion, in + 8, 4);
  if (id->protocol != kProtocolVersion) {
    return invalidArgument("the unique id was made by a weft with bootstrap protocol " +
                           std::to_string(id->protocol) + ", this library speaks " +
                           std::to_string(kProtocolVersion) + ": use the same weft version on every rank");
  }
  std::memcpy(id->secret, in + 12, kSecretBytes);
  return net::SockAddr::fromWire(in + kAddrOff, &id->root).withContext("the unique id's root address is invalid");
}

}  // namespace weft::bootstrap
