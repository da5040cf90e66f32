// The direct all-reduce region (see direct.h) and the direct one-shot / two-shot all-reduces
// (Communicator::runDirect): the lean path for all-reduce when every rank is on this host.
#include "lib/engine/direct.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "collectives/reduce/reduce.h"
#include "collectives/schedule.h"
#include "lib/core/futex.h"
#include "lib/core/net.h"
#include "lib/core/log.h"
#include "lib/core/util.h"
#include "lib/engine/communicator.h"

namespace weft::engine {

namespace {
constexpr uint64_t kRegionMagic = 0x7463657269642d77ull;  // "w-direct"
constexpr uint64_t kSetupTag = (uint64_t{1} << 42) | 1;
constexpr size_t kPage = 4096;
constexpr size_t kSharedOff = 1024;  // SharedCtl, in the header page
constexpr uint64_t kNsPerMs = 1000000ull;

struct Header {
  uint64_t magic;
  uint64_t nranks;
  uint64_t slotBytes;
  uint64_t resultBytes;
  uint64_t mapBytes;
};

struct SetupMsg {  // rank 0 -> others, over the bootstrap
  char name[96];
  uint64_t cookie;
  uint64_t mapBytes;
};

struct Hello {  // others -> rank 0, over the unix socket
  uint64_t cookie;
  int32_t rank;
  int32_t pad;
};

static_assert(sizeof(Header) <= kSharedOff && kSharedOff + sizeof(SharedCtl) <= kPage, "the header page's layout");

size_t roundUp(size_t v, size_t a) { return (v + a - 1) / a * a; }

socklen_t abstractAddress(const std::string& name, sockaddr_un* a) {
  std::memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  std::memcpy(a->sun_path + 1, name.data(), name.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
}

// Waits until fd is readable (or writable), the deadline passes, or the bootstrap fails.
Status waitFd(int fd, short events, uint64_t deadlineNs, bootstrap::Bootstrap& bs, const char* what) {
  for (;;) {
    pollfd p{fd, events, 0};
    int r = poll(&p, 1, 10);
    if (r > 0) return Status::ok();
    if (r < 0 && errno != EINTR) return errnoStatus(what, errno);
    if (bs.hasError()) return bs.error();
    if (nowNs() > deadlineNs)
      return timeoutError(std::string(what) + " did not complete within WEFT_INIT_TIMEOUT_MS");
  }
}

Status sendFd(int sock, int fd, const void* data, size_t len) {
  if (net::sendWithFds(sock, data, len, &fd, 1, 0) != static_cast<ssize_t>(len))
    return errnoStatus("passing the direct region's memfd to a peer", errno);
  return Status::ok();
}

Status recvFd(int sock, int* fd, void* data, size_t len) {
  *fd = -1;
  size_t nfds = 0;
  const ssize_t n = net::recvWithFds(sock, data, len, fd, 1, &nfds, 0);
  if (n != static_cast<ssize_t>(len)) {
    if (nfds == 1) close(*fd);
    *fd = -1;
    return remoteError("rank 0 closed the direct region's socket before passing the memfd");
  }
  if (nfds != 1) return internalError("no descriptor came with the direct region's setup message");
  return Status::ok();
}

int openPidfd(int pid) {
  if (pid <= 0 || pid == getpid()) return -1;
#ifdef SYS_pidfd_open
  long fd = syscall(SYS_pidfd_open, pid, 0);
  if (fd >= 0) {
    (void)fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC);
    return static_cast<int>(fd);
  }
#endif
  return -1;
}
}  // namespace

Status DirectRegion::create(bootstrap::Bootstrap& bs, int rank, int nranks, size_t slotBytes, bool counting,
                            uint64_t deadlineNs, std::unique_ptr<DirectRegion>* out) {
  out->reset();
  std::unique_ptr<DirectRegion> d(new DirectRegion());
  d->nranks_ = nranks;
  d->counting_ = counting;
  d->slotBytes_ = roundUp(slotBytes, kPage);
  d->resultBytes_ = roundUp(d->slotBytes_ / static_cast<size_t>(nranks) + 64, 64);
  const size_t ctlOff = kPage;
  const size_t inOff = roundUp(ctlOff + sizeof(RankCtl) * static_cast<size_t>(nranks), kPage);
  const size_t resOff = inOff + 2 * d->slotBytes_ * static_cast<size_t>(nranks);
  d->mapBytes_ = roundUp(resOff + 2 * d->resultBytes_ * static_cast<size_t>(nranks), kPage);

  int memfd = -1;
  Status s;
  if (rank == 0) {
    memfd = static_cast<int>(syscall(SYS_memfd_create, "weft-direct", MFD_CLOEXEC));
    if (memfd < 0) s = errnoStatus("memfd_create for the direct all-reduce region", errno);
    if (s && ftruncate(memfd, static_cast<off_t>(d->mapBytes_)) != 0)
      s = errnoStatus("sizing the direct all-reduce region", errno);
    int listener = -1;
    SetupMsg msg{};
    if (s) {
      uint64_t nameRand = 0;
      s = randomBytes(&nameRand, sizeof nameRand);
      if (s) s = randomBytes(&msg.cookie, sizeof msg.cookie);
      std::string name = "weft-direct." + std::to_string(getpid()) + "." + hexString(&nameRand, sizeof nameRand);
      std::snprintf(msg.name, sizeof msg.name, "%s", name.c_str());
      msg.mapBytes = d->mapBytes_;
      listener = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      sockaddr_un a;
      socklen_t len = abstractAddress(name, &a);
      if (s && (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&a), len) != 0 || listen(listener, 64) != 0))
        s = errnoStatus("binding the direct region's abstract unix socket", errno);
    }
    // Every other rank learns the socket (or that setup failed: an empty name).
    if (!s) msg.name[0] = '\0';
    for (int r = 1; r < nranks; ++r) {
      Status t = bs.send(r, kSetupTag, &msg, sizeof msg);
      if (s && !t) s = t;
    }
    for (int served = 1; s && served < nranks; ++served) {
      s = waitFd(listener, POLLIN, deadlineNs, bs, "accepting the direct region's peers");
      if (!s) break;
      int c = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) {
        if (errno == EAGAIN || errno == EINTR) {
          --served;
          continue;
        }
        s = errnoStatus("accepting on the direct region's socket", errno);
        break;
      }
      Hello h{};
      s = waitFd(c, POLLIN, deadlineNs, bs, "reading a direct region peer's hello");
      if (s && (recv(c, &h, sizeof h, MSG_DONTWAIT) != static_cast<ssize_t>(sizeof h) || h.cookie != msg.cookie)) {
        --served;  // not one of ours: ignore it
        close(c);
        continue;
      }
      if (s) s = sendFd(c, memfd, &msg.mapBytes, sizeof msg.mapBytes);
      close(c);
    }
    if (listener >= 0) close(listener);
  } else {
    std::vector<char> got;
    s = bs.recv(0, kSetupTag, &got, deadlineNs);
    SetupMsg msg{};
    if (s && got.size() != sizeof msg) s = internalError("malformed direct region setup message");
    if (s) std::memcpy(&msg, got.data(), sizeof msg);
    if (s && msg.name[0] == '\0') s = remoteError("rank 0 could not create the direct all-reduce region");
    if (s && msg.mapBytes != d->mapBytes_)
      s = internalError("rank 0 sized the direct region differently (" + std::to_string(msg.mapBytes) + " bytes, here " +
                        std::to_string(d->mapBytes_) + "): every rank must run the same weft build and settings");
    int sock = -1;
    if (s) {
      msg.name[sizeof msg.name - 1] = '\0';
      sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
      sockaddr_un a;
      socklen_t len = abstractAddress(msg.name, &a);
      if (sock < 0 || connect(sock, reinterpret_cast<sockaddr*>(&a), len) != 0)
        s = errnoStatus("connecting to rank 0's direct region socket @" + std::string(msg.name), errno);
    }
    if (s) {
      Hello h{msg.cookie, rank, 0};
      if (send(sock, &h, sizeof h, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof h))
        s = errnoStatus("sending the direct region hello", errno);
    }
    if (s) s = waitFd(sock, POLLIN, deadlineNs, bs, "receiving the direct region's memfd");
    uint64_t bytes = 0;
    if (s) s = recvFd(sock, &memfd, &bytes, sizeof bytes);
    if (sock >= 0) close(sock);
  }
  void* p = MAP_FAILED;
  if (s) {
    p = mmap(nullptr, d->mapBytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, memfd, 0);
    if (p == MAP_FAILED) s = errnoStatus("mapping the " + std::to_string(d->mapBytes_) + "-byte direct region", errno);
  }
  if (memfd >= 0) close(memfd);
  if (s) {
    d->base_ = static_cast<char*>(p);
    d->ctls_ = reinterpret_cast<RankCtl*>(d->base_ + ctlOff);
    d->shared_ = reinterpret_cast<SharedCtl*>(d->base_ + kSharedOff);
    d->inputs_ = d->base_ + inOff;
    d->results_ = d->base_ + resOff;
    if (rank == 0) {
      auto* h = new (d->base_) Header();
      h->magic = kRegionMagic;
      h->nranks = static_cast<uint64_t>(nranks);
      h->slotBytes = d->slotBytes_;
      h->resultBytes = d->resultBytes_;
      h->mapBytes = d->mapBytes_;
      for (int r = 0; r < nranks; ++r) new (&d->ctls_[r]) RankCtl();
      new (d->shared_) SharedCtl();
    }
  }
  // Everyone has mapped (or failed) before anyone uses it: an all-gather of the outcome.
  std::vector<int32_t> ok(static_cast<size_t>(nranks));
  ok[static_cast<size_t>(rank)] = s ? 1 : 0;
  Status g = bs.allGather(ok.data(), sizeof(int32_t), deadlineNs);
  if (!g) return g;
  if (!s) return s;
  for (int r = 0; r < nranks; ++r)
    if (!ok[static_cast<size_t>(r)]) return remoteError(bs.describe(r) + " could not map the direct all-reduce region");
  const auto* h = reinterpret_cast<const Header*>(d->base_);
  if (h->magic != kRegionMagic || h->nranks != static_cast<uint64_t>(nranks) || h->mapBytes != d->mapBytes_)
    return internalError("the direct region's header does not match this rank's geometry");
  d->pidfds_.assign(static_cast<size_t>(nranks), -1);
  for (int r = 0; r < nranks; ++r)
    if (r != rank) d->pidfds_[static_cast<size_t>(r)] = openPidfd(bs.peer(r).pid);
  *out = std::move(d);
  return Status::ok();
}

DirectRegion::~DirectRegion() {
  if (base_) munmap(base_, mapBytes_);
  for (int fd : pidfds_)
    if (fd >= 0) close(fd);
}

void DirectRegion::publish(std::atomic<uint32_t>& word, bool done, uint32_t k) {
  word.store(k, std::memory_order_release);
  if (!counting_) return;  // settle() after this rank's own waits
  // Every rank publishes each word once per round (done: once per two-shot round), and no rank
  // publishes for the next round before all have published for this one, so the increment that
  // makes the count a multiple of n is the round's last. The word precedes the increment; Dekker
  // with a sleeper (raise the waiter count, read the counter, re-read the word it waits for): the
  // read-modify-write is a full barrier, so either the sleeper sees the word or the last
  // publisher sees its waiter count and wakes it.
  const uint32_t c = counter(done).fetch_add(1, std::memory_order_seq_cst) + 1;
  if (c % static_cast<uint32_t>(nranks_) == 0 && counterWaiters(done).load(std::memory_order_seq_cst) != 0)
    futex::wakeAll(&counter(done));
}

void DirectRegion::settle(bool done) {
  if (counting_) return;
  // Not counting: a sleeper is woken by any publisher that sees it (Dekker: the sleeper raises the
  // waiter count, reads the counter, re-reads the word; we stored the word, fence, read the
  // count), which bumps the counter so that a FUTEX_WAIT on the old value returns. Done after this
  // rank's own waits of the round, so the store's fence is off the fast path: a peer that sleeps
  // on our word has published its own before sleeping, so our waits end and we get here.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (counterWaiters(done).load(std::memory_order_relaxed) != 0) {
    counter(done).fetch_add(1, std::memory_order_seq_cst);
    futex::wakeAll(&counter(done));
  }
}

void DirectRegion::wakeAll() const {
  futex::wakeAll(&counter(false));
  futex::wakeAll(&counter(true));
}

int DirectRegion::exitedPeer() const {
  pollfd p[16];
  int idx[16];
  int n = 0;
  for (int r = 0; r < nranks_ && n < 16; ++r)
    if (pidfds_[static_cast<size_t>(r)] >= 0) {
      p[n] = {pidfds_[static_cast<size_t>(r)], POLLIN, 0};
      idx[n++] = r;
    }
  if (n == 0 || poll(p, static_cast<nfds_t>(n), 0) <= 0) return -1;
  for (int i = 0; i < n; ++i)
    if (p[i].revents) return idx[i];
  return -1;
}

void DirectRegion::announce(int rank, const DirectDesc& d) const {
  RankCtl& c = ctls_[rank];
  uint32_t g = c.gen.load(std::memory_order_relaxed);
  c.gen.store(g + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  std::memcpy(static_cast<void*>(&c.current), &d, sizeof d);
  c.gen.store(g + 2, std::memory_order_release);
}

bool DirectRegion::announced(int peer, DirectDesc* d) const {
  const RankCtl& c = ctls_[peer];
  uint32_t g1 = c.gen.load(std::memory_order_acquire);
  if (g1 == 0 || (g1 & 1)) return false;
  std::memcpy(d, static_cast<const void*>(&c.current), sizeof *d);
  std::atomic_thread_fence(std::memory_order_acquire);
  return c.gen.load(std::memory_order_relaxed) == g1;
}

// ---- The direct all-reduces -------------------------------------------------------------------

DirectDesc descOf(const OpHeader& h) {
  DirectDesc d;
  d.seq = h.seq;
  d.coll = h.coll;
  d.dtype = h.dtype;
  d.redop = h.redop;
  d.algo = h.algo;
  d.count = h.count;
  return d;
}

// (root is not part of a direct descriptor: the direct path runs all-reduces only.)
OpHeader headerOf(const DirectDesc& d) {
  OpHeader h{};
  h.seq = d.seq;
  h.coll = d.coll;
  h.dtype = d.dtype;
  h.redop = d.redop;
  h.algo = d.algo;
  h.count = d.count;
  h.root = -1;
  return h;
}

namespace {
inline bool reached(uint32_t v, uint32_t k) { return static_cast<int32_t>(v - k) >= 0; }

// memcpy, or with streaming (non-temporal) stores for the aligned middle when `stream`.
void copyOut(char* dst, const char* src, size_t bytes, bool stream) {
#if defined(__x86_64__)
  if (stream && bytes >= 256) {
    const size_t head = (16 - (reinterpret_cast<uintptr_t>(dst) & 15)) & 15;
    std::memcpy(dst, src, head);
    dst += head;
    src += head;
    bytes -= head;
    const size_t body = bytes & ~size_t{63};
    for (size_t i = 0; i < body; i += 64) {
      __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
      __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 16));
      __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 32));
      __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 48));
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i), a);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 16), b);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 32), c);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 48), d);
    }
    std::memcpy(dst + body, src + body, bytes - body);
    return;
  }
#endif
  (void)stream;
  std::memcpy(dst, src, bytes);
}

// Streaming stores are weakly ordered: fence before the caller may read the output.
void streamFence() {
#if defined(__x86_64__)
  _mm_sfence();
#endif
}

// Reduction block: the destination stays in L1 while the n operands stream through it.
constexpr size_t kBlockBytes = 16384;

// dst = srcs[0] op srcs[1] op ... op srcs[n-1], left to right; dst aliases none of srcs.
void reduceN(DataType t, RedOp op, char* dst, const char* const* srcs, int n, size_t count, size_t esize) {
  const size_t block = kBlockBytes / esize;
  for (size_t off = 0; off < count; off += block) {
    const size_t len = std::min(block, count - off);
    const size_t b = off * esize;
    reduce::reduce(t, op, dst + b, srcs[0] + b, srcs[1] + b, len);
    for (int k = 2; k < n; ++k) reduce::reduce(t, op, dst + b, dst + b, srcs[k] + b, len);
  }
}
}  // namespace

// Waits until the peer's arrive (or done) word reaches round k. Spins briefly, yields, then sleeps
// on the futex in slices, checking abort, the bootstrap's error state, the peer's process, a
// mismatched channel collective and WEFT_TIMEOUT_MS.
Status Communicator::directWait(int peer, bool done, uint32_t k, const DirectDesc& mine) {
  RankCtl& c = direct_->ctl(peer);
  std::atomic<uint32_t>& word = done ? c.done.value : c.arrive[k & 1].value;
  if (reached(word.load(std::memory_order_acquire), k)) return Status::ok();
  const uint64_t start = nowNs();
  uint64_t now = start;
  for (uint32_t i = 0;; ++i) {
    if (reached(word.load(std::memory_order_acquire), k)) return Status::ok();
    if ((i & 63) == 0) {
      now = nowNs();
      if (abort_.load(std::memory_order_relaxed) || bootstrap_->hasError()) return checkInterrupt();
      if (now - start >= pureSpinNs_) break;
    }
    cpuRelax();
  }
  // Yield the core until WEFT_SPIN_US.
  while (now - start < cfg_.spinUs * 1000) {
    if (reached(word.load(std::memory_order_acquire), k)) return Status::ok();
    if (abort_.load(std::memory_order_relaxed) || bootstrap_->hasError()) return checkInterrupt();
    sched_yield();
    now = nowNs();
  }
  // Sleep on the shared counter in slices, until every rank has arrived (or published its slice).
  std::atomic<uint32_t>& ctr = direct_->counter(done);
  std::atomic<uint32_t>& waiters = direct_->counterWaiters(done);
  for (;;) {
    waiters.fetch_add(1, std::memory_order_seq_cst);
    uint32_t v = ctr.load(std::memory_order_seq_cst);
    if (!reached(word.load(std::memory_order_seq_cst), k)) futex::wait(&ctr, v, 10 * kNsPerMs);
    waiters.fetch_sub(1, std::memory_order_relaxed);
    if (reached(word.load(std::memory_order_acquire), k)) return Status::ok();
    WEFT_TRY(checkInterrupt());
    now = nowNs();
    DirectDesc other;
    if (direct_->announced(peer, &other) && other.seq == mine.seq && other != mine) {
      return invalidUsage("collective mismatch: " + bootstrap_->describe(rank_) + " called " +
                          describeOp(headerOf(mine)) + " but " + bootstrap_->describe(peer) + " called " +
                          describeOp(headerOf(other)) +
                          " (through the channels; a collective inside weftGroupStart/End with sends or receives runs "
                          "there): every rank must call the same collectives, in the same order, with the same count, "
                          "type, op and root");
    }
    int gone = direct_->exitedPeer();
    if (gone >= 0) {
      // The bootstrap usually tells the cause a moment later; prefer its report.
      Status s = rootCause(remoteError(bootstrap_->describe(gone) + " exited or was killed during " +
                                       std::string(done ? "the all-gather half of a direct all-reduce"
                                                        : "a direct all-reduce") +
                                       ": look at that process's output for why it stopped"));
      return s;
    }
    if (bootstrap_->departed(peer))
      return remoteError(bootstrap_->describe(peer) + " has destroyed its communicator and cannot take part any more");
    if (cfg_.timeoutMs && now - start > cfg_.timeoutMs * kNsPerMs) {
      return timeoutError("no progress for " + std::to_string(cfg_.timeoutMs) + " ms (WEFT_TIMEOUT_MS): " +
                          describeOp(headerOf(mine)) + " is waiting for " + bootstrap_->describe(peer) + " to " +
                          (done ? "publish its reduced slice" : "arrive") +
                          ": is that rank still running and calling the same collectives in the same order?");
    }
  }
}

Status Communicator::directMismatch(int peer, const DirectDesc& mine, const DirectDesc& theirs) const {
  return invalidUsage("collective mismatch: " + bootstrap_->describe(rank_) + " called " + describeOp(headerOf(mine)) +
                      " but " + bootstrap_->describe(peer) + " called " + describeOp(headerOf(theirs)) +
                      ": every rank must call the same collectives, in the same order, with the same count, type, "
                      "op and root (and matching send/recv counts and types)");
}

Status Communicator::setupDirect() {
  if (!shm_.transport || nranks_ < 2 || !model_.applies(plan::Algo::kOneShot, CollType::kAllReduce)) return Status::ok();
  for (int r = 0; r < nranks_; ++r)
    if (bootstrap_->peer(r).hostId != bootstrap_->peer(rank_).hostId) return Status::ok();
  // Every rank must agree (WEFT_DIRECT / WEFT_DIRECT_BYTES could differ between processes).
  struct Want {
    int32_t on;
    int32_t oversubscribed;
    uint64_t bytes;
  };
  std::vector<Want> want(static_cast<size_t>(nranks_));
  want[static_cast<size_t>(rank_)] = {cfg_.direct ? 1 : 0, pureSpinNs_ == 0 ? 1 : 0, cfg_.directBytes};
  const uint64_t deadline = nowNs() + cfg_.initTimeoutMs * kNsPerMs;
  WEFT_TRY(bootstrap_->allGather(want.data(), sizeof(Want), deadline));
  for (const Want& w : want) {
    if (!w.on) {
      if (rank_ == 0) WEFT_INFO(INIT, "direct all-reduces off (WEFT_DIRECT=0 on some rank): they run through the channels");
      return Status::ok();
    }
    if (w.bytes != cfg_.directBytes) {
      if (rank_ == 0)
        WEFT_WARN(INIT, "WEFT_DIRECT_BYTES differs between ranks: direct all-reduces off (they run through the channels)");
      return Status::ok();
    }
  }
  // Counting mode when any rank finds this host oversubscribed (they normally all agree).
  bool counting = false;
  for (const Want& w : want) counting |= w.oversubscribed != 0;
  Status s = DirectRegion::create(*bootstrap_, rank_, nranks_, cfg_.directBytes, counting, deadline, &direct_);
  if (!s) {
    direct_.reset();
    if (bootstrap_->hasError() || abort_.load()) return s;
    WEFT_WARN(INIT, "rank %d: no direct all-reduce region (%s): all-reduces run through the channels", rank_,
              s.message().c_str());
    return Status::ok();
  }
  // Streaming stores from half the last-level cache, at most 16 MiB (a VM may report a whole
  // socket's L3 where one core complex sees a slice of it).
  streamBytes_ = cfg_.directStreamBytes;
  if (streamBytes_ == 0) {
    long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (llc <= 0) llc = sysconf(_SC_LEVEL2_CACHE_SIZE);
    streamBytes_ = std::min<size_t>(llc > 0 ? static_cast<size_t>(llc) / 2 : SIZE_MAX, size_t{16} << 20);
  }
  if (rank_ == 0)
    WEFT_INFO(INIT, "direct all-reduce region: %d ranks, %zu-byte input slots x 2 per rank, %zu bytes mapped (memfd)",
              nranks_, direct_->slotBytes(), direct_->mappedBytes());
  return Status::ok();
}

void Communicator::logDirect(const OpDesc& op, plan::Algo algo) {
  const size_t bytes = op.count * typeSize(op.dtype);
  const int bucket = bytes > 1 ? 63 - __builtin_clzll(static_cast<unsigned long long>(bytes)) : 0;
  const int bit = (algo == plan::Algo::kTwoShot ? 64 : 0) + bucket;
  uint64_t& word = directLogged_[bit / 64];
  if (word & (uint64_t{1} << (bit % 64))) return;
  word |= uint64_t{1} << (bit % 64);
  WEFT_INFO(PLAN, "%s of %zu bytes on %d ranks: direct %s through the shared region (%s)", collName(op.coll), bytes,
            nranks_, plan::algoName(algo),
            cfg_.tuner.forced ? "forced by WEFT_ALGO" : "one host: one-shot up to WEFT_ONESHOT_THRESHOLD (2 ranks: 16 MiB), two-shot above");
}

Status Communicator::runDirect(const OpDesc& op, plan::Algo algo) {
  DirectRegion& R = *direct_;
  const int n = nranks_, me = rank_;
  const size_t es = typeSize(op.dtype);
  DirectDesc mine;
  mine.seq = ++seq_;
  mine.coll = static_cast<uint8_t>(CollType::kAllReduce);
  mine.dtype = static_cast<uint8_t>(op.dtype);
  mine.redop = static_cast<uint8_t>(op.op);
  mine.algo = static_cast<uint8_t>(algo);
  mine.count = op.count;
  const size_t perRound = R.slotBytes() / es;
  const auto* send = static_cast<const char*>(op.sendbuff);
  auto* recv = static_cast<char*>(op.recvbuff);
  const bool twoShot = algo == plan::Algo::kTwoShot;
  // Outputs larger than half the last-level cache go out with streaming stores (no read for
  // ownership of lines that will not be read again before they leave the cache).
  const bool stream = op.count * es > streamBytes_;
  const char* srcs[plan::kMaxDirectRanks];
  Status s;
  for (size_t off = 0; off < op.count; off += perRound) {
    const size_t len = std::min(perRound, op.count - off);
    const uint32_t k = ++round_;
    RankCtl& own = R.ctl(me);
    const char* in = send + off * es;
    size_t so = 0, sl = 0;
    const bool inlined = !twoShot && len * es <= kInlineBytes;
    ArriveLine& line = own.arrive[k & 1];
    if (twoShot) {
      // Only the peers read our slot, and only their slices: ours is reduced from the input itself.
      coll::sliceOf(len, n, me, &so, &sl);
      std::memcpy(R.input(me, k), in, so * es);
      std::memcpy(R.input(me, k) + (so + sl) * es, in + (so + sl) * es, (len - so - sl) * es);
    } else {
      std::memcpy(inlined ? line.small : reinterpret_cast<unsigned char*>(R.input(me, k)), in, len * es);
    }
    line.desc = mine;
    R.publish(line.value, false, k);
    // Wait for every peer's input of this round (the next rank first: a ring-like order spreads
    // the waits).
    for (int i = 1; i < n; ++i) {
      const int q = (me + i) % n;
      s = directWait(q, false, k, mine);
      if (!s) return directFailed(s, op, mine);
      const DirectDesc& theirs = R.ctl(q).arrive[k & 1].desc;
      if (theirs != mine) return directFailed(directMismatch(q, mine, theirs), op, mine);
    }
    R.settle(false);
    if (!twoShot) {
      for (int q = 0; q < n; ++q)
        srcs[q] = inlined ? reinterpret_cast<const char*>(R.ctl(q).arrive[k & 1].small) : R.input(q, k);
      char* dst = recv + off * es;
      reduceN(op.dtype, op.op, dst, srcs, n, len, es);
      if (op.op == RedOp::kAvg) reduce::divide(op.dtype, dst, dst, len, n);
      continue;
    }
    // Two-shot: reduce slice `me` of every input into our result slot, publish it, gather the others.
    char* res = R.result(me, k);
    if (sl) {
      for (int q = 0; q < n; ++q) srcs[q] = q == me ? in + so * es : R.input(q, k) + so * es;
      reduceN(op.dtype, op.op, res, srcs, n, sl, es);
      if (op.op == RedOp::kAvg) reduce::divide(op.dtype, res, res, sl, n);
    }
    R.publish(own.done.value, true, k);
    if (sl) copyOut(recv + (off + so) * es, res, sl * es, stream);
    for (int i = 1; i < n; ++i) {
      const int q = (me + i) % n;
      size_t qo, ql;
      coll::sliceOf(len, n, q, &qo, &ql);
      s = directWait(q, true, k, mine);
      if (!s) return directFailed(s, op, mine);
      if (ql) copyOut(recv + (off + qo) * es, R.result(q, k), ql * es, stream);
    }
    R.settle(true);
  }
  if (stream) streamFence();
  return Status::ok();
}

Status Communicator::directFailed(const Status& s, const OpDesc& op, const DirectDesc& mine) {
  (void)op;
  if (abort_.load()) return s;  // a local abort is not re-broadcast as this rank's failure
  if (s.code() == Code::kInvalidUsage && s.message().rfind("collective mismatch", 0) == 0) return fail(s);
  if (bootstrap_->hasError() && bootstrap_->error().message() == s.message()) return fail(s);
  return fail(s.withContext(describeOp(headerOf(mine))));
}

}  // namespace weft::engine
