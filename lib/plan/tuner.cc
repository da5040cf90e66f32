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
  WEFT_TRY(config::parseInt("WEFT_ONESHOT_THRESHOLD", &t));
  if (t < 0) return invalidArgument("WEFT_ONESHOT_THRESHOLD must not be negative");
  out->oneShotThresholdBytes = static_cast<size_t>(t);
  return Status::ok();
}

}  // namespace weft::plan
