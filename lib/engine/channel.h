// Channels over a messaging transport: a slot FIFO between two ranks. The receiver keeps N slots
// with a receive posted in each; the sender fills one of its N staging slots (the reduction writes
// straight into it) and posts it. `posted` and `consumed` count slots on each side; the transport's
// ordered delivery keeps the two FIFOs in step. Every message starts with an OpHeader naming the
// operation, so a collective mismatch is caught on the first message instead of corrupting data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "lib/core/status.h"
#include "transports/transport.h"

namespace weft::engine {

// 64 bytes, so that the payload behind it stays 64-byte aligned.
struct OpHeader {
  uint32_t magic;
  uint32_t seq;    // operation number on this communicator
  uint8_t coll;
  uint8_t dtype;
  uint8_t redop;
  uint8_t algo;
  int32_t root;
  uint64_t count;
  uint64_t payloadBytes;
  unsigned char pad[32];
};
static_assert(sizeof(OpHeader) == 64);
inline constexpr uint32_t kOpMagic = 0x5046574f;

class SlotBuffer {
 public:
  SlotBuffer() = default;
  ~SlotBuffer();
  Status allocate(size_t bytes);
  char* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  SlotBuffer(const SlotBuffer&) = delete;
  SlotBuffer& operator=(const SlotBuffer&) = delete;

 private:
  char* data_ = nullptr;
  size_t bytes_ = 0;
};

class SendChannel {
 public:
  SendChannel(transport::MessagingTransport* t, transport::SendComm* comm, int nslots, size_t slotBytes);
  ~SendChannel();
  Status init();
  // The next free slot (its payload area after the header), or nullptr if all are in flight.
  Status acquire(char** payload);
  // Send the acquired slot: header + payloadBytes.
  Status post(const OpHeader& header, size_t payloadBytes);
  // Test in-flight sends; *progressed when one completed.
  Status progress(bool* progressed);
  bool idle() const { return inflight_ == 0; }
  void pollDescriptors(std::vector<pollfd>* out) { t_->pollDescriptors(comm_, out); }
  size_t stagingBytes() const { return buf_.bytes(); }

 private:
  struct Slot {
    transport::Request* req = nullptr;
    bool needPost = false;  // isend returned no request yet
    size_t bytes = 0;
  };
  Status tryPost(Slot& s, size_t index);
  transport::MessagingTransport* t_;
  transport::SendComm* comm_;
  int nslots_;
  size_t slotBytes_;
  SlotBuffer buf_;
  void* mhandle_ = nullptr;
  std::vector<Slot> slots_;
  uint64_t posted_ = 0;    // slots handed to the transport
  uint64_t completed_ = 0;  // sends the transport finished
  int inflight_ = 0;
};

class RecvChannel {
 public:
  RecvChannel(transport::MessagingTransport* t, transport::RecvComm* comm, int nslots, size_t slotBytes);
  ~RecvChannel();
  Status init();
  // The oldest message, if it has arrived (header and payload size in *bytes).
  Status peek(const OpHeader** header, const char** payload, bool* ready);
  // Consume the oldest message and re-post its slot.
  Status release();
  void pollDescriptors(std::vector<pollfd>* out) { t_->pollDescriptors(comm_, out); }
  size_t stagingBytes() const { return buf_.bytes(); }

 private:
  struct Slot {
    transport::Request* req = nullptr;
    bool ready = false;
    size_t bytes = 0;
  };
  Status postSlot(size_t index);
  transport::MessagingTransport* t_;
  transport::RecvComm* comm_;
  int nslots_;
  size_t slotBytes_;
  SlotBuffer buf_;
  void* mhandle_ = nullptr;
  std::vector<Slot> slots_;
  uint64_t consumed_ = 0;
};

}  // namespace weft::engine
