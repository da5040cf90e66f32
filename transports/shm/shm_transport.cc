// Shared-memory transport: one connection carries messages one way, from a SendComm to a RecvComm
// on the same host.
//
// Setup. listen() binds a per-listener abstract AF_UNIX SOCK_SEQPACKET socket named
// "weft-shm.<pid>.<random>"; the handle carries that name and a random 64-bit cookie. connect()
// (non-blocking, state kept behind a pointer in the handle) connects to it, creates the ring with
// memfd_create(MFD_CLOEXEC), sizes and maps it, creates two eventfds, and sends a hello (cookie,
// geometry) with the three descriptors attached (SCM_RIGHTS). accept() (non-blocking) checks the
// cookie and the peer's uid, maps the memfd, closes it and answers with an ack. connect() completes
// as soon as the hello is sent (so two ranks may each finish connecting before either accepts); the
// ack is read later, and a listener that refuses (closes without an ack) fails the first request
// that needs the peer. No file is ever created: the memory lives only as long as a mapping or a
// descriptor does, so nothing is left behind after a kill -9 (no /dev/shm entry ever exists).
//
// Layout of the mapping (all offsets fixed):
//   page 0: Control -- constants, then `head` (slots posted, written by the sender), `tail` (slots
//           freed, written by the receiver), the two waiter flags and the two closed flags, each on
//           its own 128-byte block (two cache lines: no false sharing, even with the adjacent-line
//           prefetcher);
//   then kSlotCount slots of kSlotBytes: a 64-byte SlotHeader (magic, slot sequence number, tag,
//           message size, bytes in this slot, first-slot flag) and the payload. A message takes one
//           slot (0 bytes included) or several consecutive slots, in order; only its first slot is
//           flagged as first. head/tail are free-running 64-bit slot counters; slot i lives at
//           i % kSlotCount.
// isend copies as many slots as are free and returns; test() copies more (sender) or copies out
// (receiver). A send completes when its last byte is in the ring, a receive when it is in the user's
// buffer. Each slot is published on its own (a release store), so the receiver works on a large
// message while the sender is still writing it.
//
// Waiting. test() never blocks or spins. When the engine is idle it calls pollDescriptors() and
// poll()s: pollDescriptors() arms this side's waiter flag in shared memory, and the peer, after
// publishing a slot (or freeing one), writes the eventfd only if the flag is armed (exchanging it
// back to 0 so that it writes once per sleep). The two sides use the Dekker pattern -- store own
// counter / flag, full fence, load the other's -- so either the peer sees the flag or
// pollDescriptors() sees the new data, in which case it signals its own eventfd so that poll()
// returns at once. The fast path costs one fence and one load per progress call, no system call.
// (We chose eventfds over a raw futex because the engine already waits with poll() over all its
// connections' descriptors at once; a futex could only wait on one word.)
//
// Peer death. The unix socket stays open for the connection's life and nothing is sent on it after
// the ack, so it turning readable (EOF/HUP) means the peer closed or died; a pidfd of the peer
// (SO_PEERCRED + pidfd_open) covers a peer whose socket survives in a forked child. Both are in
// pollDescriptors(), so a sleeping engine wakes at once; a request that makes no progress checks
// them at most every kPeerCheckNs. Slots the peer published before it went away are still
// delivered; a request that needs more fails with a sentence that says whether the peer closed the
// connection (closed flag in shared memory) or its process exited.
#include "transports/shm/shm_transport.h"
#include "transports/request_queue.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <vector>

#include "lib/core/log.h"
#include "lib/core/net.h"
#include "lib/core/util.h"

namespace weft::transport {

struct ListenComm {};
struct SendComm {};
struct RecvComm {};
struct Request {};

namespace {

using shm::kSlotBytes;
using shm::kSlotCount;
using shm::kSlotHeaderBytes;
using shm::kSlotPayloadBytes;

constexpr uint32_t kHandleMagic = 0x4d485357;  // "WSHM"
constexpr uint16_t kVersion = 1;
constexpr uint32_t kHelloMagic = 0x6c6c6548;
constexpr uint32_t kAckMagic = 0x4b636b41;
constexpr uint64_t kControlMagic = 0x676e69722d6d6873ull;  // "shm-ring"
constexpr uint32_t kSlotMagic = 0x746f6c53;
constexpr uint32_t kFirstSlot = 1;
constexpr size_t kMaxRequests = 128;
constexpr size_t kNameBytes = 96;
constexpr size_t kControlBytes = 4096;
constexpr size_t kMapBytes = kControlBytes + kSlotCount * kSlotBytes;
constexpr uint64_t kPeerCheckNs = 1000000;  // 1 ms

struct HandleLayout {
  uint32_t magic;
  uint16_t version;
  uint16_t nameLen;
  uint64_t cookie;
  char name[kNameBytes];  // abstract socket name, without the leading NUL
  void* connectState;     // set by connect() on the connecting side only
};
static_assert(sizeof(HandleLayout) <= kHandleBytes);

struct Hello {
  uint32_t magic;
  uint32_t version;
  uint64_t cookie;
  uint64_t mapBytes;
  uint32_t slotCount;
  uint32_t slotBytes;
};

struct Ack {
  uint32_t magic;
  uint32_t pad;
};

struct alignas(128) Control {
  uint64_t magic;
  uint32_t version;
  uint32_t slotCount;
  uint64_t slotBytes;
  uint64_t mapBytes;
  alignas(128) std::atomic<uint64_t> head;          // slots posted (sender)
  alignas(128) std::atomic<uint64_t> tail;          // slots freed (receiver)
  alignas(128) std::atomic<uint32_t> recvWaiting;   // receiver sleeps on the data eventfd
  alignas(128) std::atomic<uint32_t> sendWaiting;   // sender sleeps on the space eventfd
  alignas(128) std::atomic<uint32_t> senderClosed;
  alignas(128) std::atomic<uint32_t> receiverClosed;
};
static_assert(sizeof(Control) <= kControlBytes);
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free,
              "shared-memory counters must be lock-free (address-free) atomics");

struct SlotHeader {
  uint32_t magic;
  uint32_t flags;
  uint64_t seq;       // the slot counter value it was written at
  uint64_t msgSize;   // the whole message's size
  uint32_t tag;
  uint32_t bytes;     // payload bytes in this slot
  unsigned char pad[kSlotHeaderBytes - 32];
};
static_assert(sizeof(SlotHeader) == kSlotHeaderBytes);

struct Comm;

struct ShmRequest : Request {
  Comm* comm = nullptr;
  bool inUse = false;
  bool retired = false;
  bool complete = false;
  bool started = false;  // first slot written (send) / read (receive)
  char* data = nullptr;
  size_t capacity = 0;  // posted size (recv) or message size (send)
  size_t size = 0;      // message size (known on receive after the first slot)
  size_t done = 0;      // payload bytes copied
  uint32_t tag = 0;
};

struct Comm : SendComm, RecvComm {
  bool sending = false;
  int sock = -1;
  int efdData = -1;   // the receiver waits on it
  int efdSpace = -1;  // the sender waits on it
  int pidfd = -1;
  int peerPid = 0;
  Control* ctl = nullptr;
  char* slots = nullptr;
  uint64_t pos = 0;     // sender: next slot to write (head); receiver: next slot to read (tail)
  uint64_t cached = 0;  // sender: last tail seen; receiver: last head seen
  RequestQueue<ShmRequest> queue{kMaxRequests};
  size_t cursor = 0;    // index in queue of the first incomplete request
  Status error;
  bool armed = false;   // our waiter flag was set by pollDescriptors()
  bool peerGone = false;
  uint64_t nextPeerCheck = 0;
  bool acked = true;          // connecting side: the listener's ack has been read
  std::string listenerName;   // connecting side, for messages
};

struct ConnectState {
  int sock = -1;
  bool connected = false;
  bool helloSent = false;
  int memfd = -1;
  int efdData = -1;
  int efdSpace = -1;
  void* map = nullptr;
  std::string name;
};

struct Listen : ListenComm {
  int fd = -1;
  uint64_t cookie = 0;
  std::string name;
  std::vector<int> pending;  // accepted, hello not yet read
};

void closeFd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

socklen_t abstractAddress(const std::string& name, sockaddr_un* a) {
  std::memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  a->sun_path[0] = '\0';
  std::memcpy(a->sun_path + 1, name.data(), name.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
}

char* slotAt(Comm* c, uint64_t counter) { return c->slots + (counter % kSlotCount) * kSlotBytes; }

void signalFd(int fd) {
  uint64_t one = 1;
  (void)!write(fd, &one, sizeof one);
}

void drainFd(int fd) {
  uint64_t v;
  (void)!read(fd, &v, sizeof v);
}

// The peer's process, opened as a pidfd (readable when it exits); -1 if unknown or ourselves.
void openPeer(Comm* c) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(c->sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid <= 0) return;
  c->peerPid = cred.pid;
  if (cred.pid == getpid()) return;
#ifdef SYS_pidfd_open
  long fd = syscall(SYS_pidfd_open, cred.pid, 0);
  if (fd >= 0) {
    c->pidfd = static_cast<int>(fd);
    (void)fcntl(c->pidfd, F_SETFD, FD_CLOEXEC);
  }
#endif
}

Status mapRing(int memfd, bool create, void** out) {
  void* p = mmap(nullptr, kMapBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, memfd, 0);
  if (p == MAP_FAILED) return errnoStatus("mapping the " + std::to_string(kMapBytes) + "-byte shared-memory ring", errno);
  if (create) {
    auto* ctl = new (p) Control();
    ctl->magic = kControlMagic;
    ctl->version = kVersion;
    ctl->slotCount = kSlotCount;
    ctl->slotBytes = kSlotBytes;
    ctl->mapBytes = kMapBytes;
    ctl->head.store(0);
    ctl->tail.store(0);
    ctl->recvWaiting.store(0);
    ctl->sendWaiting.store(0);
    ctl->senderClosed.store(0);
    ctl->receiverClosed.store(0);
  }
  *out = p;
  return Status::ok();
}

// Sender: copy into free slots, in order, publishing each slot.
void progressSend(Comm* c) {
  Control* ctl = c->ctl;
  bool posted = false;
  while (c->cursor < c->queue.size()) {
    ShmRequest* r = c->queue[c->cursor];
    while (!r->complete) {
      if (c->pos - c->cached >= kSlotCount) {
        c->cached = ctl->tail.load(std::memory_order_acquire);
        if (c->pos - c->cached >= kSlotCount) goto out;
      }
      char* slot = slotAt(c, c->pos);
      auto* h = reinterpret_cast<SlotHeader*>(slot);
      size_t n = std::min(r->size - r->done, kSlotPayloadBytes);
      h->magic = kSlotMagic;
      h->flags = r->started ? 0 : kFirstSlot;
      h->seq = c->pos;
      h->msgSize = r->size;
      h->tag = r->tag;
      h->bytes = static_cast<uint32_t>(n);
      if (n) std::memcpy(slot + kSlotHeaderBytes, r->data + r->done, n);
      r->started = true;
      r->done += n;
      ++c->pos;
      ctl->head.store(c->pos, std::memory_order_release);
      posted = true;
      if (r->done == r->size) r->complete = true;
    }
    ++c->cursor;
  }
out:
  if (posted) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (ctl->recvWaiting.load(std::memory_order_relaxed) && ctl->recvWaiting.exchange(0)) signalFd(c->efdData);
  }
}

// Receiver: copy published slots out, in order, freeing each slot.
void progressRecv(Comm* c) {
  Control* ctl = c->ctl;
  bool freed = false;
  while (c->cursor < c->queue.size() && c->error.isOk()) {
    ShmRequest* r = c->queue[c->cursor];
    while (!r->complete) {
      if (c->pos == c->cached) {
        c->cached = ctl->head.load(std::memory_order_acquire);
        if (c->pos == c->cached) goto out;
      }
      const char* slot = slotAt(c, c->pos);
      SlotHeader hdr;  // one read of the header: every check below sees the same values
      std::memcpy(&hdr, slot, sizeof hdr);
      const SlotHeader* h = &hdr;
      bool first = (h->flags & kFirstSlot) != 0;
      if (h->magic != kSlotMagic || h->seq != c->pos || h->bytes > kSlotPayloadBytes || first == r->started) {
        c->error = internalError("corrupt slot " + std::to_string(c->pos) +
                                 " in the shared-memory ring (wrong magic, sequence or order): the peer wrote "
                                 "outside the protocol; this is a bug in weft");
        goto out;
      }
      if (first) {
        if (h->tag != r->tag) {
          c->error = invalidUsage("message tag " + std::to_string(h->tag) + " from the peer process (pid " +
                                  std::to_string(c->peerPid) + ") does not match the posted receive's tag " +
                                  std::to_string(r->tag) + ": both sides must post their messages in the same order");
          goto out;
        }
        if (h->msgSize > r->capacity) {
          c->error = invalidUsage("a " + std::to_string(h->msgSize) + "-byte message from the peer process (pid " +
                                  std::to_string(c->peerPid) + ") does not fit the posted " +
                                  std::to_string(r->capacity) + "-byte receive: post a buffer at least as large");
          goto out;
        }
        r->size = h->msgSize;
        r->started = true;
      }
      if (h->msgSize != r->size || r->done + h->bytes > r->size) {
        c->error = internalError("corrupt continuation slot in the shared-memory ring; this is a bug in weft");
        goto out;
      }
      if (h->bytes) std::memcpy(r->data + r->done, slot + kSlotHeaderBytes, h->bytes);
      r->done += h->bytes;
      ++c->pos;
      ctl->tail.store(c->pos, std::memory_order_release);
      freed = true;
      if (r->done == r->size) r->complete = true;
    }
    ++c->cursor;
  }
out:
  if (freed) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (ctl->sendWaiting.load(std::memory_order_relaxed) && ctl->sendWaiting.exchange(0)) signalFd(c->efdSpace);
  }
}

void progress(Comm* c) {
  if (c->armed) {  // back from an idle wait: disarm and reset our eventfd
    c->armed = false;
    (c->sending ? c->ctl->sendWaiting : c->ctl->recvWaiting).store(0, std::memory_order_relaxed);
    drainFd(c->sending ? c->efdSpace : c->efdData);
  }
  if (c->sending) progressSend(c);
  else progressRecv(c);
}

// True if the peer closed its end or its process exited (a poll with no wait).
// Connecting side: read the listener's ack if it has come (non-blocking). Anything else on the
// socket -- EOF included -- is left for peerGone() to see.
void readAck(Comm* c) {
  if (c->acked) return;
  Ack ack{};
  ssize_t n = recv(c->sock, &ack, sizeof ack, MSG_DONTWAIT | MSG_PEEK);
  if (n == static_cast<ssize_t>(sizeof ack) && ack.magic == kAckMagic) {
    (void)!recv(c->sock, &ack, sizeof ack, MSG_DONTWAIT);
    c->acked = true;
  }
}

bool peerGone(Comm* c) {
  if (c->peerGone) return true;
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool wasAcked = c->acked;
    readAck(c);
    pollfd p[2] = {{c->sock, POLLIN | POLLRDHUP, 0}, {c->pidfd, POLLIN, 0}};
    int n = poll(p, c->pidfd >= 0 ? 2 : 1, 0);
    if (n <= 0) return false;
    if (c->pidfd >= 0 && p[1].revents) return c->peerGone = true;
    if (!p[0].revents) return false;
    // Readable: EOF/HUP, or the ack arrived between readAck() and poll(): read it and look again.
    if (!wasAcked && (p[0].revents & (POLLHUP | POLLRDHUP | POLLERR)) == 0 && attempt == 0) continue;
    return c->peerGone = true;
  }
  return c->peerGone = true;
}

Status peerError(Comm* c, const ShmRequest* r) {
  const char* what = c->sending ? "send" : "receive";
  if (!c->acked)
    return remoteError("the shared-memory listener @" + c->listenerName +
                       " refused the connection or exited before accepting it (a handle from another listener, "
                       "another user, or the listening process ended)");
  bool closed = c->sending ? c->ctl->receiverClosed.load() != 0 : c->ctl->senderClosed.load() != 0;
  std::string who = "the peer process on this host (pid " + std::to_string(c->peerPid) + ")";
  std::string progressText = c->sending ? std::to_string(r->done) + " of " + std::to_string(r->size) + " bytes written"
                                        : (r->started ? std::to_string(r->done) + " of " + std::to_string(r->size) +
                                                            " bytes arrived"
                                                      : "no part of the message had arrived");
  if (closed)
    return remoteError(who + " closed the shared-memory connection during " + what + " (" + progressText +
                       "): both sides must post the same messages before closing");
  return remoteError(who + " exited or was killed during " + what + " (" + progressText +
                     "): look at that process's output for why it stopped");
}

Status badHandle(const std::string& why) {
  return invalidUsage("malformed shared-memory-transport handle (" + why +
                      "): pass the handle that listen() produced, unchanged, to connect() on the same host");
}

class ShmTransport final : public MessagingTransport {
 public:
  const char* name() const override { return "shm"; }
  int deviceCount() const override { return 1; }
  DeviceProperties device(int) const override {
    DeviceProperties p;
    p.name = "shm";
    p.address = "host shared memory";
    p.hostMemoryNeedsRegistration = false;
    p.maxMessageBytes = 1ull << 40;
    return p;
  }

  Status listen(int dev, Handle* handle, ListenComm** out) override {
    *out = nullptr;
    if (dev != 0) return invalidArgument("shared-memory device " + std::to_string(dev) + " does not exist (only 0)");
    auto l = std::make_unique<Listen>();
    uint64_t nameRand = 0;
    WEFT_TRY(randomBytes(&l->cookie, sizeof l->cookie));
    WEFT_TRY(randomBytes(&nameRand, sizeof nameRand));
    l->name = "weft-shm." + std::to_string(getpid()) + "." + hexString(&nameRand, sizeof nameRand);
    l->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (l->fd < 0) return errnoStatus("creating the shared-memory transport's unix socket", errno);
    sockaddr_un a;
    socklen_t len = abstractAddress(l->name, &a);
    if (bind(l->fd, reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(l->fd, 64) != 0) {
      Status s = errnoStatus("binding the abstract unix socket @" + l->name, errno);
      close(l->fd);
      return s;
    }
    HandleLayout h{};
    h.magic = kHandleMagic;
    h.version = kVersion;
    h.nameLen = static_cast<uint16_t>(l->name.size());
    h.cookie = l->cookie;
    std::memcpy(h.name, l->name.data(), l->name.size());
    std::memset(handle->bytes, 0, kHandleBytes);
    std::memcpy(handle->bytes, &h, sizeof h);
    *out = l.release();
    return Status::ok();
  }

  Status connect(int dev, Handle* handle, SendComm** out) override {
    *out = nullptr;
    if (dev != 0) return invalidArgument("shared-memory device " + std::to_string(dev) + " does not exist (only 0)");
    HandleLayout h;
    std::memcpy(&h, handle->bytes, sizeof h);
    if (h.magic != kHandleMagic) return badHandle("bad magic");
    if (h.version != kVersion)
      return badHandle("version " + std::to_string(h.version) + ", this library speaks " + std::to_string(kVersion) +
                       ": every rank must run the same weft build");
    if (h.nameLen == 0 || h.nameLen > kNameBytes) return badHandle("bad socket-name length");
    for (size_t i = 0; i < h.nameLen; ++i)
      if (h.name[i] < 0x21 || h.name[i] > 0x7e) return badHandle("bad socket name");
    auto* st = static_cast<ConnectState*>(h.connectState);
    if (st == nullptr) {
      st = new ConnectState();
      st->name.assign(h.name, h.nameLen);
      h.connectState = st;
      std::memcpy(handle->bytes, &h, sizeof h);
    }
    auto fail = [&](Status s) {
      closeFd(st->sock);
      closeFd(st->memfd);
      closeFd(st->efdData);
      closeFd(st->efdSpace);
      if (st->map) munmap(st->map, kMapBytes);
      delete st;
      h.connectState = nullptr;
      std::memcpy(handle->bytes, &h, sizeof h);
      return s;
    };
    if (!st->connected) {
      if (st->sock < 0) {
        st->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (st->sock < 0) return fail(errnoStatus("creating a unix socket for the shared-memory transport", errno));
      }
      sockaddr_un a;
      socklen_t len = abstractAddress(st->name, &a);
      if (::connect(st->sock, reinterpret_cast<sockaddr*>(&a), len) != 0) {
        if (errno == EAGAIN || errno == EINTR) {  // the listener's backlog is full: retry next call
          closeFd(st->sock);
          return Status::ok();
        }
        if (errno == ECONNREFUSED || errno == ENOENT)
          return fail(systemError("no shared-memory listener at @" + st->name +
                                  ": the listening process exited or closed it, or it runs in another network "
                                  "namespace or on another host (abstract unix sockets are per network namespace); "
                                  "such ranks must use the socket transport"));
        return fail(errnoStatus("connecting to the shared-memory listener @" + st->name, errno));
      }
      st->connected = true;
    }
    if (!st->helloSent) {
      st->memfd = static_cast<int>(memfd_create("weft-shm", MFD_CLOEXEC));
      if (st->memfd < 0) return fail(errnoStatus("memfd_create for the shared-memory ring", errno));
      if (ftruncate(st->memfd, static_cast<off_t>(kMapBytes)) != 0)
        return fail(errnoStatus("sizing the shared-memory ring to " + std::to_string(kMapBytes) + " bytes", errno));
      Status s = mapRing(st->memfd, true, &st->map);
      if (!s) return fail(s);
      st->efdData = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      st->efdSpace = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (st->efdData < 0 || st->efdSpace < 0) return fail(errnoStatus("eventfd for the shared-memory transport", errno));
      Hello hello{kHelloMagic, kVersion, h.cookie, kMapBytes, static_cast<uint32_t>(kSlotCount),
                  static_cast<uint32_t>(kSlotBytes)};
      int fds[3] = {st->memfd, st->efdData, st->efdSpace};
      // A fresh socket's send buffer always holds one small message.
      if (net::sendWithFds(st->sock, &hello, sizeof hello, fds, 3, MSG_DONTWAIT) != static_cast<ssize_t>(sizeof hello))
        return fail(errnoStatus("sending the shared-memory ring to the listener @" + st->name, errno));
      closeFd(st->memfd);  // the mapping (and the peer's copy in flight) keep the memory
      st->helloSent = true;
    }
    // Complete now, without waiting for the listener's accept(): the ring is ours and usable at once
    // (a peer may finish its connects before it starts accepting). The ack is read later.
    auto* c = new Comm();
    c->sending = true;
    c->acked = false;
    c->listenerName = st->name;
    c->sock = st->sock;
    c->efdData = st->efdData;
    c->efdSpace = st->efdSpace;
    c->ctl = static_cast<Control*>(st->map);
    c->slots = static_cast<char*>(st->map) + kControlBytes;
    openPeer(c);
    delete st;
    h.connectState = nullptr;
    std::memcpy(handle->bytes, &h, sizeof h);
    WEFT_INFO(NET, "shm transport: connected to pid %d through @%s (%zu slots of %zu bytes)", c->peerPid,
              std::string(h.name, h.nameLen).c_str(), kSlotCount, kSlotBytes);
    *out = c;
    return Status::ok();
  }

  Status accept(ListenComm* listen, RecvComm** out) override {
    *out = nullptr;
    auto* l = static_cast<Listen*>(listen);
    for (;;) {
      int fd = accept4(l->fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) break;
      l->pending.push_back(fd);
    }
    for (size_t k = 0; k < l->pending.size();) {
      int fd = l->pending[k];
      Hello hello{};
      int fds[3] = {-1, -1, -1};
      size_t nfds = 0;
      ssize_t n = net::recvWithFds(fd, &hello, sizeof hello, fds, 3, &nfds, MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        ++k;
        continue;
      }
      l->pending.erase(l->pending.begin() + static_cast<long>(k));
      auto refuse = [&](const char* why) {
        WEFT_WARN(NET, "shm transport: refused a connection on @%s: %s", l->name.c_str(), why);
        for (int& f : fds) closeFd(f);
        close(fd);
      };
      ucred cred{};
      socklen_t cl = sizeof cred;
      if (n != static_cast<ssize_t>(sizeof hello) || hello.magic != kHelloMagic || hello.cookie != l->cookie) {
        refuse("malformed or foreign hello");
        continue;
      }
      if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 || cred.uid != geteuid()) {
        refuse("the connecting process runs as another user");
        continue;
      }
      if (nfds != 3 || hello.version != kVersion || hello.mapBytes != kMapBytes || hello.slotCount != kSlotCount ||
          hello.slotBytes != kSlotBytes) {
        refuse("ring geometry or version differs: every rank must run the same weft build");
        continue;
      }
      struct stat sb{};
      if (fstat(fds[0], &sb) != 0 || static_cast<uint64_t>(sb.st_size) != kMapBytes) {
        refuse("the ring's memfd has the wrong size");
        continue;
      }
      void* map = nullptr;
      Status s = mapRing(fds[0], false, &map);
      if (!s) {
        WEFT_WARN(NET, "shm transport: %s", s.message().c_str());
        refuse("cannot map the ring");
        continue;
      }
      auto* ctl = static_cast<Control*>(map);
      if (ctl->magic != kControlMagic || ctl->version != kVersion || ctl->mapBytes != kMapBytes) {
        munmap(map, kMapBytes);
        refuse("the ring's header is not ours");
        continue;
      }
      // The ack may fail because the connecting process already finished and closed its end (it
      // need not wait for the ack): the ring is still valid and what it published is delivered,
      // so the connection is accepted anyway and its socket's EOF reads as "peer closed".
      Ack ack{kAckMagic, 0};
      if (send(fd, &ack, sizeof ack, MSG_NOSIGNAL | MSG_DONTWAIT) != static_cast<ssize_t>(sizeof ack))
        WEFT_INFO(NET, "shm transport: the process connecting on @%s already closed its end (%s)", l->name.c_str(),
                  strerror(errno));
      closeFd(fds[0]);
      auto* c = new Comm();
      c->sending = false;
      c->sock = fd;
      c->efdData = fds[1];
      c->efdSpace = fds[2];
      c->ctl = ctl;
      c->slots = static_cast<char*>(map) + kControlBytes;
      openPeer(c);
      WEFT_INFO(NET, "shm transport: accepted pid %d on @%s (%zu slots of %zu bytes)", c->peerPid, l->name.c_str(),
                kSlotCount, kSlotBytes);
      *out = c;
      return Status::ok();
    }
    return Status::ok();
  }

  Status closeListen(ListenComm* listen) override {
    auto* l = static_cast<Listen*>(listen);
    if (!l) return Status::ok();
    for (int fd : l->pending) close(fd);
    closeFd(l->fd);
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
    ShmRequest* r = c->queue.post(c, data, size, tag, true);
    if (!r) return Status::ok();
    *request = r;
    progress(c);
    return Status::ok();
  }

  Status irecv(RecvComm* comm, void* data, size_t size, uint32_t tag, void*, Request** request) override {
    auto* c = static_cast<Comm*>(comm);
    *request = nullptr;
    ShmRequest* r = c->queue.post(c, data, size, tag, false);
    if (!r) return Status::ok();
    *request = r;
    return Status::ok();
  }

  Status test(Request* request, bool* done, size_t* size) override {
    auto* r = static_cast<ShmRequest*>(request);
    if (!r || !r->inUse || r->retired) return internalError("shm transport: test() on an unknown or finished request");
    Comm* c = r->comm;
    *done = false;
    if (!r->complete) {
      progress(c);
      if (!r->complete) {
        if (!c->error.isOk()) return c->error;
        uint64_t now = nowNs();
        if (c->peerGone || now >= c->nextPeerCheck) {
          c->nextPeerCheck = now + kPeerCheckNs;
          if (peerGone(c)) {
            progress(c);  // what the peer published before it went away is still delivered
            if (!r->complete) {
              if (!c->error.isOk()) return c->error;
              return peerError(c, r);
            }
          }
        }
        if (!r->complete) return Status::ok();
      }
    }
    *done = true;
    if (size) *size = r->size;
    c->cursor -= c->queue.retire(r);
    return Status::ok();
  }

  void pollDescriptors(SendComm* comm, std::vector<pollfd>* out) override { arm(static_cast<Comm*>(comm), out); }
  void pollDescriptors(RecvComm* comm, std::vector<pollfd>* out) override { arm(static_cast<Comm*>(comm), out); }

 private:
  // Arm our waiter flag and hand out what to poll: our eventfd, the socket (EOF = peer gone) and the
  // peer's pidfd. If the peer already made room / posted data, signal ourselves so poll() returns.
  void arm(Comm* c, std::vector<pollfd>* out) {
    if (c->cursor >= c->queue.size()) return;  // nothing pending
    Control* ctl = c->ctl;
    int efd = c->sending ? c->efdSpace : c->efdData;
    readAck(c);  // a pending ack would make poll() return at once, again and again
    if (c->error.isOk() && !c->peerGone) {
      (c->sending ? ctl->sendWaiting : ctl->recvWaiting).store(1, std::memory_order_seq_cst);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      c->armed = true;
      bool ready = c->sending ? c->pos - ctl->tail.load(std::memory_order_acquire) < kSlotCount
                              : ctl->head.load(std::memory_order_acquire) != c->pos;
      if (ready) signalFd(efd);
    } else {
      signalFd(efd);  // let the next test() report the error at once
      c->armed = true;
    }
    out->push_back({efd, POLLIN, 0});
    out->push_back({c->sock, POLLIN, 0});
    if (c->pidfd >= 0) out->push_back({c->pidfd, POLLIN, 0});
  }

  Status closeComm(Comm* c) {
    if (!c) return Status::ok();
    if (c->ctl) {
      (c->sending ? c->ctl->senderClosed : c->ctl->receiverClosed).store(1, std::memory_order_seq_cst);
      munmap(c->ctl, kMapBytes);
    }
    closeFd(c->sock);  // the peer sees EOF
    closeFd(c->efdData);
    closeFd(c->efdSpace);
    closeFd(c->pidfd);
    delete c;
    return Status::ok();
  }
};

}  // namespace

std::unique_ptr<MessagingTransport> createShmTransport(Status* status) {
  *status = Status::ok();
  return std::make_unique<ShmTransport>();
}

}  // namespace weft::transport
