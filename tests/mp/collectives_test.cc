// Every collective besides all-reduce, send/recv and groups, split, config and launcher init, each
// checked bit for bit against a reference computed in the test from every rank's inputs.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "support/mp_harness.h"
#include "support/reference.h"

namespace weft::test {
namespace {

using Bytes = std::vector<char>;

Bytes inputOf(weftDataType_t t, weftRedOp_t op, int rank, int n, size_t count) {
  Bytes b(count * typeBytes(t) + 1);
  fillInput(t, op, rank, n, b.data(), count);
  return b;
}

struct Checker {
  const RankContext& ctx;
  weftComm_t comm;
  int failures = 0;
  void expectSame(const std::string& label, weftResult_t r, const char* got, const char* want, weftDataType_t t, size_t count) {
    if (r != weftSuccess) {
      fail(label + ": returned " + std::to_string(r) + ": " + weftGetLastError(comm));
      return;
    }
    size_t nwrong = 0;
    long long first = firstMismatch(t, got, want, count, &nwrong);
    if (first >= 0)
      fail(label + ": " + std::to_string(nwrong) + " wrong, first at " + std::to_string(first) + " got " +
           std::to_string(decodeValue(t, got + first * typeBytes(t))) + " want " +
           std::to_string(decodeValue(t, want + first * typeBytes(t))));
  }
  void fail(const std::string& s) {
    if (failures++ < 4) ctx.say(s);
  }
};

std::string label(const char* coll, weftDataType_t t, weftRedOp_t op, size_t count, bool inPlace, int root = -1) {
  return std::string(coll) + " " + typeLabel(t) + " " + opLabel(op) + " count " + std::to_string(count) +
         (inPlace ? " in-place" : "") + (root >= 0 ? " root " + std::to_string(root) : "");
}

int collectivesBody(const RankContext& ctx) {
  weftComm_t comm;
  if (weftCommInitRank(&comm, ctx.nranks, ctx.ids[0], ctx.rank) != weftSuccess) return 10;
  const int n = ctx.nranks, me = ctx.rank;
  Checker ck{ctx, comm};
  const size_t sizes[] = {0, 1, 7, 1000 * static_cast<size_t>(n) + 1, 70001};
  for (int ti = 0; ti < weftNumTypes; ++ti) {
    auto t = static_cast<weftDataType_t>(ti);
    size_t es = typeBytes(t);
    for (size_t count : sizes) {
      if (count == 70001 && t != weftFloat32 && t != weftBfloat16) continue;
      for (bool inPlace : {false, true}) {
        // Broadcast from the first and the last rank.
        for (int root : {0, n - 1}) {
          Bytes want = inputOf(t, weftSum, root, n, count);
          Bytes buf = inPlace ? inputOf(t, weftSum, me, n, count) : Bytes(count * es + 1, 0x33);
          Bytes in = inputOf(t, weftSum, me, n, count);
          weftResult_t r = inPlace ? weftBcast(count ? buf.data() : nullptr, count, t, root, comm, nullptr)
                                   : weftBroadcast(me == root ? in.data() : nullptr, count ? buf.data() : nullptr, count, t, root, comm, nullptr);
          ck.expectSame(label("broadcast", t, weftSum, count, inPlace, root), r, buf.data(), want.data(), t, count);
        }
        for (int oi = 0; oi < weftNumOps; ++oi) {
          auto op = static_cast<weftRedOp_t>(oi);
          // Reduce to the last rank; recvbuff NULL elsewhere.
          {
            int root = n - 1;
            Bytes want(count * es + 1);
            fillExpected(t, op, n, want.data(), count);
            Bytes in = inputOf(t, op, me, n, count), out(count * es + 1, 0x44);
            char* recv = me == root ? (inPlace ? in.data() : out.data()) : nullptr;
            weftResult_t r = weftReduce(count ? in.data() : nullptr, count ? recv : nullptr, count, t, op, root, comm, nullptr);
            if (me == root) ck.expectSame(label("reduce", t, op, count, inPlace, root), r, recv, want.data(), t, count);
            else if (r != weftSuccess) ck.fail(label("reduce", t, op, count, inPlace, root) + " failed on a non-root");
          }
          // Reduce-scatter: rank r gets block r of the reduced n*count vector.
          {
            size_t total = count * static_cast<size_t>(n);
            Bytes wantAll(total * es + 1);
            fillExpected(t, op, n, wantAll.data(), total);
            Bytes in = inputOf(t, op, me, n, total), out(count * es + 1, 0x55);
            char* recv = inPlace ? in.data() + static_cast<size_t>(me) * count * es : out.data();
            weftResult_t r = weftReduceScatter(total ? in.data() : nullptr, count ? recv : nullptr, count, t, op, comm, nullptr);
            ck.expectSame(label("reduce-scatter", t, op, count, inPlace), r, recv,
                          wantAll.data() + static_cast<size_t>(me) * count * es, t, count);
          }
        }
        // All-gather: block b is rank b's input.
        {
          size_t total = count * static_cast<size_t>(n);
          Bytes want(total * es + 1);
          for (int b = 0; b < n; ++b) fillInput(t, weftSum, b, n, want.data() + static_cast<size_t>(b) * count * es, count);
          Bytes out(total * es + 1, 0x66);
          Bytes in = inputOf(t, weftSum, me, n, count);
          const char* send = in.data();
          if (inPlace) {
            std::memcpy(out.data() + static_cast<size_t>(me) * count * es, in.data(), count * es);
            send = out.data() + static_cast<size_t>(me) * count * es;
          }
          weftResult_t r = weftAllGather(count ? send : nullptr, count ? out.data() : nullptr, count, t, comm, nullptr);
          ck.expectSame(label("all-gather", t, weftSum, count, inPlace), r, out.data(), want.data(), t, total);
        }
        // All-to-all: block j of rank r's input goes to rank j.
        {
          size_t total = count * static_cast<size_t>(n);
          Bytes in = inputOf(t, weftSum, me, n, total), out(total * es + 1, 0x77), want(total * es + 1);
          for (int j = 0; j < n; ++j) {
            Bytes theirs = inputOf(t, weftSum, j, n, total);
            std::memcpy(want.data() + static_cast<size_t>(j) * count * es, theirs.data() + static_cast<size_t>(me) * count * es, count * es);
          }
          char* recv = inPlace ? in.data() : out.data();
          weftResult_t r = weftAlltoAll(total ? in.data() : nullptr, total ? recv : nullptr, count, t, comm, nullptr);
          ck.expectSame(label("all-to-all", t, weftSum, count, inPlace), r, recv, want.data(), t, total);
        }
      }
    }
  }
  if (weftBarrier(comm, nullptr) != weftSuccess) ck.fail(std::string("barrier: ") + weftGetLastError(comm));
  weftCommDestroy(comm);
  return ck.failures ? 1 : 0;
}

class Collectives : public ::testing::TestWithParam<int> {};

TEST_P(Collectives, EveryCollectiveTypeOpSizeRootInPlace) {
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  RunOptions o;
  o.nranks = GetParam();
  o.timeoutSec = 300;
  auto reports = runRanks(o, collectivesBody);
  for (auto& r : reports) EXPECT_EQ(r.exitCode, 0) << describe(reports);
}

INSTANTIATE_TEST_SUITE_P(Ranks, Collectives, ::testing::Values(2, 3, 4));

TEST(SendRecv, GroupsCompleteInAnyOrderIncludingSelfAndRepeatedPeers) {
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  RunOptions o;
  o.nranks = 3;
  auto reports = runRanks(o, [](const RankContext& ctx) {
    weftComm_t comm;
    if (weftCommInitRank(&comm, ctx.nranks, ctx.ids[0], ctx.rank) != weftSuccess) return 10;
    const int n = ctx.nranks, me = ctx.rank, next = (me + 1) % n, prev = (me + n - 1) % n;
    int fails = 0;
    for (size_t count : {size_t{1}, size_t{1000}, size_t{300001}}) {
      std::vector<int32_t> a(count), b(count), selfOut(count), selfIn(count), a2(count / 2 + 1), b2(count / 2 + 1);
      for (size_t i = 0; i < count; ++i) a[i] = static_cast<int32_t>(me * 1000003 + i), selfOut[i] = static_cast<int32_t>(i * 7 + me);
      for (size_t i = 0; i < a2.size(); ++i) a2[i] = static_cast<int32_t>(i + 17 * me);
      weftGroupStart();
      // Even ranks post their receives first, odd ranks their sends: both must complete.
      if (me % 2 == 0) {
        weftRecv(b.data(), count, weftInt32, prev, comm, nullptr);
        weftRecv(b2.data(), b2.size(), weftInt32, prev, comm, nullptr);
      }
      weftSend(a.data(), count, weftInt32, next, comm, nullptr);
      weftSend(a2.data(), a2.size(), weftInt32, next, comm, nullptr);
      weftRecv(selfIn.data(), count, weftInt32, me, comm, nullptr);
      weftSend(selfOut.data(), count, weftInt32, me, comm, nullptr);
      if (me % 2 == 1) {
        weftRecv(b.data(), count, weftInt32, prev, comm, nullptr);
        weftRecv(b2.data(), b2.size(), weftInt32, prev, comm, nullptr);
      }
      weftResult_t r = weftGroupEnd();
      if (r != weftSuccess) {
        ctx.say(std::string("group: ") + weftGetLastError(comm));
        return 1;
      }
      for (size_t i = 0; i < count; ++i) {
        if (b[i] != static_cast<int32_t>(prev * 1000003 + i)) { ++fails; break; }
        if (selfIn[i] != selfOut[i]) { ++fails; break; }
      }
      for (size_t i = 0; i < b2.size(); ++i)
        if (b2[i] != static_cast<int32_t>(i + 17 * prev)) { ++fails; break; }
    }
    // In place, as nccl-tests' sendrecv does: the buffer sent is also the one received into, and
    // large enough that the receive would overtake the send without the engine's copy.
    {
      std::vector<int32_t> buf(3 << 20);
      for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<int32_t>(me * 7 + i);
      weftGroupStart();
      weftSend(buf.data(), buf.size(), weftInt32, next, comm, nullptr);
      weftRecv(buf.data(), buf.size(), weftInt32, prev, comm, nullptr);
      if (weftGroupEnd() != weftSuccess) ++fails;
      for (size_t i = 0; i < buf.size(); ++i)
        if (buf[i] != static_cast<int32_t>(prev * 7 + i)) {
          ctx.say("in-place send/recv wrong at " + std::to_string(i));
          ++fails;
          break;
        }
    }
    // Outside a group, a send and its receive on different ranks.
    std::vector<float> x(5000, static_cast<float>(me)), y(5000);
    weftResult_t r = me == 0 ? weftSend(x.data(), x.size(), weftFloat, 1, comm, nullptr)
                   : me == 1 ? weftRecv(y.data(), y.size(), weftFloat, 0, comm, nullptr) : weftSuccess;
    if (r != weftSuccess || (me == 1 && y[4999] != 0.0f)) ++fails;
    // A group mixing collectives (kept in order) with point to point.
    std::vector<float> s(100, 1.0f), t(100), g(100 * n);
    weftGroupStart();
    weftAllReduce(s.data(), t.data(), s.size(), weftFloat, weftSum, comm, nullptr);
    weftSend(x.data(), 10, weftFloat, next, comm, nullptr);
    weftAllGather(s.data(), g.data(), s.size(), weftFloat, comm, nullptr);
    weftRecv(y.data(), 10, weftFloat, prev, comm, nullptr);
    r = weftGroupEnd();
    if (r != weftSuccess || t[99] != static_cast<float>(n) || g[100 * n - 1] != 1.0f || y[9] != static_cast<float>(prev)) {
      ctx.say(std::string("mixed group: ") + weftGetLastError(comm));
      ++fails;
    }
    if (weftGroupEnd() != weftInvalidUsage) ++fails;
    weftCommDestroy(comm);
    if (fails) ctx.say("fails " + std::to_string(fails));
    return fails ? 1 : 0;
  });
  for (auto& r : reports) EXPECT_EQ(r.exitCode, 0) << describe(reports);
}

TEST(SendRecv, MismatchedCountIsReported) {
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  RunOptions o;
  o.nranks = 2;
  auto reports = runRanks(o, [](const RankContext& ctx) {
    weftComm_t comm;
    if (weftCommInitRank(&comm, 2, ctx.ids[0], ctx.rank) != weftSuccess) return 10;
    std::vector<float> a(100);
    weftResult_t r = ctx.rank == 0 ? weftSend(a.data(), 100, weftFloat, 1, comm, nullptr)
                                   : weftRecv(a.data(), 99, weftFloat, 0, comm, nullptr);
    ctx.report->result = r;
    ctx.say(weftGetLastError(comm));
    weftCommDestroy(comm);
    return 0;
  });
  EXPECT_EQ(reports[1].result, weftInvalidUsage) << describe(reports);
  EXPECT_NE(std::string(reports[1].message).find("mismatch"), std::string::npos) << describe(reports);
}

TEST(Split, ColorsKeysAndNoColor) {
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  RunOptions o;
  o.nranks = 5;
  auto reports = runRanks(o, [](const RankContext& ctx) {
    weftComm_t comm, sub = nullptr;
    if (weftCommInitRank(&comm, ctx.nranks, ctx.ids[0], ctx.rank) != weftSuccess) return 10;
    const int me = ctx.rank;
    int color = me == 4 ? WEFT_SPLIT_NOCOLOR : me % 2;
    if (weftCommSplit(comm, color, -me, &sub, nullptr) != weftSuccess) {
      ctx.say(std::string("split: ") + weftGetLastError(comm));
      return 1;
    }
    int32_t v = me, all = 0;
    // The parent still works alongside its children.
    if (weftAllReduce(&v, &all, 1, weftInt32, weftSum, comm, nullptr) != weftSuccess || all != 10) return 5;
    if (me == 4) {
      weftCommDestroy(comm);
      return sub == nullptr ? 0 : 2;
    }
    int count = 0, rank = -1;
    weftCommCount(sub, &count);
    weftCommUserRank(sub, &rank);
    // color 0: ranks {0, 2} ordered by key -rank: 2 then 0. color 1: {1, 3}: 3 then 1.
    int wantRank = (me == 2 || me == 3) ? 0 : 1;
    if (count != 2 || rank != wantRank) {
      ctx.say("size " + std::to_string(count) + " rank " + std::to_string(rank));
      return 3;
    }
    int32_t sum = 0;
    if (weftAllReduce(&v, &sum, 1, weftInt32, weftSum, sub, nullptr) != weftSuccess) return 4;
    int want = me % 2 == 0 ? 2 : 4;
    weftCommDestroy(sub);
    weftCommDestroy(comm);
    return sum == want ? 0 : 6;
  });
  for (auto& r : reports) EXPECT_EQ(r.exitCode, 0) << describe(reports);
}

TEST(Split, SeveralSubCommunicatorsUsedConcurrently) {
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  RunOptions o;
  o.nranks = 4;
  auto reports = runRanks(o, [](const RankContext& ctx) {
    weftComm_t comm, rows = nullptr, cols = nullptr;
    if (weftCommInitRank(&comm, ctx.nranks, ctx.ids[0], ctx.rank) != weftSuccess) return 10;
    const int me = ctx.rank;
    // A 2x2 grid: tensor-parallel rows and pipeline-parallel columns, as frameworks build them.
    if (weftCommSplit(comm, me / 2, me, &rows, nullptr) != weftSuccess) return 11;
    if (weftCommSplit(comm, me % 2, me, &cols, nullptr) != weftSuccess) return 12;
    std::atomic<int> bad{0};
    auto work = [&](weftComm_t c, int salt) {
      std::vector<int64_t> in(20000), out(20000);
      for (int it = 0; it < 20; ++it) {
        for (size_t i = 0; i < in.size(); ++i) in[i] = me * 1000 + salt + it + static_cast<int64_t>(i);
        if (weftAllReduce(in.data(), out.data(), in.size(), weftInt64, weftSum, c, nullptr) != weftSuccess) {
          ++bad;
          return;
        }
        int peer = salt == 0 ? (me ^ 1) : (me ^ 2);  // the other member of this row / column
        for (size_t i = 0; i < in.size(); ++i)
          if (out[i] != (me + peer) * 1000 + 2 * (salt + it + static_cast<int64_t>(i))) {
            ++bad;
            return;
          }
      }
    };
    std::thread a(work, rows, 0), b(work, cols, 1);
    a.join();
    b.join();
    weftCommDestroy(rows);
    weftCommDestroy(cols);
    weftCommDestroy(comm);
    return bad.load();
  });
  for (auto& r : reports) EXPECT_EQ(r.exitCode, 0) << describe(reports);
}

TEST(Config, NonBlockingInitOverridesAndBadConfigs) {
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  RunOptions o;
  o.nranks = 2;
  auto reports = runRanks(o, [](const RankContext& ctx) {
    weftConfig_t bad = WEFT_CONFIG_INITIALIZER;
    bad.magic = 0;
    weftComm_t comm = nullptr;
    if (weftCommInitRankConfig(&comm, 2, ctx.ids[0], ctx.rank, &bad) != weftInvalidArgument) return 1;
    weftConfig_t cfg = WEFT_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    cfg.timeoutMs = 800;
    cfg.commName = "test";
    weftResult_t r = weftCommInitRankConfig(&comm, 2, ctx.ids[0], ctx.rank, &cfg);
    if (r != weftInProgress && r != weftSuccess) return 2;
    weftResult_t async = weftInProgress;
    long long until = monoNs() + 20'000'000'000LL;
    while (async == weftInProgress && monoNs() < until) {
      weftCommGetAsyncError(comm, &async);
      usleep(1000);
    }
    if (async != weftSuccess) return 3;
    float a = 1, b = 0;
    if (weftAllReduce(&a, &b, 1, weftFloat, weftSum, comm, nullptr) != weftSuccess || b != 2) return 4;
    // The config's timeout (800 ms) applies instead of WEFT_TIMEOUT_MS.
    if (ctx.rank == 1) usleep(2500000);
    long long t0 = monoNs();
    r = weftAllReduce(&a, &b, 1, weftFloat, weftSum, comm, nullptr);
    ctx.report->result = r;
    ctx.report->timeNs = monoNs() - t0;
    weftCommDestroy(comm);
    return 0;
  });
  for (auto& r : reports) EXPECT_EQ(r.exitCode, 0) << describe(reports);
  EXPECT_EQ(reports[0].result, weftTimeout) << describe(reports);
  EXPECT_LT(reports[0].timeNs, 2'000'000'000LL) << describe(reports);
}

int freePort() {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t l = sizeof a;
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &l);
  close(s);
  return ntohs(a.sin_port);
}

TEST(InitFromEnv, WeftVariablesAndTorchrunStyle) {
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  for (int style = 0; style < 2; ++style) {
    int port = freePort();
    RunOptions o;
    o.nranks = 3;
    auto reports = runRanks(o, [&](const RankContext& ctx) {
      if (style == 0) {
        setenv("WEFT_RANK", std::to_string(ctx.rank).c_str(), 1);
        setenv("WEFT_NRANKS", "3", 1);
        setenv("WEFT_COMM_ID", ("127.0.0.1:" + std::to_string(port)).c_str(), 1);
      } else {
        setenv("RANK", std::to_string(ctx.rank).c_str(), 1);
        setenv("WORLD_SIZE", "3", 1);
        setenv("LOCAL_RANK", std::to_string(ctx.rank).c_str(), 1);
        setenv("MASTER_ADDR", "localhost", 1);
        setenv("MASTER_PORT", std::to_string(port - 1).c_str(), 1);
      }
      weftComm_t comm;
      if (weftCommInitFromEnv(&comm, nullptr) != weftSuccess) {
        ctx.say(weftGetLastError(nullptr));
        return 1;
      }
      int rank = -1;
      weftCommUserRank(comm, &rank);
      int32_t v = 1, s = 0;
      weftResult_t r = weftAllReduce(&v, &s, 1, weftInt32, weftSum, comm, nullptr);
      weftCommDestroy(comm);
      return (r == weftSuccess && s == 3 && rank == ctx.rank) ? 0 : 2;
    });
    for (auto& r : reports) EXPECT_EQ(r.exitCode, 0) << "style " << style << "\n" << describe(reports);
  }
}

TEST(InitFromEnv, MissingEnvironmentNamesWhatToSet) {
  RunOptions o;
  o.nranks = 1;
  auto reports = runRanks(o, [](const RankContext& ctx) {
    for (const char* v : {"WEFT_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID", "RANK", "WEFT_COMM_ID", "MASTER_ADDR",
                          "SLURM_STEP_NODELIST"})
      unsetenv(v);
    weftComm_t comm;
    if (weftCommInitFromEnv(&comm, nullptr) != weftInvalidArgument) return 1;
    if (!std::strstr(weftGetLastError(nullptr), "WEFT_RANK")) return 2;
    setenv("WEFT_RANK", "0", 1);
    setenv("WEFT_NRANKS", "1", 1);
    if (weftCommInitFromEnv(&comm, nullptr) != weftInvalidArgument) return 3;
    ctx.say(weftGetLastError(nullptr));
    return std::strstr(weftGetLastError(nullptr), "WEFT_COMM_ID") ? 0 : 4;
  });
  EXPECT_EQ(reports[0].exitCode, 0) << describe(reports);
}

TEST(InPlaceRules, OtherOverlapsAreInvalid) {
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  RunOptions o;
  o.nranks = 1;
  auto reports = runRanks(o, [](const RankContext& ctx) {
    weftComm_t comm;
    if (weftCommInitRank(&comm, 1, ctx.ids[0], 0) != weftSuccess) return 10;
    std::vector<float> buf(64);
    int fails = 0;
    if (weftAllGather(buf.data() + 1, buf.data(), 8, weftFloat, comm, nullptr) != weftInvalidArgument) ++fails;
    if (weftAllGather(buf.data(), buf.data(), 8, weftFloat, comm, nullptr) != weftSuccess) ++fails;  // rank 0: in place
    if (weftReduceScatter(buf.data(), buf.data() + 4, 8, weftFloat, weftSum, comm, nullptr) != weftInvalidArgument) ++fails;
    if (weftAlltoAll(buf.data(), buf.data() + 2, 8, weftFloat, comm, nullptr) != weftInvalidArgument) ++fails;
    if (weftBroadcast(buf.data(), buf.data(), 8, weftFloat, 1, comm, nullptr) != weftInvalidArgument) ++fails;  // root out of range
    if (weftSend(buf.data(), 8, weftFloat, -1, comm, nullptr) != weftInvalidArgument) ++fails;
    if (weftCommSplit(comm, -5, 0, &comm, nullptr) != weftInvalidArgument) ++fails;
    weftCommDestroy(comm);
    return fails;
  });
  EXPECT_EQ(reports[0].exitCode, 0) << describe(reports);
}

}  // namespace
}  // namespace weft::test
