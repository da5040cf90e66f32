#include "lib/plan/tuner.h"

#include "lib/core/config.h"

namespace weft::plan {

const char* algoName(Algo a) { return a == Algo::kTree ? "tree" : "ring"; }

Status loadTunerConfig(TunerConfig* out) {
  *out = TunerConfig();
  std::string algo = config::getString("WEFT_ALGO");
  for (auto& c : algo) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  if (algo == "ring") {
    out->forced = true;
    out->forcedAlgo = Algo::kRing;
  } else if (algo == "tree") {
    out->forced = true;
    out->forcedAlgo = Algo::kTree;
  } else if (!algo.empty()) {
    return invalidArgument("WEFT_ALGO=\"" + algo + "\" is not an algorithm: use ring or tree, or unset it");
  }
  int64_t t;
  WEFT_TRY(config::parseInt("WEFT_TREE_THRESHOLD", &t));
  if (t < 0) return invalidArgument("WEFT_TREE_THRESHOLD must not be negative");
  out->treeThresholdBytes = static_cast<size_t>(t);
  return Status::ok();
}

Plan choosePlan(const TunerConfig& cfg, CollType coll, size_t bytes, int nranks) {
  Plan p;
  if (cfg.forced) {
    p.algo = cfg.forcedAlgo;
    return p;
  }
  // Latency-bound sizes: the tree's 2*log2(n) hops beat the ring's 2(n-1) steps; above the
  // threshold the ring's bandwidth-optimal 2(n-1)/n bytes per link win.
  p.algo = (coll == CollType::kAllReduce && bytes <= cfg.treeThresholdBytes && nranks > 2) ? Algo::kTree : Algo::kRing;
  return p;
}

}  // namespace weft::plan
