// The cost model: latency alpha + bytes / beta per hop, with constants per transport (socket, ib)
// and bandwidth per link from the discovered port speeds, applied to the built rings and trees.
// Predicts all-reduce time, algbw and busbw (nccl-tests' definitions) per size and algorithm, and
// picks the fastest. Pure and deterministic: the same graph, plan and constants give the same
// numbers and the same choice on every rank.
#pragma once

#include <cstddef>
#include <vector>

#include "lib/core/types.h"
#include "lib/plan/ring_builder.h"
#include "lib/plan/system_graph.h"
#include "lib/plan/tree_builder.h"
#include "lib/plan/tuner.h"

namespace weft::plan {

struct TransportConstants {
  double alphaUs = 0;      // latency per hop, microseconds
  double efficiency = 1;   // share of the link rate a channel reaches
  double fallbackGBps = 0; // bandwidth when the link rate is unknown
};

// Defaults: not yet calibrated on hardware (the engine integration will measure socket and shm on
// the running machine). The ib numbers reproduce NCCL's reach on NDR: 0.93 x 50 GB/s = 46.5 GB/s per
// 400 Gb/s port; the GPU intra-node bandwidth assumes an NVLink-class fabric (~360 GB/s busbw), since
// discovery does not see NVLink.
struct CostConstants {
  TransportConstants ib{3.0, 0.93, 12.0};
  TransportConstants socket{25.0, 0.7, 1.2};
  double baseUs = 5.0;          // per collective (launch, bookkeeping)
  double intraAlphaUs = 0.8;    // per hop inside a node
  double gpuIntraGBps = 360.0;  // per rank, GPUs inside a node
  double hostIntraGBps = 8.0;   // per rank, host ranks (shared-memory copies)
  double treeEfficiency = 0.85; // tree pipelines reach less of the link than rings
};

struct AlgoCost {
  double timeUs = 0;
  double algbwGBps = 0;
  double busbwGBps = 0;
};

class CostModel {
 public:
  CostModel() = default;
  CostModel(const SystemGraph& graph, const RingSet& rings, const TreeSet& trees, const CostConstants& k = {});

  AlgoCost predict(Algo algo, CollType coll, size_t bytes) const;
  // The fastest registered algorithm for this collective and size (ties go to the ring).
  Algo choose(CollType coll, size_t bytes) const;

  double interGBps() const { return interGBps_; }  // all rails a ring channel set uses, together
  double intraGBps() const { return intraGBps_; }
  Transport interTransport() const { return transport_; }
  int ringChannels() const { return ringChannels_; }
  int treeChannels() const { return treeChannels_; }

 private:
  CostConstants k_;
  Transport transport_ = Transport::kSocket;
  int nRanks_ = 1, nNodes_ = 1, ppn_ = 1, treeDepth_ = 1;
  int ringChannels_ = 1, treeChannels_ = 2;
  int treeMaxDegree_ = 0;  // max over nodes of (tree 0 + tree 1) inter-node links
  double interAlphaUs_ = 0, interGBps_ = 0, intraGBps_ = 0;
};

// The tuner-facing function: WEFT_ALGO (cfg.forced) wins, otherwise the model's choice; the channel
// count is the chosen algorithm's. Pure: same inputs, same plan on every rank.
Plan choosePlanFromModel(const TunerConfig& cfg, const CostModel& model, CollType coll, size_t bytes);

}  // namespace weft::plan
