// CUDA IPC handles and shared host-mapped segments (see cuda_ipc.h).
#include "transports/cuda_ipc/cuda_ipc.h"

#include <cuda_runtime_api.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

namespace weft::cuda_ipc {
namespace {

std::string cudaWhy(const char* what, cudaError_t e) {
  cudaGetLastError();  // the application's next runtime call must not see our failure
  return std::string(what) + ": " + cudaGetErrorString(e);
}

struct Opened {
  void* ptr = nullptr;
  int refs = 0;
  int device = -1;  // the device current when it was opened (the mapping belongs to its context)
};
std::mutex gMu;
std::map<std::pair<uint64_t, std::string>, Opened> gOpened;  // (owner, handle bytes) -> mapping
struct Segment {
  void* host = nullptr;
  void* dev = nullptr;
  size_t bytes = 0;
};
std::map<std::string, Segment> gSegments;  // name -> mapping

}  // namespace

std::string exportHandle(void* devPtr, Handle* out) {
  static_assert(sizeof(cudaIpcMemHandle_t) == kHandleBytes, "cudaIpcMemHandle_t size");
  cudaIpcMemHandle_t h;
  cudaError_t e = cudaIpcGetMemHandle(&h, devPtr);
  if (e != cudaSuccess) return cudaWhy("cudaIpcGetMemHandle", e);
  std::memcpy(out->bytes, &h, kHandleBytes);
  return "";
}

std::string openHandle(const Handle& h, uint64_t owner, void** out) {
  std::lock_guard<std::mutex> g(gMu);
  const auto key = std::make_pair(owner, std::string(h.bytes, kHandleBytes));
  int cur = -1;
  if (cudaGetDevice(&cur) != cudaSuccess) cudaGetLastError();
  auto it = gOpened.find(key);
  if (it != gOpened.end()) {
    // Opened once per process; a rank of this process on another GPU reaches that mapping through
    // peer access to the GPU whose context opened it.
    const int dev = it->second.device;
    if (cur >= 0 && dev >= 0 && cur != dev) {
      int can = 0;
      if (cudaDeviceCanAccessPeer(&can, cur, dev) != cudaSuccess || !can) {
        cudaGetLastError();
        return "the mapping was opened on GPU " + std::to_string(dev) + " of this process and GPU " + std::to_string(cur) +
               " cannot access it peer-to-peer (cudaDeviceCanAccessPeer)";
      }
      cudaError_t e = cudaDeviceEnablePeerAccess(dev, 0);
      if (e != cudaSuccess && e != cudaErrorPeerAccessAlreadyEnabled) return cudaWhy("cudaDeviceEnablePeerAccess", e);
      cudaGetLastError();
    }
    it->second.refs++;
    *out = it->second.ptr;
    return "";
  }
  cudaIpcMemHandle_t ch;
  std::memcpy(&ch, h.bytes, kHandleBytes);
  void* p = nullptr;
  cudaError_t e = cudaIpcOpenMemHandle(&p, ch, cudaIpcMemLazyEnablePeerAccess);
  if (e != cudaSuccess) return cudaWhy("cudaIpcOpenMemHandle", e);
  gOpened[key] = Opened{p, 1, cur};
  *out = p;
  return "";
}

void closeHandle(void* mapped) {
  std::lock_guard<std::mutex> g(gMu);
  for (auto it = gOpened.begin(); it != gOpened.end(); ++it) {
    if (it->second.ptr != mapped) continue;
    if (--it->second.refs == 0) {
      if (cudaIpcCloseMemHandle(mapped) != cudaSuccess) cudaGetLastError();
      gOpened.erase(it);
    }
    return;
  }
}

std::string sharedSegment(const std::string& name, bool create, size_t bytes, void** host, void** dev) {
  std::lock_guard<std::mutex> g(gMu);
  auto it = gSegments.find(name);
  if (it != gSegments.end()) {
    *host = it->second.host;
    *dev = it->second.dev;
    return "";
  }
  const int fd = shm_open(name.c_str(), create ? (O_RDWR | O_CREAT | O_EXCL) : O_RDWR, 0600);
  if (fd < 0) return "shm_open " + name + ": " + std::strerror(errno);
  if (create && ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const int err = errno;
    close(fd);
    shm_unlink(name.c_str());
    return "ftruncate " + name + ": " + std::strerror(err);
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return "mmap " + name + ": " + std::strerror(errno);
  cudaError_t e = cudaHostRegister(p, bytes, cudaHostRegisterMapped | cudaHostRegisterPortable);
  if (e != cudaSuccess) {
    munmap(p, bytes);
    return cudaWhy("cudaHostRegister (shared abort words)", e);
  }
  void* d = nullptr;
  e = cudaHostGetDevicePointer(&d, p, 0);
  if (e != cudaSuccess) {
    std::string why = cudaWhy("cudaHostGetDevicePointer (shared abort words)", e);
    if (cudaHostUnregister(p) != cudaSuccess) cudaGetLastError();
    munmap(p, bytes);
    return why;
  }
  gSegments[name] = Segment{p, d, bytes};
  *host = p;
  *dev = d;
  return "";
}

void unlinkSegment(const std::string& name) { shm_unlink(name.c_str()); }

void dropSegment(const std::string& name) {
  std::lock_guard<std::mutex> g(gMu);
  auto it = gSegments.find(name);
  if (it == gSegments.end()) return;
  if (cudaHostUnregister(it->second.host) != cudaSuccess) cudaGetLastError();
  munmap(it->second.host, it->second.bytes);
  gSegments.erase(it);
}

}  // namespace weft::cuda_ipc
