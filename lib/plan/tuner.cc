#include "lib/plan/tuner.h"

#include "lib/core/config.h"

namespace weft::plan {

const char* algoName(Algo a) {
  switch (a) {
    case Algo::kTree: return "tree";
    case Algo::kOneShot: return "oneshot";
    case Algo::kTwoShot: return "twoshot";
    default: return "ring";
  }
}

Status loadTunerConfig(TunerConfig* out) {
  *out = TunerConfig();
  std::string algo = config::getString("WEFT_ALGO");
  for (auto& c : algo) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  if (!algo.empty()) {
    bool known = false;
    for (Algo a : {Algo::kRing, Algo::kTree, Algo::kOneShot, Algo::kTwoShot})
      if (algo == algoName(a)) {
        out->forced = known = true;
        out->forcedAlgo = a;
      }
    if (!known)
      return invalidArgument("WEFT_ALGO=\"" + algo + "\" is not an algorithm: use ring, tree, oneshot or twoshot, or unset it");
  }
  int64_t t;
  WEFT_TRY(config::parseInt("WEFT_TREE_THRESHOLD", &t));
  if (t < 0) return invalidArgument("WEFT_TREE_THRESHOLD must not be negative");
  out->treeThresholdBytes = static_cast<size_t>(t);
  WEFT_TRY(config::parseInt("WEFT_ONESHOT_THRESHOLD", &t));
  if (t < 0) return invalidArgument("WEFT_ONESHOT_THRESHOLD must not be negative");
  out->oneShotThresholdBytes = static_cast<size_t>(t);
  return Status::ok();
}

Plan choosePlan(const TunerConfig& cfg, CollType coll, size_t bytes, int nranks, bool singleHost) {
  Plan p;
  const bool direct = coll == CollType::kAllReduce && nranks <= kMaxDirectRanks;
  if (cfg.forced) {
    p.algo = cfg.forcedAlgo;
    // The direct algorithms exchange with every peer in one step: beyond kMaxDirectRanks, the ring.
    if ((p.algo == Algo::kOneShot || p.algo == Algo::kTwoShot) && !direct) p.algo = Algo::kRing;
    return p;
  }
  if (singleHost && direct && nranks > 1) {
    // One host: one message latency (one-shot, every rank reduces everything) while the extra
    // (n-1) x bytes of copying is cheap; then two latencies with the ring's traffic (two-shot).
    p.algo = bytes <= cfg.oneShotThresholdBytes ? Algo::kOneShot : Algo::kTwoShot;
    return p;
  }
  // Latency-bound sizes: the tree's 2*log2(n) hops beat the ring's 2(n-1) steps; above the
  // threshold the ring's bandwidth-optimal 2(n-1)/n bytes per link win.
  p.algo = (coll == CollType::kAllReduce && bytes <= cfg.treeThresholdBytes && nranks > 2) ? Algo::kTree : Algo::kRing;
  return p;
}

}  // namespace weft::plan
