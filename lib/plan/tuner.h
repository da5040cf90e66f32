// The tuner's configuration and result. The choice itself is the cost model's
// (choosePlanFromModel in cost_model.h): the same inputs give the same plan on every rank (a
// mismatch would be caught by the in-band operation check anyway). WEFT_ALGO overrides.
#pragma once

#include <cstddef>
#include <string>

#include "lib/core/status.h"
#include "lib/core/types.h"

namespace weft::plan {

enum class Algo : int { kRing = 0, kTree = 1 };
const char* algoName(Algo a);

struct TunerConfig {
  bool forced = false;
  Algo forcedAlgo = Algo::kRing;
};

// Reads WEFT_ALGO (an unknown algorithm name is an error naming the choices).
Status loadTunerConfig(TunerConfig* out);

struct Plan {
  Algo algo = Algo::kRing;
  int nchannels = 1;
};

}  // namespace weft::plan
