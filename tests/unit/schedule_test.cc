// Schedules checked by simulation, independent of the engine: every rank is a state machine over
// FIFO queues; element values are sets of contributing ranks, so a missing or doubled contribution,
// a wrong segment or a deadlock shows up for any rank count.
#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <vector>

#include "collectives/schedule.h"

namespace weft::coll {
namespace {

using Set = uint64_t;  // bit r: rank r contributed

struct Sim {
  int n;
  size_t count, chunk;
  std::vector<Schedule> sched;
  std::map<std::pair<int, int>, std::deque<std::vector<Set>>> q;  // (from, to) -> messages
  std::vector<std::vector<Set>> output;
  std::vector<int> finalized;  // per element: how many ranks finalized it (avg divide applied)

  bool run(std::string* err) {
    struct Pos { size_t phase = 0, round = 0, step = 0; };
    std::vector<Pos> pos(static_cast<size_t>(n));
    output.assign(static_cast<size_t>(n), std::vector<Set>(count, 0));
    finalized.assign(count, 0);
    for (int guard = 0; guard < 1000000; ++guard) {
      bool any = false, alldone = true;
      for (int r = 0; r < n; ++r) {
        const Schedule& s = sched[static_cast<size_t>(r)];
        Pos& p = pos[static_cast<size_t>(r)];
        for (;;) {
          if (p.phase >= s.phases.size()) break;
          const Phase& ph = s.phases[p.phase];
          size_t rounds = 0;
          for (auto& st : ph.steps) rounds = std::max(rounds, (st.count + chunk - 1) / chunk);
          if (p.round >= rounds) { ++p.phase; p.round = p.step = 0; continue; }
          if (p.step >= ph.steps.size()) { ++p.round; p.step = 0; continue; }
          const Step& st = ph.steps[p.step];
          size_t off = p.round * chunk;
          if (off >= st.count) { ++p.step; continue; }
          size_t len = std::min(chunk, st.count - off);
          bool ready = true;
          for (int k = 0; k < st.nrecv; ++k) ready &= !q[{st.recvPeers[k], r}].empty();
          if (!ready) break;
          std::vector<Set> acc(len, 0);
          if (st.useInput) for (auto& a : acc) a = Set{1} << r;
          for (int k = 0; k < st.nrecv; ++k) {
            auto msg = q[{st.recvPeers[k], r}].front();
            q[{st.recvPeers[k], r}].pop_front();
            if (msg.size() != len) { *err = "chunk size mismatch"; return false; }
            for (size_t i = 0; i < len; ++i) {
              if (acc[i] & msg[i]) { *err = "a contribution arrived twice at rank " + std::to_string(r); return false; }
              acc[i] |= msg[i];
            }
          }
          if (st.finalize) for (size_t i = 0; i < len; ++i) ++finalized[st.offset + off + i];
          if (st.writeOutput) for (size_t i = 0; i < len; ++i) output[static_cast<size_t>(r)][st.offset + off + i] = acc[i];
          for (int k = 0; k < st.nsend; ++k) q[{r, st.sendPeers[k]}].push_back(acc);
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

void check(bool tree, int n, size_t count, size_t chunk) {
  Sim sim{n, count, chunk, {}, {}, {}, {}};
  std::vector<int> order;
  for (int r = 0; r < n; ++r) order.push_back(r);
  for (int r = 0; r < n; ++r) sim.sched.push_back(tree ? treeAllReduce(order, r, count) : ringAllReduce(order, r, count));
  std::string err;
  ASSERT_TRUE(sim.run(&err)) << err << " (n=" << n << " count=" << count << " chunk=" << chunk << ")";
  Set all = n == 64 ? ~Set{0} : (Set{1} << n) - 1;
  for (int r = 0; r < n; ++r)
    for (size_t i = 0; i < count; ++i)
      ASSERT_EQ(sim.output[static_cast<size_t>(r)][i], all) << "rank " << r << " element " << i << " n=" << n;
  for (size_t i = 0; i < count; ++i) ASSERT_EQ(sim.finalized[i], 1) << "element " << i << " must be finalized exactly once";
}

TEST(Schedule, RingAllReduceEveryRankCount) {
  for (int n = 1; n <= 9; ++n)
    for (size_t count : {size_t{1}, size_t{2}, size_t{7}, size_t{64}, size_t{1001}})
      for (size_t chunk : {size_t{1}, size_t{3}, size_t{16}, size_t{4096}}) check(false, n, count, chunk);
}

TEST(Schedule, TreeAllReduceEveryRankCount) {
  for (int n = 1; n <= 17; ++n)
    for (size_t count : {size_t{1}, size_t{7}, size_t{100}})
      for (size_t chunk : {size_t{1}, size_t{8}, size_t{4096}}) check(true, n, count, chunk);
}

TEST(Schedule, PeersAreTheRingNeighbours) {
  std::vector<int> order = {3, 1, 0, 2};
  auto s = ringAllReduce(order, 0, 100);
  std::vector<int> sendPeers, recvPeers;
  schedulePeers(s, &sendPeers, &recvPeers);
  EXPECT_EQ(sendPeers, std::vector<int>{2});
  EXPECT_EQ(recvPeers, std::vector<int>{1});
}

}  // namespace
}  // namespace weft::coll
