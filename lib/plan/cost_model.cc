#include "lib/plan/cost_model.h"

#include <algorithm>

namespace weft::plan {

CostModel::CostModel(const SystemGraph& g, const RingSet& rings, const TreeSet& trees, const CostConstants& k)
    : k_(k) {
  nRanks_ = g.nRanks();
  nNodes_ = g.nNodes();
  ppn_ = g.maxRanksPerNode();
  transport_ = g.interTransport();
  ringChannels_ = std::max<int>(1, static_cast<int>(rings.channels.size()));
  treeChannels_ = std::max<int>(1, static_cast<int>(trees.channels.size()));
  treeDepth_ = std::max(trees.trees[0].depth, trees.trees[1].depth);
  // Inter-node bandwidth: every rail the ring channels use, each at its slowest port's rate.
  if (transport_ == Transport::kIb) {
    interAlphaUs_ = k.ib.alphaUs;
    std::vector<char> used(static_cast<size_t>(g.nRails()), 0);
    for (const RingChannel& c : rings.channels)
      if (c.rail >= 0) used[static_cast<size_t>(c.rail)] = 1;
    for (int r = 0; r < g.nRails(); ++r) {
      if (!used[static_cast<size_t>(r)]) continue;
      const double gbps = g.railMbps(r) > 0 ? g.railMbps(r) / 8000.0 * k.ib.efficiency : k.ib.fallbackGBps;
      interGBps_ += gbps;
    }
  } else {
    interAlphaUs_ = k.socket.alphaUs;
    interGBps_ = k.socket.fallbackGBps;
  }
  bool gpus = false;
  for (int r = 0; r < nRanks_ && !gpus; ++r) gpus = g.gpuOf(r) >= 0;
  intraGBps_ = gpus ? k.gpuIntraGBps : k.hostIntraGBps;
  for (int v = 0; v < nNodes_; ++v) {
    int d = 0;
    for (const NodeTree& t : trees.trees) {
      d += t.parent[static_cast<size_t>(v)] >= 0 ? 1 : 0;
      for (int c : t.children[static_cast<size_t>(v)]) d += c >= 0 ? 1 : 0;
    }
    treeMaxDegree_ = std::max(treeMaxDegree_, d);
  }
}

AlgoCost CostModel::predict(Algo algo, CollType coll, size_t bytes) const {
  AlgoCost out;
  const double n = nRanks_, s = static_cast<double>(bytes);
  const double busFactor = coll == CollType::kAllReduce ? 2.0 * (n - 1) / n : (n - 1) / n;
  if (nRanks_ == 1) {
    out.timeUs = k_.baseUs + s / (intraGBps_ * 1000.0);
  } else if (algo == Algo::kRing || coll != CollType::kAllReduce) {
    // 2(n-1) steps (all-reduce), each moving s/n over every edge; a chunk's path crosses node
    // boundaries on N of every n edges.
    const double steps = coll == CollType::kAllReduce ? 2.0 * (n - 1) : n - 1;
    const double interHops = nNodes_ > 1 ? steps * nNodes_ / n : 0.0;
    const double lat = k_.baseUs + interHops * interAlphaUs_ + (steps - interHops) * k_.intraAlphaUs;
    double bw = ppn_ > 1 ? intraGBps_ : 1e30;
    if (nNodes_ > 1) bw = std::min(bw, interGBps_);
    out.timeUs = lat + s * steps / n / (bw * 1000.0);
  } else {
    // Double binary tree: reduce up, broadcast down, half the data per tree. Per direction a node
    // moves s/2 per inter-node link it has in either tree; a chain rank moves s up and s down.
    const double lat = k_.baseUs + 2.0 * ((ppn_ - 1) * k_.intraAlphaUs + (treeDepth_ - 1) * interAlphaUs_);
    double t = 0;
    if (nNodes_ > 1) t = std::max(t, treeMaxDegree_ * s / 2.0 / (interGBps_ * 1000.0));
    if (ppn_ > 1) t = std::max(t, 2.0 * s / (intraGBps_ * 1000.0));
    out.timeUs = lat + t / k_.treeEfficiency;
  }
  out.algbwGBps = out.timeUs > 0 ? s / (out.timeUs * 1000.0) : 0;
  out.busbwGBps = out.algbwGBps * busFactor;
  return out;
}

Algo CostModel::choose(CollType coll, size_t bytes) const {
  if (coll != CollType::kAllReduce || nRanks_ <= 2) return Algo::kRing;
  const double ring = predict(Algo::kRing, coll, bytes).timeUs;
  const double tree = predict(Algo::kTree, coll, bytes).timeUs;
  return tree < ring ? Algo::kTree : Algo::kRing;
}

Plan choosePlanFromModel(const TunerConfig& cfg, const CostModel& model, CollType coll, size_t bytes) {
  Plan p;
  p.algo = cfg.forced ? cfg.forcedAlgo : model.choose(coll, bytes);
  p.nchannels = p.algo == Algo::kTree ? model.treeChannels() : model.ringChannels();
  return p;
}

}  // namespace weft::plan
