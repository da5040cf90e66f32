// Host collectives on the plan's rings and trees, with ranks placed on fake nodes: every rank names
// its host (WEFT_HOST_ID), describes it from the DGX H100 fixture (WEFT_SYSFS_ROOT + WEFT_HWLOC_XML,
// two of its eight NICs through WEFT_IB_HCA) and drives one GPU (WEFT_DEVICE). The ranks are
// numbered across the nodes out of order, so rank order is neither ring order nor node order.
//
// Checked: all-reduce (ring, double binary tree; 1 and all channels), all-gather and broadcast give
// the reference results; the plan each rank logs (WEFT_DEBUG=INFO, PLAN) has every rank once per
// ring, each node entered once per ring, and every inter-node edge (ring and tree) between the ranks
// whose GPU sits next to the channel's NIC -- facts of the fixture, written here, not computed by
// lib/plan; and the connections the engine actually made (NET lines) are exactly the plan's
// neighbours on each channel.
#include <gtest/gtest.h>
#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "support/mp_harness.h"
#include "support/reference.h"

namespace weft::test {
namespace {

// The fixture: rail 0 = mlx5_0, next to GPU0 (0000:16:00.0); rail 1 = mlx5_6, next to GPU4
// (0000:96:00.0) (`weft-topo show` on tests/topo/fixtures/dgx_h100 prints the same).
struct Placement {
  const char* host;
  const char* device;  // WEFT_DEVICE: an index or a bus id
  int gpu;             // the GPU index it names
};
// Node A holds ranks 0 and 3, node B ranks 1 and 2.
const Placement kPlace[4] = {
    {"fake-node-a", "4", 4}, {"fake-node-b", "0000:16:00.0", 0}, {"fake-node-b", "4", 4}, {"fake-node-a", "0", 0}};
int railGpu(int rail) { return rail == 0 ? 0 : 4; }
const int kRails = 2;

std::string g_logDir;

int runComm(const RankContext& ctx, int which) {
  weftComm_t comm;
  if (weftCommInitRank(&comm, ctx.nranks, ctx.ids[static_cast<size_t>(which)], ctx.rank) != weftSuccess) {
    ctx.say("init failed");
    return 10;
  }
  const int n = ctx.nranks, me = ctx.rank;
  int fails = 0;
  auto check = [&](const std::string& what, weftResult_t r, const std::vector<char>& got, const std::vector<char>& want) {
    if (r != weftSuccess) {
      ctx.say(what + ": " + weftGetLastError(comm));
      ++fails;
    } else if (got != want) {
      ctx.say(what + ": wrong result");
      ++fails;
    }
  };
  // Small (one channel) and large (every channel: >= 4 x 64 KiB) all-reduces, odd counts.
  for (weftDataType_t t : {weftFloat, weftInt32})
    for (size_t count : {size_t{1}, size_t{1001}, size_t{300007}}) {
      const size_t bytes = count * typeBytes(t);
      std::vector<char> in(bytes), out(bytes), want(bytes);
      fillInput(t, weftSum, me, n, in.data(), count);
      fillExpected(t, weftSum, n, want.data(), count);
      check("all-reduce " + std::string(typeLabel(t)) + " count " + std::to_string(count),
            weftAllReduce(in.data(), out.data(), count, t, weftSum, comm, nullptr), out, want);
      check("in-place all-reduce", weftAllReduce(in.data(), in.data(), count, t, weftSum, comm, nullptr), in, want);
    }
  if (which == 0) {
    // All-gather and broadcast run on ring channel 0.
    const size_t count = 5003;
    std::vector<int32_t> mine(count), got(count * static_cast<size_t>(n)), want(count * static_cast<size_t>(n));
    for (size_t i = 0; i < count; ++i) mine[i] = static_cast<int32_t>(me * 100000 + i);
    for (int r = 0; r < n; ++r)
      for (size_t i = 0; i < count; ++i) want[static_cast<size_t>(r) * count + i] = static_cast<int32_t>(r * 100000 + i);
    weftResult_t r = weftAllGather(mine.data(), got.data(), count, weftInt32, comm, nullptr);
    if (r != weftSuccess || got != want) {
      ctx.say("all-gather wrong");
      ++fails;
    }
    std::vector<int32_t> b(count, me == 2 ? 7 : -1);
    r = weftBroadcast(b.data(), b.data(), count, weftInt32, 2, comm, nullptr);
    if (r != weftSuccess || b != std::vector<int32_t>(count, 7)) {
      ctx.say("broadcast wrong");
      ++fails;
    }
  }
  weftCommDestroy(comm);
  return fails;
}

// --- the logs ---------------------------------------------------------------------------------
struct RingLine { int rail, prev, next; };
struct TreeLine { int tree, rail, up; std::vector<int> down; };
struct CommView {
  std::map<int, int> node;                        // rank -> node index
  std::map<int, std::string> gpu;                 // rank -> bus id
  std::map<int, std::map<int, RingLine>> ring;    // rank -> channel -> line
  std::map<int, std::map<int, TreeLine>> tree;
  std::map<int, std::map<int, std::set<int>>> sendTo, recvFrom;  // rank -> channel -> peers
};

std::vector<std::string> logLines() {
  std::vector<std::string> lines;
  DIR* d = opendir(g_logDir.c_str());
  if (!d) return lines;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(g_logDir + "/" + e->d_name);
    for (std::string l; std::getline(f, l);) lines.push_back(l);
  }
  closedir(d);
  return lines;
}

// Each rank logs its plan at every init: the k-th "ring channel 0" line of a rank opens its k-th
// communicator; lines of one process stay in order in the files.
std::vector<CommView> parseLogs(const std::vector<std::string>& lines) {
  std::vector<CommView> views(2);
  std::map<int, int> section;  // rank -> current communicator
  const std::regex ringRe(R"(plan: rank (\d+) node (\d+) gpu (\S+): ring channel (\d+) rail (-?\d+): prev (\d+) next (\d+))");
  const std::regex treeRe(R"(plan: rank (\d+) node (\d+) gpu (\S+): tree channel (\d+) tree (\d) rail (-?\d+): up (-?\d+) down ([-\d ]+))");
  const std::regex netRe(R"(\[NET\] rank (\d+) (->|<-) rank (\d+) .*\(collectives (\d+) channel\))");
  for (const std::string& l : lines) {
    std::smatch m;
    if (std::regex_search(l, m, ringRe)) {
      int r = std::stoi(m[1]), c = std::stoi(m[4]);
      if (c == 0) section[r] = section.count(r) ? section[r] + 1 : 0;
      if (section[r] > 1) continue;
      CommView& v = views[static_cast<size_t>(section[r])];
      v.node[r] = std::stoi(m[2]);
      v.gpu[r] = m[3];
      v.ring[r][c] = {std::stoi(m[5]), std::stoi(m[6]), std::stoi(m[7])};
    } else if (std::regex_search(l, m, treeRe)) {
      int r = std::stoi(m[1]), c = std::stoi(m[4]);
      if (!section.count(r) || section[r] > 1) continue;
      TreeLine t{std::stoi(m[5]), std::stoi(m[6]), std::stoi(m[7]), {}};
      std::string down = m[8];
      if (down != "-")
        for (size_t p = 0; p < down.size();) {
          size_t q = down.find(' ', p);
          if (q == std::string::npos) q = down.size();
          if (q > p) t.down.push_back(std::stoi(down.substr(p, q - p)));
          p = q + 1;
        }
      views[static_cast<size_t>(section[r])].tree[r][c] = t;
    } else if (std::regex_search(l, m, netRe)) {
      int r = std::stoi(m[1]);
      if (!section.count(r) || section[r] > 1) continue;
      CommView& v = views[static_cast<size_t>(section[r])];
      (m[2] == "->" ? v.sendTo : v.recvFrom)[r][std::stoi(m[4])].insert(std::stoi(m[3]));
    }
  }
  return views;
}

const char* busOf(int gpu) { return gpu == 0 ? "0000:16:00.0" : "0000:96:00.0"; }

void checkPlan(const CommView& v, int n, bool treeComm) {
  ASSERT_EQ(static_cast<int>(v.ring.size()), n) << "every rank logs its plan";
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(v.gpu.at(r), busOf(kPlace[r].gpu)) << "rank " << r << " drives the GPU WEFT_DEVICE names";
    // Same host, same node; different hosts, different nodes.
    for (int s = 0; s < n; ++s)
      EXPECT_EQ(v.node.at(r) == v.node.at(s), std::string(kPlace[r].host) == kPlace[s].host) << r << " " << s;
  }
  auto sameNode = [&](int a, int b) { return v.node.at(a) == v.node.at(b); };
  auto onRail = [&](int rank, int rail) { return kPlace[rank].gpu == railGpu(rail); };
  // Rings: one per rail, every rank once, each node entered once, inter-node edges rail-local.
  ASSERT_EQ(v.ring.at(0).size(), static_cast<size_t>(kRails));
  for (int c = 0; c < kRails; ++c) {
    int r = 0, steps = 0, entries = 0;
    std::set<int> seen;
    do {
      const RingLine& l = v.ring.at(r).at(c);
      EXPECT_EQ(l.rail, c);
      EXPECT_EQ(v.ring.at(l.next).at(c).prev, r) << "ring " << c << " links agree";
      if (!sameNode(r, l.next)) {
        ++entries;
        EXPECT_TRUE(onRail(l.next, c)) << "ring " << c << ": " << r << " -> " << l.next
                                       << " enters the node at a rank whose GPU is not next to rail " << c;
      }
      seen.insert(r);
      r = l.next;
    } while (r != 0 && ++steps <= n);
    EXPECT_EQ(static_cast<int>(seen.size()), n) << "ring " << c << " holds every rank once";
    EXPECT_EQ(entries, 2) << "ring " << c << " enters each of the 2 nodes once";
  }
  // Trees: 2 per rail; inter-node edges join the rail's ranks at both ends; each tree spans all ranks.
  ASSERT_EQ(v.tree.at(0).size(), static_cast<size_t>(2 * kRails));
  for (int c = 0; c < 2 * kRails; ++c) {
    int roots = 0, reached = 0;
    for (int r = 0; r < n; ++r) {
      const TreeLine& l = v.tree.at(r).at(c);
      EXPECT_EQ(l.tree, c % 2);
      EXPECT_EQ(l.rail, c / 2);
      if (l.up < 0) ++roots;
      for (int d : l.down) {
        EXPECT_EQ(v.tree.at(d).at(c).up, r) << "tree channel " << c << " links agree";
        ++reached;
        if (!sameNode(r, d)) {
          EXPECT_TRUE(onRail(r, c / 2) && onRail(d, c / 2))
              << "tree channel " << c << ": edge " << r << " - " << d << " is not between rail " << c / 2 << "'s ranks";
        }
      }
    }
    EXPECT_EQ(roots, 1);
    EXPECT_EQ(reached, n - 1);
  }
  // The connections made are exactly the plan's neighbours (the all-reduces used every channel).
  for (int r = 0; r < n; ++r) {
    if (!treeComm) {
      for (int c = 0; c < kRails; ++c) {
        EXPECT_EQ(v.sendTo.at(r).at(c), std::set<int>{v.ring.at(r).at(c).next}) << "rank " << r << " channel " << c;
        EXPECT_EQ(v.recvFrom.at(r).at(c), std::set<int>{v.ring.at(r).at(c).prev}) << "rank " << r << " channel " << c;
      }
      EXPECT_EQ(v.sendTo.at(r).size(), static_cast<size_t>(kRails));
    } else {
      for (int c = 0; c < 2 * kRails; ++c) {
        const TreeLine& l = v.tree.at(r).at(c);
        std::set<int> peers(l.down.begin(), l.down.end());
        if (l.up >= 0) peers.insert(l.up);
        std::set<int> none;
        EXPECT_EQ(v.sendTo.at(r).count(c) ? v.sendTo.at(r).at(c) : none, peers) << "rank " << r << " channel " << c;
        EXPECT_EQ(v.recvFrom.at(r).count(c) ? v.recvFrom.at(r).at(c) : none, peers) << "rank " << r << " channel " << c;
      }
    }
  }
}

TEST(FakeNodes, CollectivesRunOnRailLocalRingsAndTrees) {
  char tmpl[] = "/tmp/weft_fake_nodes_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  g_logDir = tmpl;
  // Before anything of weft runs in this process: the log settings are read once and inherited.
  setenv("WEFT_DEBUG", "INFO", 1);
  setenv("WEFT_DEBUG_SUBSYS", "PLAN,NET", 1);
  setenv("WEFT_DEBUG_FILE", (g_logDir + "/weft.%p.log").c_str(), 1);
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  setenv("WEFT_SOCKET_NSOCKS", "1", 1);
  const std::string fx = WEFT_TOPO_FIXTURES "/dgx_h100";
  setenv("WEFT_SYSFS_ROOT", (fx + "/sys").c_str(), 1);
  setenv("WEFT_HWLOC_XML", (fx + "/topology.xml").c_str(), 1);
  setenv("WEFT_IB_HCA", "=mlx5_0,mlx5_6", 1);
  RunOptions o;
  o.nranks = 4;
  o.nids = 2;
  o.timeoutSec = 300;
  auto reports = runRanks(o, [](const RankContext& ctx) {
    setenv("WEFT_HOST_ID", kPlace[ctx.rank].host, 1);
    setenv("WEFT_DEVICE", kPlace[ctx.rank].device, 1);
    setenv("WEFT_ALGO", "ring", 1);
    int fails = runComm(ctx, 0);
    setenv("WEFT_ALGO", "tree", 1);
    fails += runComm(ctx, 1);
    return fails ? 1 : 0;
  });
  for (auto& r : reports) EXPECT_EQ(r.exitCode, 0) << describe(reports);
  std::vector<CommView> views = parseLogs(logLines());
  {
    SCOPED_TRACE("ring communicator");
    checkPlan(views[0], 4, false);
  }
  {
    SCOPED_TRACE("tree communicator");
    checkPlan(views[1], 4, true);
  }
  if (!HasFailure()) {
    std::string cmd = "rm -rf " + g_logDir;
    if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", g_logDir.c_str());
  } else {
    std::fprintf(stderr, "logs kept in %s\n", g_logDir.c_str());
  }
}

}  // namespace
}  // namespace weft::test
