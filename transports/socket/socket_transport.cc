// TCP socket transport: a connection is WEFT_SOCKET_NSOCKS sockets; every message's header (tag,
// size) and small payloads travel on socket 0, payloads of 64 KiB and more are striped across all
// sockets. Each socket works through the connection's requests in order, independently, so a slow
// socket never blocks another's progress. Everything is non-blocking.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>

#include <cerrno>
#include <cstring>
#include <deque>
#include <map>

#include "lib/core/config.h"
#include "lib/core/log.h"
#include "lib/core/net.h"
#include "lib/core/util.h"
#include "transports/request_queue.h"
#include "transports/transport.h"

namespace weft::transport {

struct ListenComm {};
struct SendComm {};
struct RecvComm {};
struct Request {};

namespace {

constexpr uint32_t kHandleMagic = 0x534b5457;  // "WTKS"
constexpr uint32_t kHelloMagic = 0x4f4c4548;
constexpr int kMaxSocks = 16;
constexpr size_t kStripeMin = 64 * 1024;
constexpr size_t kMaxRequests = 128;

struct HandleLayout {
  uint32_t magic;
  uint32_t pad;
  unsigned char addr[net::SockAddr::kWireBytes];
  uint64_t listenId;
  void* connectState;  // set by connect() on the connecting side only
};
static_assert(sizeof(HandleLayout) <= kHandleBytes);

struct Hello {
  uint32_t magic;
  uint32_t index;
  uint32_t nsocks;
  uint32_t pad;
  uint64_t listenId;
  uint64_t nonce;
};

struct MsgHeader {
  uint32_t tag;
  uint32_t magic;
  uint64_t size;
};
constexpr uint32_t kMsgMagic = 0x4753454d;

struct Comm;

struct SockRequest : Request {
  Comm* comm = nullptr;
  bool inUse = false;
  bool retired = false;  // test() reported done; freed when it reaches the queue's front
  char* data = nullptr;
  size_t capacity = 0;  // posted size (recv) or message size (send)
  size_t size = 0;      // message size, known on recv after the header
  uint32_t tag = 0;
  bool headerKnown = false;
  MsgHeader header{};
  size_t headerDone = 0;
  size_t partDone[kMaxSocks] = {};
};

struct Comm : SendComm, RecvComm {
  bool sending = false;
  int nsocks = 0;
  int fds[kMaxSocks];
  RequestQueue<SockRequest> queue{kMaxRequests};  // posted, in order
  size_t cursor[kMaxSocks] = {};   // per socket: index in queue of the request it works on
  Status error;
  std::string peer;
};

struct ConnectState {
  int nsocks = 0;
  int fds[kMaxSocks];
  bool connected[kMaxSocks] = {};
  bool helloSent[kMaxSocks] = {};
  uint64_t nonce = 0;
  uint64_t listenId = 0;
  net::SockAddr addr;
};

struct Listen : ListenComm {
  int fd = -1;
  uint64_t id = 0;
  std::vector<int> pending;  // accepted, hello not yet read
  std::map<uint64_t, std::vector<std::pair<Hello, int>>> groups;
};

void partRange(size_t size, int nsocks, int i, size_t* off, size_t* len) {
  if (size < kStripeMin || nsocks == 1) {
    *off = 0;
    *len = i == 0 ? size : 0;
    return;
  }
  size_t k = static_cast<size_t>(nsocks);
  size_t a = size * static_cast<size_t>(i) / k, b = size * static_cast<size_t>(i + 1) / k;
  *off = a;
  *len = b - a;
}

Status ioError(Comm* c, const char* what, int err) {
  if (err == 0 || err == ECONNRESET || err == EPIPE)
    c->error = remoteError("the socket connection to " + c->peer + " was closed by the peer during " + what +
                           " (the peer process probably exited or crashed)");
  else
    c->error = errnoStatus(std::string("socket ") + what + " with " + c->peer, err);
  return c->error;
}

// Progress socket i of a sending comm.
Status progressSend(Comm* c, int i) {
  for (;;) {
    if (c->cursor[i] >= c->queue.size()) return Status::ok();
    SockRequest* r = c->queue[c->cursor[i]];
    size_t off, len;
    partRange(r->size, c->nsocks, i, &off, &len);
    if (i == 0 && r->headerDone < sizeof(MsgHeader)) {
      // Header and socket 0's part in one system call (and one segment for small messages).
      iovec iov[2] = {{reinterpret_cast<char*>(&r->header) + r->headerDone, sizeof(MsgHeader) - r->headerDone},
                      {r->data + off, len}};
      msghdr mh{};
      mh.msg_iov = iov;
      mh.msg_iovlen = len ? 2 : 1;
      ssize_t n = sendmsg(c->fds[0], &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return Status::ok();
        return ioError(c, "send", errno);
      }
      size_t h = std::min(static_cast<size_t>(n), sizeof(MsgHeader) - r->headerDone);
      r->headerDone += h;
      r->partDone[0] += static_cast<size_t>(n) - h;
      if (r->headerDone < sizeof(MsgHeader)) return Status::ok();
    }
    while (r->partDone[i] < len) {
      ssize_t n = send(c->fds[i], r->data + off + r->partDone[i], len - r->partDone[i], MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return Status::ok();
        return ioError(c, "send", errno);
      }
      r->partDone[i] += static_cast<size_t>(n);
    }
    ++c->cursor[i];
  }
}

Status progressRecv(Comm* c, int i) {
  for (;;) {
    if (c->cursor[i] >= c->queue.size()) return Status::ok();
    SockRequest* r = c->queue[c->cursor[i]];
    if (i == 0 && !r->headerKnown) {
      ssize_t n = recv(c->fds[0], reinterpret_cast<char*>(&r->header) + r->headerDone,
                       sizeof(MsgHeader) - r->headerDone, MSG_DONTWAIT);
      if (n == 0) return ioError(c, "receive", 0);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return Status::ok();
        return ioError(c, "receive", errno);
      }
      r->headerDone += static_cast<size_t>(n);
      if (r->headerDone < sizeof(MsgHeader)) return Status::ok();
      if (r->header.magic != kMsgMagic) {
        c->error = invalidUsage("corrupt message header on the socket connection from " + c->peer);
        return c->error;
      }
      if (r->header.tag != r->tag) {
        c->error = invalidUsage("message tag " + std::to_string(r->header.tag) + " from " + c->peer +
                                " does not match the posted receive's tag " + std::to_string(r->tag));
        return c->error;
      }
      if (r->header.size > r->capacity) {
        c->error = invalidUsage("a " + std::to_string(r->header.size) + "-byte message from " + c->peer +
                                " does not fit the posted " + std::to_string(r->capacity) + "-byte receive");
        return c->error;
      }
      r->size = r->header.size;
      r->headerKnown = true;
    }
    if (!r->headerKnown) return Status::ok();  // socket i > 0 waits for socket 0's header
    size_t off, len;
    partRange(r->size, c->nsocks, i, &off, &len);
    while (r->partDone[i] < len) {
      ssize_t n = recv(c->fds[i], r->data + off + r->partDone[i], len - r->partDone[i], MSG_DONTWAIT);
      if (n == 0) return ioError(c, "receive", 0);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return Status::ok();
        return ioError(c, "receive", errno);
      }
      r->partDone[i] += static_cast<size_t>(n);
    }
    ++c->cursor[i];
  }
}

// Progress every socket (socket 0 first: on the receive side it learns the sizes the others need).
// A failed socket does not stop the others: messages already on their way still complete, and the
// error is reported for the requests that cannot.
Status progress(Comm* c) {
  Status first;
  for (int i = 0; i < c->nsocks; ++i) {
    Status s = c->sending ? progressSend(c, i) : progressRecv(c, i);
    if (!s && first.isOk()) first = s;
  }
  return first;
}

bool complete(const Comm* c, size_t index) {
  for (int i = 0; i < c->nsocks; ++i)
    if (c->cursor[i] <= index) return false;
  return true;
}

class SocketTransport final : public MessagingTransport {
 public:
  Status init() {
    WEFT_TRY(net::chooseInterfaces(&ifs_));
    int64_t n = config::getInt("WEFT_SOCKET_NSOCKS");
    if (n < 1 || n > kMaxSocks)
      return invalidArgument("WEFT_SOCKET_NSOCKS=" + std::to_string(n) + " is out of range: use 1 to 16");
    nsocks_ = static_cast<int>(n);
    return Status::ok();
  }

  const char* name() const override { return "socket"; }
  int deviceCount() const override { return static_cast<int>(ifs_.size()); }
  DeviceProperties device(int dev) const override {
    DeviceProperties p;
    p.name = ifs_[static_cast<size_t>(dev)].name;
    p.address = ifs_[static_cast<size_t>(dev)].addr.str();
    p.hostMemoryNeedsRegistration = false;
    p.maxMessageBytes = 1ull << 40;
    return p;
  }

  Status listen(int dev, Handle* handle, ListenComm** out) override {
    if (dev < 0 || dev >= deviceCount()) return invalidArgument("socket device " + std::to_string(dev) + " does not exist");
    auto l = std::make_unique<Listen>();
    net::SockAddr bound;
    WEFT_TRY(net::listenOn(ifs_[static_cast<size_t>(dev)].addr, &l->fd, &bound));
    WEFT_TRY(net::setNonBlocking(l->fd, true));
    WEFT_TRY(randomBytes(&l->id, sizeof l->id));
    HandleLayout h{};
    h.magic = kHandleMagic;
    bound.toWire(h.addr);
    h.listenId = l->id;
    std::memset(handle->bytes, 0, kHandleBytes);
    std::memcpy(handle->bytes, &h, sizeof h);
    *out = l.release();
    return Status::ok();
  }

  Status connect(int dev, Handle* handle, SendComm** out) override {
    *out = nullptr;
    HandleLayout h;
    std::memcpy(&h, handle->bytes, sizeof h);
    if (h.magic != kHandleMagic) return invalidUsage("malformed socket-transport handle (bad magic)");
    auto* st = static_cast<ConnectState*>(h.connectState);
    if (st == nullptr) {
      st = new ConnectState();
      Status s = net::SockAddr::fromWire(h.addr, &st->addr);
      if (!s) {
        delete st;
        return s.withContext("socket-transport handle");
      }
      st->nsocks = nsocks_;
      st->listenId = h.listenId;
      (void)randomBytes(&st->nonce, sizeof st->nonce);
      for (int i = 0; i < st->nsocks; ++i) st->fds[i] = -1;
      h.connectState = st;
      std::memcpy(handle->bytes, &h, sizeof h);
    }
    auto fail = [&](Status s) {
      for (int i = 0; i < st->nsocks; ++i)
        if (st->fds[i] >= 0) close(st->fds[i]);
      delete st;
      h.connectState = nullptr;
      std::memcpy(handle->bytes, &h, sizeof h);
      return s;
    };
    bool all = true;
    for (int i = 0; i < st->nsocks; ++i) {
      if (st->fds[i] < 0) {
        int fd = socket(st->addr.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) return fail(errnoStatus("socket", errno));
        st->fds[i] = fd;
        int r = ::connect(fd, reinterpret_cast<const sockaddr*>(&st->addr.ss), st->addr.len);
        if (r == 0) st->connected[i] = true;
        else if (errno != EINPROGRESS) return fail(errnoStatus("connect to " + st->addr.str(), errno));
      }
      if (!st->connected[i]) {
        pollfd p{st->fds[i], POLLOUT, 0};
        if (poll(&p, 1, 0) <= 0) {
          all = false;
          continue;
        }
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(st->fds[i], SOL_SOCKET, SO_ERROR, &err, &l);
        if (err != 0) return fail(errnoStatus("connect to " + st->addr.str(), err));
        st->connected[i] = true;
      }
      if (!st->helloSent[i]) {
        Hello hello{kHelloMagic, static_cast<uint32_t>(i), static_cast<uint32_t>(st->nsocks), 0, st->listenId, st->nonce};
        // 32 bytes on a fresh socket always fit the send buffer.
        ssize_t n = send(st->fds[i], &hello, sizeof hello, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n != static_cast<ssize_t>(sizeof hello)) return fail(errnoStatus("socket hello to " + st->addr.str(), errno));
        st->helloSent[i] = true;
        net::setNoDelay(st->fds[i]);
      }
    }
    if (!all) return Status::ok();
    auto* c = new Comm();
    c->sending = true;
    c->nsocks = st->nsocks;
    for (int i = 0; i < c->nsocks; ++i) c->fds[i] = st->fds[i];
    c->peer = st->addr.str();
    delete st;
    h.connectState = nullptr;
    std::memcpy(handle->bytes, &h, sizeof h);
    *out = c;
    return Status::ok();
  }

  Status accept(ListenComm* listen, RecvComm** out) override {
    *out = nullptr;
    auto* l = static_cast<Listen*>(listen);
    for (;;) {
      sockaddr_storage ss;
      socklen_t len = sizeof ss;
      int fd = accept4(l->fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) break;
      l->pending.push_back(fd);
    }
    for (size_t k = 0; k < l->pending.size();) {
      int fd = l->pending[k];
      Hello hello;
      ssize_t n = recv(fd, &hello, sizeof hello, MSG_PEEK | MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        ++k;
        continue;
      }
      if (n < static_cast<ssize_t>(sizeof hello)) {
        if (n > 0) {  // partial hello: wait for the rest
          ++k;
          continue;
        }
        close(fd);  // closed or failed before its hello
        l->pending.erase(l->pending.begin() + static_cast<long>(k));
        continue;
      }
      (void)!recv(fd, &hello, sizeof hello, MSG_DONTWAIT);
      l->pending.erase(l->pending.begin() + static_cast<long>(k));
      if (hello.magic != kHelloMagic || hello.listenId != l->id || hello.nsocks < 1 || hello.nsocks > kMaxSocks ||
          hello.index >= hello.nsocks) {
        WEFT_WARN(NET, "socket transport: refused a connection with a malformed or foreign hello");
        close(fd);
        continue;
      }
      net::setNoDelay(fd);
      auto& g = l->groups[hello.nonce];
      g.emplace_back(hello, fd);
      if (g.size() == hello.nsocks) {
        auto* c = new Comm();
        c->sending = false;
        c->nsocks = static_cast<int>(hello.nsocks);
        for (auto& [h, f] : g) c->fds[h.index] = f;
        sockaddr_storage peer;
        socklen_t pl = sizeof peer;
        net::SockAddr pa;
        if (getpeername(c->fds[0], reinterpret_cast<sockaddr*>(&peer), &pl) == 0) {
          std::memcpy(&pa.ss, &peer, pl);
          pa.len = pl;
          c->peer = pa.str();
        }
        l->groups.erase(hello.nonce);
        *out = c;
        return Status::ok();
      }
    }
    return Status::ok();
  }

  Status closeListen(ListenComm* listen) override {
    auto* l = static_cast<Listen*>(listen);
    if (!l) return Status::ok();
    for (int fd : l->pending) close(fd);
    for (auto& [nonce, g] : l->groups)
      for (auto& [h, fd] : g) close(fd);
    if (l->fd >= 0) close(l->fd);
    delete l;
    return Status::ok();
  }
  Status closeSend(SendComm* comm) override { return closeComm(static_cast<Comm*>(comm)); }
  Status closeRecv(RecvComm* comm) override { return closeComm(static_cast<Comm*>(comm)); }

  Status regMr(void*, void*, size_t, void** mhandle) override {
    *mhandle = nullptr;
    return Status::ok();
  }
  Status deregMr(void*, void*) override { return Status::ok(); }

  Status isend(SendComm* comm, const void* data, size_t size, uint32_t tag, void*, Request** request) override {
    auto* c = static_cast<Comm*>(comm);
    *request = nullptr;
    SockRequest* r = c->queue.post(c, data, size, tag, true);
    if (!r) return Status::ok();
    r->header = MsgHeader{tag, kMsgMagic, size};
    r->headerKnown = true;
    *request = r;
    (void)progress(c);  // errors surface in test()
    return Status::ok();
  }

  Status irecv(RecvComm* comm, void* data, size_t size, uint32_t tag, void*, Request** request) override {
    auto* c = static_cast<Comm*>(comm);
    *request = nullptr;
    SockRequest* r = c->queue.post(c, data, size, tag, false);
    if (!r) return Status::ok();
    *request = r;
    return Status::ok();
  }

  Status test(Request* request, bool* done, size_t* size) override {
    auto* r = static_cast<SockRequest*>(request);
    Comm* c = r->comm;
    *done = false;
    // A peer that closes after its last message is not an error for the messages that arrived.
    Status ps = progress(c);
    const size_t index = c->queue.indexOf(r);
    if (index == c->queue.size()) return internalError("socket transport: test() on an unknown request");
    if (!complete(c, index)) return ps;
    *done = true;
    if (size) *size = r->size;
    // Retire completed requests from the front (their cursors move with them).
    const size_t left = c->queue.retire(r);
    for (int i = 0; i < c->nsocks; ++i) c->cursor[i] -= left;
    return Status::ok();
  }

  void pollDescriptors(SendComm* comm, std::vector<pollfd>* out) override {
    auto* c = static_cast<Comm*>(comm);
    for (int i = 0; i < c->nsocks; ++i)
      if (c->cursor[i] < c->queue.size()) out->push_back({c->fds[i], POLLOUT, 0});
  }
  void pollDescriptors(RecvComm* comm, std::vector<pollfd>* out) override {
    auto* c = static_cast<Comm*>(comm);
    for (int i = 0; i < c->nsocks; ++i)
      if (c->cursor[i] < c->queue.size()) out->push_back({c->fds[i], POLLIN, 0});
  }

 private:
  Status closeComm(Comm* c) {
    if (!c) return Status::ok();
    for (int i = 0; i < c->nsocks; ++i)
      if (c->fds[i] >= 0) close(c->fds[i]);
    delete c;
    return Status::ok();
  }

  std::vector<net::Interface> ifs_;
  int nsocks_ = 2;
};

}  // namespace

std::unique_ptr<MessagingTransport> createSocketTransport(Status* status) {
  auto t = std::make_unique<SocketTransport>();
  *status = t->init();
  if (!status->isOk()) return nullptr;
  return t;
}

}  // namespace weft::transport
