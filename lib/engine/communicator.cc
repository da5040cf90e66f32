#include "lib/engine/communicator.h"

#include <poll.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "collectives/reduce/reduce.h"
#include "lib/bootstrap/root.h"
#include "lib/core/config.h"
#include "lib/core/log.h"
#include "lib/core/util.h"
#include "lib/engine/transport_select.h"
#include "lib/plan/collective_plan.h"
#include "lib/engine/fork_safety.h"
#include "lib/topo/topo.h"
#include "lib/topo/topo_file.h"
#if WEFT_HAVE_SHM
#include "transports/shm/shm_transport.h"
#endif

namespace weft::engine {

static_assert(plan::kMaxDirectRanks == coll::kMaxStepPeers + 1, "the tuner's limit for the direct all-reduces");

namespace {
constexpr uint64_t kNsPerMs = 1000000ull;
constexpr uint64_t kConnTag = 1ull << 40;

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

}  // namespace

std::string describeOp(const OpHeader& h) {
  if (static_cast<CollType>(h.coll) == CollType::kSend) {
    return "send/recv #" + std::to_string(h.seq) + " (count " + std::to_string(h.count) + ", " +
           typeName(static_cast<DataType>(h.dtype)) + ", to rank " + std::to_string(h.root) + ")";
  }
  std::string s = std::string(collName(static_cast<CollType>(h.coll))) + " #" + std::to_string(h.seq) + " (count " +
                  std::to_string(h.count) + ", " + typeName(static_cast<DataType>(h.dtype)) + ", " +
                  opName(static_cast<RedOp>(h.redop)) + ", " + plan::algoName(static_cast<plan::Algo>(h.algo));
  if (h.root >= 0) s += ", root " + std::to_string(h.root);
  return s + ")";
}

Status loadEngineConfig(const CommOptions& opts, EngineConfig* out) {
  WEFT_TRY(config::validate());
  int64_t v;
  WEFT_TRY(config::parseInt("WEFT_INIT_TIMEOUT_MS", &v));
  if (opts.initTimeoutMs >= 0) v = opts.initTimeoutMs;
  if (v <= 0) return invalidArgument("WEFT_INIT_TIMEOUT_MS (or the config's initTimeoutMs) must be positive");
  out->initTimeoutMs = static_cast<uint64_t>(v);
  WEFT_TRY(config::parseInt("WEFT_TIMEOUT_MS", &v));
  if (opts.timeoutMs >= 0) v = opts.timeoutMs;
  if (v < 0) return invalidArgument("WEFT_TIMEOUT_MS must not be negative (0 disables the timeout)");
  out->timeoutMs = static_cast<uint64_t>(v);
  WEFT_TRY(config::parseInt("WEFT_SPIN_US", &v));
  out->spinUs = static_cast<uint64_t>(std::max<int64_t>(v, 0));
  WEFT_TRY(config::parseInt("WEFT_NSLOTS", &v));
  if (v < 2 || v > 64) return invalidArgument("WEFT_NSLOTS=" + std::to_string(v) + " is out of range: use 2 to 64");
  out->nslots = static_cast<int>(v);
  WEFT_TRY(config::parseInt("WEFT_BUFFSIZE", &v));
  if (opts.buffSize >= 0) v = opts.buffSize;
  if (v < 4096 * out->nslots || v > (int64_t{1} << 32))
    return invalidArgument("WEFT_BUFFSIZE=" + std::to_string(v) + " is out of range: use at least 4096 bytes per slot (WEFT_NSLOTS=" +
                           std::to_string(out->nslots) + ") and at most 4 GiB");
  out->buffSize = static_cast<size_t>(v);
  WEFT_TRY(plan::loadTunerConfig(&out->tuner));
  WEFT_TRY(config::parseInt("WEFT_DIRECT", &v));
  if (v != 0 && v != 1) return invalidArgument("WEFT_DIRECT=" + std::to_string(v) + " must be 0 or 1");
  out->direct = v == 1;
  WEFT_TRY(config::parseInt("WEFT_DIRECT_BYTES", &v));
  if (v < 4096 || v > (int64_t{1} << 30))
    return invalidArgument("WEFT_DIRECT_BYTES=" + std::to_string(v) + " is out of range: use 4096 to 1073741824");
  out->directBytes = static_cast<size_t>(v);
  WEFT_TRY(config::parseInt("WEFT_DIRECT_STREAM_BYTES", &v));
  if (v < 0) return invalidArgument("WEFT_DIRECT_STREAM_BYTES must not be negative");
  out->directStreamBytes = static_cast<size_t>(v);
  out->transports = splitList(config::getString("WEFT_TRANSPORTS"));
  for (auto& t : out->transports) {
    const auto& known = knownTransports();
    if (t != "shm" && std::find(known.begin(), known.end(), t) == known.end()) {
      std::string list;
      for (auto& k : known) list += (list.empty() ? "" : ", ") + k;
      return invalidArgument("WEFT_TRANSPORTS names \"" + t + "\", which is not a transport of this build (known: " + list + ")");
    }
  }
  return Status::ok();
}

Status Communicator::create(const bootstrap::UniqueId& id, int nranks, int rank, const CommOptions& opts,
                            std::unique_ptr<Communicator>* out, const std::atomic<bool>* initInterrupt) {
  installForkHandlers();  // normally done at load; this also links fork_safety.o into static users
  std::unique_ptr<Communicator> c(new Communicator());
  c->rank_ = rank;
  c->nranks_ = nranks;
  c->opts_ = opts;
  WEFT_TRY(loadEngineConfig(opts, &c->cfg_));
  WEFT_TRY(bootstrap::Bootstrap::create(id, nranks, rank, &c->abort_, c->cfg_.initTimeoutMs, &c->bootstrap_,
                                        initInterrupt));
  // The network transport, for peers on other hosts ("shm" in WEFT_TRANSPORTS concerns same-host peers).
  std::vector<std::string> network;
  for (auto& t : c->cfg_.transports)
    if (t != "shm") network.push_back(t);
  if (network.empty() && !c->cfg_.transports.empty()) network.push_back("socket");
  WEFT_TRY(selectTransport(network, rank, &c->transport_));
  // Every rank must use the same transport; if they differ, fall back to one all can use.
  std::vector<int32_t> kinds(static_cast<size_t>(nranks));
  kinds[static_cast<size_t>(rank)] = c->transport_.kind;
  WEFT_TRY(c->bootstrap_->allGather(kinds.data(), sizeof(int32_t), nowNs() + c->cfg_.initTimeoutMs * kNsPerMs));
  int32_t common = *std::max_element(kinds.begin(), kinds.end());  // the slowest kind chosen
  if (common != c->transport_.kind) {
    std::string want = knownTransports()[static_cast<size_t>(common)];
    WEFT_WARN(NET, "rank %d chose transport %s but another rank could only start %s: using %s on every rank", rank,
              c->transport_.name.c_str(), want.c_str(), want.c_str());
    c->transport_ = TransportChoice();
    WEFT_TRY(startTransport(want, rank, &c->transport_));
  }
#if WEFT_HAVE_SHM
  // Same-host peers: shared memory unless WEFT_TRANSPORTS leaves shm out (WEFT_TRANSPORTS=socket keeps
  // them on TCP). Every rank decides the same way from the same host identities, so both ends of a
  // connection agree.
  bool shmAllowed = c->cfg_.transports.empty() ||
                    std::find(c->cfg_.transports.begin(), c->cfg_.transports.end(), "shm") != c->cfg_.transports.end();
  if (shmAllowed) {
    Status ss;
    c->shm_.transport = transport::createShmTransport(&ss);
    c->shm_.name = "shm";
    if (!ss) {
      c->shm_.transport.reset();
      WEFT_WARN(NET, "shared-memory transport unavailable (%s): same-host peers use %s", ss.message().c_str(),
                c->transport_.name.c_str());
    }
  }
  // All ranks must agree on using shared memory at all (it changes which handles they exchange).
  std::vector<int32_t> shmOn(static_cast<size_t>(nranks));
  shmOn[static_cast<size_t>(rank)] = c->shm_.transport ? 1 : 0;
  WEFT_TRY(c->bootstrap_->allGather(shmOn.data(), sizeof(int32_t), nowNs() + c->cfg_.initTimeoutMs * kNsPerMs));
  if (*std::min_element(shmOn.begin(), shmOn.end()) == 0) c->shm_.transport.reset();
#endif
  c->slotBytes_ = c->cfg_.buffSize / static_cast<size_t>(c->cfg_.nslots);
  c->slotBytes_ &= ~size_t{63};
  WEFT_TRY(c->buildPlan().withContext("planning rings and trees"));
  int local = 0;
  for (int r = 0; r < nranks; ++r) local += c->bootstrap_->peer(r).hostId == c->bootstrap_->peer(rank).hostId ? 1 : 0;
  // More ranks on this host than online cores: a spinning rank would take the core of the peer it
  // waits for, so waits yield at once (no pure spinning). (Online cores, not this process's
  // affinity: a launcher that binds each rank to one core is not oversubscribing.)
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  if (online > 0 && local > online) c->pureSpinNs_ = 0;
  WEFT_TRY(c->setupDirect());
  WEFT_INFO(INIT, "%s%srank %d/%d ready: transport %s (%s), %d slots of %zu bytes per channel",
            opts.name.c_str(), opts.name.empty() ? "" : ": ", rank, nranks, c->transport_.name.c_str(),
            c->transport_.transport->device(c->transport_.device).name.c_str(),
            c->cfg_.nslots, c->slotBytes_);
  *out = std::move(c);
  return Status::ok();
}

namespace {
// Node discovery runs once per process and set of discovery settings (a split or a second
// communicator reuses it): hwloc and sysfs walks are not free, and the node does not change.
// Namespace scope (no function-local static guard); the lock is held across fork().
std::mutex gDiscoverMu;
std::map<std::string, topo::NodeTopology> gDiscovered;

Status discoverOnce(topo::NodeTopology* out) {
  auto& mu = gDiscoverMu;
  auto& cache = gDiscovered;
  std::string key;
  for (const char* v : {"WEFT_SYSFS_ROOT", "WEFT_HWLOC_XML", "WEFT_GPU_BUS_IDS", "WEFT_IB_HCA", "WEFT_IB_GID_INDEX",
                        "WEFT_IB_ADDR_FAMILY", "WEFT_IB_ADDR_RANGE", "WEFT_IB_ROCE_VERSION_NUM", "WEFT_TOPO_FILE",
                        "WEFT_TOPO_DUMP_FILE"})
    key += config::getString(v) + '\n';
  std::lock_guard<std::mutex> g(mu);
  auto it = cache.find(key);
  if (it == cache.end()) {
    topo::NodeTopology t;
    WEFT_TRY(topo::loadNodeTopologyFromEnv(&t).withContext("discovering this node"));
    it = cache.emplace(key, topo::compactTopology(t)).first;
  }
  *out = it->second;
  return Status::ok();
}

}  // namespace

void discoveryForkLock() { gDiscoverMu.lock(); }
void discoveryForkUnlock() { gDiscoverMu.unlock(); }

namespace {
// WEFT_DEVICE: the GPU this rank drives, as an index into the node's GPUs (bus-id order) or a bus id.
Status deviceBusId(const topo::NodeTopology& t, std::string* out) {
  out->clear();
  std::string v = config::getString("WEFT_DEVICE");
  if (v.empty()) return Status::ok();
  bool digits = v.find_first_not_of("0123456789") == std::string::npos;
  if (digits && v.size() < 6) {
    size_t i = std::stoul(v);
    if (i >= t.gpus.size())
      return invalidArgument("WEFT_DEVICE=" + v + " names GPU " + v + ", but this node has " + std::to_string(t.gpus.size()) +
                             " GPU(s) (WEFT_GPU_BUS_IDS or discovery); use an index below that or a PCI bus id");
    *out = t.gpus[i].pciBusId;
    return Status::ok();
  }
  std::string norm;
  if (!topo::normalizeBusId(v, &norm) || t.gpuIndex(norm) < 0)
    return invalidArgument("WEFT_DEVICE=" + v + " is neither a GPU index nor the PCI bus id of one of this node's " +
                           std::to_string(t.gpus.size()) + " GPU(s)");
  *out = norm;
  return Status::ok();
}

std::string joinRanks(const std::vector<int>& v) {
  std::string s;
  for (int r : v) s += (s.empty() ? "" : " ") + std::to_string(r);
  return s.empty() ? "-" : s;
}
}  // namespace

// Every rank describes its node (compact topology) and its GPU; the descriptions are all-gathered,
// so every rank builds the same system graph, rings and trees (lib/plan is a pure function of them).
Status Communicator::buildPlan() {
  const uint64_t deadline = nowNs() + cfg_.initTimeoutMs * kNsPerMs;
  topo::NodeTopology node;
  WEFT_TRY(discoverOnce(&node));
  std::string gpu;
  WEFT_TRY(deviceBusId(node, &gpu));
  const std::vector<uint8_t> blob = topo::serializeTopology(node);
  struct Desc {
    char gpu[32];
    uint64_t topoBytes;
  };
  std::vector<Desc> descs(static_cast<size_t>(nranks_));
  Desc& mine = descs[static_cast<size_t>(rank_)];
  std::memset(&mine, 0, sizeof mine);
  std::snprintf(mine.gpu, sizeof mine.gpu, "%s", gpu.c_str());
  mine.topoBytes = blob.size();
  WEFT_TRY(bootstrap_->allGather(descs.data(), sizeof(Desc), deadline));
  uint64_t most = 0;
  for (const Desc& d : descs) most = std::max(most, d.topoBytes);
  std::vector<uint8_t> blobs(static_cast<size_t>(most) * static_cast<size_t>(nranks_));
  std::memcpy(blobs.data() + static_cast<size_t>(most) * static_cast<size_t>(rank_), blob.data(), blob.size());
  WEFT_TRY(bootstrap_->allGather(blobs.data(), static_cast<size_t>(most), deadline));

  plan::FabricInput in;
  std::map<std::pair<uint64_t, std::string>, int> seen;  // (host, description) -> topology index
  for (int r = 0; r < nranks_; ++r) {
    const Desc& d = descs[static_cast<size_t>(r)];
    const uint8_t* b = blobs.data() + static_cast<size_t>(most) * static_cast<size_t>(r);
    if (d.topoBytes > most) return internalError("a node description longer than the all-gather block");
    const uint64_t host = bootstrap_->peer(r).hostId;
    auto key = std::make_pair(host, std::string(reinterpret_cast<const char*>(b), static_cast<size_t>(d.topoBytes)));
    auto it = seen.find(key);
    if (it == seen.end()) {
      topo::NodeTopology t;
      WEFT_TRY(topo::deserializeTopology(b, static_cast<size_t>(d.topoBytes), &t)
                   .withContext("the node description of " + bootstrap_->describe(r)));
      it = seen.emplace(std::move(key), static_cast<int>(in.topologies.size())).first;
      in.topologies.push_back(std::move(t));
    }
    plan::RankDescription rd;
    rd.rank = r;
    char hex[24];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(host));
    rd.hostId = hex;
    rd.gpuBusId.assign(d.gpu, strnlen(d.gpu, sizeof d.gpu));
    rd.topology = it->second;
    in.ranks.push_back(std::move(rd));
  }
  plan::CollectivePlan p;
  WEFT_TRY(plan::buildCollectivePlan(in, {}, &p));
  Status check = plan::checkCollectivePlan(p);
  if (!check) return internalError("the plan failed its own check (a bug in lib/plan): " + check.message());

  rings_.clear();
  trees_.clear();
  for (const plan::RingChannel& c : p.rings.channels) rings_.push_back(c.order);
  for (size_t c = 0; c < p.trees.channels.size(); ++c) {
    plan::RankLinks l = plan::treeLinks(p.graph, p.trees, static_cast<int>(c), rank_);
    coll::TreeNeighbors t;
    t.up = l.up;
    for (int k = 0; k < l.nDown; ++k) t.down.push_back(l.down[static_cast<size_t>(k)]);
    trees_.push_back(std::move(t));
  }
  plan::ModelTransports mt;
  mt.interFromGraph = false;
  mt.inter = transport_.name == "ib" ? plan::Transport::kIb : plan::Transport::kSocket;
  mt.hostIntra = shm_.transport ? plan::Transport::kShm : plan::Transport::kSocket;
  model_ = plan::CostModel(p.graph, p.rings, p.trees, plan::CostConstants{}, mt);

  const plan::SystemGraph& g = p.graph;
  if (rank_ == 0) {
    WEFT_INFO(PLAN, "plan: %d node(s) x up to %d rank(s), %d rail(s); %zu ring channel(s), %zu tree channel(s) "
              "(shifted in-order double binary tree, %s inside nodes); inter-node %s, intra-node %s",
              g.nNodes(), g.maxRanksPerNode(), g.nRails(), rings_.size(), trees_.size(),
              plan::intraShapeName(p.trees.intra), plan::transportName(model_.interTransport()),
              plan::transportName(model_.intraTransport()));
    for (const std::string& note : g.notes()) WEFT_INFO(PLAN, "plan: %s", note.c_str());
  }
  // This rank's neighbours per channel (the fake-node test reads these lines).
  const int nodeIdx = g.nodeOf(rank_);
  for (size_t c = 0; c < rings_.size(); ++c) {
    const auto& o = rings_[c];
    const size_t pos = static_cast<size_t>(std::find(o.begin(), o.end(), rank_) - o.begin());
    WEFT_INFO(PLAN, "plan: rank %d node %d gpu %s: ring channel %zu rail %d: prev %d next %d", rank_, nodeIdx,
              gpu.empty() ? "-" : gpu.c_str(), c, p.rings.channels[c].rail, o[(pos + o.size() - 1) % o.size()],
              o[(pos + 1) % o.size()]);
  }
  for (size_t c = 0; c < trees_.size(); ++c)
    WEFT_INFO(PLAN, "plan: rank %d node %d gpu %s: tree channel %zu tree %d rail %d: up %d down %s", rank_, nodeIdx,
              gpu.empty() ? "-" : gpu.c_str(), c, p.trees.channels[c].tree, p.trees.channels[c].rail, trees_[c].up,
              joinRanks(trees_[c].down).c_str());
  return Status::ok();
}

Communicator::~Communicator() {
  direct_.reset();
  send_.clear();
  recv_.clear();
  bootstrap_.reset();  // says goodbye to the peers
}

Status Communicator::split(int color, int key, const CommOptions* opts, std::unique_ptr<Communicator>* out) {
  out->reset();
  {
    std::lock_guard<std::mutex> g(errMu_);
    if (!sticky_.isOk()) return sticky_;
  }
  struct Entry {
    int32_t color, key, rank;
  };
  std::vector<Entry> all(static_cast<size_t>(nranks_));
  all[static_cast<size_t>(rank_)] = {color, key, rank_};
  uint64_t deadline = nowNs() + cfg_.initTimeoutMs * kNsPerMs;
  Status s = bootstrap_->allGather(all.data(), sizeof(Entry), deadline);
  if (!s) return fail(s.withContext("weftCommSplit"));
  const uint64_t tag = (uint64_t{1} << 41) | ++splitSeq_;
  if (color < 0) return Status::ok();
  std::vector<Entry> group;
  for (const Entry& e : all)
    if (e.color == color) group.push_back(e);
  std::stable_sort(group.begin(), group.end(),
                   [](const Entry& a, const Entry& b) { return a.key != b.key ? a.key < b.key : a.rank < b.rank; });
  int newRank = 0;
  while (group[static_cast<size_t>(newRank)].rank != rank_) ++newRank;
  const int newN = static_cast<int>(group.size());
  // The group's first member serves a fresh rendezvous and hands its id to the others.
  bootstrap::UniqueId id;
  unsigned char bytes[bootstrap::kUniqueIdBytes];
  if (newRank == 0) {
    s = bootstrap::startRoot(&id);
    if (s) {
      bootstrap::encodeUniqueId(id, bytes);
      for (int i = 1; i < newN && s; ++i) s = bootstrap_->send(group[static_cast<size_t>(i)].rank, tag, bytes, sizeof bytes);
    }
  } else {
    std::vector<char> got;
    s = bootstrap_->recv(group[0].rank, tag, &got, deadline);
    if (s && got.size() != sizeof bytes) s = invalidUsage("malformed split id");
    if (s) {
      std::memcpy(bytes, got.data(), sizeof bytes);
      s = bootstrap::decodeUniqueId(bytes, &id);
    }
  }
  if (!s) return fail(s.withContext("weftCommSplit"));
  CommOptions o = opts ? *opts : opts_;
  // If the parent fails while the new communicator's rendezvous waits (a member died before it
  // arrived), stop waiting instead of running into the init timeout.
  std::atomic<bool> parentFailed{false}, done{false};
  std::thread watch([&] {
    while (!done.load()) {
      if (bootstrap_->hasError() || abort_.load()) {
        parentFailed.store(true);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  s = create(id, newN, newRank, o, out, &parentFailed);
  done.store(true);
  watch.join();
  if (!s && parentFailed.load()) s = asyncError();
  if (!s) return s.withContext("weftCommSplit (color " + std::to_string(color) + ")");
  return Status::ok();
}

void Communicator::requestAbort() {
  if (abort_.exchange(true)) return;
  if (direct_) direct_->wakeAll();  // a direct wait sleeping on a peer's word returns at once
  if (!bootstrap_) return;
  // An abort that follows a failure names that failure: the others may not have learnt of it yet,
  // and "rank 3 aborted" alone would hide the rank that actually died.
  Status cause = asyncError();
  if (failed_.load() && !cause.isOk()) return;  // fail() already told everyone
  std::string why = bootstrap_->describe(rank_) + " aborted its communicator (weftCommAbort)";
  if (!cause.isOk()) why += " after: " + cause.message();
  bootstrap_->broadcastError(Code::kRemote, why);
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

const TransportChoice* Communicator::transportFor(int peer) const {
  // Ranks on the same host (same host identity) talk through shared memory when it is available.
  if (shm_.transport && bootstrap_->peer(peer).hostId == bootstrap_->peer(rank_).hostId) return &shm_;
  return &transport_;
}

Status Communicator::connectPeers(const std::vector<coll::PeerChannel>& sendPeers,
                                  const std::vector<coll::PeerChannel>& recvPeers) {
  std::vector<coll::PeerChannel> needSend, needRecv;
  for (auto& p : sendPeers)
    if (!send_.count(p)) needSend.push_back(p);
  for (auto& p : recvPeers)
    if (!recv_.count(p)) needRecv.push_back(p);
  if (needSend.empty() && needRecv.empty()) return Status::ok();
  uint64_t deadline = nowNs() + cfg_.initTimeoutMs * kNsPerMs;

  struct PendingRecv {
    coll::PeerChannel pc;
    const TransportChoice* t;
    transport::ListenComm* listen;
    transport::RecvComm* comm = nullptr;
  };
  struct PendingSend {
    coll::PeerChannel pc;
    const TransportChoice* t;
    transport::Handle handle;
    transport::SendComm* comm = nullptr;
  };
  std::vector<PendingRecv> recvs;
  std::vector<PendingSend> sends;
  auto cleanup = [&] {
    for (auto& r : recvs) {
      if (r.listen) (void)r.t->transport->closeListen(r.listen);
      if (r.comm) (void)r.t->transport->closeRecv(r.comm);
    }
    for (auto& s : sends)
      if (s.comm) (void)s.t->transport->closeSend(s.comm);
  };
  // First every listen (its handle goes to the sender), then every connect: no rank waits for a
  // handle before it has sent its own, so the setup cannot deadlock.
  for (auto& pc : needRecv) {
    const TransportChoice* t = transportFor(pc.peer);
    transport::Handle h;
    transport::ListenComm* l = nullptr;
    Status s = t->transport->listen(t->device, &h, &l);
    if (s) s = bootstrap_->send(pc.peer, kConnTag | static_cast<uint64_t>(pc.channel), h.bytes, sizeof h.bytes);
    if (!s) {
      if (l) (void)t->transport->closeListen(l);
      cleanup();
      return s.withContext("setting up the connection from " + bootstrap_->describe(pc.peer));
    }
    recvs.push_back({pc, t, l});
  }
  for (auto& pc : needSend) {
    std::vector<char> got;
    Status s = bootstrap_->recv(pc.peer, kConnTag | static_cast<uint64_t>(pc.channel), &got, deadline);
    if (s && got.size() != sizeof(transport::Handle::bytes))
      s = invalidUsage("malformed connection handle (" + std::to_string(got.size()) + " bytes)");
    if (!s) {
      cleanup();
      return s.withContext("setting up the connection to " + bootstrap_->describe(pc.peer));
    }
    PendingSend ps{pc, transportFor(pc.peer), {}};
    std::memcpy(ps.handle.bytes, got.data(), sizeof ps.handle.bytes);
    sends.push_back(ps);
  }
  for (;;) {
    bool all = true;
    for (auto& s : sends) {
      if (s.comm) continue;
      Status st = s.t->transport->connect(s.t->device, &s.handle, &s.comm);
      if (!st) {
        cleanup();
        return st.withContext("connecting to " + bootstrap_->describe(s.pc.peer));
      }
      all &= s.comm != nullptr;
    }
    for (auto& r : recvs) {
      if (r.comm) continue;
      Status st = r.t->transport->accept(r.listen, &r.comm);
      if (!st) {
        cleanup();
        return st.withContext("accepting the connection from " + bootstrap_->describe(r.pc.peer));
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
  auto dev = [](const TransportChoice* t) {
    auto p = t->transport->device(t->device);
    return p.name + " " + p.address;
  };
  auto chan = [](int c) {
    return c == coll::kP2pChannel ? std::string("point-to-point")
                                  : "collectives " + std::to_string(c == coll::kCollChannel ? 0 : c - 1);
  };
  for (auto& s : sends) {
    auto ch = std::make_unique<SendChannel>(s.t->transport.get(), s.comm, cfg_.nslots, slotBytes_);
    s.comm = nullptr;
    WEFT_TRY(ch->init());
    WEFT_INFO(NET, "rank %d -> %s (%s channel): transport %s, NIC %s, GID n/a, GPUDirect n/a (host memory), %zu bytes staging",
              rank_, bootstrap_->describe(s.pc.peer).c_str(), chan(s.pc.channel).c_str(), s.t->name.c_str(), dev(s.t).c_str(),
              ch->stagingBytes());
    send_[s.pc] = std::move(ch);
  }
  for (auto& r : recvs) {
    (void)r.t->transport->closeListen(r.listen);
    r.listen = nullptr;
    auto ch = std::make_unique<RecvChannel>(r.t->transport.get(), r.comm, cfg_.nslots, slotBytes_);
    r.comm = nullptr;
    WEFT_TRY(ch->init());
    WEFT_INFO(NET, "rank %d <- %s (%s channel): transport %s, NIC %s, GID n/a, GPUDirect n/a (host memory), %zu bytes staging",
              rank_, bootstrap_->describe(r.pc.peer).c_str(), chan(r.pc.channel).c_str(), r.t->name.c_str(), dev(r.t).c_str(),
              ch->stagingBytes());
    recv_[r.pc] = std::move(ch);
  }
  return Status::ok();
}

// One operation's schedule with its buffers and the header its messages carry.
struct Communicator::Part {
  OpDesc op;
  std::shared_ptr<const coll::Schedule> sched;
  OpHeader header{};
};
// Parts that run one after the other; lanes run concurrently.
struct Communicator::Lane {
  std::vector<Part> parts;
};

// Runs a lane: part by part, phase by phase, chunk-major within a phase; each primitive is
// attempted without blocking and retried by the progress loop until its inputs have arrived and
// its outputs have room.
class Executor {
 public:
  Executor(Communicator& c, const std::vector<Communicator::Part>& parts, size_t slotPayload)
      : c_(c), parts_(parts), slotPayload_(slotPayload) {
    startPart();
  }

  bool done() const { return part_ >= parts_.size(); }
  int waitingPeer() const { return waitingPeer_; }
  bool waitingToSend() const { return waitingToSend_; }
  const OpHeader& header() const { return parts_[std::min(part_, parts_.size() - 1)].header; }

  Status advance(bool* progressed) {
    while (!done()) {
      const coll::Schedule& s = *parts_[part_].sched;
      if (phase_ >= s.phases.size()) {
        ++part_;
        startPart();
        continue;
      }
      const coll::Phase& ph = s.phases[phase_];
      if (ph.concurrent) {  // each step is its own stream of chunks
        bool finished = true;
        for (size_t k = 0; k < ph.steps.size(); ++k) {
          const coll::Step& st = ph.steps[k];
          size_t& r = streamRound_[k];
          while (r * chunkElems_ < st.count) {
            size_t off = r * chunkElems_;
            bool ran = false;
            WEFT_TRY(primitive(st, off, std::min(chunkElems_, st.count - off), &ran));
            if (!ran) break;
            *progressed = true;
            ++r;
          }
          finished &= r * chunkElems_ >= st.count;
        }
        if (!finished) break;
        ++phase_;
        startPhase();
        continue;
      }
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
      WEFT_TRY(primitive(st, off, n, &ran));
      if (!ran) break;
      *progressed = true;
      ++step_;
    }
    return Status::ok();
  }

 private:
  void startPart() {
    phase_ = 0;
    if (done()) return;
    esize_ = typeSize(parts_[part_].op.dtype);
    chunkElems_ = slotPayload_ / esize_;
    chunkElems_ -= chunkElems_ % 16;
    startPhase();
  }
  void startPhase() {
    round_ = step_ = rounds_ = 0;
    const coll::Schedule& s = *parts_[part_].sched;
    if (phase_ >= s.phases.size()) return;
    for (const coll::Step& st : s.phases[phase_].steps)
      rounds_ = std::max(rounds_, (st.count + chunkElems_ - 1) / chunkElems_);
    streamRound_.assign(s.phases[phase_].steps.size(), 0);
  }

  Status checkHeader(int peer, const OpHeader& h, const OpHeader& want, size_t n) {
    if (h.seq == want.seq && h.coll == want.coll && h.dtype == want.dtype && h.redop == want.redop &&
        h.algo == want.algo && h.root == want.root && h.count == want.count) {
      if (h.payloadBytes != n * esize_)
        return internalError("chunk of " + std::to_string(h.payloadBytes) + " bytes from " + c_.bootstrap_->describe(peer) +
                             " where " + std::to_string(n * esize_) + " were expected");
      return Status::ok();
    }
    return invalidUsage("collective mismatch: " + c_.bootstrap_->describe(c_.rank_) + " called " + describeOp(want) +
                        " but " + c_.bootstrap_->describe(peer) + " called " + describeOp(h) +
                        ": every rank must call the same collectives, in the same order, with the same count, type, "
                        "op and root (and matching send/recv counts and types)");
  }

  // Adds "<what> <peer>" to a failure; success costs nothing (no string is built).
  Status orContext(Status s, const char* what, int peer) const {
    if (s) return s;
    return s.withContext(std::string(what) + " " + c_.bootstrap_->describe(peer));
  }

  Status primitive(const coll::Step& st, size_t off, size_t n, bool* ran) {
    *ran = false;
    const Communicator::Part& part = parts_[part_];
    const OpDesc& op = part.op;
    const char* inputs[coll::kMaxStepPeers + 1];
    int ninputs = 0;
    RecvChannel* rch[coll::kMaxStepPeers] = {};
    SendChannel* sch[coll::kMaxStepPeers] = {};
    char* out[coll::kMaxStepPeers] = {};
    const size_t bytes = n * esize_;
    // Only touched when the step uses them (a non-root's broadcast sendbuff may be NULL).
    const char* input = !st.useInput        ? nullptr
                        : st.inputIsOutput ? static_cast<const char*>(op.recvbuff) + (st.outOffset + off) * esize_
                                           : static_cast<const char*>(op.sendbuff) + (st.inOffset + off) * esize_;
    char* output = st.writeOutput ? static_cast<char*>(op.recvbuff) + (st.outOffset + off) * esize_ : nullptr;
    for (int k = 0; k < st.nrecv; ++k) {
      if (st.useInput && k == st.inputPos) inputs[ninputs++] = input;
      rch[k] = c_.recv_.at({st.recvPeers[k], st.channel}).get();
      const OpHeader* h;
      const char* payload;
      bool ready;
      WEFT_TRY(orContext(rch[k]->peek(&h, &payload, &ready), "receiving from", st.recvPeers[k]));
      if (!ready) {
        waitingPeer_ = st.recvPeers[k];
        waitingToSend_ = false;
        return Status::ok();
      }
      WEFT_TRY(checkHeader(st.recvPeers[k], *h, part.header, n));
      inputs[ninputs++] = payload;
    }
    if (st.useInput && st.inputPos >= st.nrecv) inputs[ninputs++] = input;
    for (int k = 0; k < st.nsend; ++k) {
      sch[k] = c_.send_.at({st.sendPeers[k], st.channel}).get();
      WEFT_TRY(orContext(sch[k]->acquire(&out[k]), "sending to", st.sendPeers[k]));
      if (!out[k]) {
        waitingPeer_ = st.sendPeers[k];
        waitingToSend_ = true;
        return Status::ok();
      }
    }
    // The result goes straight into the first send slot (or the output when nothing is sent). The
    // reduction folds left to right into dst, so dst may be the first operand but no later one (in
    // place with the local input not first): then it folds into a scratch chunk.
    char* dst = st.nsend > 0 ? out[0] : output;
    if (ninputs == 1) {
      if (dst != inputs[0]) std::memcpy(dst, inputs[0], bytes);
    } else {
      char* acc = dst;
      for (int k = 1; k < ninputs; ++k)
        if (inputs[k] == dst) {
          if (tmp_.size() < bytes) tmp_.resize(bytes);
          acc = tmp_.data();
        }
      reduce::reduce(op.dtype, op.op, acc, inputs[0], inputs[1], n);
      for (int k = 2; k < ninputs; ++k) reduce::reduce(op.dtype, op.op, acc, acc, inputs[k], n);
      if (acc != dst) std::memcpy(dst, acc, bytes);
    }
    if (st.finalize && op.op == RedOp::kAvg) reduce::divide(op.dtype, dst, dst, n, c_.nranks_);
    if (st.writeOutput && dst != output) std::memcpy(output, dst, bytes);
    for (int k = 1; k < st.nsend; ++k) std::memcpy(out[k], dst, bytes);
    OpHeader h = part.header;
    h.payloadBytes = bytes;
    for (int k = 0; k < st.nsend; ++k)
      WEFT_TRY(orContext(sch[k]->post(h, bytes), "sending to", st.sendPeers[k]));
    for (int k = 0; k < st.nrecv; ++k)
      WEFT_TRY(orContext(rch[k]->release(), "receiving from", st.recvPeers[k]));
    *ran = true;
    return Status::ok();
  }

  Communicator& c_;
  const std::vector<Communicator::Part>& parts_;
  size_t slotPayload_;
  size_t part_ = 0, phase_ = 0, round_ = 0, step_ = 0, rounds_ = 0;
  size_t esize_ = 1, chunkElems_ = 1;
  std::vector<size_t> streamRound_;  // concurrent phase: the next chunk of each step
  std::vector<char> tmp_;            // a reduction whose destination is a later operand
  int waitingPeer_ = -1;
  bool waitingToSend_ = false;
};

Status Communicator::plan(const OpDesc& op, Part* part) {
  const size_t esize = typeSize(op.dtype);
  part->op = op;
  OpHeader& h = part->header;
  h = OpHeader{};
  h.magic = kOpMagic;
  h.coll = static_cast<uint8_t>(op.coll == CollType::kRecv ? CollType::kSend : op.coll);
  h.dtype = static_cast<uint8_t>(op.dtype);
  h.redop = static_cast<uint8_t>(op.op);
  h.root = op.root;
  h.count = op.count;
  const int n = nranks_;
  plan::Algo algo = plan::Algo::kRing;
  plan::Plan chosen;
  switch (op.coll) {
    case CollType::kAllReduce: {
      plan::Plan chosen = plan::choosePlanFromModel(cfg_.tuner, model_, op.coll, op.count * esize);
      algo = chosen.algo;
      // Inference repeats the same all-reduces: their schedules are built once per (algorithm,
      // channels, count).
      auto& cached = allReduceSchedules_[{static_cast<int>(algo), chosen.nchannels, op.count}];
      if (!cached) {
        if (allReduceSchedules_.size() > 256) {  // bounded: start over (parts in flight hold their own)
          allReduceSchedules_.clear();
          return plan(op, part);
        }
        if (algo == plan::Algo::kOneShot) {
          cached = std::make_shared<coll::Schedule>(coll::oneShotAllReduce(n, rank_, op.count));
        } else if (algo == plan::Algo::kTwoShot) {
          cached = std::make_shared<coll::Schedule>(coll::twoShotAllReduce(n, rank_, op.count));
        } else {
          // Channel k carries slice k of the elements over ring / tree channel k of the plan.
          std::vector<coll::Schedule> slices;
          for (int k = 0; k < chosen.nchannels; ++k) {
            size_t off, len;
            coll::sliceOf(op.count, chosen.nchannels, k, &off, &len);
            slices.push_back(algo == plan::Algo::kTree
                                 ? coll::treeAllReduce(trees_[static_cast<size_t>(k)], len, off, coll::collChannel(k))
                                 : coll::ringAllReduce(rings_[static_cast<size_t>(k)], rank_, len, off, coll::collChannel(k)));
          }
          cached = std::make_shared<coll::Schedule>(coll::mergeSchedules(std::move(slices)));
        }
      }
      part->sched = cached;
      break;
    }
    case CollType::kAllGather: part->sched = std::make_shared<coll::Schedule>(coll::ringAllGather(rings_[0], rank_, op.count)); break;
    case CollType::kReduceScatter: part->sched = std::make_shared<coll::Schedule>(coll::ringReduceScatter(rings_[0], rank_, op.count)); break;
    case CollType::kBroadcast: part->sched = std::make_shared<coll::Schedule>(coll::chainBroadcast(rings_[0], rank_, op.count, op.root)); break;
    case CollType::kReduce: part->sched = std::make_shared<coll::Schedule>(coll::chainReduce(rings_[0], rank_, op.count, op.root)); break;
    case CollType::kAlltoAll: {
      part->sched = std::make_shared<coll::Schedule>(coll::pairwiseAlltoAll(n, rank_, op.count));
      if (op.sendbuff == op.recvbuff) {  // in place: send from a copy of the input
        size_t bytes = op.count * esize * static_cast<size_t>(n);
        if (scratch_.size() < bytes) scratch_.resize(bytes);
        std::memcpy(scratch_.data(), op.sendbuff, bytes);
        part->op.sendbuff = scratch_.data();
      }
      break;
    }
    case CollType::kSend:
      part->sched = std::make_shared<coll::Schedule>(coll::p2pSend(op.root, op.count));
      h.seq = ++sendSeq_[op.root];
      break;
    case CollType::kRecv:
      part->sched = std::make_shared<coll::Schedule>(coll::p2pRecv(op.root, op.count));
      h.seq = ++recvSeq_[op.root];
      h.root = rank_;  // the sender puts its destination (us) in root
      break;
    default: return internalError(std::string("no schedule for ") + collName(op.coll));
  }
  if (op.coll == CollType::kSend) h.root = op.root;  // the destination, which the receiver checks
  if (op.coll != CollType::kSend && op.coll != CollType::kRecv) h.seq = ++seq_;
  h.algo = static_cast<uint8_t>(algo);
  if (direct_ && op.coll != CollType::kSend && op.coll != CollType::kRecv) {
    // A direct all-reduce of a peer waiting at this sequence number can tell that we called this.
    direct_->announce(rank_, descOf(h));
  }
  int bucket = 0;
  for (size_t b = op.count * esize; b > 1; b >>= 1) ++bucket;
  if (loggedPlans_.insert(static_cast<int>(op.coll) * 1024 + static_cast<int>(algo) * 64 + bucket).second ||
      log::enabled(log::Level::kTrace, "PLAN")) {
    const size_t bytes = op.count * esize;
    if (op.coll == CollType::kAllReduce) {
      std::string why = "forced by WEFT_ALGO";
      if (!cfg_.tuner.forced) {
        why = "cost model:";
        for (plan::Algo a : plan::kRegisteredAlgos)
          if (model_.applies(a, op.coll)) {
            char b[64];
            std::snprintf(b, sizeof b, " %s %.1f us", plan::algoName(a), model_.predict(a, op.coll, bytes).timeUs);
            why += b;
          }
      }
      WEFT_INFO(PLAN, "%s of %zu bytes on %d ranks: %s on %d channel%s (%s)", collName(op.coll), bytes, n,
                plan::algoName(algo), chosen.nchannels, chosen.nchannels == 1 ? "" : "s", why.c_str());
    } else {
      WEFT_INFO(PLAN, "%s of %zu bytes on %d ranks: %s on ring channel 0", collName(op.coll), bytes, n,
                op.coll == CollType::kAlltoAll ? "pairwise" : op.coll == CollType::kAllGather || op.coll == CollType::kReduceScatter ? "ring" : "chain");
    }
  }
  return Status::ok();
}

Status Communicator::run(const OpDesc& op) {
  // The lean path: an all-reduce with every rank on this host reads the peers' inputs in the shared
  // region (lib/engine/direct.cc). No allocation, lock or schedule; a failed or aborted
  // communicator takes the general path, which reports the sticky error.
  if (direct_ && op.coll == CollType::kAllReduce && op.count != 0 && !failed_.load(std::memory_order_relaxed) &&
      !abort_.load(std::memory_order_relaxed) && !bootstrap_->hasError()) {
    const size_t bytes = op.count * typeSize(op.dtype);
    plan::Algo algo;
    if (cfg_.tuner.forced) algo = cfg_.tuner.forcedAlgo;
    else algo = plan::oneHostAlgo(cfg_.tuner, nranks_, bytes);
    if (algo == plan::Algo::kOneShot || algo == plan::Algo::kTwoShot) {
      logDirect(op, algo);
      return runDirect(op, algo);
    }
  }
  return runGroup({op});
}

Status Communicator::runGroup(const std::vector<OpDesc>& ops) {
  {
    std::lock_guard<std::mutex> g(errMu_);
    if (!sticky_.isOk()) return sticky_;
  }
  WEFT_TRY(checkInterrupt());
  // A group of collectives only runs them one after the other (what its single lane would do), so
  // that each may take the direct path.
  if (ops.size() > 1 && direct_) {
    bool collectivesOnly = true;
    for (const OpDesc& o : ops) collectivesOnly &= o.coll != CollType::kSend && o.coll != CollType::kRecv;
    if (collectivesOnly) {
      for (const OpDesc& o : ops)
        if (o.count != 0) WEFT_TRY(run(o));
      return Status::ok();
    }
  }
  // A send whose buffer a receive of the same group writes (in-place send/recv, as nccl-tests'
  // sendrecv does) sends from a copy taken now: the lanes run concurrently, so the receive could
  // otherwise overwrite data not sent yet.
  std::vector<std::vector<char>> sendCopies;
  auto bytesOf = [](const OpDesc& o) { return o.count * typeSize(o.dtype); };
  auto overlapsRecv = [&](const OpDesc& send) {
    auto a = reinterpret_cast<uintptr_t>(send.sendbuff);
    for (const OpDesc& r : ops) {
      if (r.coll != CollType::kRecv || r.count == 0) continue;
      auto b = reinterpret_cast<uintptr_t>(r.recvbuff);
      if (a < b + bytesOf(r) && b < a + bytesOf(send)) return true;
    }
    return false;
  };
  // Collectives in one lane, in order; point-to-point in one lane per (peer, direction).
  std::vector<Lane> lanes(1);
  std::map<std::pair<int, int>, size_t> p2pLane;
  for (const OpDesc& original : ops) {
    if (original.count == 0) continue;  // zero-count operations are no-ops on every rank alike
    OpDesc op = original;
    if (op.coll == CollType::kSend && overlapsRecv(op)) {
      const char* src = static_cast<const char*>(op.sendbuff);
      sendCopies.emplace_back(src, src + bytesOf(op));
      op.sendbuff = sendCopies.back().data();
    }
    Part part;
    WEFT_TRY(plan(op, &part));
    if (op.coll == CollType::kSend || op.coll == CollType::kRecv) {
      auto key = std::make_pair(op.root, op.coll == CollType::kSend ? 0 : 1);
      auto it = p2pLane.find(key);
      if (it == p2pLane.end()) {
        it = p2pLane.emplace(key, lanes.size()).first;
        lanes.emplace_back();
      }
      lanes[it->second].parts.push_back(std::move(part));
    } else {
      lanes[0].parts.push_back(std::move(part));
    }
  }
  return runLanes(lanes);
}

Status Communicator::runLanes(std::vector<Lane>& lanes) {
  std::vector<coll::PeerChannel> sendPeers, recvPeers;
  for (auto& lane : lanes)
    for (auto& part : lane.parts) coll::schedulePeers(*part.sched, &sendPeers, &recvPeers);
  std::sort(sendPeers.begin(), sendPeers.end());
  sendPeers.erase(std::unique(sendPeers.begin(), sendPeers.end()), sendPeers.end());
  std::sort(recvPeers.begin(), recvPeers.end());
  recvPeers.erase(std::unique(recvPeers.begin(), recvPeers.end()), recvPeers.end());
  const OpHeader* first = nullptr;  // described only on failure (this is the hot path)
  for (auto& lane : lanes)
    if (!lane.parts.empty()) {
      first = &lane.parts.front().header;
      break;
    }
  if (!first) return Status::ok();
  auto describeFirst = [&] { return describeOp(*first); };
  Status s = connectPeers(sendPeers, recvPeers);
  if (!s) return fail(s.withContext(describeFirst()));

  std::vector<std::unique_ptr<Executor>> ex;
  for (auto& lane : lanes)
    if (!lane.parts.empty()) ex.push_back(std::make_unique<Executor>(*this, lane.parts, slotBytes_ - sizeof(OpHeader)));

  uint64_t lastProgress = nowNs();
  std::vector<pollfd> fds;
  for (;;) {
    bool progressed = false, allDone = true;
    for (auto& e : ex) {
      if (s && !e->done()) {
        s = e->advance(&progressed);
        if (!s) s = s.withContext(describeOp(e->header()));
      }
      allDone &= e->done();
    }
    bool sendsIdle = true;
    for (auto& [pc, ch] : send_) {
      bool p2 = false;
      if (s) {
        s = ch->progress(&p2);  // the context strings are built only on failure (hot loop)
        if (!s) s = s.withContext("sending to " + bootstrap_->describe(pc.peer)).withContext(describeFirst());
      }
      progressed |= p2;
      sendsIdle &= ch->idle();
    }
    if (!s) return fail(rootCause(s));
    if (allDone && sendsIdle) return Status::ok();
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
      std::string why;
      for (auto& e : ex) {
        if (e->done()) continue;
        why += (why.empty() ? "" : "; ") + describeOp(e->header()) + " is " +
               (e->waitingToSend() ? "waiting for room to send to " : "waiting to receive from ") +
               bootstrap_->describe(e->waitingPeer());
      }
      if (why.empty()) why = "its last sends are not draining";
      return fail(timeoutError("no progress for " + std::to_string(cfg_.timeoutMs) + " ms (WEFT_TIMEOUT_MS): " + why +
                               ": is that rank still running and calling the same collectives in the same order?"));
    }
    // Waiting: a few microseconds of pure spinning (a same-host peer answers in well under that
    // when it has a core), then yielding the core until WEFT_SPIN_US (with more ranks than cores a
    // spinning rank would steal its peer's), then sleeping in poll() on the transports' descriptors.
    if (now - lastProgress < pureSpinNs_ && now - lastProgress < cfg_.spinUs * 1000) {
      for (int i = 0; i < 16; ++i) cpuRelax();
      continue;
    }
    if (now - lastProgress < cfg_.spinUs * 1000) {
      sched_yield();
      continue;
    }
    fds.clear();
    for (auto& [pc, ch] : send_) ch->pollDescriptors(&fds);
    for (auto& [pc, ch] : recv_) ch->pollDescriptors(&fds);
    poll(fds.data(), fds.size(), 10);
  }
}

}  // namespace weft::engine
