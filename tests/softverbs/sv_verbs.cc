// softverbs: PD, MR, CQ, completion channel and QP objects; post/poll; the QP state machine.
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "sv.h"

#undef ibv_reg_mr
#undef ibv_reg_mr_iova

using namespace sv;

namespace {

Pd* pdOf(ibv_pd* p) { return reinterpret_cast<Pd*>(p); }
Mr* mrOf(ibv_mr* m) { return reinterpret_cast<Mr*>(m); }
Cq* cqOf(ibv_cq* c) { return reinterpret_cast<Cq*>(c); }
Qp* qpOf(ibv_qp* q) { return reinterpret_cast<Qp*>(q); }
Channel* chOf(ibv_comp_channel* c) { return reinterpret_cast<Channel*>(c); }

constexpr int kKnownAccess = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                             IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC |
                             IBV_ACCESS_MW_BIND | IBV_ACCESS_ZERO_BASED | IBV_ACCESS_HUGETLB;
constexpr int kMaxSge = 16;
constexpr uint32_t kMaxInline = 512;
constexpr uint32_t kMaxWr = 32768;

bool accessValid(int access) {
  if (access & ~kKnownAccess) return false;
  if ((access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) &&
      !(access & IBV_ACCESS_LOCAL_WRITE))
    return false;
  return true;
}

// Every page of [addr, addr+len) must be mapped (the kernel would fail to pin it otherwise).
bool rangeMapped(const void* addr, size_t len) {
  long page = sysconf(_SC_PAGESIZE);
  uintptr_t start = uintptr_t(addr) & ~uintptr_t(page - 1);
  uintptr_t end = uintptr_t(addr) + len;
  size_t pages = (end - start + size_t(page) - 1) / size_t(page);
  std::vector<unsigned char> vec(std::min<size_t>(pages, 4096));
  for (uintptr_t p = start; p < end;) {
    size_t n = std::min<size_t>((end - p + size_t(page) - 1) / size_t(page), vec.size());
    if (mincore(reinterpret_cast<void*>(p), n * size_t(page), vec.data()) != 0) return false;
    p += n * size_t(page);
  }
  return true;
}

uint32_t newKeyLocked() {
  Global& g = G();
  for (;;) {
    uint32_t idx = (++g.nextKeyIndex) & 0xffffff;
    uint32_t key = (idx << 8) | uint32_t(randU64Locked() & 0xff);
    if (idx && !g.mrs.count(key)) return key;
  }
}

ibv_mr* regMrCommon(ibv_pd* ibpd, void* addr, size_t length, uint64_t iova, int access,
                    int dmabufFd, uint64_t dmabufOffset) {
  Global& g = G();
  access &= ~IBV_ACCESS_OPTIONAL_RANGE;  // optional bits: a provider may ignore them
  if (!ibpd || !accessValid(access) || length == 0) {
    errno = EINVAL;
    return nullptr;
  }
  void* map = nullptr;
  size_t mapLen = 0;
  if (dmabufFd >= 0) {
    long page = sysconf(_SC_PAGESIZE);
    uint64_t alignedOff = dmabufOffset & ~uint64_t(page - 1);
    mapLen = size_t(dmabufOffset - alignedOff) + length;
    map = mmap(nullptr, mapLen, PROT_READ | PROT_WRITE, MAP_SHARED, dmabufFd, off_t(alignedOff));
    if (map == MAP_FAILED) {
      errno = EFAULT;
      return nullptr;
    }
    addr = static_cast<char*>(map) + (dmabufOffset - alignedOff);
  } else if (!addr || !rangeMapped(addr, length)) {
    errno = EFAULT;
    return nullptr;
  }
  if (access & IBV_ACCESS_ZERO_BASED) iova = 0;
  Mr* mr = new Mr();
  memset(&mr->ibmr, 0, sizeof mr->ibmr);
  std::lock_guard<std::mutex> lk(g.mu);
  Pd* pd = pdOf(ibpd);
  uint32_t key = newKeyLocked();
  mr->pd = pd;
  mr->iova = iova;
  mr->va = static_cast<char*>(addr);
  mr->len = length;
  mr->access = access;
  mr->dmabufMap = map;
  mr->dmabufMapLen = mapLen;
  mr->ibmr.context = ibpd->context;
  mr->ibmr.pd = ibpd;
  mr->ibmr.addr = dmabufFd >= 0 ? reinterpret_cast<void*>(uintptr_t(iova)) : addr;
  mr->ibmr.length = length;
  mr->ibmr.handle = key;
  mr->ibmr.lkey = key;
  mr->ibmr.rkey = key;
  g.mrs[key] = mr;
  ++pd->refs;
  return &mr->ibmr;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// PD
SV_EXPORT ibv_pd* ibv_alloc_pd(ibv_context* context) {
  Pd* pd = new Pd();
  memset(&pd->ibpd, 0, sizeof pd->ibpd);
  pd->ibpd.context = context;
  pd->ctx = ctxOf(context);
  static uint32_t handles = 0;
  std::lock_guard<std::mutex> lk(G().mu);
  pd->ibpd.handle = ++handles;
  return &pd->ibpd;
}

SV_EXPORT int ibv_dealloc_pd(ibv_pd* ibpd) {
  std::lock_guard<std::mutex> lk(G().mu);
  Pd* pd = pdOf(ibpd);
  if (pd->refs > 0) return EBUSY;
  delete pd;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// MR
SV_EXPORT ibv_mr* ibv_reg_mr(ibv_pd* pd, void* addr, size_t length, int access) {
  return regMrCommon(pd, addr, length, uintptr_t(addr), access, -1, 0);
}

SV_EXPORT ibv_mr* ibv_reg_mr_iova(ibv_pd* pd, void* addr, size_t length, uint64_t iova,
                                  int access) {
  return regMrCommon(pd, addr, length, iova, access, -1, 0);
}

SV_EXPORT ibv_mr* ibv_reg_mr_iova2(ibv_pd* pd, void* addr, size_t length, uint64_t iova,
                                   unsigned int access) {
  return regMrCommon(pd, addr, length, iova, int(access), -1, 0);
}

SV_EXPORT ibv_mr* ibv_reg_dmabuf_mr(ibv_pd* pd, uint64_t offset, size_t length, uint64_t iova,
                                    int fd, int access) {
  {
    std::lock_guard<std::mutex> lk(G().mu);
    loadConfigLocked();
    if (!G().cfg.dmabuf) {
      errno = EOPNOTSUPP;
      return nullptr;
    }
  }
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    errno = EBADF;
    return nullptr;
  }
  if (length == 0) {
    errno = EINVAL;
    return nullptr;
  }
  if (S_ISREG(st.st_mode) && uint64_t(st.st_size) < offset + length) {
    errno = EINVAL;
    return nullptr;
  }
  return regMrCommon(pd, nullptr, length, iova, access, fd, offset);
}

SV_EXPORT int ibv_dereg_mr(ibv_mr* ibmr) {
  Mr* mr = mrOf(ibmr);
  {
    std::lock_guard<std::mutex> lk(G().mu);
    auto it = G().mrs.find(ibmr->lkey);
    if (it == G().mrs.end() || it->second != mr) return EINVAL;
    G().mrs.erase(it);
    --mr->pd->refs;
  }
  if (mr->dmabufMap) munmap(mr->dmabufMap, mr->dmabufMapLen);
  delete mr;
  return 0;
}

SV_EXPORT int ibv_rereg_mr(ibv_mr* ibmr, int flags, ibv_pd* ibpd, void* addr, size_t length,
                           int access) {
  Mr* mr = mrOf(ibmr);
  if (flags & ~IBV_REREG_MR_FLAGS_SUPPORTED) return IBV_REREG_MR_ERR_INPUT;
  if (!flags) return IBV_REREG_MR_ERR_INPUT;
  if (mr->dmabufMap) return IBV_REREG_MR_ERR_INPUT;
  access &= ~IBV_ACCESS_OPTIONAL_RANGE;
  if ((flags & IBV_REREG_MR_CHANGE_ACCESS) && !accessValid(access)) return IBV_REREG_MR_ERR_INPUT;
  if ((flags & IBV_REREG_MR_CHANGE_TRANSLATION) && (!addr || !length || !rangeMapped(addr, length)))
    return IBV_REREG_MR_ERR_INPUT;
  if ((flags & IBV_REREG_MR_CHANGE_PD) && !ibpd) return IBV_REREG_MR_ERR_INPUT;
  std::lock_guard<std::mutex> lk(G().mu);
  if (flags & IBV_REREG_MR_CHANGE_PD) {
    --mr->pd->refs;
    mr->pd = pdOf(ibpd);
    ++mr->pd->refs;
    ibmr->pd = ibpd;
  }
  if (flags & IBV_REREG_MR_CHANGE_TRANSLATION) {
    mr->va = static_cast<char*>(addr);
    mr->iova = uintptr_t(addr);
    mr->len = length;
    ibmr->addr = addr;
    ibmr->length = length;
  }
  if (flags & IBV_REREG_MR_CHANGE_ACCESS) mr->access = access;
  // New keys, like hardware: the old rkey stops working.
  G().mrs.erase(ibmr->lkey);
  uint32_t key = newKeyLocked();
  ibmr->lkey = ibmr->rkey = ibmr->handle = key;
  G().mrs[key] = mr;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Completion channel and CQ
SV_EXPORT ibv_comp_channel* ibv_create_comp_channel(ibv_context* context) {
  Channel* ch = new Channel();
  ch->ibch.context = context;
  ch->ibch.fd = eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
  ch->ibch.refcnt = 0;
  if (ch->ibch.fd < 0) {
    delete ch;
    return nullptr;
  }
  return &ch->ibch;
}

SV_EXPORT int ibv_destroy_comp_channel(ibv_comp_channel* ibch) {
  Channel* ch = chOf(ibch);
  {
    std::lock_guard<std::mutex> lk(G().mu);
    if (ch->refs > 0) {
      errno = EBUSY;
      return EBUSY;
    }
  }
  close(ch->ibch.fd);
  delete ch;
  return 0;
}

SV_EXPORT ibv_cq* ibv_create_cq(ibv_context* context, int cqe, void* cqContext,
                                ibv_comp_channel* channel, int compVector) {
  if (cqe < 1 || cqe > 4194303 || compVector < 0 || compVector >= context->num_comp_vectors) {
    errno = EINVAL;
    return nullptr;
  }
  int cap = 1;
  while (cap - 1 < cqe) cap <<= 1;  // like mlx5: a power of two minus one
  Cq* cq = new Cq();
  memset(&cq->ibcq, 0, sizeof cq->ibcq);
  cq->ibcq.context = context;
  cq->ibcq.channel = channel;
  cq->ibcq.cq_context = cqContext;
  cq->ibcq.cqe = cap - 1;
  pthread_mutex_init(&cq->ibcq.mutex, nullptr);
  pthread_cond_init(&cq->ibcq.cond, nullptr);
  cq->ctx = ctxOf(context);
  cq->capacity = cap - 1;
  std::lock_guard<std::mutex> lk(G().mu);
  if (channel) {
    cq->ch = chOf(channel);
    ++cq->ch->refs;
    ++channel->refcnt;
  }
  return &cq->ibcq;
}

SV_EXPORT int ibv_resize_cq(ibv_cq* ibcq, int cqe) {
  Cq* cq = cqOf(ibcq);
  std::lock_guard<std::mutex> lk(G().mu);
  if (cqe < 1 || cqe > 4194303 || size_t(cqe) < cq->entries.size()) return EINVAL;
  int cap = 1;
  while (cap - 1 < cqe) cap <<= 1;
  cq->capacity = cap - 1;
  ibcq->cqe = cap - 1;
  return 0;
}

SV_EXPORT int ibv_destroy_cq(ibv_cq* ibcq) {
  Cq* cq = cqOf(ibcq);
  {
    std::lock_guard<std::mutex> lk(G().mu);
    if (cq->qpRefs > 0) return EBUSY;
    if (cq->ch) {
      --cq->ch->refs;
      --cq->ch->ibch.refcnt;
      auto& ev = cq->ch->events;
      ev.erase(std::remove(ev.begin(), ev.end(), cq), ev.end());
    }
  }
  pthread_mutex_destroy(&ibcq->mutex);
  pthread_cond_destroy(&ibcq->cond);
  delete cq;
  return 0;
}

SV_EXPORT int ibv_get_cq_event(ibv_comp_channel* ibch, ibv_cq** cqOut, void** cqContext) {
  Channel* ch = chOf(ibch);
  for (;;) {
    uint64_t v;
    ssize_t n = read(ibch->fd, &v, sizeof v);  // blocks unless O_NONBLOCK
    if (n != sizeof v) return -1;
    std::lock_guard<std::mutex> lk(G().mu);
    if (ch->events.empty()) continue;  // its CQ was destroyed meanwhile
    Cq* cq = ch->events.front();
    ch->events.pop_front();
    *cqOut = &cq->ibcq;
    *cqContext = cq->ibcq.cq_context;
    return 0;
  }
}

SV_EXPORT void ibv_ack_cq_events(ibv_cq* cq, unsigned int nevents) {
  pthread_mutex_lock(&cq->mutex);
  cq->comp_events_completed += nevents;
  pthread_cond_signal(&cq->cond);
  pthread_mutex_unlock(&cq->mutex);
}

extern "C" int sv_req_notify_cq(ibv_cq* ibcq, int solicitedOnly) {
  Cq* cq = cqOf(ibcq);
  if (!cq->ch) return EINVAL;
  {
    std::lock_guard<std::mutex> lk(G().mu);
    cq->armed = true;
    cq->armedHint.store(true, std::memory_order_relaxed);
    cq->solicitedOnly = solicitedOnly != 0;
  }
  notePoll(true);
  return 0;
}

extern "C" int sv_poll_cq(ibv_cq* ibcq, int n, ibv_wc* wc) {
  Cq* cq = cqOf(ibcq);
  // The look an application takes after arming a CQ, before it sleeps, is not active polling.
  if (!cq->armedHint.load(std::memory_order_relaxed)) notePoll(false);
  // Every 4th empty poll looks at the sockets (each look is a system call per connection).
  if (cq->avail.load(std::memory_order_acquire) == 0 && !cq->overrun &&
      cq->emptyPolls.load(std::memory_order_relaxed) % 4 == 0)
    enginePump();
  if (cq->avail.load(std::memory_order_acquire) == 0 && !cq->overrun) {
    // An empty CQ polled in a loop: give the CPU to the progress threads now and then (ours and
    // the peer's), which on a small machine would otherwise wait for the poller's time slice to
    // end. After a run of empty polls, wait up to 20 us for a completion (woken at once when one
    // arrives).
    // Every 8th empty poll yields: the poller handles incoming messages itself (enginePump), so
    // yielding on every poll mostly handed the CPU to unrelated processes on a loaded machine.
    uint32_t empties = cq->emptyPolls.fetch_add(1, std::memory_order_relaxed);
    if (empties < 32) {
      if (empties % 8 == 7) sched_yield();
      return 0;
    }
    uint32_t seen = cq->pushes.load(std::memory_order_acquire);
    cq->waiters.fetch_add(1, std::memory_order_acq_rel);
    if (cq->avail.load(std::memory_order_acquire) == 0) {
      timespec ts{0, 20000};
      syscall(SYS_futex, reinterpret_cast<uint32_t*>(&cq->pushes), FUTEX_WAIT_PRIVATE, seen, &ts,
              nullptr, 0);
    }
    cq->waiters.fetch_sub(1, std::memory_order_acq_rel);
    if (cq->avail.load(std::memory_order_acquire) == 0) return 0;
  }
  cq->emptyPolls.store(0, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lk(G().mu);
  if (cq->overrun) return -EOVERFLOW;
  int got = 0;
  while (got < n && !cq->entries.empty()) {
    Cqe e = cq->entries.front();
    cq->entries.pop_front();
    cq->avail.fetch_sub(1, std::memory_order_relaxed);
    wc[got++] = e.wc;
    // Slots come back only now, when the completion is polled (as on mlx5).
    auto it = G().qps.find(e.wc.qp_num);
    if (it == G().qps.end()) continue;
    Qp* qp = it->second;
    if (e.isSend) {
      if (e.seq + 1 > qp->freedSeq) qp->freedSeq = e.seq + 1;
    } else if (qp->rqUsed > 0) {
      --qp->rqUsed;
    }
  }
  return got;
}

// ---------------------------------------------------------------------------------------------
// QP
SV_EXPORT ibv_qp* ibv_create_qp(ibv_pd* ibpd, ibv_qp_init_attr* attr) {
  if (!ibpd || !attr) {
    errno = EINVAL;
    return nullptr;
  }
  if (attr->qp_type != IBV_QPT_RC) {
    errno = EOPNOTSUPP;
    return nullptr;
  }
  const ibv_qp_cap& c = attr->cap;
  if (!attr->send_cq || !attr->recv_cq || attr->srq || c.max_send_wr > kMaxWr ||
      c.max_recv_wr > kMaxWr || c.max_send_sge > kMaxSge || c.max_recv_sge > kMaxSge ||
      c.max_inline_data > kMaxInline || attr->send_cq->context != ibpd->context ||
      attr->recv_cq->context != ibpd->context) {
    errno = EINVAL;
    return nullptr;
  }
  uint32_t qpn = registryAlloc();
  if (!qpn) {
    errno = ENOMEM;
    return nullptr;
  }
  Qp* qp = new Qp();
  memset(&qp->ibqp, 0, sizeof qp->ibqp);
  qp->ibqp.context = ibpd->context;
  qp->ibqp.qp_context = attr->qp_context;
  qp->ibqp.pd = ibpd;
  qp->ibqp.send_cq = attr->send_cq;
  qp->ibqp.recv_cq = attr->recv_cq;
  qp->ibqp.handle = qpn;
  qp->ibqp.qp_num = qpn;
  qp->ibqp.state = IBV_QPS_RESET;
  qp->ibqp.qp_type = IBV_QPT_RC;
  pthread_mutex_init(&qp->ibqp.mutex, nullptr);
  pthread_cond_init(&qp->ibqp.cond, nullptr);
  qp->ctx = ctxOf(ibpd->context);
  qp->pd = pdOf(ibpd);
  qp->scq = cqOf(attr->send_cq);
  qp->rcq = cqOf(attr->recv_cq);
  qp->cap = c;
  qp->sigAll = attr->sq_sig_all != 0;
  std::lock_guard<std::mutex> lk(G().mu);
  ++qp->pd->refs;
  ++qp->scq->qpRefs;
  ++qp->rcq->qpRefs;
  G().qps[qpn] = qp;
  logf("create qp 0x%06x", qpn);
  return &qp->ibqp;
}

SV_EXPORT int ibv_destroy_qp(ibv_qp* ibqp) {
  Qp* qp = qpOf(ibqp);
  {
    std::lock_guard<std::mutex> lk(G().mu);
    G().qps.erase(ibqp->qp_num);
    registryFree(ibqp->qp_num);
    cqPurgeQp(qp->scq, ibqp->qp_num);
    cqPurgeQp(qp->rcq, ibqp->qp_num);
    --qp->pd->refs;
    --qp->scq->qpRefs;
    --qp->rcq->qpRefs;
  }
  pthread_mutex_destroy(&ibqp->mutex);
  pthread_cond_destroy(&ibqp->cond);
  delete qp;
  return 0;
}

namespace {

// Required and optional attribute masks per RC transition (as the kernel's qp_state_table).
struct Transition {
  bool valid;
  int req;
  int opt;
};

Transition transition(ibv_qp_state cur, ibv_qp_state next) {
  if (next == IBV_QPS_RESET || next == IBV_QPS_ERR) return {true, 0, 0};
  switch (cur) {
    case IBV_QPS_RESET:
      if (next == IBV_QPS_INIT)
        return {true, IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS, 0};
      break;
    case IBV_QPS_INIT:
      if (next == IBV_QPS_INIT)
        return {true, 0, IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS};
      if (next == IBV_QPS_RTR)
        return {true,
                IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                    IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER,
                IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX};
      break;
    case IBV_QPS_RTR:
      if (next == IBV_QPS_RTS)
        return {true,
                IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
                    IBV_QP_MAX_QP_RD_ATOMIC,
                IBV_QP_CUR_STATE | IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS | IBV_QP_MIN_RNR_TIMER |
                    IBV_QP_PATH_MIG_STATE};
      break;
    case IBV_QPS_RTS:
      if (next == IBV_QPS_RTS)
        return {true, 0,
                IBV_QP_CUR_STATE | IBV_QP_ACCESS_FLAGS | IBV_QP_ALT_PATH | IBV_QP_PATH_MIG_STATE |
                    IBV_QP_MIN_RNR_TIMER};
      if (next == IBV_QPS_SQD) return {true, 0, IBV_QP_EN_SQD_ASYNC_NOTIFY};
      break;
    case IBV_QPS_SQD:
      if (next == IBV_QPS_RTS)
        return {true, 0,
                IBV_QP_CUR_STATE | IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS | IBV_QP_MIN_RNR_TIMER |
                    IBV_QP_PATH_MIG_STATE};
      if (next == IBV_QPS_SQD)
        return {true, 0,
                IBV_QP_PKEY_INDEX | IBV_QP_QKEY | IBV_QP_AV | IBV_QP_MAX_QP_RD_ATOMIC |
                    IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_CUR_STATE | IBV_QP_ALT_PATH |
                    IBV_QP_ACCESS_FLAGS | IBV_QP_PORT | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
                    IBV_QP_RNR_RETRY | IBV_QP_MIN_RNR_TIMER | IBV_QP_PATH_MIG_STATE};
      break;
    case IBV_QPS_SQE:
      if (next == IBV_QPS_RTS) return {true, 0, IBV_QP_CUR_STATE | IBV_QP_ACCESS_FLAGS};
      break;
    default: break;
  }
  return {false, 0, 0};
}

bool avValid(const Qp* qp, const ibv_ah_attr& av, int port) {
  const PortInfo* p = devicePort(qp->ctx->dev, port);
  if (!p) return false;
  if (av.port_num && av.port_num != port) return false;
  if (p->linkLayer == IBV_LINK_LAYER_ETHERNET) {
    if (!av.is_global) return false;  // RoCE needs a GRH
  } else if (!av.dlid || av.dlid >= 0xc000) {
    return false;  // unicast LID required on IB
  }
  if (av.is_global) {
    if (av.grh.sgid_index >= p->gids.size() || !p->gids[av.grh.sgid_index].valid) return false;
  }
  return true;
}

void resetQpLocked(Qp* qp) {
  qp->sq.clear();
  qp->rq.clear();
  qp->postSeq = qp->freedSeq = 0;
  qp->sentCount = 0;
  qp->readsInFlight = 0;
  qp->rqUsed = 0;
  qp->epoch++;
  qp->peerPid = 0;
  cqPurgeQp(qp->scq, qp->ibqp.qp_num);
  cqPurgeQp(qp->rcq, qp->ibqp.qp_num);
}

}  // namespace

SV_EXPORT int ibv_modify_qp(ibv_qp* ibqp, ibv_qp_attr* attr, int mask) {
  Qp* qp = qpOf(ibqp);
  std::lock_guard<std::mutex> lk(G().mu);
  ibv_qp_state cur = ibqp->state;
  if (mask & IBV_QP_CUR_STATE) {
    if (attr->cur_qp_state != cur) return EINVAL;
  }
  ibv_qp_state next = (mask & IBV_QP_STATE) ? attr->qp_state : cur;
  if (next > IBV_QPS_ERR) return EINVAL;
  Transition t = transition(cur, next);
  if (!t.valid) return EINVAL;
  int given = mask & ~IBV_QP_STATE;
  if ((given & t.req) != t.req) return EINVAL;  // a required attribute is missing
  if (given & ~(t.req | t.opt)) return EINVAL;  // an attribute this transition does not take
  if ((mask & IBV_QP_CUR_STATE) && cur != IBV_QPS_RTR && cur != IBV_QPS_RTS &&
      cur != IBV_QPS_SQD && cur != IBV_QPS_SQE)
    return EINVAL;
  // Values.
  int port = (mask & IBV_QP_PORT) ? attr->port_num : qp->port;
  const PortInfo* p = devicePort(qp->ctx->dev, port);
  if ((mask & IBV_QP_PORT) && !p) return EINVAL;
  if ((mask & IBV_QP_PKEY_INDEX) && (!p || attr->pkey_index >= p->pkeys.size())) return EINVAL;
  if ((mask & IBV_QP_ACCESS_FLAGS) &&
      (attr->qp_access_flags & ~(IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                                 IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC)))
    return EINVAL;
  if ((mask & IBV_QP_PATH_MTU) &&
      (attr->path_mtu < IBV_MTU_256 || attr->path_mtu > IBV_MTU_4096 || !p ||
       attr->path_mtu > p->activeMtu))
    return EINVAL;
  if ((mask & IBV_QP_AV) && !avValid(qp, attr->ah_attr, port)) return EINVAL;
  if ((mask & IBV_QP_TIMEOUT) && attr->timeout > 31) return EINVAL;
  if ((mask & IBV_QP_RETRY_CNT) && attr->retry_cnt > 7) return EINVAL;
  if ((mask & IBV_QP_RNR_RETRY) && attr->rnr_retry > 7) return EINVAL;
  if ((mask & IBV_QP_MIN_RNR_TIMER) && attr->min_rnr_timer > 31) return EINVAL;
  if ((mask & IBV_QP_MAX_QP_RD_ATOMIC) && attr->max_rd_atomic > 16) return EINVAL;
  if ((mask & IBV_QP_MAX_DEST_RD_ATOMIC) && attr->max_dest_rd_atomic > 16) return EINVAL;
  if ((mask & IBV_QP_DEST_QPN) && (attr->dest_qp_num == 0 || attr->dest_qp_num > 0xffffff))
    return EINVAL;
  // Apply.
  if (mask & IBV_QP_PORT) qp->port = port;
  if (mask & IBV_QP_PKEY_INDEX) qp->pkeyIndex = attr->pkey_index;
  if (mask & IBV_QP_ACCESS_FLAGS) qp->access = int(attr->qp_access_flags);
  if (mask & IBV_QP_AV) qp->av = attr->ah_attr;
  if (mask & IBV_QP_PATH_MTU) qp->mtu = attr->path_mtu;
  if (mask & IBV_QP_DEST_QPN) qp->destQpn = attr->dest_qp_num;
  if (mask & IBV_QP_RQ_PSN) qp->rqPsn = attr->rq_psn & 0xffffff;
  if (mask & IBV_QP_SQ_PSN) {
    qp->sqPsn = attr->sq_psn & 0xffffff;
    qp->nextPsn = qp->sqPsn;
  }
  if (mask & IBV_QP_MAX_DEST_RD_ATOMIC) qp->maxDestRd = attr->max_dest_rd_atomic;
  if (mask & IBV_QP_MAX_QP_RD_ATOMIC) qp->maxRd = attr->max_rd_atomic;
  if (mask & IBV_QP_MIN_RNR_TIMER) qp->minRnrTimer = attr->min_rnr_timer;
  if (mask & IBV_QP_TIMEOUT) qp->timeout = attr->timeout;
  if (mask & IBV_QP_RETRY_CNT) qp->retryCnt = attr->retry_cnt;
  if (mask & IBV_QP_RNR_RETRY) qp->rnrRetry = attr->rnr_retry;
  if (mask & IBV_QP_EN_SQD_ASYNC_NOTIFY) qp->sqdNotify = attr->en_sqd_async_notify != 0;
  if (next != cur) {
    logf("qp 0x%06x: state %d -> %d", ibqp->qp_num, int(cur), int(next));
    if (next == IBV_QPS_RESET) {
      ibqp->state = next;
      resetQpLocked(qp);
    } else if (next == IBV_QPS_ERR) {
      qpToError(qp, -1);
    } else {
      ibqp->state = next;
      if (next == IBV_QPS_SQD && qp->sqdNotify) {
        ibv_async_event ev;
        memset(&ev, 0, sizeof ev);
        ev.element.qp = ibqp;
        ev.event_type = IBV_EVENT_SQ_DRAINED;
        pushAsync(qp->ctx, ev);
      }
    }
    engineKick();
  }
  return 0;
}

SV_EXPORT int ibv_query_qp(ibv_qp* ibqp, ibv_qp_attr* attr, int mask, ibv_qp_init_attr* init) {
  Qp* qp = qpOf(ibqp);
  std::lock_guard<std::mutex> lk(G().mu);
  memset(attr, 0, sizeof *attr);
  attr->qp_state = ibqp->state;
  attr->cur_qp_state = ibqp->state;
  attr->path_mtu = qp->mtu;
  attr->path_mig_state = IBV_MIG_MIGRATED;
  attr->rq_psn = qp->rqPsn;
  attr->sq_psn = qp->nextPsn;
  attr->dest_qp_num = qp->destQpn;
  attr->qp_access_flags = unsigned(qp->access);
  attr->cap = qp->cap;
  attr->ah_attr = qp->av;
  attr->pkey_index = uint16_t(qp->pkeyIndex);
  attr->en_sqd_async_notify = qp->sqdNotify;
  attr->sq_draining = 0;
  attr->max_rd_atomic = uint8_t(qp->maxRd);
  attr->max_dest_rd_atomic = uint8_t(qp->maxDestRd);
  attr->min_rnr_timer = uint8_t(qp->minRnrTimer);
  attr->port_num = uint8_t(qp->port);
  attr->timeout = uint8_t(qp->timeout);
  attr->retry_cnt = uint8_t(qp->retryCnt);
  attr->rnr_retry = uint8_t(qp->rnrRetry);
  if (init) {
    memset(init, 0, sizeof *init);
    init->qp_context = ibqp->qp_context;
    init->send_cq = ibqp->send_cq;
    init->recv_cq = ibqp->recv_cq;
    init->cap = qp->cap;
    init->qp_type = IBV_QPT_RC;
    init->sq_sig_all = qp->sigAll;
  }
  (void)mask;
  return 0;
}

SV_EXPORT int ibv_query_qp_data_in_order(ibv_qp*, enum ibv_wr_opcode, uint32_t) {
  return 1;  // every byte lands in order: the copy of one WR is a single memcpy sequence
}

SV_EXPORT ibv_qp_ex* ibv_qp_to_qp_ex(ibv_qp*) {
  errno = EOPNOTSUPP;  // QPs come only from ibv_create_qp, never with the new post API
  return nullptr;
}

SV_EXPORT int ibv_query_ece(ibv_qp*, ibv_ece*) { return EOPNOTSUPP; }
SV_EXPORT int ibv_set_ece(ibv_qp*, ibv_ece*) { return EOPNOTSUPP; }

// ---------------------------------------------------------------------------------------------
// Post
extern "C" int sv_post_send(ibv_qp* ibqp, ibv_send_wr* wr, ibv_send_wr** bad) {
  Qp* qp = qpOf(ibqp);
  Global& g = G();
  std::lock_guard<std::mutex> lk(g.mu);
  int64_t now = nowNs();
  bool kick = false;
  for (; wr; wr = wr->next) {
    int err = 0;
    ibv_qp_state st = ibqp->state;
    if (st != IBV_QPS_RTS && st != IBV_QPS_ERR && st != IBV_QPS_SQD) err = EINVAL;
    else if (qp->postSeq - qp->freedSeq >= qp->cap.max_send_wr) err = ENOMEM;
    else if (wr->num_sge < 0 || wr->num_sge > int(qp->cap.max_send_sge)) err = EINVAL;
    else if (wr->opcode != IBV_WR_SEND && wr->opcode != IBV_WR_SEND_WITH_IMM &&
             wr->opcode != IBV_WR_RDMA_WRITE && wr->opcode != IBV_WR_RDMA_WRITE_WITH_IMM &&
             wr->opcode != IBV_WR_RDMA_READ)
      err = EINVAL;
    SendWqe w;
    if (!err) {
      w.wrId = wr->wr_id;
      w.opcode = wr->opcode;
      w.signaled = qp->sigAll || (wr->send_flags & IBV_SEND_SIGNALED);
      w.solicited = wr->send_flags & IBV_SEND_SOLICITED;
      w.inl = (wr->send_flags & IBV_SEND_INLINE) && wr->opcode != IBV_WR_RDMA_READ;
      w.imm = wr->imm_data;
      if (wr->opcode == IBV_WR_RDMA_WRITE || wr->opcode == IBV_WR_RDMA_WRITE_WITH_IMM ||
          wr->opcode == IBV_WR_RDMA_READ) {
        w.raddr = wr->wr.rdma.remote_addr;
        w.rkey = wr->wr.rdma.rkey;
      }
      uint64_t len = 0;
      for (int i = 0; i < wr->num_sge; ++i) len += wr->sg_list[i].length;
      w.len = len;
      if (w.inl) {
        if (len > qp->cap.max_inline_data) {
          err = EINVAL;
        } else {
          // Inline data is copied now: the caller may reuse its buffer as soon as post returns.
          w.inlineData.reserve(len);
          for (int i = 0; i < wr->num_sge; ++i)
            w.inlineData.append(reinterpret_cast<const char*>(uintptr_t(wr->sg_list[i].addr)),
                                wr->sg_list[i].length);
        }
      } else {
        w.sge.assign(wr->sg_list, wr->sg_list + wr->num_sge);
      }
    }
    if (err) {
      if (bad) *bad = wr;
      if (kick) requesterPoke(qp);
      return err;
    }
    w.seq = qp->postSeq++;
    w.psn = qp->nextPsn;
    qp->nextPsn = (qp->nextPsn + 1) & 0xffffff;
    int64_t delay = g.cfg.delayUs > 0 ? int64_t(randU64Locked() % uint64_t(g.cfg.delayUs + 1)) * 1000
                                      : 0;
    w.notBefore = std::max(qp->lastNotBefore, now + delay);  // per-QP order is kept
    qp->lastNotBefore = w.notBefore;
    qp->sq.push_back(std::move(w));
    kick = true;
  }
  if (kick) requesterPoke(qp);
  return 0;
}

extern "C" int sv_post_recv(ibv_qp* ibqp, ibv_recv_wr* wr, ibv_recv_wr** bad) {
  Qp* qp = qpOf(ibqp);
  std::lock_guard<std::mutex> lk(G().mu);
  bool kick = false;
  for (; wr; wr = wr->next) {
    int err = 0;
    if (ibqp->state == IBV_QPS_RESET) err = EINVAL;
    else if (qp->rqUsed >= qp->cap.max_recv_wr) err = ENOMEM;
    else if (wr->num_sge < 0 || wr->num_sge > int(qp->cap.max_recv_sge)) err = EINVAL;
    if (err) {
      if (bad) *bad = wr;
      if (kick) engineKick();
      return err;
    }
    RecvWqe r;
    r.wrId = wr->wr_id;
    r.sge.assign(wr->sg_list, wr->sg_list + wr->num_sge);
    qp->rq.push_back(std::move(r));
    ++qp->rqUsed;
    if (ibqp->state == IBV_QPS_ERR) kick = true;  // flushed by the progress thread
  }
  if (kick) engineKick();
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Not provided: SRQ, AH (UD only), multicast. They fail the way a provider without them does.
SV_EXPORT ibv_srq* ibv_create_srq(ibv_pd*, ibv_srq_init_attr*) {
  errno = EOPNOTSUPP;
  return nullptr;
}
SV_EXPORT int ibv_modify_srq(ibv_srq*, ibv_srq_attr*, int) { return EOPNOTSUPP; }
SV_EXPORT int ibv_query_srq(ibv_srq*, ibv_srq_attr*) { return EOPNOTSUPP; }
SV_EXPORT int ibv_destroy_srq(ibv_srq*) { return EOPNOTSUPP; }
SV_EXPORT ibv_ah* ibv_create_ah(ibv_pd*, ibv_ah_attr*) {
  errno = EOPNOTSUPP;
  return nullptr;
}
SV_EXPORT int ibv_destroy_ah(ibv_ah*) { return EOPNOTSUPP; }
SV_EXPORT int ibv_init_ah_from_wc(ibv_context*, uint8_t, ibv_wc*, ibv_grh*, ibv_ah_attr*) {
  errno = EOPNOTSUPP;
  return -1;
}
SV_EXPORT ibv_ah* ibv_create_ah_from_wc(ibv_pd*, ibv_wc*, ibv_grh*, uint8_t) {
  errno = EOPNOTSUPP;
  return nullptr;
}
SV_EXPORT int ibv_attach_mcast(ibv_qp*, const ibv_gid*, uint16_t) { return EOPNOTSUPP; }
SV_EXPORT int ibv_detach_mcast(ibv_qp*, const ibv_gid*, uint16_t) { return EOPNOTSUPP; }
