// softverbs: the progress thread, the wire between processes, the QPN registry, and the RC
// requester/responder.
//
// Addressing. A work request names its peer the way RC hardware does: the QP's address vector
// (DLID, or DGID with a GRH) plus the destination QPN. QPNs are unique per uid on this host (a
// shared registry maps QPN -> owning process), so "host + QPN" is the whole address. On one host
// the registry gives the owning pid; requests and responses travel as small messages over
// SOCK_SEQPACKET unix sockets named after that pid, and the bytes themselves move with
// process_vm_readv/writev (the responder pulls SEND/WRITE payloads from the requester and pushes
// READ data to it). A TCP path between network namespaces can be added as a second Link: the
// registry would map a QPN to "node, endpoint" instead of a pid, requests would carry payloads
// inline (the `inlineData` form below already exists for IBV_SEND_INLINE) and READ responses
// would carry data back; requester and responder logic stay as they are.
//
// Reliability mimics RC: per-QP PSNs, in-order execution at the responder, ACK/NAK responses,
// go-back-N after an RNR NAK or a dropped request, a local ACK timeout of 4.096 us * 2^timeout and
// retry_cnt retries before IBV_WC_RETRY_EXC_ERR when the peer is gone.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <climits>

#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#else
#define VALGRIND_MAKE_MEM_DEFINED(a, n) ((void)(a), (void)(n))
#endif

#include "sv.h"

namespace sv {

// ---------------------------------------------------------------------------------------------
// QPN registry: a shared file of pid slots, one per QPN.
namespace {

constexpr uint32_t kRegSlots = 1u << 16;
constexpr uint32_t kFirstQpn = 0x40;

struct RegFile {
  std::atomic<uint32_t> cursor;
  uint32_t pad[15];
  std::atomic<int32_t> pid[kRegSlots];
};

RegFile* regFile() {
  static RegFile* reg = [] {
    std::string dir;
    {
      // Config may not be loaded yet when a QP is the first object.
      dir = G().cfg.runDir;
    }
    std::string path = dir + "/softverbs-" + std::to_string(getuid()) + ".qpn";
    RegFile* r = nullptr;
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
      struct stat st;
      if (fstat(fd, &st) == 0 && size_t(st.st_size) < sizeof(RegFile))
        if (ftruncate(fd, sizeof(RegFile)) != 0) st.st_size = 0;
      void* p = mmap(nullptr, sizeof(RegFile), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      close(fd);
      if (p != MAP_FAILED) r = static_cast<RegFile*>(p);
    }
    if (!r) {
      fprintf(stderr,
              "softverbs: cannot map the QPN registry %s (%s); QPNs are unique in this process "
              "only\n",
              path.c_str(), strerror(errno));
      r = static_cast<RegFile*>(calloc(1, sizeof(RegFile)));
    }
    return r;
  }();
  return reg;
}

bool pidAlive(pid_t pid) { return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM); }

}  // namespace

uint32_t registryAlloc() {
  RegFile* r = regFile();
  int32_t self = int32_t(getpid());
  for (uint32_t tries = 0; tries < kRegSlots; ++tries) {
    uint32_t c = r->cursor.fetch_add(1);
    uint32_t slot = kFirstQpn + c % (kRegSlots - kFirstQpn);
    int32_t cur = r->pid[slot].load();
    if (cur != 0 && pidAlive(cur)) continue;  // in use (a dead owner's slot is reclaimed)
    if (r->pid[slot].compare_exchange_strong(cur, self)) return slot;
  }
  return 0;
}

void registryFree(uint32_t qpn) {
  if (qpn < kFirstQpn || qpn >= kRegSlots) return;
  int32_t self = int32_t(getpid());
  regFile()->pid[qpn].compare_exchange_strong(self, 0);
}

pid_t registryLookup(uint32_t qpn) {
  if (qpn < kFirstQpn || qpn >= kRegSlots) return 0;
  return regFile()->pid[qpn].load();
}

// ---------------------------------------------------------------------------------------------
// Wire format
namespace {

constexpr uint32_t kMagic = 0x53564231;  // "SVB1"
enum MsgType : uint8_t { kReq = 1, kResp = 2 };
enum RespStatus : uint8_t {
  kAck = 0,
  kRnr,         // no receive posted: retry after the RNR timer
  kDrop,        // silently dropped by hardware (no QP, wrong state, wrong address, PSN gap)
  kNakAccess,   // rkey, bounds or MR rights
  kNakInvReq,   // QP rights, length, unsupported
  kNakRemOp,    // responder-side failure (its receive buffer)
  kLocalFault,  // the requester's own memory could not be read/written
};

struct MsgHdr {
  uint32_t magic;
  uint8_t type;
  uint8_t op;      // ibv_wr_opcode
  uint8_t status;  // RespStatus
  uint8_t rnrTimer;
  uint32_t dstQpn, srcQpn, psn, epoch;
  int32_t srcPid;
  uint32_t imm;
  uint32_t rkey;
  uint32_t nIov;
  uint64_t raddr;
  uint64_t len;
  uint16_t dlid;
  uint8_t isGlobal, solicited, inl, pad[3];
  uint8_t dgid[16];
};

struct WireIov {
  uint64_t addr, len;
};

struct Conn {
  int fd = -1;
  pid_t pid = 0;
  std::deque<std::string> outq;
};

struct Engine {
  std::mutex lifeMu;  // start/stop, taken before G().mu
  pthread_t thread{};
  bool running = false;
  int users = 0;
  int evfd = -1;
  int lfd = -1;
  std::vector<Conn*> conns;
  std::map<pid_t, Conn*> byPid;
  std::deque<std::string> selfInbox;
  // When the sleeping progress thread wakes up by itself (INT64_MAX: never; 0: it is awake and
  // will rescan every QP before sleeping again). Read and written under G().mu.
  int64_t sleepUntil = 0;
  std::atomic<bool> socketsLeftToPoller{false};  // the progress thread sleeps without watching the sockets
};

// When an application thread last polled a CQ (0: it armed a CQ and is about to sleep). While one
// polls, it handles incoming messages itself (enginePump) and the progress thread leaves the
// sockets alone: each message then costs no wake-up of the progress thread.
std::atomic<int64_t> gLastPollNs{0};
constexpr int64_t kPollerNs = 200000;
bool pollerHandoff() {
  static bool on = !getenv("SOFTVERBS_POLLER_PUMP") || atoi(getenv("SOFTVERBS_POLLER_PUMP")) != 0;
  return on;
}

Engine& E() {
  static Engine* e = new Engine();
  return *e;
}

// This process's pid, cached (getpid is a system call, and the data path asks several times per
// message); a forked child clears it (forkChild).
std::atomic<pid_t> gPid{0};
pid_t selfPid() {
  pid_t p = gPid.load(std::memory_order_relaxed);
  if (!p) {
    p = getpid();
    gPid.store(p, std::memory_order_relaxed);
  }
  return p;
}

void sockName(pid_t pid, sockaddr_un* a, socklen_t* len) {
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  int n = snprintf(a->sun_path + 1, sizeof a->sun_path - 1, "softverbs-%u-%d", unsigned(getuid()),
                   int(pid));
  *len = socklen_t(offsetof(sockaddr_un, sun_path) + 1 + size_t(n));
}

void closeConn(Conn* c) {
  Engine& e = E();
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  c->outq.clear();
  auto it = e.byPid.find(c->pid);
  if (it != e.byPid.end() && it->second == c) e.byPid.erase(it);
}

// Send one message to the process that owns `pid`'s endpoint. false: the peer is unreachable.
bool sendTo(pid_t pid, std::string msg) {
  Engine& e = E();
  if (pid == selfPid()) {
    e.selfInbox.push_back(std::move(msg));
    return true;
  }
  Conn* c = nullptr;
  auto it = e.byPid.find(pid);
  if (it != e.byPid.end()) c = it->second;
  if (!c) {
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_un a;
    socklen_t alen;
    sockName(pid, &a, &alen);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), alen) != 0) {
      close(fd);
      return false;
    }
    c = new Conn();
    c->fd = fd;
    c->pid = pid;
    e.conns.push_back(c);
    e.byPid[pid] = c;
    engineKick();  // the progress thread must poll the new connection (answers may come on it)
  }
  if (!c->outq.empty()) {
    c->outq.push_back(std::move(msg));
    return true;
  }
  ssize_t n = send(c->fd, msg.data(), msg.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n == ssize_t(msg.size())) return true;
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    c->outq.push_back(std::move(msg));
    engineKick();  // it must wait for POLLOUT on this connection
    return true;
  }
  closeConn(c);
  return false;
}

void flushConn(Conn* c) {
  while (c->fd >= 0 && !c->outq.empty()) {
    const std::string& m = c->outq.front();
    ssize_t n = send(c->fd, m.data(), m.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n == ssize_t(m.size())) {
      c->outq.pop_front();
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    closeConn(c);
  }
}

std::string encode(const MsgHdr& h, const void* body, size_t bodyLen) {
  std::string s(sizeof h + bodyLen, '\0');
  memcpy(&s[0], &h, sizeof h);
  if (bodyLen) memcpy(&s[sizeof h], body, bodyLen);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Memory movement. `local` is in this process; `remote` in process `pid` (maybe this one).
struct Seg {
  char* p;
  uint64_t len;
};

bool moveBytes(pid_t pid, const std::vector<Seg>& local, const std::vector<WireIov>& remote,
               bool toLocal) {
  size_t li = 0, ri = 0;
  uint64_t lo = 0, ro = 0;
  // Even within this process the copy goes through the kernel: memory the application unmapped
  // before the WR completed gives an error completion instead of a crash in the progress thread.
  static bool selfSyscallOk = true;
  bool self = pid == selfPid();
  while (li < local.size() && ri < remote.size()) {
    uint64_t n = std::min(local[li].len - lo, remote[ri].len - ro);
    if (n) {
      char* lp = local[li].p + lo;
      char* rp = reinterpret_cast<char*>(uintptr_t(remote[ri].addr + ro));
      if (self && !selfSyscallOk) {
        if (toLocal) memmove(lp, rp, n);
        else memmove(rp, lp, n);
      } else {
        uint64_t done = 0;
        while (done < n) {
          iovec l{lp + done, size_t(n - done)};
          iovec r{rp + done, size_t(n - done)};
          ssize_t k = toLocal ? process_vm_readv(pid, &l, 1, &r, 1, 0)
                              : process_vm_writev(pid, &l, 1, &r, 1, 0);
          if (k < 0 && self && (errno == ENOSYS || errno == EPERM)) {
            selfSyscallOk = false;  // no process_vm_* here: plain copies within the process
            if (toLocal) memmove(lp + done, rp + done, n - done);
            else memmove(rp + done, lp + done, n - done);
            break;
          }
          if (k <= 0) {
            logf("process_vm_%s(pid %d, %llu bytes) failed: %s", toLocal ? "readv" : "writev",
                 int(pid), (unsigned long long)(n - done), strerror(errno));
            return false;
          }
          done += uint64_t(k);
        }
      }
      if (toLocal) VALGRIND_MAKE_MEM_DEFINED(lp, n);
    }
    lo += n;
    ro += n;
    if (lo == local[li].len) ++li, lo = 0;
    if (ri < remote.size() && ro == remote[ri].len) ++ri, ro = 0;
    while (li < local.size() && local[li].len == 0) ++li;
    while (ri < remote.size() && remote[ri].len == 0) ++ri;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Completions
ibv_wc_opcode wcOpcode(ibv_wr_opcode op) {
  switch (op) {
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM: return IBV_WC_RDMA_WRITE;
    case IBV_WR_RDMA_READ: return IBV_WC_RDMA_READ;
    default: return IBV_WC_SEND;
  }
}

void sendCqe(Qp* qp, const SendWqe& w, ibv_wc_status status) {
  Cqe e;
  memset(&e, 0, sizeof e);
  e.wc.wr_id = w.wrId;
  e.wc.status = status;
  e.wc.opcode = wcOpcode(w.opcode);
  e.wc.byte_len = w.opcode == IBV_WR_RDMA_READ ? uint32_t(w.len) : 0;
  e.wc.qp_num = qp->ibqp.qp_num;
  e.seq = w.seq;
  e.isSend = true;
  cqPush(qp->scq, e);
}

void recvCqe(Qp* qp, const RecvWqe& r, ibv_wc_status status, ibv_wc_opcode op, uint32_t len,
             const MsgHdr* h) {
  Cqe e;
  memset(&e, 0, sizeof e);
  e.wc.wr_id = r.wrId;
  e.wc.status = status;
  e.wc.opcode = op;
  e.wc.byte_len = len;
  e.wc.qp_num = qp->ibqp.qp_num;
  if (h) {
    e.wc.src_qp = h->srcQpn;
    e.wc.slid = h->dlid;  // one subnet: all ports of this host share the fabric
    if (h->op == IBV_WR_SEND_WITH_IMM || h->op == IBV_WR_RDMA_WRITE_WITH_IMM) {
      e.wc.wc_flags |= IBV_WC_WITH_IMM;
      e.wc.imm_data = h->imm;
    }
    if (h->isGlobal) e.wc.wc_flags |= IBV_WC_GRH;
    e.solicited = h->solicited;
  }
  e.isSend = false;
  cqPush(qp->rcq, e);
}

void popDone(Qp* qp) {
  while (!qp->sq.empty() && qp->sq.front().st == SendWqe::kDone) {
    if (qp->sq.front().opcode == IBV_WR_RDMA_READ && qp->readsInFlight) --qp->readsInFlight;
    qp->sq.pop_front();
    if (qp->sentCount) --qp->sentCount;
  }
}

void completeError(Qp* qp, SendWqe& w, ibv_wc_status status) {
  logf("qp 0x%06x: wr %llu completes with %s", qp->ibqp.qp_num, (unsigned long long)w.wrId,
       ibv_wc_status_str(status));
  sendCqe(qp, w, status);  // errors always complete, signaled or not
  w.st = SendWqe::kDone;
  popDone(qp);
  qpToError(qp, -1);
}

int64_t ackTimeoutNs(int t) {
  if (t == 0) return INT64_MAX / 4;  // 0 = infinite
  return std::max<int64_t>(4096LL << t, 1000000);
}

int64_t rnrDelayNs(int timer) {
  static const int tenUs[32] = {65536, 1,    2,    3,    4,    6,    8,     12,    16,   24,  32,
                                48,    64,   96,   128,  192,  256,  384,   512,   768,  1024, 1536,
                                2048,  3072, 4096, 6144, 8192, 12288, 16384, 24576, 32768, 49152};
  return int64_t(tenUs[timer & 31]) * 10000;
}

void rewind(Qp* qp, int64_t t) {
  qp->epoch++;
  qp->sentCount = 0;
  qp->readsInFlight = 0;
  for (SendWqe& w : qp->sq) {
    if (w.st == SendWqe::kSent) w.st = SendWqe::kQueued;
    w.lost = false;
    w.notBefore = std::max(w.notBefore, t);
  }
  qp->lastNotBefore = std::max(qp->lastNotBefore, t);
}

// ---------------------------------------------------------------------------------------------
// Requester
bool gPosting = false;  // processRequester runs in a posting thread (requesterPoke), under mu

void transmit(Qp* qp, SendWqe& w, int64_t now) {
  Global& g = G();
  std::vector<WireIov> iov;
  ibv_wc_status bad = IBV_WC_SUCCESS;
  if (!w.inl) {
    for (const ibv_sge& s : w.sge) {
      if (!s.length) continue;
      auto it = g.mrs.find(s.lkey);
      Mr* mr = it == g.mrs.end() ? nullptr : it->second;
      if (!mr || mr->pd != qp->pd || s.addr < mr->iova || s.addr + s.length > mr->iova + mr->len ||
          (w.opcode == IBV_WR_RDMA_READ && !(mr->access & IBV_ACCESS_LOCAL_WRITE))) {
        bad = IBV_WC_LOC_PROT_ERR;
        break;
      }
      iov.push_back({uint64_t(uintptr_t(mr->va + (s.addr - mr->iova))), s.length});
    }
  }
  if (bad == IBV_WC_SUCCESS && w.len > 0x40000000) bad = IBV_WC_LOC_LEN_ERR;
  if (bad == IBV_WC_SUCCESS && w.opcode == IBV_WR_RDMA_READ && qp->maxRd < 1)
    bad = IBV_WC_LOC_QP_OP_ERR;
  if (bad != IBV_WC_SUCCESS) {
    // Even errors complete on the progress thread, after post returns, and in order: after the
    // WRs before this one have been answered.
    if (gPosting || qp->sentCount) return;
    completeError(qp, w, bad);
    return;
  }
  pid_t pid = registryLookup(qp->destQpn);
  qp->peerPid = pid;
  MsgHdr h;
  memset(&h, 0, sizeof h);
  h.magic = kMagic;
  h.type = kReq;
  h.op = uint8_t(w.opcode);
  h.dstQpn = qp->destQpn;
  h.srcQpn = qp->ibqp.qp_num;
  h.psn = w.psn;
  h.epoch = qp->epoch;
  h.srcPid = int32_t(selfPid());
  h.imm = w.imm;
  h.rkey = w.rkey;
  h.raddr = w.raddr;
  h.len = w.len;
  h.dlid = qp->av.dlid;
  h.isGlobal = qp->av.is_global;
  h.solicited = w.solicited;
  h.inl = w.inl;
  memcpy(h.dgid, qp->av.grh.dgid.raw, 16);
  std::string msg;
  if (w.inl) {
    msg = encode(h, w.inlineData.data(), w.inlineData.size());
  } else {
    h.nIov = uint32_t(iov.size());
    msg = encode(h, iov.data(), iov.size() * sizeof(WireIov));
  }
  w.st = SendWqe::kSent;
  ++qp->sentCount;
  if (w.opcode == IBV_WR_RDMA_READ) ++qp->readsInFlight;
  w.lost = false;
  w.deadline = now + ackTimeoutNs(qp->timeout);
  if (pid <= 0 || !sendTo(pid, std::move(msg))) w.lost = true;
}

void onTimeout(Qp* qp, SendWqe& w, int64_t now) {
  pid_t pid = qp->peerPid;
  bool alive = pidAlive(pid) && registryLookup(qp->destQpn) == pid && E().byPid.count(pid);
  if (pid == selfPid()) alive = registryLookup(qp->destQpn) == pid;
  if (!w.lost && alive) {  // the peer is slow, not gone: keep waiting
    w.deadline = now + ackTimeoutNs(qp->timeout);
    return;
  }
  if (++w.retries > qp->retryCnt) {
    completeError(qp, w, IBV_WC_RETRY_EXC_ERR);
    return;
  }
  logf("qp 0x%06x: retry %d of psn 0x%06x", qp->ibqp.qp_num, w.retries, w.psn);
  rewind(qp, now);
}

void flushQp(Qp* qp) {
  for (SendWqe& w : qp->sq)
    if (w.st != SendWqe::kDone) sendCqe(qp, w, IBV_WC_WR_FLUSH_ERR);
  qp->sq.clear();
  qp->sentCount = 0;
  qp->readsInFlight = 0;
  for (RecvWqe& r : qp->rq) recvCqe(qp, r, IBV_WC_WR_FLUSH_ERR, IBV_WC_RECV, 0, nullptr);
  qp->rq.clear();
}

// Moves the send queue forward; returns when it next needs attention.
int64_t processRequester(Qp* qp, int64_t now) {
  ibv_qp_state st = qp->ibqp.state;
  if (st == IBV_QPS_ERR) {
    if (!qp->sq.empty() || !qp->rq.empty()) flushQp(qp);
    return INT64_MAX;
  }
  if (st != IBV_QPS_RTS && st != IBV_QPS_SQD) return INT64_MAX;
  if (qp->sentCount && now >= qp->sq.front().deadline) {
    onTimeout(qp, qp->sq.front(), now);
    if (qp->ibqp.state == IBV_QPS_ERR) return INT64_MAX;
  }
  // Only the oldest unanswered WR can time out (the others wait behind it).
  int64_t next = qp->sentCount ? qp->sq.front().deadline : INT64_MAX;
  for (size_t i = qp->sentCount; i < qp->sq.size(); ++i) {
    SendWqe& w = qp->sq[i];
    if (st == IBV_QPS_SQD) break;
    // Like hardware, at most max_rd_atomic READs are outstanding; later WRs wait behind them.
    if (w.opcode == IBV_WR_RDMA_READ && qp->maxRd >= 1 && qp->readsInFlight >= qp->maxRd) break;
    if (w.notBefore > now) {
      next = std::min(next, w.notBefore);
      break;
    }
    transmit(qp, w, now);
    if (qp->ibqp.state == IBV_QPS_ERR) return INT64_MAX;
    if (w.st == SendWqe::kQueued) return gPosting ? now : next;  // a local error waits its turn
    next = std::min(next, w.deadline);
  }
  return next;
}

void onResponse(const MsgHdr& h) {
  Global& g = G();
  auto it = g.qps.find(h.dstQpn);
  if (it == g.qps.end()) return;
  Qp* qp = it->second;
  if (h.epoch != qp->epoch) return;  // answers a transmission that was rewound
  ibv_qp_state st = qp->ibqp.state;
  if (st != IBV_QPS_RTS && st != IBV_QPS_SQD) return;
  if (qp->sq.empty()) return;
  SendWqe& w = qp->sq.front();
  if (w.st != SendWqe::kSent || w.psn != h.psn) return;
  int64_t now = nowNs();
  switch (h.status) {
    case kAck:
      w.st = SendWqe::kDone;
      if (w.opcode == IBV_WR_RDMA_READ)
        for (const ibv_sge& s : w.sge) {
          auto m = g.mrs.find(s.lkey);
          if (m != g.mrs.end())
            VALGRIND_MAKE_MEM_DEFINED(m->second->va + (s.addr - m->second->iova), s.length);
        }
      if (w.signaled) sendCqe(qp, w, IBV_WC_SUCCESS);
      popDone(qp);
      break;
    case kRnr:
      if (qp->rnrRetry != 7 && ++w.rnrRetries > qp->rnrRetry) {
        completeError(qp, w, IBV_WC_RNR_RETRY_EXC_ERR);
      } else {
        logf("qp 0x%06x: RNR NAK for psn 0x%06x", qp->ibqp.qp_num, w.psn);
        rewind(qp, now + rnrDelayNs(h.rnrTimer));
      }
      break;
    case kDrop: w.lost = true; break;
    case kNakAccess: completeError(qp, w, IBV_WC_REM_ACCESS_ERR); break;
    case kNakInvReq: completeError(qp, w, IBV_WC_REM_INV_REQ_ERR); break;
    case kNakRemOp: completeError(qp, w, IBV_WC_REM_OP_ERR); break;
    case kLocalFault: completeError(qp, w, IBV_WC_LOC_PROT_ERR); break;
    default: break;
  }
}

// ---------------------------------------------------------------------------------------------
// Responder
void reply(const MsgHdr& req, RespStatus status, int rnrTimer = 0) {
  MsgHdr r;
  memset(&r, 0, sizeof r);
  r.magic = kMagic;
  r.type = kResp;
  r.op = req.op;
  r.status = status;
  r.rnrTimer = uint8_t(rnrTimer);
  r.dstQpn = req.srcQpn;
  r.srcQpn = req.dstQpn;
  r.psn = req.psn;
  r.epoch = req.epoch;
  r.srcPid = int32_t(selfPid());
  sendTo(req.srcPid, encode(r, nullptr, 0));
}

bool addressMatches(const Qp* qp, const MsgHdr& h) {
  const PortInfo* p = devicePort(qp->ctx->dev, qp->port);
  if (!p) return false;
  if (h.isGlobal) {
    for (const GidEnt& ge : p->gids)
      if (ge.valid && memcmp(ge.gid.raw, h.dgid, 16) == 0) return true;
    return false;
  }
  if (p->linkLayer == IBV_LINK_LAYER_ETHERNET) return false;
  return h.dlid == p->lid;
}

Mr* remoteMr(Qp* qp, uint32_t rkey, uint64_t addr, uint64_t len, int right) {
  auto it = G().mrs.find(rkey);
  if (it == G().mrs.end()) return nullptr;
  Mr* mr = it->second;
  if (mr->pd != qp->pd || !(mr->access & right)) return nullptr;
  if (addr < mr->iova || addr + len > mr->iova + mr->len || addr + len < addr) return nullptr;
  return mr;
}

// A responder-side error moves the QP to ERR. On a QP connected to itself the requester half
// must first see the NAK (it does once the response is handled), so only the event is raised.
void responderError(Qp* qp, const MsgHdr& h, int asyncEvent) {
  if (h.srcPid == selfPid() && h.srcQpn == h.dstQpn) {
    if (asyncEvent >= 0) {
      ibv_async_event ev;
      memset(&ev, 0, sizeof ev);
      ev.element.qp = &qp->ibqp;
      ev.event_type = ibv_event_type(asyncEvent);
      pushAsync(qp->ctx, ev);
    }
    return;
  }
  qpToError(qp, asyncEvent);
}

void onRequest(const MsgHdr& h, const char* body, size_t bodyLen) {
  Global& g = G();
  auto it = g.qps.find(h.dstQpn);
  if (it == g.qps.end()) return reply(h, kDrop);
  Qp* qp = it->second;
  ibv_qp_state st = qp->ibqp.state;
  if (st != IBV_QPS_RTR && st != IBV_QPS_RTS && st != IBV_QPS_SQD) return reply(h, kDrop);
  if (h.srcQpn != qp->destQpn || !addressMatches(qp, h)) return reply(h, kDrop);
  uint32_t d = (h.psn - qp->rqPsn) & 0xffffff;
  if (d != 0) return reply(h, d >= 0x800000 ? kAck : kDrop);  // duplicate : sequence gap

  std::vector<WireIov> remote;
  if (!h.inl) {
    if (bodyLen < h.nIov * sizeof(WireIov)) return reply(h, kDrop);
    remote.resize(h.nIov);
    if (h.nIov) memcpy(remote.data(), body, h.nIov * sizeof(WireIov));
  } else if (bodyLen < h.len) {
    return reply(h, kDrop);
  }
  // Payload into local segments, from the message (inline) or the requester's memory.
  auto fill = [&](const std::vector<Seg>& dst) -> bool {
    if (!h.inl) return moveBytes(h.srcPid, dst, remote, true);
    uint64_t off = 0;
    for (const Seg& s : dst) {
      uint64_t n = std::min<uint64_t>(s.len, h.len - off);
      memcpy(s.p, body + off, n);
      off += n;
    }
    return true;
  };

  ibv_wr_opcode op = ibv_wr_opcode(h.op);
  switch (op) {
    case IBV_WR_SEND:
    case IBV_WR_SEND_WITH_IMM: {
      if (qp->rq.empty()) return reply(h, kRnr, qp->minRnrTimer);
      RecvWqe r = qp->rq.front();
      std::vector<Seg> dst;
      uint64_t cap = 0;
      bool ok = true;
      for (const ibv_sge& s : r.sge) {
        if (!s.length) continue;
        auto m = g.mrs.find(s.lkey);
        Mr* mr = m == g.mrs.end() ? nullptr : m->second;
        if (!mr || mr->pd != qp->pd || !(mr->access & IBV_ACCESS_LOCAL_WRITE) ||
            s.addr < mr->iova || s.addr + s.length > mr->iova + mr->len) {
          ok = false;
          break;
        }
        dst.push_back({mr->va + (s.addr - mr->iova), s.length});
        cap += s.length;
      }
      if (!ok) {
        qp->rq.pop_front();
        recvCqe(qp, r, IBV_WC_LOC_PROT_ERR, IBV_WC_RECV, 0, &h);
        reply(h, kNakRemOp);
        return responderError(qp, h, -1);
      }
      if (h.len > cap) {
        qp->rq.pop_front();
        recvCqe(qp, r, IBV_WC_LOC_LEN_ERR, IBV_WC_RECV, 0, &h);
        reply(h, kNakInvReq);
        return responderError(qp, h, -1);
      }
      // Trim the scatter list to the message length.
      uint64_t left = h.len;
      for (Seg& s : dst) {
        s.len = std::min(s.len, left);
        left -= s.len;
      }
      if (!fill(dst)) return reply(h, kLocalFault);
      qp->rq.pop_front();
      recvCqe(qp, r, IBV_WC_SUCCESS, IBV_WC_RECV, uint32_t(h.len), &h);
      break;
    }
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM: {
      if (!(qp->access & IBV_ACCESS_REMOTE_WRITE)) {
        reply(h, kNakInvReq);
        return responderError(qp, h, IBV_EVENT_QP_REQ_ERR);
      }
      bool imm = op == IBV_WR_RDMA_WRITE_WITH_IMM;
      if (imm && qp->rq.empty()) return reply(h, kRnr, qp->minRnrTimer);
      if (h.len) {
        Mr* mr = remoteMr(qp, h.rkey, h.raddr, h.len, IBV_ACCESS_REMOTE_WRITE);
        if (!mr) {
          reply(h, kNakAccess);
          return responderError(qp, h, IBV_EVENT_QP_ACCESS_ERR);
        }
        if (!fill({{mr->va + (h.raddr - mr->iova), h.len}})) return reply(h, kLocalFault);
      }
      if (imm) {
        RecvWqe r = qp->rq.front();
        qp->rq.pop_front();
        recvCqe(qp, r, IBV_WC_SUCCESS, IBV_WC_RECV_RDMA_WITH_IMM, uint32_t(h.len), &h);
      }
      break;
    }
    case IBV_WR_RDMA_READ: {
      if (!(qp->access & IBV_ACCESS_REMOTE_READ) || qp->maxDestRd < 1) {
        reply(h, kNakInvReq);
        return responderError(qp, h, IBV_EVENT_QP_REQ_ERR);
      }
      if (h.len) {
        Mr* mr = remoteMr(qp, h.rkey, h.raddr, h.len, IBV_ACCESS_REMOTE_READ);
        if (!mr) {
          reply(h, kNakAccess);
          return responderError(qp, h, IBV_EVENT_QP_ACCESS_ERR);
        }
        if (!moveBytes(h.srcPid, {{mr->va + (h.raddr - mr->iova), h.len}}, remote, false))
          return reply(h, kLocalFault);
      }
      break;
    }
    default:
      reply(h, kNakInvReq);
      return responderError(qp, h, IBV_EVENT_QP_REQ_ERR);
  }
  qp->rqPsn = (qp->rqPsn + 1) & 0xffffff;
  reply(h, kAck);
}

void handleMsg(const std::string& m) {
  if (m.size() < sizeof(MsgHdr)) return;
  MsgHdr h;
  memcpy(&h, m.data(), sizeof h);
  if (h.magic != kMagic) return;
  if (h.type == kReq) onRequest(h, m.data() + sizeof h, m.size() - sizeof h);
  else if (h.type == kResp) onResponse(h);
}

// ---------------------------------------------------------------------------------------------
// The progress thread
void* engineMain(void*) {
  Global& g = G();
  Engine& e = E();
  std::unique_lock<std::mutex> lk(g.mu);
  std::vector<pollfd> pfds;
  std::vector<Conn*> pconns;
  std::string buf(1 << 16, '\0');
  while (e.running) {
    int64_t now = nowNs();
    for (int rounds = 0; !e.selfInbox.empty() && rounds < 1024; ++rounds) {
      std::string m = std::move(e.selfInbox.front());
      e.selfInbox.pop_front();
      handleMsg(m);
    }
    int64_t next = INT64_MAX;
    for (auto& kv : g.qps) next = std::min(next, processRequester(kv.second, now));
    if (!e.selfInbox.empty()) continue;
    // Drop closed connections.
    for (size_t i = 0; i < e.conns.size();) {
      if (e.conns[i]->fd < 0) {
        delete e.conns[i];
        e.conns[i] = e.conns.back();
        e.conns.pop_back();
      } else {
        ++i;
      }
    }
    pfds.clear();
    pconns.clear();
    pfds.push_back({e.evfd, POLLIN, 0});
    pfds.push_back({e.lfd, POLLIN, 0});
    // An application thread that polled a CQ within kPollerNs handles incoming messages itself;
    // look again when that window closes (or when it arms a CQ, which kicks us).
    int64_t lastPoll = gLastPollNs.load(std::memory_order_relaxed);
    bool leave = pollerHandoff() && lastPoll && now - lastPoll < kPollerNs;
    e.socketsLeftToPoller = leave;
    if (leave) next = std::min(next, lastPoll + kPollerNs);
    for (Conn* c : e.conns) {
      short ev = short((leave ? 0 : POLLIN) | (c->outq.empty() ? 0 : POLLOUT));
      if (!ev) continue;
      pfds.push_back({c->fd, ev, 0});
      pconns.push_back(c);
    }
    e.sleepUntil = next;
    timespec ts, *tsp = nullptr;
    if (next != INT64_MAX) {
      int64_t wait = std::max<int64_t>(0, next - now);
      ts.tv_sec = wait / 1000000000;
      ts.tv_nsec = wait % 1000000000;
      tsp = &ts;
    }
    lk.unlock();
    int rc = ppoll(pfds.data(), pfds.size(), tsp, nullptr);
    lk.lock();
    e.sleepUntil = 0;
    if (rc <= 0) continue;
    if (pfds[0].revents & POLLIN) {
      uint64_t v;
      ssize_t r = read(e.evfd, &v, sizeof v);
      (void)r;
    }
    if (pfds[1].revents & POLLIN) {
      for (;;) {
        int fd = accept4(e.lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) break;
        ucred cred;
        socklen_t cl = sizeof cred;
        Conn* c = new Conn();
        c->fd = fd;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0) c->pid = cred.pid;
        e.conns.push_back(c);
        if (c->pid && !e.byPid.count(c->pid)) e.byPid[c->pid] = c;
      }
    }
    for (size_t i = 0; i < pconns.size(); ++i) {
      Conn* c = pconns[i];
      short re = pfds[i + 2].revents;
      if (c->fd < 0 || !re) continue;
      if (re & POLLOUT) flushConn(c);
      if (re & POLLIN) {
        for (int k = 0; k < 256 && c->fd >= 0; ++k) {
          ssize_t n = recv(c->fd, &buf[0], buf.size(), MSG_DONTWAIT);
          if (n > 0) {
            handleMsg(std::string(buf.data(), size_t(n)));
            continue;
          }
          if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) closeConn(c);
          break;
        }
      } else if (re & (POLLHUP | POLLERR | POLLNVAL)) {
        closeConn(c);
      }
    }
  }
  return nullptr;
}

void forkPrepare() {
  E().lifeMu.lock();
  G().mu.lock();
}
void forkParent() {
  G().mu.unlock();
  E().lifeMu.unlock();
}
// The child has none of the parent's threads: forget the parent's objects and endpoint.
void forkChild() {
  gPid.store(0, std::memory_order_relaxed);
  Engine& e = E();
  Global& g = G();
  for (Conn* c : e.conns) {
    if (c->fd >= 0) close(c->fd);
    delete c;
  }
  e.conns.clear();
  e.byPid.clear();
  e.selfInbox.clear();
  if (e.lfd >= 0) close(e.lfd);
  if (e.evfd >= 0) close(e.evfd);
  e.lfd = e.evfd = -1;
  e.running = false;
  e.users = 0;
  g.qps.clear();
  g.mrs.clear();
  for (Context* c : g.ctxs) c->alive = false;
  g.ctxs.clear();
  g.cfgLoaded = false;  // the child may have a different environment by its first open
  G().mu.unlock();
  E().lifeMu.unlock();
}

__attribute__((constructor)) void svInit() {
  pthread_atfork(forkPrepare, forkParent, forkChild);
}

}  // namespace

void engineAcquire() {
  Engine& e = E();
  std::lock_guard<std::mutex> life(e.lifeMu);
  std::lock_guard<std::mutex> lk(G().mu);
  if (e.users++ > 0) return;
  // Peers on hosts with Yama ptrace_scope=1 must be allowed to reach our memory.
  prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
  (void)regFile();
  e.evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  e.lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_un a;
  socklen_t alen;
  sockName(selfPid(), &a, &alen);
  if (e.lfd < 0 || bind(e.lfd, reinterpret_cast<sockaddr*>(&a), alen) != 0 ||
      listen(e.lfd, 512) != 0)
    fprintf(stderr, "softverbs: cannot open the endpoint of pid %d: %s\n", int(selfPid()),
            strerror(errno));
  e.running = true;
  // The progress thread must not take signals meant for the application.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_create(&e.thread, nullptr, engineMain, nullptr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

void engineRelease() {
  Engine& e = E();
  std::lock_guard<std::mutex> life(e.lifeMu);
  {
    std::lock_guard<std::mutex> lk(G().mu);
    if (--e.users > 0) return;
    e.running = false;
    engineKick();
  }
  pthread_join(e.thread, nullptr);
  std::lock_guard<std::mutex> lk(G().mu);
  for (Conn* c : e.conns) {
    if (c->fd >= 0) close(c->fd);
    delete c;
  }
  e.conns.clear();
  e.byPid.clear();
  e.selfInbox.clear();
  if (e.lfd >= 0) close(e.lfd);
  if (e.evfd >= 0) close(e.evfd);
  e.lfd = e.evfd = -1;
}

void notePoll(bool arming) {
  if (!pollerHandoff()) return;
  if (!arming) {
    gLastPollNs.store(nowNs(), std::memory_order_relaxed);
    return;
  }
  // About to sleep on a completion channel: the progress thread must watch the sockets again.
  gLastPollNs.store(0, std::memory_order_relaxed);
  if (E().socketsLeftToPoller) engineKick();
}

bool enginePump() {
  // An application thread polling an empty CQ handles the messages already waiting on this
  // process's sockets itself when the lock is free, instead of waiting for the progress thread to
  // be woken and scheduled.
  Engine& e = E();
  Global& g = G();
  if (!pollerHandoff()) return false;
  std::unique_lock<std::mutex> lk(g.mu, std::try_to_lock);
  if (!lk.owns_lock() || !e.running) return false;
  static std::string buf(1 << 16, '\0');  // used under mu only
  bool any = false;
  for (int k = 0; !e.selfInbox.empty() && k < 1024; ++k) {
    std::string m = std::move(e.selfInbox.front());
    e.selfInbox.pop_front();
    handleMsg(m);
    any = true;
  }
  for (size_t i = 0; i < e.conns.size(); ++i) {
    Conn* c = e.conns[i];
    if (c->fd < 0) continue;
    for (int k = 0; k < 64; ++k) {
      ssize_t n = recv(c->fd, &buf[0], buf.size(), MSG_DONTWAIT);
      if (n <= 0) break;  // closed connections are the progress thread's
      handleMsg(std::string(buf.data(), size_t(n)));
      any = true;
    }
  }
  if (any) {  // answers may let queued WRs go (READ limits, RNR waits end)
    int64_t now = nowNs(), next = INT64_MAX;
    for (auto& kv : g.qps) next = std::min(next, processRequester(kv.second, now));
    if (!e.selfInbox.empty() || next < e.sleepUntil) engineKick();
  }
  return any;
}

void requesterPoke(Qp* qp) {
  // The posting thread starts the transmission itself (one thread hop less per message); the
  // completion still comes from the progress thread when the responder's answer arrives.
  Engine& e = E();
  if (!e.running) return;
  if (qp->ibqp.state != IBV_QPS_RTS || (!qp->sq.empty() && qp->sq.front().st == SendWqe::kSent &&
                                        nowNs() >= qp->sq.front().deadline)) {
    engineKick();  // flushes, timeouts and retries are the progress thread's
    return;
  }
  gPosting = true;
  int64_t next = processRequester(qp, nowNs());
  gPosting = false;
  if (!e.selfInbox.empty() || next < e.sleepUntil) engineKick();
}

void engineKick() {
  Engine& e = E();
  if (e.evfd < 0) return;
  uint64_t one = 1;
  ssize_t r = write(e.evfd, &one, sizeof one);
  (void)r;
}

void cqPush(Cq* cq, const Cqe& e) {
  if (cq->overrun) return;
  if (cq->entries.size() >= size_t(cq->capacity)) {
    cq->overrun = true;
    ibv_async_event ev;
    memset(&ev, 0, sizeof ev);
    ev.element.cq = &cq->ibcq;
    ev.event_type = IBV_EVENT_CQ_ERR;
    pushAsync(cq->ctx, ev);
    logf("cq %p overrun (capacity %d)", static_cast<void*>(cq), cq->capacity);
    return;
  }
  cq->entries.push_back(e);
  cq->avail.fetch_add(1, std::memory_order_release);
  cq->pushes.fetch_add(1, std::memory_order_release);
  if (cq->waiters.load(std::memory_order_acquire) > 0)
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&cq->pushes), FUTEX_WAKE_PRIVATE, INT32_MAX,
            nullptr, nullptr, 0);

  if (cq->armed && cq->ch &&
      (!cq->solicitedOnly || e.solicited || e.wc.status != IBV_WC_SUCCESS)) {
    cq->armed = false;
    cq->armedHint.store(false, std::memory_order_relaxed);
    cq->ch->events.push_back(cq);
    uint64_t one = 1;
    ssize_t r = write(cq->ch->ibch.fd, &one, sizeof one);
    (void)r;
  }
}

void cqPurgeQp(Cq* cq, uint32_t qpn) {
  auto& v = cq->entries;
  size_t before = v.size();
  v.erase(std::remove_if(v.begin(), v.end(), [&](const Cqe& e) { return e.wc.qp_num == qpn; }),
          v.end());
  cq->avail.fetch_sub(int(before - v.size()), std::memory_order_relaxed);
}

void qpToError(Qp* qp, int asyncEvent) {
  qp->ibqp.state = IBV_QPS_ERR;
  qp->epoch++;
  flushQp(qp);
  if (asyncEvent >= 0) {
    ibv_async_event ev;
    memset(&ev, 0, sizeof ev);
    ev.element.qp = &qp->ibqp;
    ev.event_type = ibv_event_type(asyncEvent);
    pushAsync(qp->ctx, ev);
  }
}

}  // namespace sv
