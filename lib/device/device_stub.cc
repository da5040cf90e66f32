// Device buffers in a build without CUDA: every pointer is host memory, no communicator has device
// state.
#include "lib/device/device.h"

namespace weft::device {

bool built() { return false; }

void forkLock() {}
void forkUnlock() {}

MemKind classify(const void*) { return MemKind::kHost; }

Status DeviceComm::create(bootstrap::Bootstrap&, const DeviceCommOptions&, std::unique_ptr<DeviceComm>*,
                          std::string* whyNot) {
  *whyNot = "this libweft was built without CUDA (WEFT_CUDA=OFF or no nvcc)";
  return Status::ok();
}

Status reduceOnDevice(DataType, RedOp, void*, const void*, const void*, size_t, void*) {
  return invalidUsage("this libweft was built without CUDA");
}

}  // namespace weft::device
