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
  return Status::ok();
}

}  // namespace weft::plan
