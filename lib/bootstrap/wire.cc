#include "lib/bootstrap/wire.h"

namespace weft::bootstrap {

Status writeFrame(int fd, FrameType type, const void* payload, size_t len, uint64_t deadlineNs,
                  const std::atomic<bool>* abort) {
  FrameHeader h{kFrameMagic, static_cast<uint32_t>(type), len};
  WEFT_TRY(net::sendAll(fd, &h, sizeof h, deadlineNs, abort));
  if (len) WEFT_TRY(net::sendAll(fd, payload, len, deadlineNs, abort));
  return Status::ok();
}

Status readFrame(int fd, FrameType* type, std::vector<char>* payload, uint64_t deadlineNs,
                 const std::atomic<bool>* abort, const std::string& who) {
  FrameHeader h;
  WEFT_TRY(net::recvAll(fd, &h, sizeof h, deadlineNs, abort));
  if (h.magic != kFrameMagic) {
    return invalidUsage("malformed bootstrap handshake from " + who +
                        " (bad frame magic): is something other than weft connecting to weft's port, "
                        "or are two weft versions mixed?");
  }
  if (h.type < 1 || h.type > 7 || h.len > kMaxFrameBytes) {
    return invalidUsage("malformed bootstrap frame from " + who + " (type " + std::to_string(h.type) +
                        ", length " + std::to_string(h.len) + ")");
  }
  *type = static_cast<FrameType>(h.type);
  payload->resize(h.len);
  if (h.len) WEFT_TRY(net::recvAll(fd, payload->data(), h.len, deadlineNs, abort));
  return Status::ok();
}

}  // namespace weft::bootstrap
