#include "lib/engine/channel.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

namespace weft::engine {

SlotBuffer::~SlotBuffer() {
  if (data_) munmap(data_, bytes_);
}

Status SlotBuffer::allocate(size_t bytes) {
  // Page-aligned, zeroed, touched now: no page fault on the data path later.
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) return errnoStatus("cannot allocate " + std::to_string(bytes) + " bytes of staging", errno);
  data_ = static_cast<char*>(p);
  bytes_ = bytes;
  return Status::ok();
}

SendChannel::SendChannel(transport::MessagingTransport* t, transport::SendComm* comm, int nslots, size_t slotBytes)
    : t_(t), comm_(comm), nslots_(nslots), slotBytes_(slotBytes), slots_(static_cast<size_t>(nslots)) {}

SendChannel::~SendChannel() {
  if (mhandle_) (void)t_->deregMr(comm_, mhandle_);
  (void)t_->closeSend(comm_);
}

Status SendChannel::init() {
  WEFT_TRY(buf_.allocate(static_cast<size_t>(nslots_) * slotBytes_));
  return t_->regMr(comm_, buf_.data(), buf_.bytes(), &mhandle_);
}

Status SendChannel::acquire(char** payload) {
  *payload = nullptr;
  if (posted_ - completed_ >= static_cast<uint64_t>(nslots_)) {
    bool progressed;
    WEFT_TRY(progress(&progressed));
    if (posted_ - completed_ >= static_cast<uint64_t>(nslots_)) return Status::ok();
  }
  size_t index = posted_ % static_cast<uint64_t>(nslots_);
  *payload = buf_.data() + index * slotBytes_ + sizeof(OpHeader);
  return Status::ok();
}

Status SendChannel::tryPost(Slot& s, size_t index) {
  WEFT_TRY(t_->isend(comm_, buf_.data() + index * slotBytes_, s.bytes, 0, mhandle_, &s.req));
  s.needPost = s.req == nullptr;
  return Status::ok();
}

Status SendChannel::post(const OpHeader& header, size_t payloadBytes) {
  size_t index = posted_ % static_cast<uint64_t>(nslots_);
  char* base = buf_.data() + index * slotBytes_;
  std::memcpy(base, &header, sizeof header);
  Slot& s = slots_[index];
  s.bytes = sizeof(OpHeader) + payloadBytes;
  ++posted_;
  ++inflight_;
  return tryPost(s, index);
}

Status SendChannel::progress(bool* progressed) {
  *progressed = false;
  // Sends complete in order: test from the oldest.
  while (completed_ < posted_) {
    size_t index = completed_ % static_cast<uint64_t>(nslots_);
    Slot& s = slots_[index];
    if (s.needPost) {
      WEFT_TRY(tryPost(s, index));
      if (s.needPost) return Status::ok();
    }
    bool done = false;
    size_t size = 0;
    WEFT_TRY(t_->test(s.req, &done, &size));
    if (!done) return Status::ok();
    s.req = nullptr;
    ++completed_;
    --inflight_;
    *progressed = true;
  }
  return Status::ok();
}

RecvChannel::RecvChannel(transport::MessagingTransport* t, transport::RecvComm* comm, int nslots, size_t slotBytes)
    : t_(t), comm_(comm), nslots_(nslots), slotBytes_(slotBytes), slots_(static_cast<size_t>(nslots)) {}

RecvChannel::~RecvChannel() {
  if (mhandle_) (void)t_->deregMr(comm_, mhandle_);
  (void)t_->closeRecv(comm_);
}

Status RecvChannel::init() {
  WEFT_TRY(buf_.allocate(static_cast<size_t>(nslots_) * slotBytes_));
  WEFT_TRY(t_->regMr(comm_, buf_.data(), buf_.bytes(), &mhandle_));
  for (size_t i = 0; i < slots_.size(); ++i) WEFT_TRY(postSlot(i));
  return Status::ok();
}

Status RecvChannel::postSlot(size_t index) {
  Slot& s = slots_[index];
  s.ready = false;
  s.bytes = 0;
  WEFT_TRY(t_->irecv(comm_, buf_.data() + index * slotBytes_, slotBytes_, 0, mhandle_, &s.req));
  return Status::ok();
}

Status RecvChannel::peek(const OpHeader** header, const char** payload, bool* ready) {
  *ready = false;
  size_t index = consumed_ % static_cast<uint64_t>(nslots_);
  Slot& s = slots_[index];
  if (!s.ready) {
    if (s.req == nullptr) {
      WEFT_TRY(postSlot(index));
      if (s.req == nullptr) return Status::ok();
    }
    bool done = false;
    WEFT_TRY(t_->test(s.req, &done, &s.bytes));
    if (!done) return Status::ok();
    s.req = nullptr;
    s.ready = true;
  }
  char* base = buf_.data() + index * slotBytes_;
  if (s.bytes < sizeof(OpHeader)) return invalidUsage("a " + std::to_string(s.bytes) + "-byte message is too short for an operation header");
  *header = reinterpret_cast<const OpHeader*>(base);
  if ((*header)->magic != kOpMagic || (*header)->payloadBytes != s.bytes - sizeof(OpHeader))
    return invalidUsage("a message with a corrupt operation header arrived (bad magic or length)");
  *payload = base + sizeof(OpHeader);
  *ready = true;
  return Status::ok();
}

Status RecvChannel::release() {
  size_t index = consumed_ % static_cast<uint64_t>(nslots_);
  ++consumed_;
  return postSlot(index);
}

}  // namespace weft::engine
