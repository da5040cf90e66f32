// Bootstrap framing: every message is a 16-byte header (magic, type, payload length) and a payload.
// Headers are validated: a foreign or malformed frame is refused with a message, never trusted.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "lib/bootstrap/unique_id.h"
#include "lib/core/net.h"
#include "lib/core/status.h"

namespace weft::bootstrap {

enum class FrameType : uint32_t {
  kHello = 1,      // rank -> root: who I am
  kTable = 2,      // root -> rank: everyone's address
  kReject = 3,     // root -> rank: refused, with the reason
  kPeerHello = 4,  // rank -> rank: first frame on a new connection
  kMsg = 5,        // rank -> rank: tagged message
  kAbort = 6,      // rank -> rank: the communicator failed (code + reason)
  kBye = 7,        // rank -> rank: clean close
};

inline constexpr uint32_t kFrameMagic = 0x57465446;  // "FTFW"
inline constexpr uint64_t kMaxFrameBytes = 64ull << 20;

struct FrameHeader {
  uint32_t magic;
  uint32_t type;
  uint64_t len;
};
static_assert(sizeof(FrameHeader) == 16);

inline constexpr size_t kHostNameBytes = 64;

// One rank's entry in the table (also the body of a hello after the secret and counts).
struct RankRecord {
  unsigned char addr[net::SockAddr::kWireBytes];
  uint32_t pad = 0;
  uint64_t hostId = 0;
  int32_t pid = 0;
  int32_t rank = 0;
  char hostname[kHostNameBytes] = {};
};

struct HelloBody {
  unsigned char secret[kSecretBytes];
  uint32_t libraryVersion;
  int32_t nranks;
  RankRecord self;
};

struct PeerHelloBody {
  unsigned char secret[kSecretBytes];
  int32_t fromRank;
  int32_t nranks;
};

Status writeFrame(int fd, FrameType type, const void* payload, size_t len, uint64_t deadlineNs,
                  const std::atomic<bool>* abort);
// Reads one frame; refuses bad magic or oversized payloads with a message naming `who`.
Status readFrame(int fd, FrameType* type, std::vector<char>* payload, uint64_t deadlineNs,
                 const std::atomic<bool>* abort, const std::string& who);

}  // namespace weft::bootstrap
