// The all-reduce matrix on one communicator per (rank count, algorithm): every type x op at sizes
// 0, 1, 7 and a non-multiple of the rank count, 1 MiB+13 elements for int8, fp32, bf16 and fp8 e4m3,
// in place and out of place; results compared bit for bit with an independently computed
// reference, and every rank's output bitwise identical to every other's.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "support/mp_harness.h"
#include "support/reference.h"

namespace weft::test {
namespace {

uint64_t fnv(const void* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const unsigned char*>(p)[i]) * 1099511628211ull;
  return h;
}

struct MatrixOptions {
  std::vector<size_t> sizes;
  std::vector<weftDataType_t> largeTypes;
  size_t largeCount = (1u << 20) + 13;
  bool allTypesLarge = false;
};

// Runs one case; returns an error description or "".
std::string runCase(weftComm_t comm, int rank, int nranks, weftDataType_t t, weftRedOp_t op, size_t count, bool inPlace) {
  size_t b = typeBytes(t);
  // Offset by one element from the allocation so alignment is not assumed.
  std::vector<char> sendMem((count + 2) * b), recvMem((count + 2) * b), want(count * b + 1), orig(count * b + 1);
  char* send = sendMem.data() + b;
  char* recv = inPlace ? send : recvMem.data() + b;
  fillInput(t, op, rank, nranks, send, count);
  std::memcpy(orig.data(), send, count * b);
  if (!inPlace) std::memset(recv, 0x5a, count * b);
  fillExpected(t, op, nranks, want.data(), count);
  weftResult_t r = weftAllReduce(count ? send : nullptr, count ? recv : nullptr, count, t, op, comm, nullptr);
  std::string label = std::string(typeLabel(t)) + " " + opLabel(op) + " count " + std::to_string(count) +
                      (inPlace ? " in-place" : " out-of-place");
  if (r != weftSuccess) return label + ": weftAllReduce returned " + std::to_string(r) + ": " + weftGetLastError(comm);
  size_t nwrong = 0;
  long long first = firstMismatch(t, recv, want.data(), count, &nwrong);
  if (first >= 0) {
    return label + ": " + std::to_string(nwrong) + " wrong elements, first at " + std::to_string(first) + ": got " +
           std::to_string(decodeValue(t, recv + first * b)) + " want " + std::to_string(decodeValue(t, want.data() + first * b));
  }
  if (!inPlace && std::memcmp(send, orig.data(), count * b) != 0) return label + ": sendbuff was modified";
  // Bitwise identical on every rank: the max and min over ranks of the output hash agree.
  uint64_t h[2] = {fnv(recv, count * b), fnv(recv, count * b)};
  uint64_t hmax[1], hmin[1];
  if (weftAllReduce(&h[0], hmax, 1, weftUint64, weftMax, comm, nullptr) != weftSuccess ||
      weftAllReduce(&h[1], hmin, 1, weftUint64, weftMin, comm, nullptr) != weftSuccess)
    return label + ": hash all-reduce failed: " + weftGetLastError(comm);
  if (hmax[0] != hmin[0]) return label + ": outputs differ between ranks";
  return "";
}

int matrixBody(const RankContext& ctx, const std::vector<const char*>& algos, const MatrixOptions& mo,
               const char* buffsize) {
  for (size_t a = 0; a < algos.size(); ++a) {
    if (algos[a][0]) setenv("WEFT_ALGO", algos[a], 1);
    else unsetenv("WEFT_ALGO");
    if (buffsize) setenv("WEFT_BUFFSIZE", buffsize, 1);
    weftComm_t comm;
    if (weftCommInitRank(&comm, ctx.nranks, ctx.ids[a], ctx.rank) != weftSuccess) {
      ctx.say(std::string("init: ") + weftGetLastError(nullptr));
      return 1;
    }
    int failures = 0;
    auto check = [&](weftDataType_t t, weftRedOp_t op, size_t count) {
      for (bool inPlace : {false, true}) {
        std::string e = runCase(comm, ctx.rank, ctx.nranks, t, op, count, inPlace);
        if (!e.empty() && failures++ < 3) ctx.say(std::string("algo ") + (algos[a][0] ? algos[a] : "auto") + ": " + e);
      }
    };
    for (int t = 0; t < weftNumTypes; ++t)
      for (int op = 0; op < weftNumOps; ++op)
        for (size_t count : mo.sizes) check(static_cast<weftDataType_t>(t), static_cast<weftRedOp_t>(op), count);
    for (int t = 0; t < weftNumTypes; ++t) {
      bool large = mo.allTypesLarge;
      for (auto lt : mo.largeTypes) large |= lt == t;
      if (!large) continue;
      for (int op = 0; op < weftNumOps; ++op) check(static_cast<weftDataType_t>(t), static_cast<weftRedOp_t>(op), mo.largeCount);
    }
    size_t staging = 0;
    weftCommMemStats(comm, &staging);
    ctx.report->valueA = static_cast<long long>(staging);
    weftCommDestroy(comm);
    if (failures) return 1;
  }
  return 0;
}

void runMatrix(int nranks, const std::vector<const char*>& algos, const MatrixOptions& mo, const char* buffsize = nullptr,
               int timeoutSec = 240) {
  RunOptions o;
  o.nranks = nranks;
  o.nids = static_cast<int>(algos.size());
  o.timeoutSec = timeoutSec;
  auto reports = runRanks(o, [&](const RankContext& ctx) { return matrixBody(ctx, algos, mo, buffsize); });
  for (auto& r : reports) EXPECT_EQ(r.exitCode, 0) << describe(reports);
}

MatrixOptions defaultMatrix(int nranks) {
  MatrixOptions mo;
  size_t odd = 1000 * static_cast<size_t>(nranks) + 1;  // not a multiple of the rank count
  mo.sizes = {0, 1, 7, odd};
  mo.largeTypes = {weftInt8, weftFloat32, weftBfloat16, weftFloat8e4m3};
  return mo;
}

class AllReduceMatrix : public ::testing::TestWithParam<int> {};

TEST_P(AllReduceMatrix, EveryTypeOpSizeRingAndTree) {
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  runMatrix(GetParam(), {"ring", "tree"}, defaultMatrix(GetParam()));
}

// The direct (intra-node) algorithms: every type and op at the small sizes, large counts for two
// types (a 4-byte and a 2-byte one widened through fp32).
TEST_P(AllReduceMatrix, EveryTypeOpSizeOneShotAndTwoShot) {
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  MatrixOptions mo = defaultMatrix(GetParam());
  mo.largeTypes = {weftFloat32, weftBfloat16};
  runMatrix(GetParam(), {"oneshot", "twoshot"}, mo);
}

// Inexact sums (random floats of mixed magnitude, where the order of additions changes the bits):
// one-shot and two-shot reduce in rank order 0..n-1, so every rank's result equals, bit for bit,
// ((x0 + x1) + x2) + ... computed here from every rank's input; and every rank has the same bits.
uint32_t lcg(uint32_t& s) { return s = s * 1664525u + 1013904223u; }
template <typename T>
void randomInput(int rank, T* v, size_t n) {
  uint32_t s = 12345u + 7919u * static_cast<uint32_t>(rank);
  for (size_t i = 0; i < n; ++i) {
    double mant = static_cast<double>(lcg(s) >> 8) / 16777216.0 - 0.5;
    int exp = static_cast<int>(lcg(s) >> 27) - 16;  // 2^-16 .. 2^15
    v[i] = static_cast<T>(std::ldexp(mant, exp));
  }
}
template <typename T>
std::string rankOrderCase(weftComm_t comm, int rank, int nranks, weftDataType_t t, size_t count, bool inPlace) {
  std::vector<T> in(count + 1), out(count + 1), want(count, T(0)), x(count);
  randomInput(rank, in.data() + 1, count);  // offset by one element
  for (int r = 0; r < nranks; ++r) {
    randomInput(r, x.data(), count);
    for (size_t i = 0; i < count; ++i) want[i] = r == 0 ? x[i] : static_cast<T>(want[i] + x[i]);
  }
  T* send = in.data() + 1;
  T* recv = inPlace ? send : out.data() + 1;
  if (weftAllReduce(send, recv, count, t, weftSum, comm, nullptr) != weftSuccess)
    return std::string("weftAllReduce: ") + weftGetLastError(comm);
  if (std::memcmp(recv, want.data(), count * sizeof(T)) != 0) return "result differs from the rank-order sum";
  uint64_t h[2] = {fnv(recv, count * sizeof(T)), fnv(recv, count * sizeof(T))}, hmax = 0, hmin = 0;
  if (weftAllReduce(&h[0], &hmax, 1, weftUint64, weftMax, comm, nullptr) != weftSuccess ||
      weftAllReduce(&h[1], &hmin, 1, weftUint64, weftMin, comm, nullptr) != weftSuccess)
    return std::string("hash all-reduce: ") + weftGetLastError(comm);
  return hmax == hmin ? "" : "outputs differ between ranks";
}

class DirectAllReduce : public ::testing::TestWithParam<int> {};

TEST_P(DirectAllReduce, RankOrderBitwiseIdenticalOnEveryRank) {
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  const char* algos[] = {"oneshot", "twoshot"};
  RunOptions o;
  o.nranks = GetParam();
  o.nids = 2;
  auto reports = runRanks(o, [&](const RankContext& ctx) {
    for (int a = 0; a < 2; ++a) {
      setenv("WEFT_ALGO", algos[a], 1);
      weftComm_t comm;
      if (weftCommInitRank(&comm, ctx.nranks, ctx.ids[static_cast<size_t>(a)], ctx.rank) != weftSuccess) return 10;
      for (size_t count : {size_t{1}, size_t{1001}, size_t{300007}})
        for (bool inPlace : {false, true}) {
          std::string e = rankOrderCase<float>(comm, ctx.rank, ctx.nranks, weftFloat32, count, inPlace);
          if (e.empty()) e = rankOrderCase<double>(comm, ctx.rank, ctx.nranks, weftFloat64, count, inPlace);
          if (!e.empty()) {
            ctx.say(std::string(algos[a]) + " count " + std::to_string(count) + (inPlace ? " in place: " : ": ") + e);
            return 1;
          }
        }
      weftCommDestroy(comm);
    }
    return 0;
  });
  for (auto& r : reports) EXPECT_EQ(r.exitCode, 0) << describe(reports);
}

INSTANTIATE_TEST_SUITE_P(Ranks, DirectAllReduce, ::testing::Values(2, 3, 4));

INSTANTIATE_TEST_SUITE_P(Ranks, AllReduceMatrix, ::testing::Values(2, 3, 4));

// The tuner's own choice, and tiny staging buffers (4 slots of 4 KiB) so that large messages wrap
// the slot FIFOs many times.
TEST(AllReduceSmallBuffers, TunerChoiceManyChunks) {
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  setenv("WEFT_NSLOTS", "4", 1);
  MatrixOptions mo;
  mo.sizes = {1, 4099, 70001};
  mo.largeTypes = {weftFloat32};
  mo.largeCount = 300007;
  runMatrix(3, {"", "ring", "tree", "oneshot", "twoshot"}, mo, "16384");
  unsetenv("WEFT_NSLOTS");
}

// The larger cross-product (ctest -L full): 5 and 7 ranks, every type large, sizes around chunk
// boundaries, the tuner's choice and both forced algorithms.
class FullAllReduceMatrix : public ::testing::TestWithParam<int> {};

TEST_P(FullAllReduceMatrix, EveryTypeLargeAroundChunkBoundaries) {
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  setenv("WEFT_NSLOTS", "4", 1);
  MatrixOptions mo;
  mo.sizes = {0, 1, 2, 3, 7, 255, 256, 257, 4093, 8191, 8192, 8193, 65537};
  mo.allTypesLarge = true;
  mo.largeCount = (1u << 20) + 13;
  runMatrix(GetParam(), {"", "ring", "tree", "oneshot", "twoshot"}, mo, "65536", 1800);
  unsetenv("WEFT_NSLOTS");
}

INSTANTIATE_TEST_SUITE_P(Ranks, FullAllReduceMatrix, ::testing::Values(5, 7));

}  // namespace
}  // namespace weft::test
