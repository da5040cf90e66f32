// Throughput of the reduction kernels: dst = a OP b over `bytes` per buffer, reported as bytes
// read + written per second (3 x bytes per call), for each ISA level this CPU supports, beside a
// memcpy of the same size counted the same way (2 x bytes per call). The kernels are called
// through their level's table (detail::kernelsFor), so one run measures every level.
//
//   micro_reduce --benchmark_filter='sum/fp32'       one type
//   micro_reduce --benchmark_min_time=0.2            quicker
//
// The buffers are distinct (no aliasing), touched before timing, with "nice" values (small
// integers) so no denormal or NaN slow path is measured.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "collectives/reduce/reduce.h"
#include "lib/core/types.h"

namespace {

using weft::DataType;
using weft::RedOp;
namespace reduce = weft::reduce;

struct TypeCase {
  DataType type;
  const char* name;
};
const TypeCase kTypes[] = {
    {DataType::kFloat32, "fp32"}, {DataType::kBfloat16, "bf16"},   {DataType::kFloat16, "fp16"},
    {DataType::kInt8, "int8"},    {DataType::kFloat8e4m3, "e4m3"}, {DataType::kFloat8e5m2, "e5m2"},
};
const size_t kSizes[] = {4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20};

std::string sizeName(size_t bytes) {
  char buf[32];
  if (bytes >= (1 << 20)) {
    std::snprintf(buf, sizeof buf, "%zuMiB", bytes >> 20);
  } else {
    std::snprintf(buf, sizeof buf, "%zuKiB", bytes >> 10);
  }
  return buf;
}

// Element bits of small integers in type t (exact, no specials).
void fill(DataType t, std::vector<uint8_t>& buf, uint32_t seed) {
  const size_t es = weft::typeSize(t);
  for (size_t i = 0; i * es < buf.size(); ++i) {
    const float v = static_cast<float>(static_cast<int>((i * 7 + seed) % 15) - 7);
    uint64_t bits = 0;
    switch (t) {
      case DataType::kFloat32: std::memcpy(&bits, &v, 4); break;
      case DataType::kBfloat16: bits = reduce::floatToBf16(v); break;
      case DataType::kFloat16: bits = reduce::floatToHalf(v); break;
      case DataType::kFloat8e4m3: bits = reduce::floatToE4m3(v); break;
      case DataType::kFloat8e5m2: bits = reduce::floatToE5m2(v); break;
      default: bits = static_cast<uint64_t>(static_cast<int64_t>(v)); break;
    }
    std::memcpy(&buf[i * es], &bits, es);
  }
}

void benchReduce(benchmark::State& state, reduce::detail::ReduceFn fn, DataType t, size_t bytes) {
  std::vector<uint8_t> a(bytes), b(bytes), d(bytes);
  fill(t, a, 1);
  fill(t, b, 5);
  const size_t count = bytes / weft::typeSize(t);
  for (auto _ : state) {
    fn(d.data(), a.data(), b.data(), count);
    benchmark::DoNotOptimize(d.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 3 * static_cast<int64_t>(bytes));
}

void benchMemcpy(benchmark::State& state, size_t bytes) {
  std::vector<uint8_t> a(bytes, 1), d(bytes, 0);
  for (auto _ : state) {
    std::memcpy(d.data(), a.data(), bytes);
    benchmark::DoNotOptimize(d.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 2 * static_cast<int64_t>(bytes));
}

}  // namespace

int main(int argc, char** argv) {
  std::string levels;
  for (size_t bytes : kSizes) {
    benchmark::RegisterBenchmark(("memcpy/" + sizeName(bytes)).c_str(), benchMemcpy, bytes);
  }
  for (reduce::Isa isa : {reduce::Isa::kPortable, reduce::Isa::kAvx2, reduce::Isa::kAvx512}) {
    const reduce::detail::KernelTable* table = reduce::detail::kernelsFor(isa);
    if (table == nullptr) continue;
    levels += std::string(levels.empty() ? "" : " ") + reduce::isaName(isa);
    for (const TypeCase& tc : kTypes) {
      const auto fn = table->reduce[static_cast<int>(tc.type)][static_cast<int>(RedOp::kSum)];
      for (size_t bytes : kSizes) {
        const std::string name = std::string("sum/") + tc.name + "/" + reduce::isaName(isa) + "/" + sizeName(bytes);
        benchmark::RegisterBenchmark(name.c_str(), benchReduce, fn, tc.type, bytes);
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("weft_isa_levels", levels);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
