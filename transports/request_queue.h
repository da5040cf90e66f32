// The posted requests of one connection, shared by the socket and shm transports: a bounded pool
// (requests are reused, never freed while the connection lives) and the queue of requests in
// posting order. A request is reported done once (test()); reported requests leave the queue only
// from its front, so the indices a transport keeps into the queue (its cursors) stay valid and
// move down by the count retire() returns.
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <vector>

namespace weft::transport {

// Req: default-constructible, with `bool inUse` (taken from the pool, not yet freed), `bool retired`
// (test() reported it done; freed when it reaches the queue's front) and the message fields
// `comm`, `data`, `capacity` (posted size), `size` (message size) and `tag`.
template <class Req>
class RequestQueue {
 public:
  explicit RequestQueue(size_t maxRequests) : max_(maxRequests) {}

  // A send (size = capacity = its size) or a receive (capacity = its size, size learned on arrival)
  // of comm, reset to Req{} otherwise and appended to the queue; nullptr when maxRequests are in
  // flight (the transport's isend/irecv then returns no request: the caller retries later).
  template <class Comm>
  Req* post(Comm* comm, const void* data, size_t size, uint32_t tag, bool send) {
    Req* r = nullptr;
    for (auto& p : pool_) {
      if (!p->inUse) {
        r = p.get();
        break;
      }
    }
    if (!r) {
      if (pool_.size() >= max_) return nullptr;
      pool_.push_back(std::make_unique<Req>());
      r = pool_.back().get();
    }
    *r = Req();
    r->inUse = true;
    r->comm = comm;
    r->data = const_cast<char*>(static_cast<const char*>(data));
    r->capacity = size;
    r->size = send ? size : 0;
    r->tag = tag;
    queue_.push_back(r);
    return r;
  }

  size_t size() const { return queue_.size(); }
  Req* operator[](size_t i) const { return queue_[i]; }
  // Index of a queued request, size() when it is not queued here.
  size_t indexOf(const Req* r) const {
    size_t i = 0;
    while (i < queue_.size() && queue_[i] != r) ++i;
    return i;
  }

  // Marks r reported done and frees the reported requests at the front; returns how many left.
  size_t retire(Req* r) {
    r->retired = true;
    size_t n = 0;
    while (!queue_.empty() && queue_.front()->retired) {
      queue_.front()->inUse = false;
      queue_.pop_front();
      ++n;
    }
    return n;
  }

 private:
  size_t max_;
  std::deque<Req*> queue_;
  std::vector<std::unique_ptr<Req>> pool_;
};

}  // namespace weft::transport
