#include "lib/engine/communicator.h"

#include <poll.h>
#include <sched.h>

#include <algorithm>
#include <cstring>

#include "collectives/reduce/reduce.h"
#include "lib/core/config.h"
#include "lib/core/log.h"
#include "lib/core/util.h"

namespace weft::engine {

namespace {
constexpr uint64_t kNsPerMs = 1000000ull;
constexpr uint64_t kConnTag = 1ull << 40;
const char* const kKnownTransports[] = {"socket"};

std::vector<std::string> splitList(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t c = s.find(',', pos);
    if (c == std::string::npos) c = s.size();
    if (c > pos) out.push_back(s.substr(pos, c - pos));
    pos = c + 1;
  }
  return out;
}

std::string describeOp(const OpHeader& h) {
  std::string s = std::string(collName(static_cast<CollType>(h.coll))) + " #" + std::to_string(h.seq) + " (count " +
                  std::to_string(h.count) + ", " + typeName(static_cast<DataType>(h.dtype)) + ", " +
                  opName(static_cast<RedOp>(h.redop)) + ", " + plan::algoName(static_cast<plan::Algo>(h.algo));
  if (h.root >= 0) s += ", root " + std::to_string(h.root);
  return s + ")";
}
}  // namespace

Status loadEngineConfig(EngineConfig* out) {
  WEFT_TRY(config::validate());
  int64_t v;
  WEFT_TRY(config::parseInt("WEFT_TIMEOUT_MS", &v));
  if (v < 0) return invalidArgument("WEFT_TIMEOUT_MS must not be negative (0 disables the timeout)");
  out->timeoutMs = static_cast<uint64_t>(v);
  WEFT_TRY(config::parseInt("WEFT_SPIN_US", &v));
  out->spinUs = static_cast<uint64_t>(std::max<int64_t>(v, 0));
  WEFT_TRY(config::parseInt("WEFT_NSLOTS", &v));
  if (v < 2 || v > 64) return invalidArgument("WEFT_NSLOTS=" + std::to_string(v) + " is out of range: use 2 to 64");
  out->nslots = static_cast<int>(v);
  WEFT_TRY(config::parseInt("WEFT_BUFFSIZE", &v));
  if (v < 4096 * out->nslots || v > (int64_t{1} << 32))
    return invalidArgument("WEFT_BUFFSIZE=" + std::to_string(v) + " is out of range: use at least 4096 bytes per slot (WEFT_NSLOTS=" +
                           std::to_string(out->nslots) + ") and at most 4 GiB");
  out->buffSize = static_cast<size_t>(v);
  WEFT_TRY(plan::loadTunerConfig(&out->tuner));
  out->transports = splitList(config::getString("WEFT_TRANSPORTS"));
  for (auto& t : out->transports) {
    bool known = false;
    for (const char* k : kKnownTransports) known |= t == k;
    if (!known)
      return invalidArgument("WEFT_TRANSPORTS names \"" + t + "\", which is not a transport of this build (available: socket)");
  }
  return Status::ok();
}

Status Communicator::create(const bootstrap::UniqueId& id, int nranks, int rank, std::unique_ptr<Communicator>* out) {
  std::unique_ptr<Communicator> c(new Communicator());
  c->rank_ = rank;
  c->nranks_ = nranks;
  WEFT_TRY(loadEngineConfig(&c->cfg_));
  bool socketAllowed = c->cfg_.transports.empty() ||
                       std::find(c->cfg_.transports.begin(), c->cfg_.transports.end(), "socket") != c->cfg_.transports.end();
  if (!socketAllowed)
    return invalidArgument("WEFT_TRANSPORTS excludes every transport available between these ranks (available: socket)");
  WEFT_TRY(bootstrap::Bootstrap::create(id, nranks, rank, &c->abort_, &c->bootstrap_));
  Status s;
  c->transport_ = transport::createSocketTransport(&s);
  if (!s) return s.withContext("starting the socket transport");
  c->slotBytes_ = c->cfg_.buffSize / static_cast<size_t>(c->cfg_.nslots);
  c->slotBytes_ &= ~size_t{63};
  for (int r = 0; r < nranks; ++r) c->ring_.push_back(r);
  WEFT_INFO(INIT, "rank %d/%d ready: transport socket (%s), %d slots of %zu bytes per channel", rank, nranks,
            c->transport_->device(0).name.c_str(), c->cfg_.nslots, c->slotBytes_);
  *out = std::move(c);
  return Status::ok();
}

Communicator::~Communicator() {
  send_.clear();
  recv_.clear();
  bootstrap_.reset();  // says goodbye to the peers
}

void Communicator::requestAbort() {
  if (abort_.exchange(true)) return;
  if (bootstrap_ && !failed_.load())
    bootstrap_->broadcastError(Code::kRemote, bootstrap_->describe(rank_) + " aborted its communicator (weftCommAbort)");
}

Status Communicator::asyncError() const {
  std::lock_guard<std::mutex> g(errMu_);
  if (!sticky_.isOk()) return sticky_;
  if (bootstrap_ && bootstrap_->hasError()) return bootstrap_->error();
  return Status::ok();
}

size_t Communicator::stagingBytes() const {
  size_t b = 0;
  for (auto& [p, c] : send_) b += c->stagingBytes();
  for (auto& [p, c] : recv_) b += c->stagingBytes();
  return b;
}

Status Communicator::fail(const Status& s) {
  {
    std::lock_guard<std::mutex> g(errMu_);
    if (!sticky_.isOk()) return sticky_;
    sticky_ = s;
  }
  failed_.store(true);
  // A peer's report is already known to everyone; only a locally detected failure is broadcast.
  if (!(bootstrap_->hasError() && bootstrap_->error().message() == s.message()))
    bootstrap_->broadcastError(s.code(), s.message());
  WEFT_WARN(COLL, "rank %d: %s", rank_, s.message().c_str());
  return s;
}

Status Communicator::rootCause(const Status& local) const {
  // A closed connection is often the echo of a failure another rank already diagnosed (it saw the
  // dead peer or the mismatch first, told everyone, then closed): give its report a moment to
  // arrive and prefer it.
  if (local.code() != Code::kRemote) return local;
  uint64_t until = nowNs() + 300 * kNsPerMs;
  while (!bootstrap_->hasError() && nowNs() < until) {
    struct timespec ts{0, 5000000};
    nanosleep(&ts, nullptr);
  }
  if (bootstrap_->hasError()) return bootstrap_->error();
  return local;
}

Status Communicator::checkInterrupt() const {
  if (abort_.load()) return invalidUsage("the communicator was aborted (weftCommAbort) while this call was in progress");
  if (bootstrap_->hasError()) return bootstrap_->error();
  return Status::ok();
}

Status Communicator::connectPeers(const std::vector<int>& sendPeers, const std::vector<int>& recvPeers) {
  std::vector<int> needSend, needRecv;
  for (int p : sendPeers)
    if (!send_.count(p)) needSend.push_back(p);
  for (int p : recvPeers)
    if (!recv_.count(p)) needRecv.push_back(p);
  if (needSend.empty() && needRecv.empty()) return Status::ok();
  uint64_t timeoutMs = static_cast<uint64_t>(config::getInt("WEFT_INIT_TIMEOUT_MS"));
  uint64_t deadline = nowNs() + timeoutMs * kNsPerMs;

  struct PendingRecv {
    int peer;
    transport::ListenComm* listen;
    transport::RecvComm* comm = nullptr;
  };
  struct PendingSend {
    int peer;
    transport::Handle handle;
    transport::SendComm* comm = nullptr;
  };
  std::vector<PendingRecv> recvs;
  std::vector<PendingSend> sends;
  auto cleanup = [&] {
    for (auto& r : recvs) {
      if (r.listen) (void)transport_->closeListen(r.listen);
      if (r.comm) (void)transport_->closeRecv(r.comm);
    }
    for (auto& s : sends)
      if (s.comm) (void)transport_->closeSend(s.comm);
  };
  // First every listen (its handle goes to the sender), then every connect: no rank waits for a
  // handle before it has sent its own, so the setup cannot deadlock.
  for (int p : needRecv) {
    transport::Handle h;
    transport::ListenComm* l = nullptr;
    Status s = transport_->listen(0, &h, &l);
    if (s) s = bootstrap_->send(p, kConnTag, h.bytes, sizeof h.bytes);
    if (!s) {
      if (l) (void)transport_->closeListen(l);
      cleanup();
      return s.withContext("setting up the connection from " + bootstrap_->describe(p));
    }
    recvs.push_back({p, l});
  }
  for (int p : needSend) {
    std::vector<char> got;
    Status s = bootstrap_->recv(p, kConnTag, &got, deadline);
    if (s && got.size() != sizeof(transport::Handle::bytes))
      s = invalidUsage("malformed connection handle (" + std::to_string(got.size()) + " bytes)");
    if (!s) {
      cleanup();
      return s.withContext("setting up the connection to " + bootstrap_->describe(p));
    }
    PendingSend ps{p, {}};
    std::memcpy(ps.handle.bytes, got.data(), sizeof ps.handle.bytes);
    sends.push_back(ps);
  }
  for (;;) {
    bool all = true;
    for (auto& s : sends) {
      if (s.comm) continue;
      Status st = transport_->connect(0, &s.handle, &s.comm);
      if (!st) {
        cleanup();
        return st.withContext("connecting to " + bootstrap_->describe(s.peer));
      }
      all &= s.comm != nullptr;
    }
    for (auto& r : recvs) {
      if (r.comm) continue;
      Status st = transport_->accept(r.listen, &r.comm);
      if (!st) {
        cleanup();
        return st.withContext("accepting the connection from " + bootstrap_->describe(r.peer));
      }
      all &= r.comm != nullptr;
    }
    if (all) break;
    Status st = checkInterrupt();
    if (st && nowNs() > deadline)
      st = timeoutError("connection setup with peers did not complete within WEFT_INIT_TIMEOUT_MS");
    if (!st) {
      cleanup();
      return st;
    }
    sched_yield();
    struct timespec ts{0, 200000};
    nanosleep(&ts, nullptr);
  }
  std::string dev = transport_->device(0).name + " " + transport_->device(0).address;
  for (auto& s : sends) {
    auto ch = std::make_unique<SendChannel>(transport_.get(), s.comm, cfg_.nslots, slotBytes_);
    s.comm = nullptr;
    WEFT_TRY(ch->init());
    send_[s.peer] = std::move(ch);
    WEFT_INFO(NET, "rank %d -> %s: transport socket, NIC %s, GID n/a, GPUDirect n/a (host memory), %zu bytes staging",
              rank_, bootstrap_->describe(s.peer).c_str(), dev.c_str(), send_[s.peer]->stagingBytes());
  }
  for (auto& r : recvs) {
    (void)transport_->closeListen(r.listen);
    r.listen = nullptr;
    auto ch = std::make_unique<RecvChannel>(transport_.get(), r.comm, cfg_.nslots, slotBytes_);
    r.comm = nullptr;
    WEFT_TRY(ch->init());
    recv_[r.peer] = std::move(ch);
    WEFT_INFO(NET, "rank %d <- %s: transport socket, NIC %s, GID n/a, GPUDirect n/a (host memory), %zu bytes staging",
              rank_, bootstrap_->describe(r.peer).c_str(), dev.c_str(), recv_[r.peer]->stagingBytes());
  }
  return Status::ok();
}

// Runs a schedule: phase by phase, chunk-major within a phase; each primitive is attempted without
// blocking and retried by the progress loop until its inputs have arrived and its outputs have room.
class Executor {
 public:
  Executor(Communicator& c, const coll::Schedule& s, const OpDesc& op, const OpHeader& header, size_t chunkElems)
      : c_(c), s_(s), op_(op), header_(header), chunkElems_(chunkElems), esize_(typeSize(op.dtype)) {
    startPhase();
  }

  bool done() const { return phase_ >= s_.phases.size(); }
  int waitingPeer() const { return waitingPeer_; }
  bool waitingToSend() const { return waitingToSend_; }

  Status advance(bool* progressed) {
    *progressed = false;
    while (!done()) {
      const coll::Phase& ph = s_.phases[phase_];
      if (round_ >= rounds_) {
        ++phase_;
        startPhase();
        continue;
      }
      if (step_ >= ph.steps.size()) {
        ++round_;
        step_ = 0;
        continue;
      }
      const coll::Step& st = ph.steps[step_];
      size_t off = round_ * chunkElems_;
      if (off >= st.count) {
        ++step_;
        continue;
      }
      size_t n = std::min(chunkElems_, st.count - off);
      bool ran = false;
      WEFT_TRY(primitive(st, st.offset + off, n, &ran));
      if (!ran) break;
      *progressed = true;
      ++step_;
    }
    return Status::ok();
  }

 private:
  void startPhase() {
    round_ = 0;
    step_ = 0;
    rounds_ = 0;
    if (done()) return;
    for (const coll::Step& st : s_.phases[phase_].steps)
      rounds_ = std::max(rounds_, (st.count + chunkElems_ - 1) / chunkElems_);
  }

  Status checkHeader(int peer, const OpHeader& h, size_t n) {
    if (h.seq == header_.seq && h.coll == header_.coll && h.dtype == header_.dtype && h.redop == header_.redop &&
        h.algo == header_.algo && h.root == header_.root && h.count == header_.count) {
      if (h.payloadBytes != n * esize_)
        return internalError("chunk of " + std::to_string(h.payloadBytes) + " bytes from " + c_.bootstrap_->describe(peer) +
                             " where " + std::to_string(n * esize_) + " were expected");
      return Status::ok();
    }
    return invalidUsage("collective mismatch: " + c_.bootstrap_->describe(c_.rank_) + " called " + describeOp(header_) +
                        " but " + c_.bootstrap_->describe(peer) + " called " + describeOp(h) +
                        ": every rank must call the same collectives, in the same order, with the same count, type, "
                        "op and root");
  }

  Status primitive(const coll::Step& st, size_t offset, size_t n, bool* ran) {
    *ran = false;
    const char* inputs[3];
    int ninputs = 0;
    RecvChannel* rch[2] = {};
    SendChannel* sch[2] = {};
    char* out[2] = {};
    const size_t bytes = n * esize_;
    const char* input = static_cast<const char*>(op_.sendbuff) + offset * esize_;
    char* output = static_cast<char*>(op_.recvbuff) + offset * esize_;
    if (st.useInput) inputs[ninputs++] = input;
    for (int k = 0; k < st.nrecv; ++k) {
      rch[k] = c_.recv_.at(st.recvPeers[k]).get();
      const OpHeader* h;
      const char* payload;
      bool ready;
      WEFT_TRY(rch[k]->peek(&h, &payload, &ready).withContext("receiving from " + c_.bootstrap_->describe(st.recvPeers[k])));
      if (!ready) {
        waitingPeer_ = st.recvPeers[k];
        waitingToSend_ = false;
        return Status::ok();
      }
      WEFT_TRY(checkHeader(st.recvPeers[k], *h, n));
      inputs[ninputs++] = payload;
    }
    for (int k = 0; k < st.nsend; ++k) {
      sch[k] = c_.send_.at(st.sendPeers[k]).get();
      WEFT_TRY(sch[k]->acquire(&out[k]).withContext("sending to " + c_.bootstrap_->describe(st.sendPeers[k])));
      if (!out[k]) {
        waitingPeer_ = st.sendPeers[k];
        waitingToSend_ = true;
        return Status::ok();
      }
    }
    // The result goes straight into the first send slot (or the output when nothing is sent).
    char* dst = st.nsend > 0 ? out[0] : output;
    if (ninputs == 1) {
      if (dst != inputs[0]) std::memcpy(dst, inputs[0], bytes);
    } else {
      reduce::reduce(op_.dtype, op_.op, dst, inputs[0], inputs[1], n);
      for (int k = 2; k < ninputs; ++k) reduce::reduce(op_.dtype, op_.op, dst, dst, inputs[k], n);
    }
    if (st.finalize && op_.op == RedOp::kAvg) reduce::divide(op_.dtype, dst, dst, n, c_.nranks_);
    if (st.writeOutput && dst != output) std::memcpy(output, dst, bytes);
    for (int k = 1; k < st.nsend; ++k) std::memcpy(out[k], dst, bytes);
    OpHeader h = header_;
    h.payloadBytes = bytes;
    for (int k = 0; k < st.nsend; ++k)
      WEFT_TRY(sch[k]->post(h, bytes).withContext("sending to " + c_.bootstrap_->describe(st.sendPeers[k])));
    for (int k = 0; k < st.nrecv; ++k)
      WEFT_TRY(rch[k]->release().withContext("receiving from " + c_.bootstrap_->describe(st.recvPeers[k])));
    *ran = true;
    return Status::ok();
  }

  Communicator& c_;
  const coll::Schedule& s_;
  OpDesc op_;
  OpHeader header_;
  size_t chunkElems_;
  size_t esize_;
  size_t phase_ = 0, round_ = 0, step_ = 0, rounds_ = 0;
  int waitingPeer_ = -1;
  bool waitingToSend_ = false;
};

Status Communicator::run(const OpDesc& op) {
  {
    std::lock_guard<std::mutex> g(errMu_);
    if (!sticky_.isOk()) return sticky_;
  }
  WEFT_TRY(checkInterrupt());
  if (op.count == 0) return Status::ok();
  const size_t esize = typeSize(op.dtype);
  const size_t bytes = op.count * esize;
  ++seq_;
  plan::Plan p = plan::choosePlan(cfg_.tuner, op.coll, bytes, nranks_);
  int bucket = 0;
  for (size_t b = bytes; b > 1; b >>= 1) ++bucket;
  if (loggedPlans_.insert(static_cast<int>(p.algo) * 64 + bucket).second || log::enabled(log::Level::kTrace, "PLAN")) {
    WEFT_INFO(PLAN, "%s of %zu bytes on %d ranks: %s (%s)", collName(op.coll), bytes, nranks_, plan::algoName(p.algo),
              cfg_.tuner.forced ? "forced by WEFT_ALGO" : "tuner, by size");
  }
  coll::Schedule sched = p.algo == plan::Algo::kTree ? coll::treeAllReduce(ring_, rank_, op.count)
                                                     : coll::ringAllReduce(ring_, rank_, op.count);
  std::vector<int> sendPeers, recvPeers;
  coll::schedulePeers(sched, &sendPeers, &recvPeers);
  Status s = connectPeers(sendPeers, recvPeers);
  if (!s) return fail(s.withContext(std::string(collName(op.coll)) + " #" + std::to_string(seq_)));

  OpHeader header{};
  header.magic = kOpMagic;
  header.seq = seq_;
  header.coll = static_cast<uint8_t>(op.coll);
  header.dtype = static_cast<uint8_t>(op.dtype);
  header.redop = static_cast<uint8_t>(op.op);
  header.algo = static_cast<uint8_t>(p.algo);
  header.root = op.root;
  header.count = op.count;
  size_t chunkElems = (slotBytes_ - sizeof(OpHeader)) / esize;
  chunkElems -= chunkElems % 16;
  Executor ex(*this, sched, op, header, chunkElems);

  uint64_t lastProgress = nowNs();
  std::vector<pollfd> fds;
  for (;;) {
    bool progressed = false;
    s = ex.advance(&progressed);
    bool sendsIdle = true;
    for (auto& [peer, ch] : send_) {
      bool p2 = false;
      if (s) s = ch->progress(&p2).withContext("sending to " + bootstrap_->describe(peer));
      progressed |= p2;
      sendsIdle &= ch->idle();
    }
    if (!s) return fail(rootCause(s.withContext(describeOp(header))));
    if (ex.done() && sendsIdle) return Status::ok();
    uint64_t now = nowNs();
    if (progressed) {
      lastProgress = now;
      continue;
    }
    s = checkInterrupt();
    if (!s) {
      if (abort_.load()) return s;  // a local abort is not re-broadcast as this rank's failure
      return fail(s);
    }
    if (cfg_.timeoutMs && now - lastProgress > cfg_.timeoutMs * kNsPerMs) {
      std::string what = ex.done() ? "waiting for its last sends to drain"
                                   : std::string(ex.waitingToSend() ? "waiting for room to send to "
                                                                    : "waiting to receive from ") +
                                         bootstrap_->describe(ex.waitingPeer());
      return fail(timeoutError(describeOp(header) + " made no progress for " + std::to_string(cfg_.timeoutMs) +
                               " ms (WEFT_TIMEOUT_MS) " + what +
                               ": is that rank still running and calling the same collectives in the same order?"));
    }
    if (now - lastProgress < cfg_.spinUs * 1000) {
      sched_yield();
      continue;
    }
    fds.clear();
    for (auto& [peer, ch] : send_) ch->pollDescriptors(&fds);
    for (auto& [peer, ch] : recv_) ch->pollDescriptors(&fds);
    poll(fds.data(), fds.size(), 10);
  }
}

}  // namespace weft::engine
