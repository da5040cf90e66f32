#include "lib/plan/cost_model.h"

#include <algorithm>

namespace weft::plan {

namespace {
const TransportConstants& constantsOf(const CostConstants& k, Transport t) {
  switch (t) {
    case Transport::kIb: return k.ib;
    case Transport::kShm: return k.shm;
    default: return k.socket;
  }
}
constexpr double kUnlimited = 1e30;
}  // namespace

CostModel::CostModel(const SystemGraph& g, const RingSet& rings, const TreeSet& trees, const CostConstants& k,
                     const ModelTransports& mt)
    : k_(k) {
  nRanks_ = g.nRanks();
  nNodes_ = g.nNodes();
  ppn_ = g.maxRanksPerNode();
  nRails_ = g.nRails();
  transport_ = mt.interFromGraph ? g.interTransport() : mt.inter;
  if (transport_ == Transport::kIb && nRails_ == 0) transport_ = Transport::kSocket;
  ringChannels_ = std::max<int>(1, static_cast<int>(rings.channels.size()));
  treeChannels_ = std::max<int>(1, static_cast<int>(trees.channels.size()));
  treeDepth_ = std::max(trees.trees[0].depth, trees.trees[1].depth);
  intraShape_ = trees.intra;
  intraDepth_ = intraDepth(intraShape_, ppn_, nNodes_ == 1);  // one node: a heap from the head
  // Inter-node bandwidth: ib per rail at its slowest port's rate; sockets share the host's path.
  const TransportConstants& inter = constantsOf(k, transport_);
  interAlphaUs_ = inter.alphaUs;
  if (transport_ == Transport::kIb) {
    for (int r = 0; r < nRails_; ++r)
      railGBps_.push_back(g.railMbps(r) > 0 ? g.railMbps(r) / 8000.0 * k.ib.efficiency : k.ib.fallbackGBps);
    interGBps_ = interBw(ringChannels_, false);
  } else {
    interGBps_ = inter.fallbackGBps;
  }
  bool gpus = false;
  for (int r = 0; r < nRanks_ && !gpus; ++r) gpus = g.gpuOf(r) >= 0;
  intraTransport_ = gpus ? Transport::kIb : mt.hostIntra;  // kIb unused for GPUs: their own constants
  if (gpus) {
    intraAlphaUs_ = k.gpuIntraAlphaUs;
    intraGBps_ = k.gpuIntraGBps;
  } else {
    const TransportConstants& intra = constantsOf(k, mt.hostIntra == Transport::kIb ? Transport::kSocket : mt.hostIntra);
    intraTransport_ = mt.hostIntra == Transport::kIb ? Transport::kSocket : mt.hostIntra;
    intraAlphaUs_ = intra.alphaUs;
    intraGBps_ = intra.fallbackGBps;
  }
  for (int v = 0; v < nNodes_; ++v) {
    int d = 0;
    for (const NodeTree& t : trees.trees) {
      d += t.parent[static_cast<size_t>(v)] >= 0 ? 1 : 0;
      for (int c : t.children[static_cast<size_t>(v)]) d += c >= 0 ? 1 : 0;
    }
    treeMaxDegree_ = std::max(treeMaxDegree_, d);
  }
}

double CostModel::interBw(int nch, bool tree) const {
  if (transport_ != Transport::kIb || railGBps_.empty()) return interGBps_;
  // The rails the first nch channels use (ring c: rail c mod R; tree c: rail (c/2) mod R).
  std::vector<char> used(railGBps_.size(), 0);
  for (int c = 0; c < nch; ++c) used[static_cast<size_t>((tree ? c / 2 : c) % nRails_)] = 1;
  double bw = 0;
  for (size_t r = 0; r < used.size(); ++r)
    if (used[r]) bw += railGBps_[r];
  return bw;
}

int CostModel::channels(Algo algo, size_t bytes) const {
  const int most = algo == Algo::kTree ? treeChannels_ : ringChannels_;
  const size_t per = std::max<size_t>(k_.bytesPerChannel, 1);
  const size_t want = (bytes + per - 1) / per;
  return static_cast<int>(std::clamp<size_t>(want, 1, static_cast<size_t>(most)));
}

bool CostModel::applies(Algo algo, CollType coll) const {
  switch (algo) {
    case Algo::kRing:
      return coll == CollType::kAllReduce || coll == CollType::kAllGather || coll == CollType::kReduceScatter ||
             coll == CollType::kBroadcast || coll == CollType::kReduce;
    case Algo::kTree: return coll == CollType::kAllReduce && nRanks_ > 1;
    case Algo::kOneShot:
    case Algo::kTwoShot:
      // The direct all-reduces exchange with every peer in one step: one host, a few ranks.
      return coll == CollType::kAllReduce && nNodes_ == 1 && nRanks_ > 1 && nRanks_ <= kMaxDirectRanks;
  }
  return false;
}

AlgoCost CostModel::predict(Algo algo, CollType coll, size_t bytes) const {
  AlgoCost out;
  const double n = nRanks_, s = static_cast<double>(bytes);
  const double busFactor = coll == CollType::kAllReduce ? 2.0 * (n - 1) / n : (n - 1) / n;
  const int nch = channels(algo, bytes);
  if (nRanks_ == 1) {
    out.timeUs = k_.baseUs + s / (intraGBps_ * 1000.0);
  } else if (algo == Algo::kOneShot || algo == Algo::kTwoShot) {
    // One-shot: one latency, every rank sends its whole input to n-1 peers and reduces n inputs.
    // Two-shot: two latencies and the ring's 2(n-1)/n bytes. Inside one host only.
    const bool one = algo == Algo::kOneShot;
    const double lat = k_.baseUs + (one ? 1.0 : 2.0) * intraAlphaUs_;
    const double moved = one ? (n - 1) * s : 2.0 * (n - 1) / n * s;
    out.timeUs = lat + moved / (intraGBps_ * 1000.0);
  } else if (algo == Algo::kRing || coll != CollType::kAllReduce) {
    // 2(n-1) steps (all-reduce), each moving s/n over every edge; a chunk's path crosses node
    // boundaries on N of every n edges.
    const double steps = coll == CollType::kAllReduce ? 2.0 * (n - 1) : n - 1;
    const double interHops = nNodes_ > 1 ? steps * nNodes_ / n : 0.0;
    const double lat = k_.baseUs + interHops * interAlphaUs_ + (steps - interHops) * intraAlphaUs_;
    double bw = ppn_ > 1 ? intraGBps_ : kUnlimited;
    if (nNodes_ > 1) bw = std::min(bw, interBw(nch, false));
    out.timeUs = lat + s * steps / n / (bw * 1000.0);
  } else {
    // Double binary tree: reduce up, broadcast down. With two or more channels each tree carries
    // half the data; a node moves s/2 per inter-node link it has in either tree, each direction.
    // Inside a node a chain rank sends 2s in all (up and down); host ranks' binary trees take the
    // measured hostTreeBytes (see CostConstants).
    const double interHops = nNodes_ > 1 ? treeDepth_ - 1 : 0;
    const double lat = k_.baseUs + 2.0 * ((intraDepth_ - 1) * intraAlphaUs_ + interHops * interAlphaUs_);
    double t = 0;
    if (nNodes_ > 1) {
      const double perLink = nch >= 2 ? s / 2.0 : s;
      const double links = nch >= 2 ? treeMaxDegree_ : 3.0;
      t = std::max(t, links * perLink / (interBw(nch, true) * 1000.0));
    }
    t /= k_.treeEfficiency;
    if (ppn_ > 1)
      t = std::max(t, (intraShape_ == IntraShape::kChain ? 2.0 / k_.treeEfficiency : k_.hostTreeBytes) * s /
                          (intraGBps_ * 1000.0));
    out.timeUs = lat + t;
  }
  out.algbwGBps = out.timeUs > 0 ? s / (out.timeUs * 1000.0) : 0;
  out.busbwGBps = out.algbwGBps * busFactor;
  return out;
}

Algo CostModel::choose(CollType coll, size_t bytes) const {
  Algo best = Algo::kRing;
  double bestUs = -1;
  for (Algo a : kRegisteredAlgos) {
    if (!applies(a, coll)) continue;
    const double us = predict(a, coll, bytes).timeUs;
    if (bestUs < 0 || us < bestUs) {
      best = a;
      bestUs = us;
    }
  }
  return best;
}

Plan choosePlanFromModel(const TunerConfig& cfg, const CostModel& model, CollType coll, size_t bytes) {
  Plan p;
  if (cfg.forced) {
    p.algo = model.applies(cfg.forcedAlgo, coll) ? cfg.forcedAlgo : model.choose(coll, bytes);
  } else if (model.applies(Algo::kOneShot, coll)) {
    // One host: the direct all-reduces beat ring and tree at every size (fewer latencies, the same
    // or less traffic). Between the two, one-shot's extra (n-2)·S of copying and reducing is cheap
    // below WEFT_ONESHOT_THRESHOLD (measured crossover on this machine, 2-4 ranks over shm).
    p.algo = oneHostAlgo(cfg, model.nRanks(), bytes);
  } else {
    p.algo = model.choose(coll, bytes);
  }
  p.nchannels = model.channels(p.algo, bytes);
  return p;
}

}  // namespace weft::plan
