// The whole plan of a communicator: system graph, rings and trees. buildCollectivePlan is what the
// engine will call after the all-gather of node descriptions; the cost model and the checker take it.
#pragma once

#include "lib/core/status.h"
#include "lib/plan/plan_checker.h"
#include "lib/plan/ring_builder.h"
#include "lib/plan/system_graph.h"
#include "lib/plan/tree_builder.h"

namespace weft::plan {

struct PlanOptions {
  int ringChannels = 0;  // 0: one per rail
  int treeChannels = 0;  // 0: two per rail (tree 0 and tree 1)
  // Shape of the trees inside a node; kAuto: chains when the ranks drive GPUs, binary for host ranks.
  enum class Intra : uint8_t { kAuto, kChain, kBinary } intra = Intra::kAuto;
};

struct CollectivePlan {
  SystemGraph graph;
  RingSet rings;
  TreeSet trees;
  size_t memoryBytes() const { return graph.memoryBytes() + rings.memoryBytes() + trees.memoryBytes(); }
};

Status buildCollectivePlan(const FabricInput& in, const PlanOptions& options, CollectivePlan* out);
// Both checkers.
Status checkCollectivePlan(const CollectivePlan& plan, CheckSummary* summary = nullptr);

}  // namespace weft::plan
