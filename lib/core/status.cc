#include "lib/core/status.h"

#include <cstring>

namespace weft {

Status errnoStatus(const std::string& what, int err) {
  char buf[256];
  const char* s = strerror_r(err, buf, sizeof buf);
  return Status(Code::kSystem, what + ": " + s);
}

const char* codeName(Code code) {
  switch (code) {
    case Code::kSuccess: return "success";
    case Code::kUnhandledCuda: return "unhandled CUDA error";
    case Code::kSystem: return "system error";
    case Code::kInternal: return "internal error";
    case Code::kInvalidArgument: return "invalid argument";
    case Code::kInvalidUsage: return "invalid usage";
    case Code::kRemote: return "remote error";
    case Code::kInProgress: return "in progress";
    case Code::kTimeout: return "timeout";
  }
  return "unknown result code";
}

}  // namespace weft
