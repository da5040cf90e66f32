// plan_bench: Google Benchmark of building the collective plan (system graph, rings, trees) for
// synthetic fabrics of N nodes x 8 GPUs x 8 rails, up to 8192 nodes = 65,536 ranks; counters give
// the plan's memory in bytes and per rank (linear in ranks). Also the checker and the tuner call.
#include <benchmark/benchmark.h>

#include "lib/plan/collective_plan.h"
#include "lib/plan/cost_model.h"
#include "lib/plan/synthetic_fabric.h"

namespace {

weft::plan::FabricInput fabric(int nodes) {
  weft::plan::FabricInput in;
  if (!weft::plan::syntheticFabric(nodes, 8, 8, 400000, &in)) std::abort();
  return in;
}

void BM_BuildPlan(benchmark::State& state) {
  const weft::plan::FabricInput in = fabric(static_cast<int>(state.range(0)));
  size_t bytes = 0;
  for (auto _ : state) {
    weft::plan::CollectivePlan p;
    if (!weft::plan::buildCollectivePlan(in, {}, &p)) state.SkipWithError("build failed");
    bytes = p.memoryBytes();
    benchmark::DoNotOptimize(p.rings.channels.data());
  }
  const double ranks = static_cast<double>(in.ranks.size());
  state.counters["ranks"] = ranks;
  state.counters["plan_bytes"] = static_cast<double>(bytes);
  state.counters["bytes_per_rank"] = static_cast<double>(bytes) / ranks;
  state.counters["ranks_per_s"] = benchmark::Counter(ranks, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_BuildPlan)->Arg(1)->Arg(8)->Arg(64)->Arg(1024)->Arg(8192)->Unit(benchmark::kMillisecond);

void BM_CheckPlan(benchmark::State& state) {
  const weft::plan::FabricInput in = fabric(static_cast<int>(state.range(0)));
  weft::plan::CollectivePlan p;
  if (!weft::plan::buildCollectivePlan(in, {}, &p)) std::abort();
  for (auto _ : state) {
    if (!weft::plan::checkCollectivePlan(p)) state.SkipWithError("check failed");
  }
  state.counters["ranks"] = static_cast<double>(in.ranks.size());
}
BENCHMARK(BM_CheckPlan)->Arg(64)->Arg(8192)->Unit(benchmark::kMillisecond);

void BM_TunerChoice(benchmark::State& state) {
  const weft::plan::FabricInput in = fabric(8192);
  weft::plan::CollectivePlan p;
  if (!weft::plan::buildCollectivePlan(in, {}, &p)) std::abort();
  const weft::plan::CostModel m(p.graph, p.rings, p.trees);
  const weft::plan::TunerConfig cfg;
  size_t bytes = 8;
  for (auto _ : state) {
    benchmark::DoNotOptimize(weft::plan::choosePlanFromModel(cfg, m, weft::CollType::kAllReduce, bytes));
    bytes = bytes >= (size_t{1} << 30) ? 8 : bytes * 2;
  }
}
BENCHMARK(BM_TunerChoice);

}  // namespace

BENCHMARK_MAIN();
