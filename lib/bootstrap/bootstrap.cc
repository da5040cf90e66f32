#include "lib/bootstrap/bootstrap.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "lib/bootstrap/host_id.h"
#include "lib/bootstrap/wire.h"
#include "lib/core/config.h"
#include "lib/core/log.h"
#include "lib/core/util.h"
#include "lib/core/version.h"

namespace weft::bootstrap {

namespace {
constexpr uint64_t kMsPerNs = 1000000ull;
// Tags at or above this are the bootstrap's own (all-gather, barrier).
constexpr uint64_t kInternalTag = 1ull << 63;

bool sameSecret(const unsigned char* a, const unsigned char* b) {
  unsigned char d = 0;
  for (size_t i = 0; i < kSecretBytes; ++i) d |= static_cast<unsigned char>(a[i] ^ b[i]);
  return d == 0;
}
}  // namespace

Status Bootstrap::create(const UniqueId& id, int nranks, int rank, const std::atomic<bool>* abort,
                         uint64_t initTimeoutMs, std::unique_ptr<Bootstrap>* out,
                         const std::atomic<bool>* initInterrupt) {
  std::unique_ptr<Bootstrap> b(new Bootstrap());
  b->rank_ = rank;
  b->nranks_ = nranks;
  b->abort_ = abort;
  std::memcpy(b->secret_, id.secret, kSecretBytes);
  const uint64_t timeoutMs = initTimeoutMs;
  b->initTimeoutMs_ = initTimeoutMs;
  // The root's verdict (naming missing ranks) comes at its own timeout; wait a little longer.
  uint64_t deadline = nowNs() + (timeoutMs + 1500) * kMsPerNs;

  std::vector<net::Interface> ifs;
  WEFT_TRY(net::chooseInterfaces(&ifs));
  // Listen on the interface that has the root's address family, preferring the root's interface.
  net::SockAddr bindAddr = ifs[0].addr;
  for (auto& i : ifs)
    if (i.addr.family() == id.root.family()) {
      bindAddr = i.addr;
      break;
    }
  net::SockAddr bound;
  WEFT_TRY(net::listenOn(bindAddr, &b->listenFd_, &bound));

  const std::atomic<bool>* stop = initInterrupt ? initInterrupt : abort;
  int fd = -1;
  Status s = net::connectTo(id.root, deadline, stop, &fd);
  if (!s) {
    return Status(s.code() == Code::kInvalidUsage ? s.code() : Code::kSystem,
                  "cannot reach the rendezvous at " + id.root.str() + " named by the unique id (" + s.message() +
                      "): is the process that called weftGetUniqueId still running, and is the address reachable "
                      "from this host (WEFT_SOCKET_IFNAME)?");
  }
  HelloBody h{};
  std::memcpy(h.secret, id.secret, kSecretBytes);
  h.libraryVersion = static_cast<uint32_t>(kLibraryVersion);
  h.nranks = nranks;
  bound.toWire(h.self.addr);
  h.self.hostId = hostId();
  h.self.pid = getpid();
  h.self.rank = rank;
  std::string hn = hostName();
  std::strncpy(h.self.hostname, hn.c_str(), kHostNameBytes - 1);
  s = writeFrame(fd, FrameType::kHello, &h, sizeof h, deadline, stop);
  FrameType type = FrameType::kReject;
  std::vector<char> body;
  if (s) s = readFrame(fd, &type, &body, deadline, stop, "the rendezvous " + id.root.str());
  close(fd);
  if (!s) {
    if (s.code() == Code::kTimeout) {
      return timeoutError("timed out after WEFT_INIT_TIMEOUT_MS=" + std::to_string(timeoutMs) +
                          " ms waiting for all " + std::to_string(nranks) + " ranks at the rendezvous " +
                          id.root.str() + ": some rank never arrived");
    }
    return s.withContext("joining the rendezvous at " + id.root.str());
  }
  if (type == FrameType::kReject) {
    std::string why(body.begin(), body.end());
    bool timedOut = why.find("never arrived") != std::string::npos;
    return Status(timedOut ? Code::kTimeout : Code::kInvalidUsage, "the rendezvous refused this rank: " + why);
  }
  if (type != FrameType::kTable || body.size() != sizeof(RankRecord) * static_cast<size_t>(nranks)) {
    return invalidUsage("malformed rendezvous reply from " + id.root.str());
  }
  b->peers_.resize(static_cast<size_t>(nranks));
  b->departed_.assign(static_cast<size_t>(nranks), false);
  for (int r = 0; r < nranks; ++r) {
    RankRecord rec;
    std::memcpy(&rec, body.data() + sizeof(RankRecord) * static_cast<size_t>(r), sizeof rec);
    rec.hostname[kHostNameBytes - 1] = '\0';
    PeerInfo& p = b->peers_[static_cast<size_t>(r)];
    WEFT_TRY(net::SockAddr::fromWire(rec.addr, &p.addr).withContext("rendezvous table entry for rank " + std::to_string(r)));
    p.hostId = rec.hostId;
    p.pid = rec.pid;
    p.hostname = rec.hostname;
  }
  if (pipe2(b->wakeFd_, O_CLOEXEC) != 0) return errnoStatus("pipe2", errno);
  try {
    b->service_ = std::thread([raw = b.get()] { raw->serve(); });
  } catch (const std::exception& e) {
    return systemError(std::string("cannot start the bootstrap thread: ") + e.what());
  }
  WEFT_INFO(BOOT, "rank %d/%d joined; bootstrap service on %s", rank, nranks, bound.str().c_str());
  *out = std::move(b);
  return Status::ok();
}

Bootstrap::~Bootstrap() {
  // Stop the service thread first (it may start broadcasts), then finish the broadcasts, then say
  // goodbye on every outgoing connection so the peers do not take this exit for a crash.
  stopping_.store(true);
  if (service_.joinable()) {
    char c = 1;
    (void)!write(wakeFd_[1], &c, 1);
    service_.join();
  }
  {
    std::lock_guard<std::mutex> g(bgMu_);
    for (auto& t : background_) t.join();
    background_.clear();
  }
  {
    std::lock_guard<std::mutex> g(outMu_);
    for (auto& [peer, o] : outgoing_) {
      std::lock_guard<std::mutex> og(o->mu);
      if (o->fd >= 0) {
        (void)writeFrame(o->fd, FrameType::kBye, nullptr, 0, nowNs() + 200 * kMsPerNs, nullptr);
        close(o->fd);
        o->fd = -1;
      }
    }
  }
  for (auto& in : incoming_)
    if (in.fd >= 0) close(in.fd);
  if (listenFd_ >= 0) close(listenFd_);
  if (wakeFd_[0] >= 0) close(wakeFd_[0]);
  if (wakeFd_[1] >= 0) close(wakeFd_[1]);
}

std::string Bootstrap::describe(int r) const {
  if (r < 0 || r >= nranks_) return "rank " + std::to_string(r);
  const PeerInfo& p = peers_[static_cast<size_t>(r)];
  return "rank " + std::to_string(r) + " (pid " + std::to_string(p.pid) + " on " + p.hostname + ")";
}

void Bootstrap::recordError(Code code, const std::string& reason) {
  std::lock_guard<std::mutex> g(errMu_);
  if (errCode_.load() != 0) return;
  errReason_ = reason;
  errCode_.store(static_cast<int>(code), std::memory_order_release);
}

void Bootstrap::setFailureHook(std::function<void(int)> hook) {
  std::lock_guard<std::mutex> g(hookMu_);
  failureHook_ = std::move(hook);
}

void Bootstrap::runFailureHook(int rank) {
  std::lock_guard<std::mutex> g(hookMu_);
  if (failureHook_) failureHook_(rank);
}

Status Bootstrap::error() const {
  std::lock_guard<std::mutex> g(errMu_);
  if (errCode_.load() == 0) return Status::ok();
  return Status(static_cast<Code>(errCode_.load()), errReason_);
}

void Bootstrap::serve() {
  for (;;) {
    std::vector<pollfd> fds;
    fds.push_back({wakeFd_[0], POLLIN, 0});
    fds.push_back({listenFd_, POLLIN, 0});
    for (auto& in : incoming_) fds.push_back({in.fd, POLLIN, 0});
    int r = poll(fds.data(), fds.size(), 1000);
    if (stopping_.load()) return;
    if (r <= 0) continue;
    if (fds[1].revents & POLLIN) {
      int fd = accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        net::setNoDelay(fd);
        incoming_.push_back(Incoming{fd, -1, false});
      }
    }
    for (size_t i = 2; i < fds.size(); ++i)
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) handleReadable(i - 2);
    std::vector<Incoming> keep;
    for (auto& in : incoming_)
      if (in.fd >= 0) keep.push_back(in);
    incoming_.swap(keep);
  }
}

void Bootstrap::handleReadable(size_t index) {
  Incoming& in = incoming_[index];
  FrameType type;
  std::vector<char> body;
  std::string who = in.rank >= 0 ? describe(in.rank) : "an unidentified peer";
  Status s = readFrame(in.fd, &type, &body, nowNs() + 5000 * kMsPerNs, nullptr, who);
  if (!s) {
    if (in.rank >= 0 && !in.bye && !stopping_.load()) {
      std::string why = describe(in.rank) +
                        " exited or crashed without destroying its communicator (its bootstrap connection closed)";
      WEFT_WARN(BOOT, "%s", why.c_str());
      bool first = !hasError();
      recordError(Code::kRemote, why);
      boxCv_.notify_all();
      runFailureHook(in.rank);
      if (first) broadcastError(Code::kRemote, why);  // others may not be connected to it
    } else if (in.rank < 0) {
      WEFT_WARN(BOOT, "dropped a bootstrap connection: %s", s.message().c_str());
    }
    close(in.fd);
    in.fd = -1;
    return;
  }
  if (in.rank < 0) {
    PeerHelloBody ph;
    if (type != FrameType::kPeerHello || body.size() != sizeof ph) {
      WEFT_WARN(BOOT, "refused a bootstrap connection whose first frame is not a weft peer hello");
      close(in.fd);
      in.fd = -1;
      return;
    }
    std::memcpy(&ph, body.data(), sizeof ph);
    if (!sameSecret(ph.secret, secret_) || ph.fromRank < 0 || ph.fromRank >= nranks_ || ph.nranks != nranks_) {
      WEFT_WARN(BOOT, "refused a bootstrap connection from a process of another communicator (wrong secret or size)");
      close(in.fd);
      in.fd = -1;
      return;
    }
    in.rank = ph.fromRank;
    return;
  }
  switch (type) {
    case FrameType::kMsg: {
      if (body.size() < 8) break;
      uint64_t tag;
      std::memcpy(&tag, body.data(), 8);
      std::vector<char> data(body.begin() + 8, body.end());
      {
        std::lock_guard<std::mutex> g(boxMu_);
        mailbox_[{in.rank, tag}].push_back(std::move(data));
      }
      boxCv_.notify_all();
      return;
    }
    case FrameType::kAbort: {
      if (body.size() < 4) break;
      int32_t code;
      std::memcpy(&code, body.data(), 4);
      std::string reason(body.begin() + 4, body.end());
      if (code <= 0 || code > static_cast<int>(Code::kTimeout)) code = static_cast<int>(Code::kRemote);
      recordError(static_cast<Code>(code), reason);
      boxCv_.notify_all();
      runFailureHook(-1);
      return;
    }
    case FrameType::kBye: {
      in.bye = true;
      std::lock_guard<std::mutex> g(boxMu_);
      departed_[static_cast<size_t>(in.rank)] = true;
      boxCv_.notify_all();
      return;
    }
    default:
      break;
  }
  WEFT_WARN(BOOT, "unexpected bootstrap frame type %u from %s; closing", static_cast<unsigned>(type), who.c_str());
  close(in.fd);
  in.fd = -1;
}

Status Bootstrap::connection(int peer, int* fd, std::mutex** mu) {
  Outgoing* o;
  {
    std::lock_guard<std::mutex> g(outMu_);
    auto& slot = outgoing_[peer];
    if (!slot) slot = std::make_unique<Outgoing>();
    o = slot.get();
  }
  *mu = &o->mu;
  o->mu.lock();
  if (o->fd < 0) {
    int f = -1;
    Status s = net::connectTo(peers_[static_cast<size_t>(peer)].addr, nowNs() + initTimeoutMs_ * kMsPerNs, abort_, &f);
    if (s) {
      PeerHelloBody ph{};
      std::memcpy(ph.secret, secret_, kSecretBytes);
      ph.fromRank = rank_;
      ph.nranks = nranks_;
      s = writeFrame(f, FrameType::kPeerHello, &ph, sizeof ph, nowNs() + 5000 * kMsPerNs, abort_);
      if (!s) close(f);
    }
    if (!s) {
      o->mu.unlock();
      return Status(Code::kRemote, "cannot reach " + describe(peer) + " over the bootstrap: " + s.message());
    }
    o->fd = f;
  }
  *fd = o->fd;
  return Status::ok();  // caller unlocks *mu
}

Status Bootstrap::send(int peer, uint64_t tag, const void* data, size_t len) {
  int fd;
  std::mutex* mu;
  WEFT_TRY(connection(peer, &fd, &mu));
  std::vector<char> body(8 + len);
  std::memcpy(body.data(), &tag, 8);
  if (len) std::memcpy(body.data() + 8, data, len);
  Status s = writeFrame(fd, FrameType::kMsg, body.data(), body.size(), nowNs() + 30000 * kMsPerNs, abort_);
  mu->unlock();
  if (!s) return Status(Code::kRemote, "bootstrap message to " + describe(peer) + " failed: " + s.message());
  return Status::ok();
}

Status Bootstrap::recv(int peer, uint64_t tag, std::vector<char>* out, uint64_t deadlineNs) {
  std::unique_lock<std::mutex> lk(boxMu_);
  for (;;) {
    auto it = mailbox_.find({peer, tag});
    if (it != mailbox_.end() && !it->second.empty()) {
      *out = std::move(it->second.front());
      it->second.pop_front();
      if (it->second.empty()) mailbox_.erase(it);
      return Status::ok();
    }
    if (hasError()) return error();
    if (abort_ && abort_->load()) return invalidUsage("the communicator was aborted");
    if (departed_[static_cast<size_t>(peer)])
      return remoteError(describe(peer) + " has destroyed its communicator and cannot take part any more");
    if (deadlineNs && nowNs() > deadlineNs)
      return timeoutError("timed out waiting for a bootstrap message from " + describe(peer));
    boxCv_.wait_for(lk, std::chrono::milliseconds(10));
  }
}

bool Bootstrap::departed(int peer) {
  std::lock_guard<std::mutex> g(boxMu_);
  return departed_[static_cast<size_t>(peer)];
}

Status Bootstrap::allGather(void* data, size_t bytes, uint64_t deadlineNs) {
  if (nranks_ == 1) return Status::ok();
  uint64_t tag = kInternalTag | (gatherSeq_++ << 1);
  auto* base = static_cast<char*>(data);
  int next = (rank_ + 1) % nranks_, prev = (rank_ + nranks_ - 1) % nranks_;
  // Ring: forward the block received in the previous step.
  int sendBlock = rank_;
  for (int step = 0; step < nranks_ - 1; ++step) {
    WEFT_TRY(send(next, tag, base + static_cast<size_t>(sendBlock) * bytes, bytes));
    int recvBlock = (rank_ - step - 1 + nranks_) % nranks_;
    std::vector<char> got;
    WEFT_TRY(recv(prev, tag, &got, deadlineNs));
    if (got.size() != bytes)
      return invalidUsage("all-gather size mismatch with " + describe(prev) + ": " + std::to_string(got.size()) +
                          " bytes instead of " + std::to_string(bytes));
    std::memcpy(base + static_cast<size_t>(recvBlock) * bytes, got.data(), bytes);
    sendBlock = recvBlock;
  }
  return Status::ok();
}

Status Bootstrap::barrier(uint64_t deadlineNs) {
  std::vector<char> dummy(static_cast<size_t>(nranks_));
  return allGather(dummy.data(), 1, deadlineNs);
}

void Bootstrap::broadcastError(Code code, const std::string& reason) {
  std::lock_guard<std::mutex> g(bgMu_);
  background_.emplace_back([this, code, reason] {
    std::vector<char> body(4 + reason.size());
    int32_t c = static_cast<int32_t>(code);
    std::memcpy(body.data(), &c, 4);
    std::memcpy(body.data() + 4, reason.data(), reason.size());
    for (int p = 0; p < nranks_; ++p) {
      if (p == rank_) continue;
      Outgoing* o;
      {
        std::lock_guard<std::mutex> og(outMu_);
        auto& slot = outgoing_[p];
        if (!slot) slot = std::make_unique<Outgoing>();
        o = slot.get();
      }
      std::lock_guard<std::mutex> lk(o->mu);
      if (o->fd < 0) {
        int f = -1;
        if (!net::connectTo(peers_[static_cast<size_t>(p)].addr, nowNs() + 300 * kMsPerNs, nullptr, &f)) continue;
        PeerHelloBody ph{};
        std::memcpy(ph.secret, secret_, kSecretBytes);
        ph.fromRank = rank_;
        ph.nranks = nranks_;
        if (!writeFrame(f, FrameType::kPeerHello, &ph, sizeof ph, nowNs() + 300 * kMsPerNs, nullptr)) {
          close(f);
          continue;
        }
        o->fd = f;
      }
      (void)writeFrame(o->fd, FrameType::kAbort, body.data(), body.size(), nowNs() + 300 * kMsPerNs, nullptr);
    }
  });
}

}  // namespace weft::bootstrap
