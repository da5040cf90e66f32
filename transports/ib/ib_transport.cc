// InfiniBand/RoCE verbs transport; the protocol is described in ib_transport.h.
#include "transports/ib/ib_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>

#include "lib/core/config.h"
#include "lib/core/log.h"
#include "lib/core/net.h"
#include "lib/core/util.h"
#include "transports/ib/ib_verbs.h"

namespace weft::transport {

struct ListenComm {};
struct SendComm {};
struct RecvComm {};
struct Request {};

namespace {

using ib::VerbsApi;

constexpr uint32_t kHandleMagic = 0x42495457;  // "WTIB"
constexpr uint32_t kHelloMagic = 0x4c454849;
constexpr uint32_t kAckMagic = 0x4b434149;
constexpr uint32_t kByeMagic = 0x45594257;  // "WBYE": a receiver's last word on the side channel
constexpr uint32_t kVersion = 1;
constexpr int kMaxQps = 16;
constexpr uint32_t kFifoDepth = 32;            // requests in flight per connection
constexpr size_t kStripeMin = 64 * 1024;       // smaller messages use QP 0 only
constexpr size_t kMaxMessage = 0x7fffffff;     // the size travels in 31 bits of the immediate
constexpr uint32_t kStripedBit = 0x80000000u;
constexpr uint32_t kInlineWant = 64;
constexpr uint64_t kCtsWrId = ~uint64_t{0};
constexpr uint64_t kFlushWrId = 0xff00000000000000ull;  // | flush slot
constexpr int kMaxFlushes = 8;                         // flushes in flight per connection
constexpr size_t kFlushTarget = 4096 - 8;              // the flush READ lands in the FIFO page's tail
constexpr uint64_t kPeerCheckNs = 1000000;     // side-channel liveness check period while idle

uint64_t nowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

std::mutex gHistoryMu;
std::vector<std::pair<const void*, size_t>> gHistory;

struct CtsEntry {
  uint64_t addr;
  uint64_t size;
  uint32_t rkey;
  uint32_t tag;
  uint64_t seq;
};
static_assert(sizeof(CtsEntry) == 32);

// What a receiver writes on the side channel when it closes: how many messages (sequence numbers
// 0..delivered-1) had fully arrived. RC acknowledges a write after the responder placed its data,
// so the sender's completion of a message the receiver already consumed can still be on its way when
// the receiver closes (or, if the responder's ACK had not left yet, never come). Those messages
// are delivered: the sender completes them (their buffers may be reused, as after a completion).
struct Bye {
  uint32_t magic;
  uint32_t pad;
  uint64_t delivered;
};
static_assert(sizeof(Bye) == 16);

struct HandleLayout {
  uint32_t magic;
  uint32_t pad;
  unsigned char addr[net::SockAddr::kWireBytes];
  uint64_t listenId;
  void* connectState;  // connecting side only
};
static_assert(sizeof(HandleLayout) <= kHandleBytes);

struct Hello {
  uint32_t magic;
  uint32_t version;
  uint64_t listenId;
  uint32_t nqps;
  uint32_t mtu;  // enum ibv_mtu
  uint32_t linkLayer;
  uint32_t lid;
  uint8_t gid[16];
  uint32_t qpn[kMaxQps];
  uint32_t psn;
  uint32_t fifoDepth;
  uint64_t fifoAddr;
  uint32_t fifoRkey;
  uint32_t pad;
};

struct Device {
  std::string name;
  int port = 1;
  int gidIndex = -1;
  ibv_context* ctx = nullptr;
  ibv_pd* pd = nullptr;
  ibv_port_attr attr{};
  ibv_gid gid{};
  uint32_t maxInline = 0;
  // GPUDirect: what registering device memory can use on this device, and why not.
  bool dmabuf = false, peerMemory = false;
  std::string dmabufWhy, peerMemoryWhy;
  std::mutex mu;  // registration cache and staging pool
  struct CachedMr {
    ibv_mr* mr;
    int refs;
  };
  std::map<std::pair<uintptr_t, size_t>, CachedMr> mrCache;
  std::map<size_t, std::vector<std::pair<void*, ibv_mr*>>> stagingFree;  // by size class
  std::vector<std::pair<void*, size_t>> stagingAll;
  std::vector<ibv_mr*> stagingMrs;
};

struct Mr {
  Device* dev;
  ibv_mr* mr;
  std::pair<uintptr_t, size_t> key;
  bool device = false;  // device memory (regMrDevice): not cached, flushed after receives
};

struct Staging {
  void* mem = nullptr;
  ibv_mr* mr = nullptr;
  size_t cls = 0;
};

std::string gidText(const uint8_t* g) {
  char buf[INET6_ADDRSTRLEN];
  if (!inet_ntop(AF_INET6, g, buf, sizeof buf)) return "?";
  return buf;
}

const char* mtuText(uint32_t m) {
  switch (m) {
    case IBV_MTU_256: return "256";
    case IBV_MTU_512: return "512";
    case IBV_MTU_1024: return "1024";
    case IBV_MTU_2048: return "2048";
    case IBV_MTU_4096: return "4096";
    default: return "?";
  }
}

void noteRegistration(const void* addr, size_t len) {
  std::lock_guard<std::mutex> lock(gHistoryMu);
  gHistory.emplace_back(addr, len);
}

std::string hex(uint64_t v) {
  char b[24];
  snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

// REMOTE_READ: the GPUDirect flush reads one byte of a registered receive buffer.
constexpr int kAccess = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;

Status registerRange(const VerbsApi* v, Device* d, void* addr, size_t len, ibv_mr** out) {
  *out = v->regMr(d->pd, addr, len, kAccess);
  if (!*out)
    return errnoStatus("cannot register " + std::to_string(len) + " bytes at " +
                           std::to_string(reinterpret_cast<uintptr_t>(addr)) + " with " + d->name +
                           " (check `ulimit -l`, the locked-memory limit)",
                       errno);
  noteRegistration(addr, len);
  return Status::ok();
}

enum class ReqState { kFree, kWaitCts, kPosted, kWaitData, kDone };

struct IbRequest : Request {
  struct IbComm* comm = nullptr;
  ReqState state = ReqState::kFree;
  uint64_t seq = 0;
  char* data = nullptr;
  size_t size = 0;      // send: message size; recv: the arrived size
  size_t capacity = 0;  // recv: posted size
  uint32_t tag = 0;
  uint32_t lkey = 0;
  bool useInline = false;
  Staging staging;
  int pendingWr = 0;     // send: signaled writes not yet completed
  bool gotFirst = false; // recv: QP 0's immediate arrived
  bool striped = false;
  uint64_t stripeIndex = 0;
  bool flush = false;    // a GPUDirect flush (a 1-byte RDMA READ on the loopback QP)
  uint64_t flushAddr = 0;
  uint32_t flushRkey = 0;
};

constexpr uint32_t kCommMagic = 0x4d4d4f43;

struct IbComm : SendComm, RecvComm {
  uint32_t magic = kCommMagic;
  bool sending = false;
  const VerbsApi* v = nullptr;
  Device* dev = nullptr;
  class IbTransport* t = nullptr;
  int fd = -1;
  bool peerClosed = false;
  uint64_t lastPeerCheck = 0;
  Bye bye{};                   // sender: the receiver's Bye as it arrives on the side channel
  size_t byeBytes = 0;
  uint64_t peerDelivered = 0;  // sender: messages the receiver said had arrived (its Bye)
  uint64_t delivered = 0;      // receiver: messages fully arrived (a prefix of the sequence)
  ibv_comp_channel* channel = nullptr;
  ibv_cq* cq = nullptr;
  int nqps = 0;
  ibv_qp* qp[kMaxQps] = {};
  uint32_t psn = 0;
  unsigned unackedEvents = 0;
  bool armed = false;  // the CQ was armed (descriptors()) and its event not yet read
  // FIFO: sender side, the entries the receiver writes; receiver side, the local copies it sends.
  CtsEntry* fifo = nullptr;
  ibv_mr* fifoMr = nullptr;
  uint64_t remoteFifo = 0;
  uint32_t remoteFifoRkey = 0;
  IbRequest reqs[kFifoDepth];
  uint64_t head = 0;  // next sequence number
  uint64_t tail = 0;  // oldest request not yet reported done
  bool reported[kFifoDepth] = {};
  uint64_t ctsArrived = 0;          // sender: CTS entries that arrived
  uint64_t nextToPost = 0;          // sender: first request whose data is not posted
  uint64_t firstArrived = 0;        // receiver: QP 0 immediates seen
  uint64_t stripedAssigned = 0;     // receiver: striped messages seen on QP 0
  uint64_t stripedArrived[kMaxQps] = {};
  ibv_qp* loopQp = nullptr;  // receiver: connected to itself, for GPUDirect flushes
  IbRequest flushes[kMaxFlushes];
  Status error;
  std::string peer;
  std::string what;  // "RoCE GID index 3 (::ffff:10.0.0.1), traffic class 0" for messages
  bool roce = false;
  int tc = 0;
};

void destroyComm(IbComm* c);

Status failComm(IbComm* c, Status s) {
  if (c->error.isOk()) c->error = s;
  return c->error;
}

Status wcError(IbComm* c, const ibv_wc& wc) {
  std::string st = c->v->wcStatusStr(wc.status);
  std::string side = c->sending ? "sending to " : "receiving from ";
  std::string base = "RDMA " + side + c->peer + " failed (" + st + ", vendor error " + std::to_string(wc.vendor_err) + "): ";
  switch (wc.status) {
    case IBV_WC_RETRY_EXC_ERR:
      if (c->roce)
        return remoteError(base + "the NICs cannot reach each other over RoCE with GID index " + std::to_string(c->dev->gidIndex) +
                           ", traffic class " + std::to_string(c->tc) +
                           ": check the GID index (WEFT_IB_GID_INDEX), traffic class (WEFT_IB_TC) and PFC, or the peer process exited");
      return remoteError(base + "the peer's port does not answer over InfiniBand (" + c->dev->name + " port " +
                         std::to_string(c->dev->port) + "): check the subnet manager and the cabling, or the peer process exited");
    case IBV_WC_REM_ACCESS_ERR: {
      if ((wc.wr_id & kFlushWrId) == kFlushWrId && wc.wr_id != kCtsWrId) {
        const IbRequest& f = c->flushes[(wc.wr_id & 0xff) % kMaxFlushes];
        return invalidUsage(base + "the GPUDirect flush could not read its device buffer at " + hex(f.flushAddr) + " (rkey " +
                            hex(f.flushRkey) + "): that registration was released (deregMr) before the flush");
      }
      if (c->sending) {
        uint64_t seq = wc.wr_id >> 8;
        const CtsEntry& e = c->fifo[seq % kFifoDepth];
        const IbRequest& r = c->reqs[seq % kFifoDepth];
        return invalidUsage(base + "the receiver refused the RDMA write of message " + std::to_string(seq) + " (" + std::to_string(r.size) +
                            " bytes) into its receive buffer at " + hex(e.addr) + ", rkey " + hex(e.rkey) +
                            ": that buffer is no longer registered there (deregistered or freed before the message arrived, or registered "
                            "smaller than the receive)");
      }
      return internalError(base + "the sender refused the clear-to-send write into its FIFO at " + hex(c->remoteFifo) + ", rkey " +
                           hex(c->remoteFifoRkey) + ": the sender's connection was torn down or its FIFO deregistered (a weft bug if both ends are open)");
    }
    case IBV_WC_REM_INV_REQ_ERR:
      return internalError(base + "the peer's queue pair rejected the request (invalid request): a weft protocol bug; please report it");
    case IBV_WC_LOC_PROT_ERR:
      return internalError(base + "a local buffer is not registered with this NIC or was freed while in use: a weft registration bug; please report it");
    case IBV_WC_RNR_RETRY_EXC_ERR:
      return internalError(base + "the peer had no receive posted: a weft protocol bug; please report it");
    case IBV_WC_WR_FLUSH_ERR:
      return remoteError(base + "the connection is broken (its queue pair is in the error state: an RDMA operation of the peer was "
                                "refused here, or the peer failed)");
    default:
      return systemError(base + "the NIC reported an error completion");
  }
}

Status postRecvs(IbComm* c, int qpIndex, int n) {
  for (int i = 0; i < n; ++i) {
    ibv_recv_wr wr{}, *bad = nullptr;
    wr.wr_id = static_cast<uint64_t>(qpIndex);
    wr.num_sge = 0;
    int rc = ibv_post_recv(c->qp[qpIndex], &wr, &bad);
    if (rc) return failComm(c, errnoStatus("ibv_post_recv on " + c->dev->name, rc));
  }
  return Status::ok();
}

void partRange(size_t size, int n, int i, size_t* off, size_t* len) {
  size_t k = static_cast<size_t>(n);
  size_t a = size * static_cast<size_t>(i) / k, b = size * static_cast<size_t>(i + 1) / k;
  *off = a;
  *len = b - a;
}

class IbTransport final : public MessagingTransport {
 public:
  ~IbTransport() override {
    for (auto& d : devs_) {
      for (auto& [k, m] : d->mrCache) v_->deregMr(m.mr);
      for (ibv_mr* m : d->stagingMrs) v_->deregMr(m);
      for (auto& [p, n] : d->stagingAll) munmap(p, n);
      if (d->pd) v_->deallocPd(d->pd);
      if (d->ctx) v_->closeDevice(d->ctx);
    }
  }

  Status init(const std::vector<IbPortSpec>& ports) {
    std::string lib = config::getString("WEFT_IBVERBS_LIB");
    WEFT_TRY(ib::loadVerbs(lib, &v_));
    int64_t q = config::getInt("WEFT_IB_QPS_PER_CONNECTION");
    if (q < 1 || q > kMaxQps) return invalidArgument("WEFT_IB_QPS_PER_CONNECTION=" + std::to_string(q) + " is out of range: use 1 to 16");
    nqps_ = static_cast<int>(q);
    tc_ = static_cast<int>(config::getInt("WEFT_IB_TC"));
    sl_ = static_cast<int>(config::getInt("WEFT_IB_SL"));
    timeout_ = static_cast<int>(config::getInt("WEFT_IB_TIMEOUT"));
    retry_ = static_cast<int>(config::getInt("WEFT_IB_RETRY_CNT"));
    if (tc_ < 0 || tc_ > 255) return invalidArgument("WEFT_IB_TC=" + std::to_string(tc_) + " is out of range: use 0 to 255");
    if (sl_ < 0 || sl_ > 15) return invalidArgument("WEFT_IB_SL=" + std::to_string(sl_) + " is out of range: use 0 to 15");
    if (timeout_ < 1 || timeout_ > 31) return invalidArgument("WEFT_IB_TIMEOUT=" + std::to_string(timeout_) + " is out of range: use 1 to 31");
    if (retry_ < 0 || retry_ > 7) return invalidArgument("WEFT_IB_RETRY_CNT=" + std::to_string(retry_) + " is out of range: use 0 to 7");

    errno = 0;
    int n = 0;
    ibv_device** list = v_->getDeviceList(&n);
    if (!list || n == 0) {
      int e = errno;
      if (list) v_->freeDeviceList(list);
      std::string why = e == ENOSYS ? " (this kernel has no InfiniBand/RDMA support)" : e ? std::string(" (") + strerror(e) + ")" : "";
      return systemError("no RDMA device: " + lib + " lists none" + why);
    }
    std::string names;
    for (int i = 0; i < n; ++i) names += std::string(i ? ", " : "") + v_->getDeviceName(list[i]);
    if (ports.empty()) {
      v_->freeDeviceList(list);
      return systemError("no usable RDMA port: discovery found none to use among the devices " + names +
                         " (check WEFT_IB_HCA, the port states and, for RoCE, WEFT_IB_GID_INDEX)");
    }
    Status s;
    for (const IbPortSpec& p : ports) {
      ibv_device* found = nullptr;
      for (int i = 0; i < n; ++i)
        if (p.device == v_->getDeviceName(list[i])) found = list[i];
      if (!found) {
        s = systemError("RDMA device " + p.device + " is not among the devices " + lib + " lists (" + names + ")");
        break;
      }
      s = openPort(found, p);
      if (!s) break;
    }
    v_->freeDeviceList(list);
    return s;
  }

  const char* name() const override { return "ib"; }
  int deviceCount() const override { return static_cast<int>(devs_.size()); }
  DeviceProperties device(int dev) const override {
    const Device& d = *devs_[static_cast<size_t>(dev)];
    DeviceProperties p;
    p.name = d.name + ":" + std::to_string(d.port);
    p.address = d.attr.link_layer == IBV_LINK_LAYER_ETHERNET
                    ? "GID " + std::to_string(d.gidIndex) + " " + gidText(d.gid.raw)
                    : "LID " + std::to_string(d.attr.lid);
    p.speedMbps = 0;
    p.hostMemoryNeedsRegistration = false;  // unregistered memory goes through staging
    p.maxMessageBytes = kMaxMessage;
    return p;
  }

  Status listen(int dev, Handle* handle, ListenComm** out) override {
    if (dev < 0 || dev >= deviceCount()) return invalidArgument("ib device " + std::to_string(dev) + " does not exist");
    std::vector<net::Interface> ifs;
    WEFT_TRY(net::chooseInterfaces(&ifs));
    auto l = std::make_unique<Listen>();
    l->dev = dev;
    net::SockAddr bound;
    WEFT_TRY(net::listenOn(ifs[0].addr, &l->fd, &bound));
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
    if (dev < 0 || dev >= deviceCount()) return invalidArgument("ib device " + std::to_string(dev) + " does not exist");
    HandleLayout h;
    std::memcpy(&h, handle->bytes, sizeof h);
    if (h.magic != kHandleMagic) return invalidUsage("malformed ib-transport handle (bad magic): it was not made by the ib transport's listen");
    auto* st = static_cast<Pending*>(h.connectState);
    auto store = [&](Pending* p) {
      h.connectState = p;
      std::memcpy(handle->bytes, &h, sizeof h);
    };
    if (!st) {
      st = new Pending();
      st->listenId = h.listenId;
      Status s = net::SockAddr::fromWire(h.addr, &st->addr);
      if (s) {
        st->fd = socket(st->addr.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (st->fd < 0) s = errnoStatus("socket", errno);
      }
      if (s) {
        int r = ::connect(st->fd, reinterpret_cast<const sockaddr*>(&st->addr.ss), st->addr.len);
        if (r == 0) st->stage = 1;
        else if (errno != EINPROGRESS) s = errnoStatus("connect to the ib side channel at " + st->addr.str(), errno);
      }
      if (s) s = createComm(dev, true, st);
      if (!s) {
        dropPending(st);
        return s.withContext("ib transport connect");
      }
      store(st);
    }
    Status s = stepConnect(st);
    if (!s) {
      dropPending(st);
      store(nullptr);
      return s;
    }
    if (st->stage == 5) {
      IbComm* c = st->comm;
      st->comm = nullptr;
      st->fd = -1;
      delete st;
      store(nullptr);
      *out = c;
    }
    return Status::ok();
  }

  Status accept(ListenComm* listen, RecvComm** out) override {
    *out = nullptr;
    auto* l = static_cast<Listen*>(listen);
    for (;;) {
      int fd = accept4(l->fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) break;
      net::setNoDelay(fd);
      auto* p = new Pending();
      p->fd = fd;
      p->stage = 2;  // receive the hello
      p->listenId = l->id;
      l->pending.push_back(p);
    }
    for (size_t k = 0; k < l->pending.size();) {
      Pending* p = l->pending[k];
      Status s = stepAccept(l, p);
      if (!s) {
        WEFT_WARN(NET, "ib transport: refused a connection on the side channel: %s", s.message().c_str());
        dropPending(p);
        l->pending.erase(l->pending.begin() + static_cast<long>(k));
        continue;
      }
      if (p->stage == 5) {
        IbComm* c = p->comm;
        p->comm = nullptr;
        p->fd = -1;
        delete p;
        l->pending.erase(l->pending.begin() + static_cast<long>(k));
        *out = c;
        return Status::ok();
      }
      ++k;
    }
    return Status::ok();
  }

  Status closeListen(ListenComm* listen) override {
    auto* l = static_cast<Listen*>(listen);
    if (!l) return Status::ok();
    for (Pending* p : l->pending) dropPending(p);
    if (l->fd >= 0) close(l->fd);
    delete l;
    return Status::ok();
  }
  Status closeSend(SendComm* comm) override {
    destroyComm(static_cast<IbComm*>(comm));
    return Status::ok();
  }
  Status closeRecv(RecvComm* comm) override {
    auto* c = static_cast<IbComm*>(comm);
    if (c && c->fd >= 0 && c->error.isOk()) {
      // Tell the sender which messages arrived (see Bye), after taking in the last completions.
      bool any = false;
      (void)pollCq(c, &any);
      finishRecvs(c);
      Bye b{kByeMagic, 0, c->delivered};
      (void)!send(c->fd, &b, sizeof b, MSG_DONTWAIT | MSG_NOSIGNAL);  // 16 bytes: the buffer is empty
    }
    destroyComm(c);
    return Status::ok();
  }

  Status regMr(void* comm, void* data, size_t size, void** mhandle) override {
    *mhandle = nullptr;
    Device* d = devs_[0].get();
    if (comm) {
      auto* c = static_cast<IbComm*>(static_cast<SendComm*>(comm));
      if (c->magic != kCommMagic) return invalidUsage("ib transport regMr: not an ib connection");
      d = c->dev;
    }
    if (size == 0) return invalidArgument("ib transport regMr: cannot register 0 bytes");
    std::lock_guard<std::mutex> lock(d->mu);
    auto key = std::make_pair(reinterpret_cast<uintptr_t>(data), size);
    auto it = d->mrCache.find(key);
    if (it == d->mrCache.end()) {
      ibv_mr* mr = nullptr;
      WEFT_TRY(registerRange(v_, d, data, size, &mr));
      it = d->mrCache.emplace(key, Device::CachedMr{mr, 0}).first;
    }
    ++it->second.refs;
    *mhandle = new Mr{d, it->second.mr, key};
    return Status::ok();
  }

  Status deregMr(void*, void* mhandle) override {
    auto* m = static_cast<Mr*>(mhandle);
    if (!m) return Status::ok();
    Device* d = m->dev;
    if (m->device) {  // not cached: released at once
      int rc = v_->deregMr(m->mr);
      delete m;
      return rc ? errnoStatus("ibv_dereg_mr", rc) : Status::ok();
    }
    std::lock_guard<std::mutex> lock(d->mu);
    auto it = d->mrCache.find(m->key);
    if (it != d->mrCache.end() && --it->second.refs == 0) {
      // Dropped at once: a later buffer at the same address is registered afresh.
      int rc = v_->deregMr(it->second.mr);
      d->mrCache.erase(it);
      delete m;
      if (rc) return errnoStatus("ibv_dereg_mr", rc);
      return Status::ok();
    }
    delete m;
    return Status::ok();
  }

  static std::string gpuModeText(const Device* d) {
    if (d->dmabuf && d->peerMemory) return "dmabuf, else peer memory";
    if (d->dmabuf) return "dmabuf (peer memory refused: " + d->peerMemoryWhy + ")";
    if (d->peerMemory) return "peer memory (dmabuf refused: " + d->dmabufWhy + ")";
    return "host staging (dmabuf refused: " + d->dmabufWhy + "; peer memory refused: " + d->peerMemoryWhy + ")";
  }

  Status regMrDevice(void* comm, void* data, size_t size, int fd, uint64_t offset, void** mhandle, std::string* mode) override {
    *mhandle = nullptr;
    Device* d = devs_[0].get();
    if (comm) {
      auto* c = static_cast<IbComm*>(static_cast<SendComm*>(comm));
      if (c->magic != kCommMagic) return invalidUsage("ib transport regMrDevice: not an ib connection");
      d = c->dev;
    }
    if (size == 0) return invalidArgument("ib transport regMrDevice: cannot register 0 bytes");
    std::string refused, how;
    ibv_mr* mr = nullptr;
    if (fd < 0) {
      refused = "dmabuf refused: no dmabuf fd was given";
    } else if (!d->dmabuf) {
      refused = "dmabuf refused: " + d->dmabufWhy;
    } else {
      errno = 0;
      mr = v_->regDmabufMr(d->pd, offset, size, reinterpret_cast<uint64_t>(data), fd, kAccess);
      if (mr) how = "dmabuf";
      else refused = std::string("dmabuf refused: ibv_reg_dmabuf_mr failed (") + strerror(errno) + ")";
    }
    if (!mr) {
      if (!d->peerMemory) {
        refused += "; peer memory refused: " + d->peerMemoryWhy;
      } else {
        errno = 0;
        mr = v_->regMr(d->pd, data, size, kAccess);
        if (mr) how = "peer memory";
        else refused += std::string("; peer memory refused: ibv_reg_mr on the device pointer failed (") + strerror(errno) + ")";
      }
    }
    if (!mr) how = "host staging";
    std::string text = how + (refused.empty() ? "" : " (" + refused + ")");
    WEFT_INFO(NET, "ib transport: device memory %p (%zu bytes) on %s: %s", data, size, d->name.c_str(), text.c_str());
    if (mode) *mode = text;
    if (!mr) return Status::ok();
    noteRegistration(data, size);
    auto* m = new Mr{d, mr, {reinterpret_cast<uintptr_t>(data), size}};
    m->device = true;
    *mhandle = m;
    return Status::ok();
  }

  // GPUDirect flush: a 1-byte RDMA READ of the received buffer through a QP connected to itself;
  // its completion means the NIC's earlier writes into that memory have landed.
  Status iflush(RecvComm* comm, void* data, size_t size, void* mhandle, Request** request) override {
    auto* c = static_cast<IbComm*>(comm);
    *request = nullptr;
    if (!c->error.isOk()) return c->error;
    auto* m = static_cast<Mr*>(mhandle);
    if (!m || !m->device || size == 0) return Status::ok();  // host memory: nothing to flush
    uintptr_t a = reinterpret_cast<uintptr_t>(data);
    if (a < m->key.first || a + 1 > m->key.first + m->key.second)
      return invalidArgument("ib transport iflush: the buffer is outside the registration it names");
    if (!c->loopQp) WEFT_TRY(createLoopback(c));
    IbRequest* f = nullptr;
    int slot = 0;
    for (int i = 0; i < kMaxFlushes && !f; ++i)
      if (c->flushes[i].state == ReqState::kFree) f = &c->flushes[i], slot = i;
    if (!f) return invalidUsage("ib transport iflush: more than " + std::to_string(kMaxFlushes) + " flushes in flight on one connection; test() them first");
    *f = IbRequest();
    f->comm = c;
    f->flush = true;
    f->flushAddr = a;
    f->flushRkey = m->mr->rkey;
    ibv_sge sge{reinterpret_cast<uint64_t>(c->fifo) + kFlushTarget, 1, c->fifoMr->lkey};
    ibv_send_wr wr{}, *bad = nullptr;
    wr.wr_id = kFlushWrId | static_cast<uint64_t>(slot);
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = IBV_WR_RDMA_READ;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.wr.rdma.remote_addr = a;
    wr.wr.rdma.rkey = m->mr->rkey;
    if (int rc = ibv_post_send(c->loopQp, &wr, &bad)) return failComm(c, errnoStatus("posting the GPUDirect flush read on " + c->dev->name, rc));
    f->state = ReqState::kPosted;
    *request = f;
    return Status::ok();
  }

  Status isend(SendComm* comm, const void* data, size_t size, uint32_t tag, void* mhandle, Request** request) override {
    auto* c = static_cast<IbComm*>(comm);
    *request = nullptr;
    if (!c->error.isOk()) return c->error;
    if (size > kMaxMessage) return invalidArgument("ib transport: a message of " + std::to_string(size) + " bytes is larger than the 2 GiB limit");
    if (c->head - c->tail >= kFifoDepth) {
      (void)progress(c);
      if (c->head - c->tail >= kFifoDepth) return Status::ok();
    }
    IbRequest& r = c->reqs[c->head % kFifoDepth];
    r = IbRequest();
    r.comm = c;
    r.seq = c->head;
    r.data = const_cast<char*>(static_cast<const char*>(data));
    r.size = size;
    r.tag = tag;
    if (mhandle) {
      r.lkey = static_cast<Mr*>(mhandle)->mr->lkey;
    } else if (size <= c->dev->maxInline && (size < kStripeMin || c->nqps == 1)) {
      r.useInline = true;  // copied by the NIC driver at post time
    } else if (size > 0) {
      WEFT_TRY(getStaging(c->dev, size, &r.staging));
      std::memcpy(r.staging.mem, data, size);
      r.data = static_cast<char*>(r.staging.mem);
      r.lkey = r.staging.mr->lkey;
    }
    r.state = ReqState::kWaitCts;
    c->reported[c->head % kFifoDepth] = false;
    ++c->head;
    *request = &r;
    (void)progress(c);
    return Status::ok();
  }

  Status irecv(RecvComm* comm, void* data, size_t size, uint32_t tag, void* mhandle, Request** request) override {
    auto* c = static_cast<IbComm*>(comm);
    *request = nullptr;
    if (!c->error.isOk()) return c->error;
    if (c->head - c->tail >= kFifoDepth) {
      (void)progress(c);
      if (c->head - c->tail >= kFifoDepth) return Status::ok();
    }
    size = std::min(size, kMaxMessage);
    IbRequest& r = c->reqs[c->head % kFifoDepth];
    r = IbRequest();
    r.comm = c;
    r.seq = c->head;
    r.data = static_cast<char*>(data);
    r.capacity = size;
    r.tag = tag;
    CtsEntry& e = c->fifo[c->head % kFifoDepth];
    e.size = size;
    e.tag = tag;
    e.seq = c->head;
    if (size == 0) {
      e.addr = reinterpret_cast<uint64_t>(c->fifo);
      e.rkey = c->fifoMr->rkey;
    } else if (mhandle) {
      e.addr = reinterpret_cast<uint64_t>(data);
      e.rkey = static_cast<Mr*>(mhandle)->mr->rkey;
    } else {
      WEFT_TRY(getStaging(c->dev, size, &r.staging));
      e.addr = reinterpret_cast<uint64_t>(r.staging.mem);
      e.rkey = r.staging.mr->rkey;
    }
    ibv_sge sge{reinterpret_cast<uint64_t>(&e), sizeof e, c->fifoMr->lkey};
    ibv_send_wr wr{}, *bad = nullptr;
    wr.wr_id = kCtsWrId;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
    wr.send_flags = IBV_SEND_SIGNALED | (c->dev->maxInline >= sizeof e ? IBV_SEND_INLINE : 0);
    wr.imm_data = htonl(static_cast<uint32_t>(c->head));
    wr.wr.rdma.remote_addr = c->remoteFifo + (c->head % kFifoDepth) * sizeof(CtsEntry);
    wr.wr.rdma.rkey = c->remoteFifoRkey;
    int rc = ibv_post_send(c->qp[0], &wr, &bad);
    if (rc) {
      if (r.staging.mem) putStaging(c->dev, &r.staging);
      return failComm(c, errnoStatus("posting a clear-to-send to " + c->peer, rc));
    }
    r.state = ReqState::kWaitData;
    c->reported[c->head % kFifoDepth] = false;
    ++c->head;
    *request = &r;
    return Status::ok();
  }

  Status test(Request* request, bool* done, size_t* size) override {
    auto* r = static_cast<IbRequest*>(request);
    IbComm* c = r->comm;
    *done = false;
    Status ps = progress(c);
    if (r->flush) {
      if (r->state != ReqState::kDone) return c->error;
      *done = true;
      if (size) *size = 1;
      r->state = ReqState::kFree;
      return Status::ok();
    }
    if (r->state != ReqState::kDone) {
      if (!ps.isOk()) return ps;
      if (c->peerClosed)
        return remoteError("the ib connection to " + c->peer + " was closed by the peer with this message outstanding (" +
                           (c->sending ? "a send" : "a receive") + " of message " + std::to_string(r->seq) +
                           "): the peer process probably exited or crashed");
      return c->error;
    }
    *done = true;
    if (size) *size = r->size;
    c->reported[r->seq % kFifoDepth] = true;
    while (c->tail < c->head && c->reported[c->tail % kFifoDepth]) {
      c->reqs[c->tail % kFifoDepth].state = ReqState::kFree;
      ++c->tail;
    }
    return Status::ok();
  }

  void pollDescriptors(SendComm* comm, std::vector<pollfd>* out) override { descriptors(static_cast<IbComm*>(comm), out); }
  void pollDescriptors(RecvComm* comm, std::vector<pollfd>* out) override { descriptors(static_cast<IbComm*>(comm), out); }

  Status getStaging(Device* d, size_t size, Staging* out) {
    size_t cls = 4096;
    while (cls < size) cls <<= 1;
    std::lock_guard<std::mutex> lock(d->mu);
    auto& free = d->stagingFree[cls];
    if (!free.empty()) {
      out->mem = free.back().first;
      out->mr = free.back().second;
      out->cls = cls;
      free.pop_back();
      return Status::ok();
    }
    void* p = mmap(nullptr, cls, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return errnoStatus("cannot allocate " + std::to_string(cls) + " bytes of ib staging", errno);
    ibv_mr* mr = nullptr;
    Status s = registerRange(v_, d, p, cls, &mr);
    if (!s) {
      munmap(p, cls);
      return s;
    }
    d->stagingAll.emplace_back(p, cls);
    d->stagingMrs.push_back(mr);
    out->mem = p;
    out->mr = mr;
    out->cls = cls;
    return Status::ok();
  }
  void putStaging(Device* d, Staging* s) {
    if (!s->mem) return;
    std::lock_guard<std::mutex> lock(d->mu);
    d->stagingFree[s->cls].emplace_back(s->mem, s->mr);
    *s = Staging();
  }

 private:
  struct Pending {
    int fd = -1;
    int stage = 0;  // connect: 0 connecting, 1 send hello, 2 recv reply, 3 send ack; accept: 2 recv hello, 3 send reply, 4 recv ack; 5 done
    uint64_t listenId = 0;
    net::SockAddr addr;
    IbComm* comm = nullptr;
    Hello out{};
    Hello in{};
    uint32_t ack = 0;
    size_t done = 0;
  };
  struct Listen : ListenComm {
    int fd = -1;
    int dev = 0;
    uint64_t id = 0;
    std::vector<Pending*> pending;
  };

  Status openPort(ibv_device* dv, const IbPortSpec& p) {
    auto d = std::make_unique<Device>();
    d->name = p.device;
    d->port = p.port;
    d->gidIndex = p.gidIndex;
    d->ctx = v_->openDevice(dv);
    if (!d->ctx) return errnoStatus("cannot open RDMA device " + p.device, errno);
    devs_.push_back(std::move(d));
    Device* dp = devs_.back().get();
    ibv_device_attr da{};
    if (int rc = v_->queryDevice(dp->ctx, &da)) return errnoStatus("ibv_query_device on " + p.device, rc);
    if (p.port < 1 || p.port > da.phys_port_cnt)
      return invalidArgument("RDMA device " + p.device + " has no port " + std::to_string(p.port));
    if (int rc = v_->queryPort(dp->ctx, static_cast<uint8_t>(p.port), &dp->attr)) return errnoStatus("ibv_query_port on " + p.device, rc);
    if (dp->attr.state != IBV_PORT_ACTIVE && dp->attr.state != IBV_PORT_ACTIVE_DEFER)
      return systemError("RDMA port " + p.device + ":" + std::to_string(p.port) + " is not ACTIVE");
    if (dp->attr.link_layer == IBV_LINK_LAYER_ETHERNET && p.gidIndex < 0)
      return systemError("RoCE port " + p.device + ":" + std::to_string(p.port) +
                         " has no usable GID (only link-local or none): give the interface a routable IPv4/IPv6 address or set WEFT_IB_GID_INDEX");
    if (p.gidIndex >= 0) {
      if (p.gidIndex >= dp->attr.gid_tbl_len)
        return invalidArgument("GID index " + std::to_string(p.gidIndex) + " is beyond the GID table of " + p.device);
      if (int rc = v_->queryGid(dp->ctx, static_cast<uint8_t>(p.port), p.gidIndex, &dp->gid))
        return errnoStatus("ibv_query_gid " + std::to_string(p.gidIndex) + " on " + p.device, rc);
    }
    dp->pd = v_->allocPd(dp->ctx);
    if (!dp->pd) return errnoStatus("ibv_alloc_pd on " + p.device, errno);
    probeGpuDirect(dp);
    dp->maxInline = kInlineWant;
    return Status::ok();
  }

  // What device memory registration can use (probes as described in the ib reference: the errno of a
  // dmabuf registration of fd -1; the peer-memory module's sysfs files).
  void probeGpuDirect(Device* d) {
    if (!v_->regDmabufMr) {
      d->dmabufWhy = v_->path + " has no ibv_reg_dmabuf_mr (rdma-core before 34)";
    } else {
      errno = 0;
      ibv_mr* mr = v_->regDmabufMr(d->pd, 0, 0, 0, -1, 0);
      int e = errno;
      if (mr) {
        v_->deregMr(mr);
        d->dmabuf = true;
      } else if (e == EOPNOTSUPP || e == EPROTONOSUPPORT) {
        d->dmabufWhy = "the kernel or the " + d->name + " provider does not support it (" + strerror(e) + ")";
      } else {
        d->dmabuf = true;
      }
    }
    std::string root = config::getString("WEFT_SYSFS_ROOT");
    for (const char* f : {"/kernel/mm/memory_peers/nv_mem/version", "/kernel/mm/memory_peers/nv_mem_nc/version", "/module/nvidia_peermem/version"})
      if (access((root + f).c_str(), F_OK) == 0) d->peerMemory = true;
    if (!d->peerMemory) d->peerMemoryWhy = "the nvidia_peermem module is not loaded (no " + root + "/module/nvidia_peermem)";
    WEFT_INFO(NET, "ib transport: %s port %d, device memory: %s", d->name.c_str(), d->port, gpuModeText(d).c_str());
  }

  // The receiver's loopback QP for GPUDirect flushes (READ rights on itself).
  Status createLoopback(IbComm* c) {
    Device* d = c->dev;
    ibv_qp_init_attr ia{};
    ia.send_cq = c->cq;
    ia.recv_cq = c->cq;
    ia.qp_type = IBV_QPT_RC;
    ia.cap.max_send_wr = kMaxFlushes;
    ia.cap.max_recv_wr = 1;
    ia.cap.max_send_sge = 1;
    ia.cap.max_recv_sge = 1;
    ibv_qp* qp = v_->createQp(d->pd, &ia);
    if (!qp) return errnoStatus("ibv_create_qp (GPUDirect flush loopback) on " + d->name, errno);
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_INIT;
    a.port_num = static_cast<uint8_t>(d->port);
    a.qp_access_flags = IBV_ACCESS_REMOTE_READ | IBV_ACCESS_LOCAL_WRITE;
    Status s;
    if (int rc = v_->modifyQp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS))
      s = errnoStatus("moving the flush loopback queue pair on " + d->name + " to INIT", rc);
    if (s) s = connectQp(c, qp, qp->qp_num, c->psn, d->gid.raw, d->attr.lid, d->attr.active_mtu);
    if (!s) {
      v_->destroyQp(qp);
      return s;
    }
    c->loopQp = qp;
    return Status::ok();
  }

  Status createComm(int dev, bool sending, Pending* p) {
    auto* c = new IbComm();
    p->comm = c;
    c->sending = sending;
    c->v = v_;
    c->dev = devs_[static_cast<size_t>(dev)].get();
    c->t = this;
    c->tc = tc_;
    c->roce = c->dev->attr.link_layer == IBV_LINK_LAYER_ETHERNET;
    c->nqps = sending ? nqps_ : static_cast<int>(p->in.nqps);
    Device* d = c->dev;
    c->channel = v_->createCompChannel(d->ctx);
    if (!c->channel) return errnoStatus("ibv_create_comp_channel on " + d->name, errno);
    int fl = fcntl(c->channel->fd, F_GETFL);
    fcntl(c->channel->fd, F_SETFL, fl | O_NONBLOCK);
    int cqe = c->nqps * static_cast<int>(2 * kFifoDepth + 16) + kMaxFlushes;
    c->cq = v_->createCq(d->ctx, cqe, nullptr, c->channel, 0);
    if (!c->cq) return errnoStatus("ibv_create_cq on " + d->name, errno);
    // Sender: the FIFO the receiver writes into; receiver: the entries it sends (and a valid
    // target for zero-byte messages).
    c->fifo = static_cast<CtsEntry*>(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (c->fifo == MAP_FAILED) {
      c->fifo = nullptr;
      return errnoStatus("cannot allocate the ib FIFO", errno);
    }
    WEFT_TRY(registerRange(v_, d, c->fifo, 4096, &c->fifoMr));
    uint32_t psn = 0;
    (void)randomBytes(&psn, sizeof psn);
    c->psn = psn & 0xffffff;
    for (int i = 0; i < c->nqps; ++i) {
      ibv_qp_init_attr ia{};
      ia.send_cq = c->cq;
      ia.recv_cq = c->cq;
      ia.qp_type = IBV_QPT_RC;
      ia.cap.max_send_wr = kFifoDepth + 8;
      ia.cap.max_recv_wr = kFifoDepth + 8;
      ia.cap.max_send_sge = 1;
      ia.cap.max_recv_sge = 1;
      ia.cap.max_inline_data = kInlineWant;
      c->qp[i] = v_->createQp(d->pd, &ia);
      if (!c->qp[i]) return errnoStatus("ibv_create_qp on " + d->name, errno);
      if (ia.cap.max_inline_data < d->maxInline) d->maxInline = ia.cap.max_inline_data;
      ibv_qp_attr a{};
      a.qp_state = IBV_QPS_INIT;
      a.pkey_index = 0;
      a.port_num = static_cast<uint8_t>(d->port);
      a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE;
      if (int rc = v_->modifyQp(c->qp[i], &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS))
        return errnoStatus("moving a queue pair on " + d->name + " to INIT", rc);
      // Receives for the immediates: CTS on the sender's QP 0, data on every receiver QP.
      if (!sending || i == 0) WEFT_TRY(postRecvs(c, i, static_cast<int>(kFifoDepth) + 4));
    }
    Hello& h = p->out;
    h = Hello{};
    h.magic = kHelloMagic;
    h.version = kVersion;
    h.listenId = p->listenId;
    h.nqps = static_cast<uint32_t>(c->nqps);
    h.mtu = d->attr.active_mtu;
    h.linkLayer = d->attr.link_layer;
    h.lid = d->attr.lid;
    std::memcpy(h.gid, d->gid.raw, 16);
    for (int i = 0; i < c->nqps; ++i) h.qpn[i] = c->qp[i]->qp_num;
    h.psn = c->psn;
    h.fifoDepth = kFifoDepth;
    h.fifoAddr = reinterpret_cast<uint64_t>(c->fifo);
    h.fifoRkey = c->fifoMr->rkey;
    return Status::ok();
  }

  // The peer's hello, checked against what we are and what we expect.
  Status validate(IbComm* c, const Hello& h, bool fromSender, uint64_t listenId) {
    if (h.magic != kHelloMagic) return invalidUsage("not an ib-transport handshake (bad magic)");
    if (h.version != kVersion) return invalidUsage("ib-transport handshake version " + std::to_string(h.version) + ", this build speaks " + std::to_string(kVersion));
    if (h.listenId != listenId) return invalidUsage("the handshake is for another listener (foreign connection)");
    if (h.nqps < 1 || h.nqps > kMaxQps || (c && static_cast<int>(h.nqps) != c->nqps))
      return invalidUsage("the handshake names " + std::to_string(h.nqps) + " queue pairs");
    if (h.mtu < IBV_MTU_256 || h.mtu > IBV_MTU_4096) return invalidUsage("the handshake names an invalid MTU " + std::to_string(h.mtu));
    Device* d = c ? c->dev : nullptr;
    uint32_t ll = d ? d->attr.link_layer : h.linkLayer;
    if (h.linkLayer != ll)
      return invalidUsage("the peer's port is " + std::string(h.linkLayer == IBV_LINK_LAYER_ETHERNET ? "RoCE" : "InfiniBand") +
                          " and ours is not: the two ends must use the same fabric");
    static const uint8_t zero[16] = {};
    if (h.linkLayer == IBV_LINK_LAYER_ETHERNET && std::memcmp(h.gid, zero, 16) == 0)
      return invalidUsage("the peer sent an empty GID for a RoCE connection");
    if (h.linkLayer != IBV_LINK_LAYER_ETHERNET && (h.lid == 0 || h.lid >= 0xc000))
      return invalidUsage("the peer sent an invalid LID " + std::to_string(h.lid));
    for (uint32_t i = 0; i < h.nqps; ++i)
      if (h.qpn[i] == 0 || h.qpn[i] > 0xffffff) return invalidUsage("the peer sent an invalid QPN");
    if (h.psn > 0xffffff) return invalidUsage("the peer sent an invalid PSN");
    if (fromSender && (h.fifoAddr == 0 || h.fifoDepth != kFifoDepth))
      return invalidUsage("the peer's clear-to-send FIFO is missing or of another depth");
    return Status::ok();
  }

  // One RC QP from INIT to RTS towards (destQpn, dgid or dlid).
  Status connectQp(IbComm* c, ibv_qp* qp, uint32_t destQpn, uint32_t destPsn, const uint8_t* dgid, uint32_t dlid, uint32_t mtu) {
    Device* d = c->dev;
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = static_cast<ibv_mtu>(std::min<uint32_t>(mtu, d->attr.active_mtu));
    a.dest_qp_num = destQpn;
    a.rq_psn = destPsn;
    a.max_dest_rd_atomic = 1;
    a.min_rnr_timer = 12;
    a.ah_attr.port_num = static_cast<uint8_t>(d->port);
    a.ah_attr.sl = static_cast<uint8_t>(sl_);
    if (c->roce || d->gidIndex >= 0) {
      a.ah_attr.is_global = 1;
      std::memcpy(a.ah_attr.grh.dgid.raw, dgid, 16);
      a.ah_attr.grh.sgid_index = static_cast<uint8_t>(d->gidIndex);
      a.ah_attr.grh.hop_limit = 255;
      a.ah_attr.grh.traffic_class = static_cast<uint8_t>(tc_);
    }
    if (!c->roce) a.ah_attr.dlid = static_cast<uint16_t>(dlid);
    if (int rc = v_->modifyQp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                                          IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER))
      return errnoStatus("moving a queue pair on " + d->name + " to RTR (peer QPN " + std::to_string(destQpn) + ")", rc);
    ibv_qp_attr b{};
    b.qp_state = IBV_QPS_RTS;
    b.timeout = static_cast<uint8_t>(timeout_);
    b.retry_cnt = static_cast<uint8_t>(retry_);
    b.rnr_retry = 7;
    b.sq_psn = c->psn;
    b.max_rd_atomic = 1;
    if (int rc = v_->modifyQp(qp, &b, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
                                          IBV_QP_MAX_QP_RD_ATOMIC))
      return errnoStatus("moving a queue pair on " + d->name + " to RTS", rc);
    return Status::ok();
  }

  Status toRts(IbComm* c, const Hello& peer) {
    Device* d = c->dev;
    for (int i = 0; i < c->nqps; ++i) WEFT_TRY(connectQp(c, c->qp[i], peer.qpn[i], peer.psn, peer.gid, peer.lid, peer.mtu));
    if (c->sending) {
      c->remoteFifo = 0;
    } else {
      c->remoteFifo = peer.fifoAddr;
      c->remoteFifoRkey = peer.fifoRkey;
    }
    c->what = c->roce ? "GID index " + std::to_string(d->gidIndex) + " " + gidText(d->gid.raw) + " -> " + gidText(peer.gid) +
                            ", traffic class " + std::to_string(tc_)
                      : "LID " + std::to_string(d->attr.lid) + " -> " + std::to_string(peer.lid);
    WEFT_INFO(NET, "ib transport: %s %s: NIC %s port %d, %s, %d QPs, MTU %s, registration: host memory cached, unregistered user buffers via registered staging; device memory: %s",
              c->sending ? "connected to" : "accepted from", c->peer.c_str(), d->name.c_str(), d->port, c->what.c_str(), c->nqps,
              mtuText(std::min<uint32_t>(peer.mtu, d->attr.active_mtu)), gpuModeText(d).c_str());
    return Status::ok();
  }

  // Move bytes of a small fixed message; returns ok with *complete false while it would block.
  static Status pump(int fd, bool sending, void* buf, size_t len, size_t* done, bool* complete) {
    *complete = false;
    while (*done < len) {
      ssize_t n = sending ? send(fd, static_cast<char*>(buf) + *done, len - *done, MSG_NOSIGNAL | MSG_DONTWAIT)
                          : recv(fd, static_cast<char*>(buf) + *done, len - *done, MSG_DONTWAIT);
      if (n == 0 && !sending) return remoteError("the peer closed the ib side channel during the handshake");
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return Status::ok();
        return errnoStatus("ib side channel", errno);
      }
      *done += static_cast<size_t>(n);
    }
    *complete = true;
    return Status::ok();
  }

  Status stepConnect(Pending* p) {
    bool complete = false;
    if (p->stage == 0) {
      pollfd pf{p->fd, POLLOUT, 0};
      if (poll(&pf, 1, 0) <= 0) return Status::ok();
      int err = 0;
      socklen_t l = sizeof err;
      getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &l);
      if (err) return errnoStatus("connect to the ib side channel at " + p->addr.str(), err);
      p->stage = 1;
    }
    if (p->stage == 1) {
      net::setNoDelay(p->fd);
      WEFT_TRY(pump(p->fd, true, &p->out, sizeof p->out, &p->done, &complete));
      if (!complete) return Status::ok();
      p->stage = 2;
      p->done = 0;
    }
    if (p->stage == 2) {
      WEFT_TRY(pump(p->fd, false, &p->in, sizeof p->in, &p->done, &complete));
      if (!complete) return Status::ok();
      Status s = validate(p->comm, p->in, false, p->listenId);
      if (!s) return s.withContext("the ib handshake reply from " + p->addr.str() + " is refused");
      p->comm->peer = p->addr.str();
      WEFT_TRY(toRts(p->comm, p->in));
      p->stage = 3;
      p->done = 0;
      p->ack = kAckMagic;
    }
    if (p->stage == 3) {
      WEFT_TRY(pump(p->fd, true, &p->ack, sizeof p->ack, &p->done, &complete));
      if (!complete) return Status::ok();
      p->comm->fd = p->fd;
      p->stage = 5;
    }
    return Status::ok();
  }

  Status stepAccept(Listen* l, Pending* p) {
    bool complete = false;
    if (p->stage == 2) {
      WEFT_TRY(pump(p->fd, false, &p->in, sizeof p->in, &p->done, &complete));
      if (!complete) return Status::ok();
      WEFT_TRY(validate(nullptr, p->in, true, l->id));
      const Device* d = devs_[static_cast<size_t>(l->dev)].get();
      if (p->in.linkLayer != d->attr.link_layer)
        return invalidUsage("the peer's port and ours are on different fabrics (InfiniBand and RoCE)");
      WEFT_TRY(createComm(l->dev, false, p));
      sockaddr_storage ss;
      socklen_t len = sizeof ss;
      if (getpeername(p->fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
        net::SockAddr pa;
        std::memcpy(&pa.ss, &ss, len);
        pa.len = len;
        p->comm->peer = pa.str();
      }
      WEFT_TRY(toRts(p->comm, p->in));
      p->stage = 3;
      p->done = 0;
    }
    if (p->stage == 3) {
      WEFT_TRY(pump(p->fd, true, &p->out, sizeof p->out, &p->done, &complete));
      if (!complete) return Status::ok();
      p->stage = 4;
      p->done = 0;
    }
    if (p->stage == 4) {
      WEFT_TRY(pump(p->fd, false, &p->ack, sizeof p->ack, &p->done, &complete));
      if (!complete) return Status::ok();
      if (p->ack != kAckMagic) return invalidUsage("bad handshake acknowledgement");
      p->comm->fd = p->fd;
      p->stage = 5;
    }
    return Status::ok();
  }

  void dropPending(Pending* p) {
    if (p->comm) {
      p->comm->fd = -1;
      destroyComm(p->comm);
    }
    if (p->fd >= 0) close(p->fd);
    delete p;
  }

 public:
  // Sender: post the data of every request whose clear-to-send has arrived, in order.
  Status postSends(IbComm* c) {
    while (c->nextToPost < c->head && c->nextToPost < c->ctsArrived) {
      IbRequest& r = c->reqs[c->nextToPost % kFifoDepth];
      const CtsEntry& e = c->fifo[c->nextToPost % kFifoDepth];
      if (e.seq != c->nextToPost) return failComm(c, internalError("ib transport: clear-to-send " + std::to_string(e.seq) + " arrived where " + std::to_string(c->nextToPost) + " was expected"));
      if (e.tag != r.tag)
        return failComm(c, invalidUsage("message tag " + std::to_string(r.tag) + " to " + c->peer + " does not match the posted receive's tag " + std::to_string(e.tag)));
      if (r.size > e.size)
        return failComm(c, invalidUsage("a " + std::to_string(r.size) + "-byte message to " + c->peer + " does not fit the posted " + std::to_string(e.size) + "-byte receive"));
      bool striped = r.size >= kStripeMin && c->nqps > 1;
      int parts = striped ? c->nqps : 1;
      for (int i = parts - 1; i >= 0; --i) {
        size_t off = 0, len = r.size;
        if (striped) partRange(r.size, c->nqps, i, &off, &len);
        ibv_sge sge{reinterpret_cast<uint64_t>(r.data + off), static_cast<uint32_t>(len), r.lkey};
        ibv_send_wr wr{}, *bad = nullptr;
        wr.wr_id = (r.seq << 8) | static_cast<uint64_t>(i);
        wr.sg_list = len ? &sge : nullptr;
        wr.num_sge = len ? 1 : 0;
        wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
        wr.send_flags = IBV_SEND_SIGNALED | (r.useInline ? IBV_SEND_INLINE : 0);
        wr.imm_data = htonl(i == 0 ? static_cast<uint32_t>(r.size) | (striped ? kStripedBit : 0) : 0);
        wr.wr.rdma.remote_addr = e.addr + off;
        wr.wr.rdma.rkey = e.rkey;
        int rc = ibv_post_send(c->qp[i], &wr, &bad);
        if (rc) return failComm(c, errnoStatus("posting an RDMA write to " + c->peer, rc));
        ++r.pendingWr;
      }
      r.state = ReqState::kPosted;
      ++c->nextToPost;
    }
    return Status::ok();
  }

  // Receiver: complete requests whose pieces have all arrived, in order.
  void finishRecvs(IbComm* c) {
    for (uint64_t s = c->tail; s < c->head; ++s) {
      IbRequest& r = c->reqs[s % kFifoDepth];
      if (r.state != ReqState::kWaitData) continue;
      if (!r.gotFirst) break;
      if (r.striped) {
        bool all = true;
        for (int i = 1; i < c->nqps; ++i)
          if (c->stripedArrived[i] <= r.stripeIndex) all = false;
        if (!all) break;
      }
      if (r.staging.mem) {
        if (r.size) std::memcpy(r.data, r.staging.mem, r.size);
        putStaging(c->dev, &r.staging);
      }
      r.state = ReqState::kDone;
      c->delivered = s + 1;
    }
  }

  // Sender: read the side channel (the receiver's Bye, then EOF). True when the peer closed it.
  bool readSideChannel(IbComm* c) {
    for (;;) {
      char scratch[64];
      char* dst = c->byeBytes < sizeof(Bye) ? reinterpret_cast<char*>(&c->bye) + c->byeBytes : scratch;
      const size_t want = c->byeBytes < sizeof(Bye) ? sizeof(Bye) - c->byeBytes : sizeof scratch;
      const ssize_t n = recv(c->fd, dst, want, MSG_DONTWAIT);
      if (n == 0) return true;
      if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
      if (c->byeBytes >= sizeof(Bye)) continue;  // anything after the Bye is ignored
      c->byeBytes += static_cast<size_t>(n);
      if (c->byeBytes == sizeof(Bye) && c->bye.magic == kByeMagic && c->sending) {
        c->peerDelivered = std::min(c->bye.delivered, c->nextToPost);
        completeDelivered(c);
      }
    }
  }

  // Sender: the messages the receiver's Bye counts as arrived are complete, whether or not their
  // local completion came (it may never come once the peer's queue pairs are gone).
  void completeDelivered(IbComm* c) {
    for (uint64_t s = c->tail; s < c->peerDelivered; ++s) {
      IbRequest& r = c->reqs[s % kFifoDepth];
      if (r.seq != s || r.state != ReqState::kPosted) continue;
      putStaging(c->dev, &r.staging);
      r.pendingWr = 0;
      r.state = ReqState::kDone;
    }
  }

  Status drainEvents(IbComm* c) {
    if (!c->armed) return Status::ok();  // no event can be pending: spare the read() system call
    for (;;) {
      ibv_cq* cq = nullptr;
      void* ctx = nullptr;
      if (v_->getCqEvent(c->channel, &cq, &ctx) != 0) break;
      c->armed = false;
      if (++c->unackedEvents >= 16) {
        v_->ackCqEvents(c->cq, c->unackedEvents);
        c->unackedEvents = 0;
      }
    }
    return Status::ok();
  }

  Status pollCq(IbComm* c, bool* any) {
    *any = false;
    ibv_wc wcs[32];
    for (;;) {
      int n = ibv_poll_cq(c->cq, 32, wcs);
      if (n < 0) return failComm(c, systemError("ibv_poll_cq on " + c->dev->name + " failed (completion queue overrun): a weft bug; please report it"));
      if (n == 0) return Status::ok();
      *any = true;
      for (int k = 0; k < n; ++k) {
        const ibv_wc& wc = wcs[k];
        if (wc.status != IBV_WC_SUCCESS) {
          if (wc.status == IBV_WC_WR_FLUSH_ERR && !c->error.isOk()) continue;
          // A message the receiver said had arrived (its Bye) whose ACK was lost with the peer.
          if (c->sending && wc.wr_id != kCtsWrId && (wc.wr_id & kFlushWrId) != kFlushWrId &&
              (wc.wr_id >> 8) < c->peerDelivered)
            continue;
          (void)failComm(c, wcError(c, wc));
          continue;
        }
        if (wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
          int qi = static_cast<int>(wc.wr_id);
          uint32_t imm = ntohl(wc.imm_data);
          if (c->sending) {
            if (imm != static_cast<uint32_t>(c->ctsArrived))
              (void)failComm(c, internalError("ib transport: clear-to-send immediate " + std::to_string(imm) + " out of order"));
            ++c->ctsArrived;
          } else if (qi == 0) {
            uint64_t s = c->firstArrived++;
            if (s >= c->head) {
              (void)failComm(c, internalError("ib transport: data from " + c->peer + " arrived without a posted receive"));
              continue;
            }
            IbRequest& r = c->reqs[s % kFifoDepth];
            r.gotFirst = true;
            r.size = imm & ~kStripedBit;
            r.striped = (imm & kStripedBit) != 0;
            if (r.striped) r.stripeIndex = c->stripedAssigned++;
            if (r.size > r.capacity) (void)failComm(c, invalidUsage("a " + std::to_string(r.size) + "-byte message overran a " + std::to_string(r.capacity) + "-byte receive"));
          } else {
            ++c->stripedArrived[qi];
          }
          if (c->error.isOk()) (void)postRecvs(c, qi, 1);
        } else if (wc.wr_id != kCtsWrId && (wc.wr_id & kFlushWrId) == kFlushWrId) {
          IbRequest& f = c->flushes[(wc.wr_id & 0xff) % kMaxFlushes];
          if (f.state == ReqState::kPosted) f.state = ReqState::kDone;
        } else if (wc.wr_id != kCtsWrId) {
          uint64_t seq = wc.wr_id >> 8;
          IbRequest& r = c->reqs[seq % kFifoDepth];
          if (r.seq == seq && r.state == ReqState::kPosted && --r.pendingWr == 0) {
            putStaging(c->dev, &r.staging);
            r.state = ReqState::kDone;
          }
        }
      }
    }
  }

  Status progress(IbComm* c) {
    bool any = false;
    (void)drainEvents(c);
    (void)pollCq(c, &any);
    if (c->sending) (void)postSends(c);
    else finishRecvs(c);
    if (!c->error.isOk()) return c->error;
    // Idle with requests outstanding: is the peer still there? (The side channel closes when the
    // peer process exits, long before a retry timeout.) A closed peer fails only the requests that
    // are tested and cannot complete (test()), not the connection: receives posted ahead for
    // messages the peer never meant to send are no error.
    if (!any && c->tail < c->head && c->fd >= 0 && !c->peerClosed) {
      uint64_t now = nowNs();
      if (now - c->lastPeerCheck > kPeerCheckNs) {
        c->lastPeerCheck = now;
        if (readSideChannel(c)) {
          c->peerClosed = true;
          // Completions that raced the close still count; sends the receiver's Bye counted as
          // arrived were completed when it came (readSideChannel).
          (void)pollCq(c, &any);
          if (c->sending) (void)postSends(c);
          else finishRecvs(c);
        }
      }
    }
    return c->error;
  }

  void descriptors(IbComm* c, std::vector<pollfd>* out) {
    bool flushing = false;
    for (const IbRequest& f : c->flushes) flushing |= f.state == ReqState::kPosted;
    if (c->tail >= c->head && !flushing) return;
    // Arm, then look once more: a completion that arrived before arming gives no event.
    if (!c->armed) {
      ibv_req_notify_cq(c->cq, 0);
      c->armed = true;
    }
    bool any = false;
    (void)pollCq(c, &any);
    if (c->sending) (void)postSends(c);
    else finishRecvs(c);
    if (any || !c->error.isOk()) {
      out->push_back({c->fd, POLLOUT, 0});  // ready at once: the caller comes back to test()
      return;
    }
    out->push_back({c->channel->fd, POLLIN, 0});
    if (c->fd >= 0 && !c->peerClosed) out->push_back({c->fd, POLLIN, 0});
  }

 private:
  const VerbsApi* v_ = nullptr;
  std::vector<std::unique_ptr<Device>> devs_;
  int nqps_ = 2;
  int tc_ = 0, sl_ = 0, timeout_ = 18, retry_ = 7;
};

void destroyComm(IbComm* c) {
  if (!c) return;
  const VerbsApi* v = c->v;
  for (int i = 0; i < kMaxQps; ++i)
    if (c->qp[i]) v->destroyQp(c->qp[i]);
  if (c->loopQp) v->destroyQp(c->loopQp);
  for (auto& r : c->reqs)
    if (r.staging.mem) c->t->putStaging(c->dev, &r.staging);
  if (c->cq) {
    if (c->channel) {
      ibv_cq* cq;
      void* ctx;
      while (v->getCqEvent(c->channel, &cq, &ctx) == 0) ++c->unackedEvents;
    }
    if (c->unackedEvents) v->ackCqEvents(c->cq, c->unackedEvents);
    v->destroyCq(c->cq);
  }
  if (c->channel) v->destroyCompChannel(c->channel);
  if (c->fifoMr) v->deregMr(c->fifoMr);
  if (c->fifo) munmap(c->fifo, 4096);
  if (c->fd >= 0) close(c->fd);
  c->magic = 0;
  delete c;
}

}  // namespace

std::unique_ptr<MessagingTransport> createIbTransport(const std::vector<IbPortSpec>& ports, Status* status) {
  auto t = std::make_unique<IbTransport>();
  *status = t->init(ports);
  if (!status->isOk()) return nullptr;
  return t;
}

Status ibProbeDevices(std::vector<std::string>* names) {
  names->clear();
  std::string lib = config::getString("WEFT_IBVERBS_LIB");
  const VerbsApi* v = nullptr;
  WEFT_TRY(ib::loadVerbs(lib, &v));
  errno = 0;
  int n = 0;
  ibv_device** list = v->getDeviceList(&n);
  int e = errno;
  for (int i = 0; list && i < n; ++i) names->push_back(v->getDeviceName(list[i]));
  if (list) v->freeDeviceList(list);
  if (names->empty()) {
    std::string why = e == ENOSYS ? " (this kernel has no InfiniBand/RDMA support)" : e ? std::string(" (") + strerror(e) + ")" : "";
    return systemError("no RDMA device: " + lib + " lists none" + why);
  }
  return Status::ok();
}

void ibForkLock() {
  ib::forkLock();
  gHistoryMu.lock();
}
void ibForkUnlock() {
  gHistoryMu.unlock();
  ib::forkUnlock();
}

std::vector<std::pair<const void*, size_t>> ibRegistrationHistory() {
  std::lock_guard<std::mutex> lock(gHistoryMu);
  return gHistory;
}

}  // namespace weft::transport
