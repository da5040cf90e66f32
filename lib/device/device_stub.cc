// Device buffers in a build without CUDA: every pointer is host memory, no communicator has device
// state.
#include "lib/device/device.h"

namespace weft::device {

bool built() { return false; }

void forkLock() {}
void forkUnlock(bool) {}

MemKind classify(const void*) { return MemKind::kHost; }

int currentDevice() { return -1; }

void selectDevice(int) {}

Status DeviceComm::create(bootstrap::Bootstrap&, const DeviceCommOptions&, std::unique_ptr<DeviceComm>*,
                          std::string* whyNot) {
  *whyNot = "this libweft was built without CUDA (WEFT_CUDA=OFF or no nvcc)";
  return Status::ok();
}

BufferInfo describe(const void*) { return BufferInfo{}; }

Status openWindow(bootstrap::Bootstrap&, void* buf, size_t size, uint64_t, Window* w, std::string*) {
  w->buf = buf;
  w->size = size;
  return Status::ok();
}

void closeWindow(Window*) {}

Status reduceOnDevice(DataType, RedOp, void*, const void*, const void*, size_t, void*) {
  return invalidUsage("this libweft was built without CUDA");
}

}  // namespace weft::device
