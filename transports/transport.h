// The messaging transport interface (TCP sockets, InfiniBand/RoCE verbs). It has the shape of
// NCCL's net plugin ABI on purpose -- two-sided, ordered, tagged, non-blocking connect/accept with
// <=128-byte handles exchanged out of band, memory registration, isend/irecv/test -- so that the
// NCCL-net plugin is a thin adapter over the same transports. A transport knows nothing of ranks,
// collectives or the engine: devices, ports and addresses arrive as plain data.
#pragma once

#include <poll.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lib/core/status.h"

namespace weft::transport {

inline constexpr size_t kHandleBytes = 128;
struct Handle {
  unsigned char bytes[kHandleBytes] = {};
};

// Opaque per-transport objects.
struct ListenComm;
struct SendComm;
struct RecvComm;
struct Request;

struct DeviceProperties {
  std::string name;     // "eth0", "mlx5_0:1"
  std::string address;  // human-readable address (IP, GID)
  int speedMbps = 0;
  bool hostMemoryNeedsRegistration = false;  // true: data must be in memory registered with regMr
  size_t maxMessageBytes = 0;
};

class MessagingTransport {
 public:
  virtual ~MessagingTransport() = default;
  virtual const char* name() const = 0;
  virtual int deviceCount() const = 0;
  virtual DeviceProperties device(int dev) const = 0;

  // Start listening on device dev; the handle (<=128 bytes) goes to the peer out of band.
  virtual Status listen(int dev, Handle* handle, ListenComm** out) = 0;
  // Non-blocking: returns ok with *out == nullptr while the connection is being set up; call again
  // with the same handle (the transport may keep connection state in it).
  virtual Status connect(int dev, Handle* handle, SendComm** out) = 0;
  // Non-blocking counterpart of connect.
  virtual Status accept(ListenComm* listen, RecvComm** out) = 0;
  virtual Status closeListen(ListenComm* listen) = 0;
  virtual Status closeSend(SendComm* comm) = 0;
  virtual Status closeRecv(RecvComm* comm) = 0;

  // Memory registration (a no-op handle where the transport does not need it).
  virtual Status regMr(void* comm, void* data, size_t size, void** mhandle) = 0;
  virtual Status deregMr(void* comm, void* mhandle) = 0;

  // Device (GPU) memory for GPUDirect RDMA. The transport tries a dmabuf registration (dmabufFd >=
  // 0: the fd the device driver exported for [data, data + size) at dmabufOffset), then peer memory
  // (registering the device pointer itself), else leaves *mhandle null: the caller stages through
  // host memory. *mode says which ("dmabuf", "peer memory", "host staging") and why the others were
  // refused; the transport also logs it. Release a handle with deregMr.
  virtual Status regMrDevice(void* comm, void* data, size_t size, int dmabufFd, uint64_t dmabufOffset, void** mhandle,
                             std::string* mode) {
    (void)comm, (void)data, (void)size, (void)dmabufFd, (void)dmabufOffset;
    *mhandle = nullptr;
    if (mode) *mode = std::string("host staging: the ") + name() + " transport cannot reach device memory";
    return Status::ok();
  }
  // After a receive into device memory (an mhandle from regMrDevice) completed: make the NIC's writes
  // visible to the device before it reads them. *request == nullptr: nothing to wait for; else test()
  // it like a receive.
  virtual Status iflush(RecvComm* comm, void* data, size_t size, void* mhandle, Request** request) {
    (void)comm, (void)data, (void)size, (void)mhandle;
    *request = nullptr;
    return Status::ok();
  }

  // Non-blocking send/receive; *request == nullptr means "no resources now, try again". Messages on
  // a connection complete in order; a receive buffer may be larger than the message.
  virtual Status isend(SendComm* comm, const void* data, size_t size, uint32_t tag, void* mhandle,
                       Request** request) = 0;
  virtual Status irecv(RecvComm* comm, void* data, size_t size, uint32_t tag, void* mhandle,
                       Request** request) = 0;
  // Drives progress; on done the request is freed and *size holds the bytes transferred.
  virtual Status test(Request* request, bool* done, size_t* size) = 0;

  // Descriptors to wait on while requests on this connection are pending (for an idle wait).
  virtual void pollDescriptors(SendComm* comm, std::vector<pollfd>* out) = 0;
  virtual void pollDescriptors(RecvComm* comm, std::vector<pollfd>* out) = 0;
};

// The TCP socket transport (always available).
std::unique_ptr<MessagingTransport> createSocketTransport(Status* status);

}  // namespace weft::transport
