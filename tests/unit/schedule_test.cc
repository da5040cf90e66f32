// Schedules checked by simulation, independent of the engine: every rank is a state machine over
// FIFO queues per (sender, receiver, channel); an element's value records which ranks contributed
// and from which input index, so a missing or doubled contribution, a wrong block or segment, or a
// deadlock shows up, for any rank count.
#include <gtest/gtest.h>

#include <deque>
#include <functional>
#include <map>
#include <tuple>
#include <vector>

#include "collectives/schedule.h"
#include "lib/plan/collective_plan.h"
#include "lib/plan/synthetic_fabric.h"

namespace weft::coll {
namespace {

struct Val {
  uint64_t ranks = 0;  // bit r: rank r contributed
  long long idx = -1;  // the input element index every contribution came from
  bool operator==(const Val& o) const { return ranks == o.ranks && idx == o.idx; }
};

struct Sim {
  int n = 0;
  size_t chunk = 1;
  std::vector<Schedule> sched;
  size_t inCount = 0, outCount = 0;
  std::vector<std::vector<Val>> output;
  std::map<std::pair<int, long long>, int> finalized;  // (rank, out index)

  // Messages a (sender, receiver, channel) FIFO holds; a send into a full one waits. The engine holds
  // at least 2 * WEFT_NSLOTS >= 4 (staging and receive slots); 2 is stricter.
  size_t capacity = 2;

  bool run(std::string* err) {
    std::map<std::tuple<int, int, int>, std::deque<std::vector<Val>>> q;
    struct Pos { size_t phase = 0, round = 0, step = 0; std::vector<size_t> stream; };
    std::vector<Pos> pos(static_cast<size_t>(n));
    output.assign(static_cast<size_t>(n), std::vector<Val>(outCount));
    // One primitive of rank r on [off, off+len) if its inputs are there and its outputs have room.
    auto tryStep = [&](int r, const Step& st, size_t off, size_t len, bool* ran) -> bool {
      *ran = false;
      for (int k = 0; k < st.nrecv; ++k)
        if (q[{st.recvPeers[k], r, st.channel}].empty()) return true;
      for (int k = 0; k < st.nsend; ++k)
        if (q[{r, st.sendPeers[k], st.channel}].size() >= capacity) return true;
      std::vector<Val> acc(len);
      if (st.useInput && st.inputIsOutput) {
        for (size_t i = 0; i < len; ++i) {
          if (st.outOffset + off + i >= outCount) { *err = "output read out of range"; return false; }
          acc[i] = output[static_cast<size_t>(r)][st.outOffset + off + i];
          if (acc[i].ranks == 0) { *err = "rank " + std::to_string(r) + " sends a result it has not computed"; return false; }
        }
      } else if (st.useInput) {
        for (size_t i = 0; i < len; ++i) {
          if (st.inOffset + off + i >= inCount) { *err = "input read out of range"; return false; }
          acc[i] = Val{uint64_t{1} << r, static_cast<long long>(st.inOffset + off + i)};
        }
      }
      for (int k = 0; k < st.nrecv; ++k) {
        auto& qq = q[{st.recvPeers[k], r, st.channel}];
        auto msg = qq.front();
        qq.pop_front();
        if (msg.size() != len) { *err = "chunk size mismatch"; return false; }
        for (size_t i = 0; i < len; ++i) {
          if (acc[i].ranks == 0) { acc[i] = msg[i]; continue; }
          if (acc[i].ranks & msg[i].ranks) { *err = "a contribution arrived twice at rank " + std::to_string(r); return false; }
          if (acc[i].idx != msg[i].idx) { *err = "elements of different indices reduced together"; return false; }
          acc[i].ranks |= msg[i].ranks;
        }
      }
      if (st.writeOutput) {
        for (size_t i = 0; i < len; ++i) {
          if (st.outOffset + off + i >= outCount) { *err = "output write out of range"; return false; }
          output[static_cast<size_t>(r)][st.outOffset + off + i] = acc[i];
          if (st.finalize) ++finalized[{r, static_cast<long long>(st.outOffset + off + i)}];
        }
      }
      for (int k = 0; k < st.nsend; ++k) q[{r, st.sendPeers[k], st.channel}].push_back(acc);
      *ran = true;
      return true;
    };
    for (int guard = 0; guard < 10000000; ++guard) {
      bool any = false, alldone = true;
      for (int r = 0; r < n; ++r) {
        const Schedule& s = sched[static_cast<size_t>(r)];
        Pos& p = pos[static_cast<size_t>(r)];
        for (;;) {
          if (p.phase >= s.phases.size()) break;
          const Phase& ph = s.phases[p.phase];
          if (ph.concurrent) {  // every step its own stream
            p.stream.resize(ph.steps.size());
            bool finished = true;
            for (size_t k = 0; k < ph.steps.size(); ++k) {
              const Step& st = ph.steps[k];
              for (bool ran = true; ran && p.stream[k] * chunk < st.count;) {
                size_t off = p.stream[k] * chunk;
                if (!tryStep(r, st, off, std::min(chunk, st.count - off), &ran)) return false;
                if (ran) { ++p.stream[k]; any = true; }
              }
              finished &= p.stream[k] * chunk >= st.count;
            }
            if (!finished) break;
            ++p.phase;
            p.round = p.step = 0;
            p.stream.clear();
            continue;
          }
          size_t rounds = 0;
          for (auto& st : ph.steps) rounds = std::max(rounds, (st.count + chunk - 1) / chunk);
          if (p.round >= rounds) { ++p.phase; p.round = p.step = 0; continue; }
          if (p.step >= ph.steps.size()) { ++p.round; p.step = 0; continue; }
          const Step& st = ph.steps[p.step];
          size_t off = p.round * chunk;
          if (off >= st.count) { ++p.step; continue; }
          bool ran = false;
          if (!tryStep(r, st, off, std::min(chunk, st.count - off), &ran)) return false;
          if (!ran) break;
          ++p.step;
          any = true;
        }
        alldone &= p.phase >= s.phases.size();
      }
      if (alldone) break;
      if (!any) { *err = "deadlock"; return false; }
    }
    for (auto& [k, v] : q) if (!v.empty()) { *err = "unconsumed messages"; return false; }
    return true;
  }
};

uint64_t all(int n) { return n == 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1; }

std::vector<int> someRing(int n) {  // a ring order that is not rank order
  std::vector<int> ring;
  for (int r = n - 1; r >= 0; --r) ring.push_back(r);
  return ring;
}

using Build = std::function<Schedule(int rank)>;
using Expect = std::function<Val(int rank, size_t outIndex)>;

void simulate(const char* what, int n, size_t chunk, size_t inCount, size_t outCount, const Build& build,
              const Expect& expect, bool reduction, int onlyRank = -1, size_t slots = 2) {
  Sim sim;
  sim.n = n;
  sim.chunk = chunk;
  sim.capacity = slots;
  sim.inCount = inCount;
  sim.outCount = outCount;
  for (int r = 0; r < n; ++r) sim.sched.push_back(build(r));
  std::string err;
  ASSERT_TRUE(sim.run(&err)) << what << ": " << err << " (n=" << n << " chunk=" << chunk << " slots=" << slots << ")";
  for (int r = 0; r < n; ++r) {
    if (onlyRank >= 0 && r != onlyRank) continue;
    for (size_t i = 0; i < outCount; ++i) {
      Val want = expect(r, i), got = sim.output[static_cast<size_t>(r)][i];
      ASSERT_TRUE(got == want) << what << " n=" << n << " chunk=" << chunk << " rank " << r << " out[" << i
                               << "]: ranks " << got.ranks << " idx " << got.idx << ", want ranks " << want.ranks
                               << " idx " << want.idx;
      if (reduction) {
        ASSERT_EQ((sim.finalized[{r, static_cast<long long>(i)}]), 1) << what << " finalize once";
      }
    }
  }
}

const size_t kChunks[] = {1, 3, 16, 4096};

TEST(Schedule, RingAndTreeAllReduce) {
  for (int n = 1; n <= 9; ++n)
    for (size_t count : {size_t{1}, size_t{2}, size_t{7}, size_t{1001}})
      for (size_t chunk : kChunks) {
        auto ring = someRing(n);
        auto want = [&](int, size_t i) { return Val{all(n), static_cast<long long>(i)}; };
        simulate("ring all-reduce", n, chunk, count, count, [&](int r) { return ringAllReduce(ring, r, count); }, want, false);
        simulate("tree all-reduce", n, chunk, count, count, [&](int r) { return treeAllReduce(ring, r, count); }, want, false);
      }
}

TEST(Schedule, OneShotAndTwoShotAllReduce) {
  for (int n = 1; n <= kMaxStepPeers + 1; ++n)
    for (size_t count : {size_t{1}, size_t{2}, size_t{7}, size_t{1001}})
      for (size_t chunk : kChunks) {
        auto want = [&](int, size_t i) { return Val{all(n), static_cast<long long>(i)}; };
        simulate("one-shot all-reduce", n, chunk, count, count, [&](int r) { return oneShotAllReduce(n, r, count); }, want, true);
        simulate("two-shot all-reduce", n, chunk, count, count, [&](int r) { return twoShotAllReduce(n, r, count); }, want, false);
      }
}

// Every reduction of the direct all-reduces folds its operands in rank order 0..n-1 (received
// messages ascending, the local input at its own rank's position), which is what makes one-shot's
// n independent reductions bitwise identical.
TEST(Schedule, DirectAllReducesReduceInRankOrder) {
  for (int n = 2; n <= kMaxStepPeers + 1; ++n)
    for (int r = 0; r < n; ++r)
      for (const Schedule& s : {oneShotAllReduce(n, r, 1000), twoShotAllReduce(n, r, 1000)})
        for (const Phase& ph : s.phases)
          for (const Step& st : ph.steps) {
            if (st.nrecv < 2 && !(st.nrecv == 1 && st.useInput)) continue;  // not a reduction
            std::vector<int> order;
            for (int k = 0; k <= st.nrecv; ++k) {
              if (st.useInput && k == st.inputPos) order.push_back(r);
              if (k < st.nrecv) order.push_back(st.recvPeers[k]);
            }
            ASSERT_EQ(order.size(), static_cast<size_t>(n)) << "n=" << n << " rank " << r;
            for (int k = 0; k < n; ++k) ASSERT_EQ(order[static_cast<size_t>(k)], k) << "n=" << n << " rank " << r;
          }
}

// The engine's all-reduce over the plan: slice k of the elements on ring / tree channel k, all
// channels merged into one schedule. Run on real plans (lib/plan) of host-rank and GPU fabrics,
// with two and three slots per FIFO (the engine's fewest is two) so that a head-of-line wait
// between the channels shows up as a deadlock.
plan::CollectivePlan hostPlan(int nodes, int ppn, int rails, bool gpus) {
  plan::FabricInput in;
  if (gpus) {
    EXPECT_TRUE(plan::syntheticFabric(nodes, ppn, rails, 400000, &in));
  } else {
    in.topologies.push_back(plan::syntheticNode("host", 0, rails, 400000));
    for (int r = 0; r < nodes * ppn; ++r)
      in.ranks.push_back({r, "node" + std::to_string(r % nodes), "", 0});  // nodes interleaved by rank
  }
  plan::CollectivePlan p;
  Status s = plan::buildCollectivePlan(in, {}, &p);
  EXPECT_TRUE(s) << s.message();
  EXPECT_TRUE(plan::checkCollectivePlan(p));
  return p;
}

Schedule slicedAllReduce(const plan::CollectivePlan& p, bool tree, int nch, int rank, size_t count) {
  std::vector<Schedule> parts;
  for (int k = 0; k < nch; ++k) {
    size_t off, len;
    sliceOf(count, nch, k, &off, &len);
    if (tree) {
      plan::RankLinks l = plan::treeLinks(p.graph, p.trees, k, rank);
      TreeNeighbors t;
      t.up = l.up;
      for (int d = 0; d < l.nDown; ++d) t.down.push_back(l.down[static_cast<size_t>(d)]);
      parts.push_back(treeAllReduce(t, len, off, collChannel(k)));
    } else {
      parts.push_back(ringAllReduce(p.rings.channels[static_cast<size_t>(k)].order, rank, len, off, collChannel(k)));
    }
  }
  return mergeSchedules(std::move(parts));
}

TEST(Schedule, PlanChannelsMergedUnderBoundedSlots) {
  struct Shape { int nodes, ppn, rails; bool gpus; };
  for (Shape sh : {Shape{1, 2, 0, false}, Shape{1, 4, 0, false}, Shape{1, 7, 0, false}, Shape{3, 3, 0, false},
                   Shape{5, 2, 2, false}, Shape{2, 4, 2, true}, Shape{3, 2, 2, true}, Shape{7, 1, 1, true},
                   Shape{4, 4, 4, true}})
    for (bool tree : {false, true}) {
      plan::CollectivePlan p = hostPlan(sh.nodes, sh.ppn, sh.rails, sh.gpus);
      const int n = p.graph.nRanks();
      const int most = static_cast<int>(tree ? p.trees.channels.size() : p.rings.channels.size());
      for (int nch = 1; nch <= most; ++nch)
        for (size_t count : {size_t{1}, size_t{5}, size_t{200}})
          for (size_t chunk : {size_t{1}, size_t{7}})
            for (size_t slots : {size_t{2}, size_t{3}}) {
              auto want = [&](int, size_t i) { return Val{all(n), static_cast<long long>(i)}; };
              std::string what = std::string(tree ? "tree" : "ring") + " over " + std::to_string(sh.nodes) + "x" +
                                 std::to_string(sh.ppn) + (sh.gpus ? " GPUs" : " host ranks") + ", " +
                                 std::to_string(nch) + " channels";
              simulate(what.c_str(), n, chunk, count, count,
                       [&](int r) { return slicedAllReduce(p, tree, nch, r, count); }, want, false, -1, slots);
            }
    }
}

TEST(Schedule, AllGatherAndReduceScatter) {
  for (int n = 1; n <= 9; ++n)
    for (size_t count : {size_t{1}, size_t{7}, size_t{100}})
      for (size_t chunk : kChunks) {
        auto ring = someRing(n);
        size_t total = count * static_cast<size_t>(n);
        simulate("all-gather", n, chunk, count, total, [&](int r) { return ringAllGather(ring, r, count); },
                 [&](int, size_t i) { return Val{uint64_t{1} << (i / count), static_cast<long long>(i % count)}; }, false);
        simulate("reduce-scatter", n, chunk, total, count, [&](int r) { return ringReduceScatter(ring, r, count); },
                 [&](int r, size_t i) { return Val{all(n), static_cast<long long>(static_cast<size_t>(r) * count + i)}; }, true);
      }
}

TEST(Schedule, BroadcastReduceAlltoAll) {
  for (int n = 1; n <= 9; ++n)
    for (size_t count : {size_t{1}, size_t{7}, size_t{100}})
      for (size_t chunk : kChunks)
        for (int root = 0; root < n; root += std::max(1, n / 3)) {
          auto ring = someRing(n);
          simulate("broadcast", n, chunk, count, count, [&](int r) { return chainBroadcast(ring, r, count, root); },
                   [&](int, size_t i) { return Val{uint64_t{1} << root, static_cast<long long>(i)}; }, false);
          simulate("reduce", n, chunk, count, count, [&](int r) { return chainReduce(ring, r, count, root); },
                   [&](int, size_t i) { return Val{all(n), static_cast<long long>(i)}; }, true, root);
          size_t total = count * static_cast<size_t>(n);
          simulate("all-to-all", n, chunk, total, total, [&](int r) { return pairwiseAlltoAll(n, r, count); },
                   [&](int r, size_t i) {
                     return Val{uint64_t{1} << (i / count), static_cast<long long>(static_cast<size_t>(r) * count + i % count)};
                   }, false);
        }
}

TEST(Schedule, PeersAreTheRingNeighbours) {
  std::vector<int> order = {3, 1, 0, 2};
  auto s = ringAllReduce(order, 0, 100);
  std::vector<PeerChannel> sendPeers, recvPeers;
  schedulePeers(s, &sendPeers, &recvPeers);
  ASSERT_EQ(sendPeers.size(), 1u);
  EXPECT_EQ(sendPeers[0].peer, 2);
  ASSERT_EQ(recvPeers.size(), 1u);
  EXPECT_EQ(recvPeers[0].peer, 1);
  auto p = p2pSend(3, 10);
  sendPeers.clear();
  recvPeers.clear();
  schedulePeers(p, &sendPeers, &recvPeers);
  ASSERT_EQ(sendPeers.size(), 1u);
  EXPECT_EQ(sendPeers[0].channel, kP2pChannel);
}

}  // namespace
}  // namespace weft::coll
