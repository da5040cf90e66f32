// The direct all-reduces (all ranks on one host, lib/engine/direct.cc): results against the
// independent reference for every type and op, odd sizes, zero, in place, many rounds (a tiny
// WEFT_DIRECT_BYTES), 2-4 ranks (4 ranks: more ranks than this machine's cores), bitwise identical
// on every rank; groups; a killed peer, a mismatch between a direct rank and a channel rank, no
// /dev/shm leftovers; and no page faults per call in steady state (a count from getrusage).
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "support/mp_harness.h"
#include "support/reference.h"

namespace weft::test {
namespace {

bool contains(const char* hay, const char* needle) { return std::strstr(hay, needle) != nullptr; }

uint64_t fnv(const void* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const unsigned char*>(p)[i]) * 1099511628211ull;
  return h;
}

// One all-reduce checked against the reference and across ranks; "" when right.
std::string checkCase(weftComm_t comm, int rank, int nranks, weftDataType_t t, weftRedOp_t op, size_t count, bool inPlace) {
  const size_t b = typeBytes(t);
  std::vector<char> sendMem((count + 2) * b), recvMem((count + 2) * b), want(count * b + 1), orig(count * b + 1);
  char* send = sendMem.data() + b;  // offset by one element
  char* recv = inPlace ? send : recvMem.data() + b;
  fillInput(t, op, rank, nranks, send, count);
  std::memcpy(orig.data(), send, count * b);
  if (!inPlace) std::memset(recv, 0x5a, count * b);
  fillExpected(t, op, nranks, want.data(), count);
  std::string label = std::string(typeLabel(t)) + " " + opLabel(op) + " count " + std::to_string(count) +
                      (inPlace ? " in place" : "");
  if (weftAllReduce(count ? send : nullptr, count ? recv : nullptr, count, t, op, comm, nullptr) != weftSuccess)
    return label + ": " + weftGetLastError(comm);
  size_t nwrong = 0;
  long long first = firstMismatch(t, recv, want.data(), count, &nwrong);
  if (first >= 0)
    return label + ": " + std::to_string(nwrong) + " wrong, first at " + std::to_string(first) + ": got " +
           std::to_string(decodeValue(t, recv + first * b)) + " want " + std::to_string(decodeValue(t, want.data() + first * b));
  if (!inPlace && std::memcmp(send, orig.data(), count * b) != 0) return label + ": sendbuff was modified";
  uint64_t h[2] = {fnv(recv, count * b), fnv(recv, count * b)}, hmax = 0, hmin = 0;
  if (weftAllReduce(&h[0], &hmax, 1, weftUint64, weftMax, comm, nullptr) != weftSuccess ||
      weftAllReduce(&h[1], &hmin, 1, weftUint64, weftMin, comm, nullptr) != weftSuccess)
    return label + ": hash all-reduce: " + weftGetLastError(comm);
  return hmax == hmin ? "" : label + ": outputs differ between ranks";
}

class Direct : public ::testing::TestWithParam<int> {};

// Every type and op; sizes 0, 1, 7, odd, and several rounds of a 4 KiB slot (the count straddles
// round boundaries for every element size); the tuner's choice, both forced algorithms, and two-shot
// writing its output with streaming stores (WEFT_DIRECT_STREAM_BYTES=1: unaligned heads and tails).
TEST_P(Direct, EveryTypeOpSizeInPlaceManyRounds) {
  const char* algos[] = {"", "oneshot", "twoshot", "twoshot"};
  RunOptions o;
  o.nranks = GetParam();
  o.nids = 4;
  o.timeoutSec = 300;
  auto reports = runRanks(o, [&](const RankContext& ctx) {
    setenv("WEFT_DIRECT_BYTES", "4096", 1);
    for (int a = 0; a < 4; ++a) {
      if (algos[a][0]) setenv("WEFT_ALGO", algos[a], 1);
      else unsetenv("WEFT_ALGO");
      if (a == 3) setenv("WEFT_DIRECT_STREAM_BYTES", "1", 1);
      weftComm_t comm;
      if (weftCommInitRank(&comm, ctx.nranks, ctx.ids[static_cast<size_t>(a)], ctx.rank) != weftSuccess) {
        ctx.say(std::string("init: ") + weftGetLastError(nullptr));
        return 10;
      }
      int failures = 0;
      const size_t odd = 1000 * static_cast<size_t>(ctx.nranks) + 1;
      for (int t = 0; t < weftNumTypes; ++t)
        for (int op = 0; op < weftNumOps; ++op)
          for (size_t count : {size_t{0}, size_t{1}, size_t{7}, odd, size_t{4096 * 3 + 5}})
            for (bool inPlace : {false, true}) {
              std::string e = checkCase(comm, ctx.rank, ctx.nranks, static_cast<weftDataType_t>(t),
                                        static_cast<weftRedOp_t>(op), count, inPlace);
              if (!e.empty() && failures++ < 3) ctx.say(std::string("algo ") + (algos[a][0] ? algos[a] : "auto") + ": " + e);
            }
      // Every call went through the shared region: no channel (and so no staging) was ever set up.
      size_t staging = 1;
      weftCommMemStats(comm, &staging);
      if (staging != 0 && failures++ < 3) ctx.say("channels were used: " + std::to_string(staging) + " staging bytes");
      weftCommDestroy(comm);
      if (failures) return 1;
    }
    return 0;
  });
  for (auto& r : reports) EXPECT_EQ(r.exitCode, 0) << describe(reports);
}

// Groups of collectives run one by one through the direct path; a group mixing an all-reduce with
// sends and receives runs through the channels. Both give the reference result.
TEST_P(Direct, GroupsOfCollectivesAndMixedGroups) {
  RunOptions o;
  o.nranks = GetParam();
  auto reports = runRanks(o, [&](const RankContext& ctx) {
    weftComm_t comm;
    if (weftCommInitRank(&comm, ctx.nranks, ctx.ids[0], ctx.rank) != weftSuccess) return 10;
    const size_t n = 30001;
    std::vector<float> a(n), b(n), c(n), d(n), wantA(n), wantC(n);
    fillInput(weftFloat32, weftSum, ctx.rank, ctx.nranks, a.data(), n);
    fillInput(weftFloat32, weftMax, ctx.rank, ctx.nranks, c.data(), n);
    fillExpected(weftFloat32, weftSum, ctx.nranks, wantA.data(), n);
    fillExpected(weftFloat32, weftMax, ctx.nranks, wantC.data(), n);
    weftGroupStart();
    weftAllReduce(a.data(), b.data(), n, weftFloat32, weftSum, comm, nullptr);
    weftAllReduce(c.data(), d.data(), n, weftFloat32, weftMax, comm, nullptr);
    if (weftGroupEnd() != weftSuccess) {
      ctx.say(std::string("group: ") + weftGetLastError(comm));
      return 1;
    }
    if (std::memcmp(b.data(), wantA.data(), n * 4) || std::memcmp(d.data(), wantC.data(), n * 4)) return 2;
    // Mixed: an all-reduce plus a ring exchange of one int.
    int to = (ctx.rank + 1) % ctx.nranks, from = (ctx.rank + ctx.nranks - 1) % ctx.nranks, out = ctx.rank, in = -1;
    std::fill(b.begin(), b.end(), 0.f);
    weftGroupStart();
    weftAllReduce(a.data(), b.data(), n, weftFloat32, weftSum, comm, nullptr);
    weftSend(&out, 1, weftInt32, to, comm, nullptr);
    weftRecv(&in, 1, weftInt32, from, comm, nullptr);
    if (weftGroupEnd() != weftSuccess) {
      ctx.say(std::string("mixed group: ") + weftGetLastError(comm));
      return 3;
    }
    if (std::memcmp(b.data(), wantA.data(), n * 4) || in != from) return 4;
    // And the direct path again afterwards.
    std::fill(b.begin(), b.end(), 0.f);
    if (weftAllReduce(a.data(), b.data(), n, weftFloat32, weftSum, comm, nullptr) != weftSuccess) return 5;
    if (std::memcmp(b.data(), wantA.data(), n * 4)) return 6;
    weftCommDestroy(comm);
    return 0;
  });
  for (auto& r : reports) EXPECT_EQ(r.exitCode, 0) << describe(reports);
}

INSTANTIATE_TEST_SUITE_P(Ranks, Direct, ::testing::Values(2, 3, 4));

std::set<std::string> devShmEntries() {
  std::set<std::string> out;
  if (DIR* d = opendir("/dev/shm")) {
    while (dirent* e = readdir(d))
      if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) out.insert(e->d_name);
    closedir(d);
  }
  return out;
}

// kill -9 of one rank in the middle of direct all-reduces: every survivor fails with weftRemoteError
// naming it, within 1.5 s, and nothing is left in /dev/shm.
TEST(DirectFault, KilledPeerFailsEverySurvivorAndLeavesNothing) {
  for (const char* algo : {"oneshot", "twoshot"}) {
    std::set<std::string> before = devShmEntries();
    KillRun run = runAllReduceAndKill(4, 2, algo, 100000, /*mixSmall=*/true);
    EXPECT_EQ(survivorsNameVictim(run, 2, 1'500'000'000LL), "") << algo;
    EXPECT_EQ(devShmEntries(), before) << "entries appeared in /dev/shm";
  }
}

// Two ranks call a direct all-reduce while the third calls an all-gather (through the channels) at
// the same point: every rank reports the collective mismatch instead of hanging or mixing data.
TEST(DirectFault, DirectAgainstChannelCollectiveIsAMismatch) {
  RunOptions o;
  o.nranks = 3;
  auto reports = runRanks(o, [](const RankContext& ctx) {
    setenv("WEFT_TIMEOUT_MS", "20000", 1);
    weftComm_t comm;
    if (weftCommInitRank(&comm, 3, ctx.ids[0], ctx.rank) != weftSuccess) return 10;
    std::vector<float> a(3000, 1.0f), b(9000);
    if (weftAllReduce(a.data(), b.data(), 1000, weftFloat, weftSum, comm, nullptr) != weftSuccess) return 11;
    weftResult_t r = ctx.rank == 2 ? weftAllGather(a.data(), b.data(), 1000, weftFloat, comm, nullptr)
                                   : weftAllReduce(a.data(), b.data(), 1000, weftFloat, weftSum, comm, nullptr);
    ctx.report->result = r;
    ctx.say(weftGetLastError(comm));
    ctx.report->valueA = weftAllReduce(a.data(), b.data(), 10, weftFloat, weftSum, comm, nullptr);
    weftCommDestroy(comm);
    return 0;
  });
  for (auto& r : reports) {
    EXPECT_EQ(r.exitCode, 0) << describe(reports);
    EXPECT_EQ(r.result, weftInvalidUsage) << describe(reports);
    EXPECT_TRUE(contains(r.message, "collective mismatch")) << describe(reports);
    EXPECT_TRUE(contains(r.message, "all-gather")) << describe(reports);
    EXPECT_EQ(r.valueA, weftInvalidUsage) << describe(reports);
  }
}

// One rank's count crosses the one-shot threshold (so it chose two-shot; 3 ranks: with 2 the tuner
// keeps one-shot up to 16 MiB): a mismatch, on every rank.
TEST(DirectFault, OneShotAgainstTwoShotIsAMismatch) {
  RunOptions o;
  o.nranks = 3;
  auto reports = runRanks(o, [](const RankContext& ctx) {
    weftComm_t comm;
    if (weftCommInitRank(&comm, 3, ctx.ids[0], ctx.rank) != weftSuccess) return 10;
    std::vector<float> a(40000, 1.0f), b(40000);
    size_t count = ctx.rank == 1 ? 16385 : 16384;  // 64 KiB + 4 vs 64 KiB
    weftResult_t r = weftAllReduce(a.data(), b.data(), count, weftFloat, weftSum, comm, nullptr);
    ctx.report->result = r;
    ctx.say(weftGetLastError(comm));
    weftCommDestroy(comm);
    return 0;
  });
  for (auto& r : reports) {
    EXPECT_EQ(r.result, weftInvalidUsage) << describe(reports);
    EXPECT_TRUE(contains(r.message, "collective mismatch")) << describe(reports);
    EXPECT_TRUE(contains(r.message, "count 16385")) << describe(reports);
    EXPECT_TRUE(contains(r.message, "twoshot")) << describe(reports);
  }
}

// Steady state takes no page fault: after a warm-up, 100 all-reduces of 1 MiB and of 16 MiB add
// nothing to this thread's minor or major fault counts (a count, not a timing).
TEST(DirectPageFaults, NoneInSteadyState) {
  for (int nranks : {2, 3}) {
    RunOptions o;
    o.nranks = nranks;
    o.timeoutSec = 300;
    auto reports = runRanks(o, [](const RankContext& ctx) {
      weftComm_t comm;
      if (weftCommInitRank(&comm, ctx.nranks, ctx.ids[0], ctx.rank) != weftSuccess) return 10;
      long long faults = 0;
      for (size_t bytes : {size_t{1} << 20, size_t{16} << 20}) {
        const size_t count = bytes / 4;
        std::vector<float> a(count, 1.0f), b(count, 0.0f);
        for (int i = 0; i < 5; ++i)
          if (weftAllReduce(a.data(), b.data(), count, weftFloat, weftSum, comm, nullptr) != weftSuccess) return 11;
        rusage before{}, after{};
        getrusage(RUSAGE_THREAD, &before);
        for (int i = 0; i < 100; ++i)
          if (weftAllReduce(a.data(), b.data(), count, weftFloat, weftSum, comm, nullptr) != weftSuccess) return 12;
        getrusage(RUSAGE_THREAD, &after);
        if (b[count - 1] != static_cast<float>(ctx.nranks)) return 13;
        long long f = (after.ru_minflt - before.ru_minflt) + (after.ru_majflt - before.ru_majflt);
        ctx.say((bytes == (size_t{1} << 20) ? "1 MiB: " : "16 MiB: ") + std::to_string(f) + " faults in 100 calls; ");
        faults += f;
      }
      ctx.report->valueA = faults;
      weftCommDestroy(comm);
      return 0;
    });
    for (auto& r : reports) {
      EXPECT_EQ(r.exitCode, 0) << describe(reports);
      EXPECT_EQ(r.valueA, 0) << describe(reports);
    }
  }
}

}  // namespace
}  // namespace weft::test
