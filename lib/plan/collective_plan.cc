#include "lib/plan/collective_plan.h"

namespace weft::plan {

Status buildCollectivePlan(const FabricInput& in, const PlanOptions& options, CollectivePlan* out) {
  WEFT_TRY(buildSystemGraph(in, &out->graph));
  WEFT_TRY(buildRings(out->graph, options.ringChannels, &out->rings));
  WEFT_TRY(buildTrees(out->graph, options.treeChannels, &out->trees));
  return Status::ok();
}

Status checkCollectivePlan(const CollectivePlan& plan, CheckSummary* summary) {
  WEFT_TRY(checkRings(plan.graph, plan.rings, summary));
  WEFT_TRY(checkTrees(plan.graph, plan.trees, summary));
  return Status::ok();
}

}  // namespace weft::plan
