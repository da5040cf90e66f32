#include "lib/plan/collective_plan.h"

namespace weft::plan {

Status buildCollectivePlan(const FabricInput& in, const PlanOptions& options, CollectivePlan* out) {
  WEFT_TRY(buildSystemGraph(in, &out->graph));
  WEFT_TRY(buildRings(out->graph, options.ringChannels, &out->rings));
  IntraShape shape = IntraShape::kBinary;
  if (options.intra == PlanOptions::Intra::kChain) {
    shape = IntraShape::kChain;
  } else if (options.intra == PlanOptions::Intra::kAuto) {
    for (int r = 0; r < out->graph.nRanks(); ++r)
      if (out->graph.gpuOf(r) >= 0) {
        shape = IntraShape::kChain;
        break;
      }
  }
  WEFT_TRY(buildTrees(out->graph, options.treeChannels, &out->trees, shape));
  return Status::ok();
}

Status checkCollectivePlan(const CollectivePlan& plan, CheckSummary* summary) {
  WEFT_TRY(checkRings(plan.graph, plan.rings, summary));
  WEFT_TRY(checkTrees(plan.graph, plan.trees, summary));
  return Status::ok();
}

}  // namespace weft::plan
