// The tuner's configuration and result. The choice itself is the cost model's
// (choosePlanFromModel in cost_model.h): the same inputs give the same plan on every rank (a
// mismatch would be caught by the in-band operation check anyway). WEFT_ALGO overrides.
#pragma once

#include <cstddef>
#include <string>

#include "lib/core/status.h"
#include "lib/core/types.h"

namespace weft::plan {

// kOneShot / kTwoShot: the direct all-reduces (every rank exchanges with every peer in one step,
// collectives/schedule.h), for ranks on one host; at most kMaxDirectRanks ranks.
enum class Algo : int { kRing = 0, kTree = 1, kOneShot = 2, kTwoShot = 3 };
const char* algoName(Algo a);
inline constexpr int kMaxDirectRanks = 9;

struct TunerConfig {
  bool forced = false;
  Algo forcedAlgo = Algo::kRing;
  size_t oneShotThresholdBytes = 65536;
};

// Reads WEFT_ALGO / WEFT_ONESHOT_THRESHOLD (an unknown algorithm name is an error naming the
// choices).
Status loadTunerConfig(TunerConfig* out);

// One host, not forced: one-shot or two-shot for an all-reduce of `bytes` on nranks ranks. One-shot
// up to WEFT_ONESHOT_THRESHOLD; with two ranks up to 16 MiB too (two-shot moves the same bytes
// there but adds a synchronisation and a copy per round: measured 113 vs 142 us at 1 MiB, 27 vs
// 35 us at 256 KiB on the dev machine through the direct region).
inline Algo oneHostAlgo(const TunerConfig& cfg, int nranks, size_t bytes) {
  if (bytes <= cfg.oneShotThresholdBytes || (nranks == 2 && bytes <= (size_t{16} << 20))) return Algo::kOneShot;
  return Algo::kTwoShot;
}

struct Plan {
  Algo algo = Algo::kRing;
  int nchannels = 1;
};

}  // namespace weft::plan
