// Bad input and failures: every one gets a clear error naming the cause, nothing hangs, and the
// survivors of a dead peer learn of it within about a second.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "lib/bootstrap/unique_id.h"
#include "support/mp_harness.h"

namespace weft::test {
namespace {

class Fault : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("WEFT_SOCKET_IFNAME", "lo", 1);
    setenv("WEFT_INIT_TIMEOUT_MS", "2000", 1);
    setenv("WEFT_DEBUG", "NONE", 1);
  }
  void TearDown() override {
    unsetenv("WEFT_INIT_TIMEOUT_MS");
    unsetenv("WEFT_TIMEOUT_MS");
    unsetenv("WEFT_DEBUG");
  }
};

bool contains(const char* hay, const char* needle) { return std::strstr(hay, needle) != nullptr; }

TEST_F(Fault, ArgumentsAreValidatedWithClearMessages) {
  RunOptions o;
  o.nranks = 1;
  auto reports = runRanks(o, [](const RankContext& ctx) {
    weftComm_t comm;
    if (weftCommInitRank(&comm, 1, ctx.ids[0], 0) != weftSuccess) return 10;
    float a[4] = {1, 2, 3, 4}, b[4];
    int fails = 0;
    auto expect = [&](weftResult_t got, weftResult_t want, const char* needle, const char* what) {
      if (got != want || (needle && !contains(weftGetLastError(comm), needle))) {
        ctx.say(std::string(what) + ": result " + std::to_string(got) + " message '" + weftGetLastError(comm) + "'");
        ++fails;
      }
    };
    expect(weftAllReduce(nullptr, b, 4, weftFloat, weftSum, comm, nullptr), weftInvalidArgument, "sendbuff is NULL", "null send");
    expect(weftAllReduce(a, nullptr, 4, weftFloat, weftSum, comm, nullptr), weftInvalidArgument, "recvbuff is NULL", "null recv");
    expect(weftAllReduce(nullptr, nullptr, 0, weftFloat, weftSum, comm, nullptr), weftSuccess, nullptr, "count 0 with NULL");
    expect(weftAllReduce(a, b, 4, static_cast<weftDataType_t>(12), weftSum, comm, nullptr), weftInvalidArgument, "datatype 12", "bad type");
    expect(weftAllReduce(a, b, 4, static_cast<weftDataType_t>(-1), weftSum, comm, nullptr), weftInvalidArgument, "datatype", "negative type");
    expect(weftAllReduce(a, b, 4, weftFloat, static_cast<weftRedOp_t>(5), comm, nullptr), weftInvalidArgument, "op 5", "bad op");
    expect(weftAllReduce(a, b, SIZE_MAX / 2, weftFloat, weftSum, comm, nullptr), weftInvalidArgument, "overflows", "count overflow");
    expect(weftAllReduce(a, a + 1, 3, weftFloat, weftSum, comm, nullptr), weftInvalidArgument, "overlap", "overlap");
    expect(weftAllReduce(a, b, 4, weftFloat, weftSum, nullptr, nullptr), weftInvalidArgument, "comm is NULL", "null comm");
    expect(weftAllReduce(a, b, 4, weftFloat, weftAvg, comm, nullptr), weftSuccess, nullptr, "valid call");
    if (b[3] != 4) ++fails, ctx.say("1-rank avg result wrong");
    expect(weftAllReduce(a, a, 4, weftFloat, weftSum, comm, nullptr), weftSuccess, nullptr, "in-place");
    int v = 0;
    if (weftGetVersion(&v) != weftSuccess || v != WEFT_VERSION_CODE) ++fails, ctx.say("version");
    if (weftCommCount(comm, nullptr) != weftInvalidArgument) ++fails, ctx.say("count NULL");
    weftResult_t async = weftInternalError;
    if (weftCommGetAsyncError(comm, &async) != weftSuccess || async != weftSuccess) ++fails, ctx.say("async error on healthy comm");
    if (weftCommInitRank(&comm, 2, ctx.ids[0], 5) != weftInvalidArgument || !contains(weftGetLastError(nullptr), "rank=5"))
      ++fails, ctx.say("rank out of range");
    if (std::strcmp(weftGetErrorString(weftRemoteError), "remote process exited or there was a network error") != 0)
      ++fails, ctx.say("error string");
    weftCommDestroy(comm);
    return fails;
  });
  EXPECT_EQ(reports[0].exitCode, 0) << describe(reports);
}

TEST_F(Fault, CorruptUniqueIdIsRefused) {
  weftUniqueId id;
  ASSERT_EQ(weftGetUniqueId(&id), weftSuccess);
  weftComm_t comm = nullptr;
  weftUniqueId bad = id;
  bad.internal[40] ^= 0x10;
  EXPECT_EQ(weftCommInitRank(&comm, 1, bad, 0), weftInvalidArgument);
  EXPECT_TRUE(contains(weftGetLastError(nullptr), "corrupted")) << weftGetLastError(nullptr);
  std::memset(&bad, 0, sizeof bad);
  EXPECT_EQ(weftCommInitRank(&comm, 1, bad, 0), weftInvalidArgument);
  EXPECT_TRUE(contains(weftGetLastError(nullptr), "not a weft id")) << weftGetLastError(nullptr);
  EXPECT_EQ(comm, nullptr);
}

TEST_F(Fault, WrongSecretIsRefusedAndTheOthersLearnWhoIsMissing) {
  RunOptions o;
  o.nranks = 2;
  auto reports = runRanks(o, [](const RankContext& ctx) {
    weftUniqueId id = ctx.ids[0];
    if (ctx.rank == 1) {  // same rendezvous address, another job's secret
      bootstrap::UniqueId d;
      if (!bootstrap::decodeUniqueId(reinterpret_cast<unsigned char*>(id.internal), &d)) return 20;
      d.secret[3] ^= 1;
      bootstrap::encodeUniqueId(d, reinterpret_cast<unsigned char*>(id.internal));
    }
    weftComm_t comm;
    weftResult_t r = weftCommInitRank(&comm, 2, id, ctx.rank);
    ctx.report->result = r;
    ctx.say(weftGetLastError(nullptr));
    return r == weftSuccess ? 1 : 0;
  });
  EXPECT_EQ(reports[1].result, weftInvalidUsage) << describe(reports);
  EXPECT_TRUE(contains(reports[1].message, "secret")) << describe(reports);
  EXPECT_EQ(reports[0].result, weftTimeout) << describe(reports);
  EXPECT_TRUE(contains(reports[0].message, "never arrived (rank 1)")) << describe(reports);
}

TEST_F(Fault, RankThatNeverArrivesIsNamed) {
  RunOptions o;
  o.nranks = 3;
  long long start = monoNs();
  auto reports = runRanks(o, [](const RankContext& ctx) {
    if (ctx.rank == 2) return 0;  // never calls init
    weftComm_t comm;
    weftResult_t r = weftCommInitRank(&comm, 3, ctx.ids[0], ctx.rank);
    ctx.report->result = r;
    ctx.say(weftGetLastError(nullptr));
    return 0;
  });
  long long took = monoNs() - start;
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(reports[r].result, weftTimeout) << describe(reports);
    EXPECT_TRUE(contains(reports[r].message, "rank 2")) << describe(reports);
  }
  EXPECT_LT(took, 8'000'000'000LL);
}

TEST_F(Fault, DuplicateRankAndWrongRankCountAreRefused) {
  RunOptions o;
  o.nranks = 3;
  auto reports = runRanks(o, [](const RankContext& ctx) {
    weftComm_t comm;
    // Ranks 0 and 1 both claim rank 0; rank 2 claims nranks 4.
    int nranks = ctx.rank == 2 ? 4 : 3;
    int rank = ctx.rank == 1 ? 0 : ctx.rank;
    if (ctx.rank == 1) usleep(200000);  // arrive second
    if (ctx.rank == 2) usleep(400000);
    weftResult_t r = weftCommInitRank(&comm, nranks, ctx.ids[0], rank);
    ctx.report->result = r;
    ctx.say(weftGetLastError(nullptr));
    return 0;
  });
  EXPECT_EQ(reports[1].result, weftInvalidUsage) << describe(reports);
  EXPECT_TRUE(contains(reports[1].message, "already taken")) << describe(reports);
  EXPECT_EQ(reports[2].result, weftInvalidUsage) << describe(reports);
  EXPECT_TRUE(contains(reports[2].message, "nranks=4")) << describe(reports);
  EXPECT_EQ(reports[0].result, weftTimeout) << describe(reports);
}

TEST_F(Fault, MismatchedCollectiveIsReportedOnEveryRank) {
  for (int variant = 0; variant < 2; ++variant) {
    RunOptions o;
    o.nranks = 3;
    auto reports = runRanks(o, [variant](const RankContext& ctx) {
      weftComm_t comm;
      if (weftCommInitRank(&comm, 3, ctx.ids[0], ctx.rank) != weftSuccess) return 10;
      std::vector<float> a(100000, 1.0f), b(100000);
      // A good call first, so the mismatch happens on warm connections.
      if (weftAllReduce(a.data(), b.data(), 1000, weftFloat, weftSum, comm, nullptr) != weftSuccess) return 11;
      size_t count = 50000;
      weftDataType_t t = weftFloat;
      if (ctx.rank == 2) {
        if (variant == 0) count += 1;
        else t = weftInt32;
      }
      weftResult_t r = weftAllReduce(a.data(), b.data(), count, t, weftSum, comm, nullptr);
      ctx.report->result = r;
      ctx.say(weftGetLastError(comm));
      // The communicator stays failed: the next call reports the same error instead of hanging.
      weftResult_t again = weftAllReduce(a.data(), b.data(), 10, weftFloat, weftSum, comm, nullptr);
      ctx.report->valueA = again;
      weftCommDestroy(comm);
      return 0;
    });
    for (auto& r : reports) {
      EXPECT_EQ(r.exitCode, 0) << describe(reports);
      EXPECT_EQ(r.result, weftInvalidUsage) << describe(reports);
      EXPECT_TRUE(contains(r.message, "collective mismatch")) << describe(reports);
      EXPECT_TRUE(contains(r.message, variant == 0 ? "count 50001" : "int32")) << describe(reports);
      EXPECT_EQ(r.valueA, weftInvalidUsage) << describe(reports);
    }
  }
}

TEST_F(Fault, PeerKilledMidAllReduceFailsEverySurvivorWithinASecond) {
  for (const char* algo : {"ring", "tree"}) {
    KillRun run = runAllReduceAndKill(4, 2, algo, 1 << 20, /*mixSmall=*/false);
    EXPECT_EQ(survivorsNameVictim(run, 2, 1'500'000'000LL), "") << algo;
  }
}

TEST_F(Fault, AbortFromAnotherThreadReturnsWithin100ms) {
  RunOptions o;
  o.nranks = 2;
  auto reports = runRanks(o, [](const RankContext& ctx) {
    weftComm_t comm;
    if (weftCommInitRank(&comm, 2, ctx.ids[0], ctx.rank) != weftSuccess) return 10;
    float a[1024] = {}, b[1024];
    if (weftAllReduce(a, b, 1024, weftFloat, weftSum, comm, nullptr) != weftSuccess) return 11;
    if (ctx.rank == 1) {
      // Never joins the second all-reduce; learns that rank 0 aborted.
      long long until = monoNs() + 5'000'000'000LL;
      weftResult_t async = weftSuccess;
      while (monoNs() < until && async == weftSuccess) {
        weftCommGetAsyncError(comm, &async);
        usleep(10000);
      }
      ctx.report->result = async;
      ctx.say(weftGetLastError(comm));
      weftCommDestroy(comm);
      return 0;
    }
    std::atomic<long long> abortAt{0};
    std::thread killer([&] {
      usleep(500000);
      abortAt = monoNs();
      weftCommAbort(comm);
    });
    weftResult_t r = weftAllReduce(a, b, 1024, weftFloat, weftSum, comm, nullptr);
    long long returnedAt = monoNs();
    killer.join();
    ctx.report->result = r;
    ctx.report->timeNs = returnedAt - abortAt.load();
    ctx.say(weftGetLastError(nullptr));
    return 0;
  });
  EXPECT_EQ(reports[0].exitCode, 0) << describe(reports);
  EXPECT_NE(reports[0].result, weftSuccess) << describe(reports);
  EXPECT_TRUE(contains(reports[0].message, "aborted")) << describe(reports);
  EXPECT_GE(reports[0].timeNs, 0) << describe(reports);
  EXPECT_LT(reports[0].timeNs, 100'000'000LL) << describe(reports);
  EXPECT_EQ(reports[1].result, weftRemoteError) << describe(reports);
  EXPECT_TRUE(contains(reports[1].message, "aborted")) << describe(reports);
}

TEST_F(Fault, NoProgressTimesOutNamingThePeer) {
  RunOptions o;
  o.nranks = 2;
  auto reports = runRanks(o, [](const RankContext& ctx) {
    setenv("WEFT_TIMEOUT_MS", "700", 1);
    weftComm_t comm;
    if (weftCommInitRank(&comm, 2, ctx.ids[0], ctx.rank) != weftSuccess) return 10;
    float a[64] = {}, b[64];
    if (weftAllReduce(a, b, 64, weftFloat, weftSum, comm, nullptr) != weftSuccess) return 11;
    if (ctx.rank == 1) usleep(3000000);  // late for the second call
    long long t0 = monoNs();
    weftResult_t r = weftAllReduce(a, b, 64, weftFloat, weftSum, comm, nullptr);
    ctx.report->timeNs = monoNs() - t0;
    ctx.report->result = r;
    ctx.say(weftGetLastError(comm));
    weftCommDestroy(comm);
    return 0;
  });
  EXPECT_EQ(reports[0].result, weftTimeout) << describe(reports);
  EXPECT_TRUE(contains(reports[0].message, "rank 1")) << describe(reports);
  EXPECT_TRUE(contains(reports[0].message, "WEFT_TIMEOUT_MS")) << describe(reports);
  EXPECT_GE(reports[0].timeNs, 650'000'000LL) << describe(reports);
  EXPECT_LT(reports[0].timeNs, 2'500'000'000LL) << describe(reports);
  // The late rank is told instead of hanging.
  EXPECT_EQ(reports[1].result, weftTimeout) << describe(reports);
}

TEST_F(Fault, PeerThatExitsWithoutDestroyIsDetected) {
  RunOptions o;
  o.nranks = 2;
  auto reports = runRanks(o, [](const RankContext& ctx) {
    weftComm_t comm;
    if (weftCommInitRank(&comm, 2, ctx.ids[0], ctx.rank) != weftSuccess) return 10;
    float a[64] = {}, b[64];
    if (weftAllReduce(a, b, 64, weftFloat, weftSum, comm, nullptr) != weftSuccess) return 11;
    if (ctx.rank == 1) _exit(0);  // no destroy
    usleep(300000);
    long long t0 = monoNs();
    weftResult_t r = weftAllReduce(a, b, 64, weftFloat, weftSum, comm, nullptr);
    ctx.report->timeNs = monoNs() - t0;
    ctx.report->result = r;
    ctx.say(weftGetLastError(comm));
    weftCommDestroy(comm);
    return 0;
  });
  EXPECT_EQ(reports[0].result, weftRemoteError) << describe(reports);
  EXPECT_TRUE(contains(reports[0].message, "rank 1")) << describe(reports);
  EXPECT_LT(reports[0].timeNs, 1'000'000'000LL) << describe(reports);
}

}  // namespace
}  // namespace weft::test
