// The C ABI: validate arguments, build the Op, hand it to the engine. No exception or C++ type
// crosses this boundary.
#include "weft/weft.h"

extern "C" {

WEFT_API weftResult_t weftGetVersion(int* version) {
  if (version == nullptr) return weftInvalidArgument;
  *version = WEFT_VERSION_CODE;
  return weftSuccess;
}

WEFT_API const char* weftGetErrorString(weftResult_t result) {
  switch (result) {
    case weftSuccess: return "no error";
    case weftUnhandledCudaError: return "unhandled CUDA error (run with WEFT_DEBUG=INFO for details)";
    case weftSystemError: return "unhandled system error (run with WEFT_DEBUG=INFO for details)";
    case weftInternalError: return "internal error in weft (please report it with WEFT_DEBUG=INFO output)";
    case weftInvalidArgument: return "invalid argument (see weftGetLastError)";
    case weftInvalidUsage: return "invalid usage (see weftGetLastError)";
    case weftRemoteError: return "remote process exited or there was a network error";
    case weftInProgress: return "weft operation in progress";
    case weftTimeout: return "operation timed out (see weftGetLastError)";
    default: return "unknown result code";
  }
}

}  // extern "C"
