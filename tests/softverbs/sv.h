// softverbs: a userspace verbs provider that stands in for libibverbs.so.1 in tests.
//
// Internal declarations shared by the three translation units:
//   sv_device.cc  devices from a sysfs tree, contexts, queries, strings, async events
//   sv_verbs.cc   PD, MR, CQ, completion channel, QP objects, post/poll, the QP state machine
//   sv_engine.cc  the per-process progress thread, the wire between processes, the QPN registry,
//                 requester and responder logic
//
// Locking: one process-wide mutex (Global::mu) protects every object below except the fields
// marked otherwise. The progress thread holds it while it works and drops it while it sleeps.
#pragma once

#include <infiniband/verbs.h>

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#define SV_EXPORT extern "C" __attribute__((visibility("default")))

namespace sv {

int64_t nowNs();
void logf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// ---------------------------------------------------------------------------------------------
// Devices
struct GidEnt {
  ibv_gid gid{};
  bool valid = false;
  int type = 0;  // 0: IB or RoCE v1 ("IB/RoCE v1"), 1: RoCE v2
  std::string ndev;
  int ifindex = 0;
};

struct PortInfo {
  int state = IBV_PORT_ACTIVE;
  int physState = 5;
  int linkLayer = IBV_LINK_LAYER_INFINIBAND;
  uint16_t lid = 1, smLid = 1;
  uint8_t lmc = 0;
  ibv_mtu maxMtu = IBV_MTU_4096, activeMtu = IBV_MTU_4096;
  uint8_t width = 2, speed = 32;  // 4X EDR
  uint32_t capMask = 0x2651e848;
  std::vector<GidEnt> gids;
  std::vector<uint16_t> pkeys;
};

struct Device {
  ibv_device ibdev;  // must stay first: clients hold ibv_device*
  std::string name;
  uint64_t nodeGuid = 0, sysGuid = 0;  // host order
  std::string fwVer;
  uint32_t vendorId = 0, partId = 0, hwVer = 0;
  std::vector<PortInfo> ports;  // index 0 = port 1
  int index = 0;
};

const PortInfo* devicePort(const Device* d, int port);  // nullptr when out of range

// ---------------------------------------------------------------------------------------------
// Objects
struct Context {
  verbs_context vctx;  // must stay first; ibv_context is its last member
  Device* dev = nullptr;
  int asyncFd = -1;                        // eventfd (semaphore mode), one count per event
  std::deque<ibv_async_event> asyncQueue;  // under Global::mu
  bool alive = true;
};
Context* ctxOf(ibv_context* c);
void pushAsync(Context* ctx, const ibv_async_event& ev);  // caller holds mu

struct Pd {
  ibv_pd ibpd;
  Context* ctx;
  int refs = 0;  // MRs and QPs
};

struct Mr {
  ibv_mr ibmr;
  Pd* pd;
  uint64_t iova = 0;
  char* va = nullptr;  // where iova maps in this process
  size_t len = 0;
  int access = 0;
  void* dmabufMap = nullptr;  // mmap of the dmabuf fd, unmapped at dereg
  size_t dmabufMapLen = 0;
};

struct Channel {
  ibv_comp_channel ibch;
  std::deque<struct Cq*> events;  // under mu
  int refs = 0;
};

struct Cqe {
  ibv_wc wc;
  uint64_t seq;  // send: the WQE's post sequence; recv: unused
  bool isSend;
  bool solicited;
};

struct Cq {
  ibv_cq ibcq;
  Context* ctx;
  Channel* ch = nullptr;
  int capacity = 0;
  std::deque<Cqe> entries;
  std::atomic<int> avail{0};  // entries.size(), readable without mu (poll fast path)
  std::atomic<uint32_t> pushes{0};  // futex word: bumped on every push
  std::atomic<int> waiters{0};
  std::atomic<uint32_t> emptyPolls{0};  // consecutive empty polls
  bool armed = false, solicitedOnly = false;
  std::atomic<bool> armedHint{false};  // `armed`, readable without mu (the poll fast path)
  std::atomic<bool> overrun{false};
  int qpRefs = 0;
};

struct SendWqe {
  uint64_t wrId = 0;
  uint64_t seq = 0;
  ibv_wr_opcode opcode = IBV_WR_SEND;
  bool signaled = false, solicited = false, inl = false;
  uint32_t imm = 0;  // network order, as the WR gave it
  uint64_t raddr = 0;
  uint32_t rkey = 0;
  uint64_t len = 0;
  std::vector<ibv_sge> sge;
  std::string inlineData;
  enum State { kQueued, kSent, kDone } st = kQueued;
  uint32_t psn = 0;
  int64_t notBefore = 0, deadline = 0;
  bool lost = false;
  int retries = 0, rnrRetries = 0;
};

struct RecvWqe {
  uint64_t wrId = 0;
  std::vector<ibv_sge> sge;
};

struct Qp {
  ibv_qp ibqp;
  Context* ctx;
  Pd* pd;
  Cq* scq;
  Cq* rcq;
  ibv_qp_cap cap{};
  bool sigAll = false;
  // attributes
  int port = 0, pkeyIndex = 0, access = 0;
  ibv_ah_attr av{};
  ibv_mtu mtu = IBV_MTU_1024;
  uint32_t destQpn = 0, rqPsn = 0, sqPsn = 0;
  int maxDestRd = 0, maxRd = 0, minRnrTimer = 0, timeout = 0, retryCnt = 0, rnrRetry = 0;
  bool sqdNotify = false;
  // work
  std::deque<SendWqe> sq;
  std::deque<RecvWqe> rq;
  uint64_t postSeq = 0, freedSeq = 0;  // send-queue slots in use = postSeq - freedSeq
  uint32_t rqUsed = 0;                 // receive slots in use (posted, not yet polled)
  size_t sentCount = 0;  // sq[0, sentCount) are transmitted and unanswered, the rest queued
  int readsInFlight = 0;  // RDMA READs among them (at most max_rd_atomic)
  uint32_t nextPsn = 0;
  uint32_t epoch = 1;
  int64_t lastNotBefore = 0;
  pid_t peerPid = 0;
};

// ---------------------------------------------------------------------------------------------
// Process-wide state
struct Config {
  std::string sysfsRoot;  // empty: the built-in default device
  std::string runDir = "/dev/shm";
  int delayUs = 0;  // random per-WR delay upper bound
  bool dmabuf = false;
  bool debug = false;
  uint64_t seed = 0;
};

struct Global {
  std::mutex mu;
  Config cfg;
  bool cfgLoaded = false;
  std::unordered_map<uint32_t, Mr*> mrs;  // lkey == rkey
  std::unordered_map<uint32_t, Qp*> qps;  // by QPN
  std::vector<Context*> ctxs;
  uint32_t nextKeyIndex = 0;
  uint64_t rng = 0;
  bool forkInit = false;
};
Global& G();
void loadConfigLocked();
uint64_t randU64Locked();

// ---------------------------------------------------------------------------------------------
// Engine (sv_engine.cc)
void engineAcquire();  // first context: start the progress thread
void engineRelease();  // last context closed: stop it
void engineKick();     // wake the progress thread (caller may hold mu)
void notePoll(bool arming);  // an application thread polled a CQ / armed one (caller holds no lock or mu)
bool enginePump();     // an application thread handles waiting messages if mu is free
void requesterPoke(Qp* qp);  // caller holds mu: transmit what is due now, wake the thread if needed

// QPN registry shared by all processes of this uid.
uint32_t registryAlloc();  // 0 on failure
void registryFree(uint32_t qpn);
pid_t registryLookup(uint32_t qpn);

// Completion helpers (caller holds mu).
void cqPush(Cq* cq, const Cqe& e);
void qpToError(Qp* qp, int asyncEvent /* -1 for none */);
void cqPurgeQp(Cq* cq, uint32_t qpn);

}  // namespace sv
