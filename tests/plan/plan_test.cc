// The planner: system graph, rail-optimised rings, shifted double binary trees, checker, cost model.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <numeric>
#include <random>
#include <set>

#include "lib/plan/collective_plan.h"
#include "lib/plan/cost_model.h"
#include "lib/plan/synthetic_fabric.h"
#include "lib/topo/topo.h"

namespace weft::plan {
namespace {

topo::NodeTopology fixtureNode(const std::string& name) {
  topo::DiscoveryOptions o;
  o.sysfsRoot = std::string(WEFT_TOPO_FIXTURES) + "/" + name + "/sys";
  o.hwlocXml = std::string(WEFT_TOPO_FIXTURES) + "/" + name + "/topology.xml";
  o.hostName = name;
  topo::NodeTopology t;
  Status s = topo::discoverNode(o, &t);
  EXPECT_TRUE(s) << s.message();
  return t;
}

const topo::NodeTopology& dgx() {
  static const topo::NodeTopology t = fixtureNode("dgx_h100");
  return t;
}
const topo::NodeTopology& oci() {
  static const topo::NodeTopology t = fixtureNode("oci_h100");
  return t;
}

CollectivePlan planOf(const FabricInput& in) {
  CollectivePlan p;
  Status s = buildCollectivePlan(in, {}, &p);
  EXPECT_TRUE(s) << s.message();
  return p;
}

void expectValid(const FabricInput& in, const std::string& what) {
  CollectivePlan p = planOf(in);
  Status s = checkCollectivePlan(p);
  EXPECT_TRUE(s) << what << ": " << s.message();
}

std::set<int> ringRails(const CollectivePlan& p) {
  std::set<int> r;
  for (const RingChannel& c : p.rings.channels) r.insert(c.rail);
  return r;
}

TEST(PlanFixtures, DgxAndOciFabricsPassTheChecker) {
  ASSERT_EQ(dgx().gpus.size(), 8u);
  ASSERT_EQ(dgx().rails.size(), 8u);
  ASSERT_EQ(oci().rails.size(), 16u);
  for (const topo::NodeTopology* node : {&dgx(), &oci()}) {
    for (int nodes : {1, 2, 3, 7, 8, 64}) {
      FabricInput in;
      ASSERT_TRUE(replicateFabric(*node, nodes, &in));
      expectValid(in, node->hostName + " x" + std::to_string(nodes));
    }
  }
}

TEST(PlanFixtures, OciRingsUseAllSixteenRails) {
  FabricInput in;
  ASSERT_TRUE(replicateFabric(oci(), 4, &in));
  CollectivePlan p = planOf(in);
  EXPECT_EQ(p.graph.nRails(), 16);
  EXPECT_EQ(p.rings.channels.size(), 16u);
  EXPECT_EQ(ringRails(p).size(), 16u);
  // Two rails per GPU: rails 2k and 2k+1 enter at the same GPU, and every GPU is an entry.
  std::set<int> entries;
  for (int r = 0; r < 16; ++r) entries.insert(p.graph.railEntry(0, r));
  EXPECT_EQ(entries.size(), 8u);
}

TEST(PlanFixtures, RingsEnterAtTheRailsGpuAndFollowLocality) {
  FabricInput in;
  ASSERT_TRUE(replicateFabric(dgx(), 2, &in));
  CollectivePlan p = planOf(in);
  for (const RingChannel& c : p.rings.channels) {
    // The second node's block starts at the GPU attached to the channel's rail.
    int entry = c.order[8];
    int gpu = p.graph.gpuOf(entry);
    const topo::NicPort& port = dgx().railPort(c.rail);
    EXPECT_EQ(gpu, port.closestGpu) << "rail " << c.rail;
    // Inside the node the ranks follow locality order, rotated.
    for (int i = 0; i + 1 < 8; ++i)
      EXPECT_EQ((p.graph.localIndex(c.order[static_cast<size_t>(8 + i)]) + 1) % 8,
                p.graph.localIndex(c.order[static_cast<size_t>(8 + i + 1)]));
  }
}

TEST(PlanSynthetic, ManyShapesPassTheChecker) {
  for (int gpus : {1, 2, 4, 8})
    for (int rails : {0, 1, 2, 8, 16})
      for (int nodes : {1, 2, 3, 5, 7, 8, 13, 64, 100}) {
        FabricInput in;
        ASSERT_TRUE(syntheticFabric(nodes, gpus, rails, 400000, &in));
        expectValid(in, std::to_string(nodes) + "x" + std::to_string(gpus) + "x" + std::to_string(rails));
      }
}

TEST(PlanSynthetic, SixtyFiveThousandRanksPassTheChecker) {
  FabricInput in;
  ASSERT_TRUE(syntheticFabric(8192, 8, 8, 400000, &in));
  CollectivePlan p = planOf(in);
  EXPECT_EQ(p.graph.nRanks(), 65536);
  CheckSummary sum;
  Status s = checkCollectivePlan(p, &sum);
  EXPECT_TRUE(s) << s.message();
  EXPECT_EQ(sum.ringInterNodeEdges, 8 * 8192);
  // 1 GPU per node, odd node count.
  ASSERT_TRUE(syntheticFabric(65535, 1, 1, 400000, &in));
  expectValid(in, "65535 x 1 GPU");
}

// Every node count from 1 to 300 (odd and even), 1 GPU per node and 8 per node, with and without
// rails, plus host ranks (binary trees inside nodes): the checker's rules hold and no rank has more
// than three tree children (what a schedule step can serve).
TEST(PlanSynthetic, EveryNodeCountUpTo300) {
  for (int nodes = 1; nodes <= 300; ++nodes)
    for (int gpus : {1, 8})
      for (int rails : {0, 1, 4}) {
        if (gpus == 8 && nodes % 7 != 0 && nodes > 20) continue;  // keep the sweep quick
        FabricInput in;
        ASSERT_TRUE(syntheticFabric(nodes, gpus, rails, 400000, &in));
        CollectivePlan p = planOf(in);
        Status s = checkCollectivePlan(p);
        ASSERT_TRUE(s) << nodes << "x" << gpus << "x" << rails << ": " << s.message();
        for (size_t c = 0; c < p.trees.channels.size(); ++c)
          for (int r = 0; r < p.graph.nRanks(); ++r) ASSERT_LE(treeLinks(p.graph, p.trees, static_cast<int>(c), r).nDown, 3);
      }
  for (int nodes : {1, 2, 3, 5, 16, 33})
    for (int ppn : {1, 2, 3, 4, 7, 8})
      for (int rails : {0, 2}) {
        FabricInput in;
        in.topologies.push_back(syntheticNode("host", 0, rails, 400000));
        for (int r = 0; r < nodes * ppn; ++r) in.ranks.push_back({r, "node" + std::to_string(r / ppn), "", 0});
        CollectivePlan p = planOf(in);
        EXPECT_EQ(p.trees.intra, IntraShape::kBinary);
        Status s = checkCollectivePlan(p);
        ASSERT_TRUE(s) << nodes << "x" << ppn << " host ranks, " << rails << " rails: " << s.message();
        for (size_t c = 0; c < p.trees.channels.size(); ++c)
          for (int r = 0; r < p.graph.nRanks(); ++r) ASSERT_LE(treeLinks(p.graph, p.trees, static_cast<int>(c), r).nDown, 3);
      }
  EXPECT_EQ(intraDepth(IntraShape::kChain, 8), 8);
  EXPECT_EQ(intraDepth(IntraShape::kBinary, 8), 4);  // head, 1, 2-3, 4-7
  EXPECT_EQ(intraDepth(IntraShape::kBinary, 2), 2);
  EXPECT_EQ(intraDepth(IntraShape::kBinary, 1), 1);
  EXPECT_EQ(intraDepth(IntraShape::kBinary, 8, true), 4);  // head, 1-2, 3-6, 7
  EXPECT_EQ(intraDepth(IntraShape::kBinary, 4, true), 3);
  EXPECT_EQ(intraDepth(IntraShape::kBinary, 3, true), 2);
}

TEST(PlanTrees, ShiftedConstructionNoNodeInteriorInBoth) {
  for (int n = 1; n <= 1100; ++n) {
    NodeTree t0 = buildNodeTree(n, 0), t1 = buildNodeTree(n, 1);
    int interiorBoth = 0, leafBoth = 0;
    for (int v = 0; v < n; ++v) {
      interiorBoth += t0.interior(v) && t1.interior(v);
      leafBoth += !t0.interior(v) && !t1.interior(v);
    }
    EXPECT_EQ(interiorBoth, 0) << n;
    // Only node n-1 may be a leaf in both (when n is odd), besides the 1- and 2-node cases.
    if (n > 2) {
      EXPECT_LE(leafBoth, 1) << n;
      EXPECT_NE(t0.root, t1.root) << n;
    }
    EXPECT_EQ(t0.depth, static_cast<int>(std::bit_width(static_cast<unsigned>(n))));
  }
}

TEST(PlanNames, NodesWithDifferentNicNamesLineUpByRail) {
  // A second node whose ports are named in another order and enumerated backwards.
  topo::NodeTopology other = dgx();
  other.hostName = "renamed";
  std::reverse(other.nics.begin(), other.nics.end());
  for (auto& row : other.distance) std::reverse(row.begin(), row.end());
  for (size_t i = 0; i < other.nics.size(); ++i) other.nics[i].device = "roce_p" + std::to_string(i);
  topo::assignRails(&other);
  ASSERT_EQ(other.rails.size(), dgx().rails.size());
  FabricInput in;
  in.topologies = {dgx(), other};
  int rank = 0;
  for (int n = 0; n < 4; ++n)
    for (const topo::Gpu& g : dgx().gpus)
      in.ranks.push_back({rank++, "host" + std::to_string(n), g.pciBusId, n % 2});
  CollectivePlan p = planOf(in);
  Status s = checkCollectivePlan(p);
  EXPECT_TRUE(s) << s.message();
  for (int r = 0; r < p.graph.nRails(); ++r) {
    const int e0 = p.graph.localRanks(0)[p.graph.railEntry(0, r)];
    const int e1 = p.graph.localRanks(1)[p.graph.railEntry(1, r)];
    EXPECT_EQ(in.ranks[static_cast<size_t>(e0)].gpuBusId, in.ranks[static_cast<size_t>(e1)].gpuBusId) << "rail " << r;
    EXPECT_EQ(dgx().railPort(r).pciBusId, other.railPort(r).pciBusId) << "rail " << r;
    EXPECT_NE(dgx().railPort(r).device, other.railPort(r).device);
  }
}

TEST(PlanChecker, CatchesBrokenRings) {
  FabricInput in;
  ASSERT_TRUE(replicateFabric(dgx(), 3, &in));
  const CollectivePlan good = planOf(in);
  ASSERT_TRUE(checkCollectivePlan(good));
  auto expectFail = [&](const CollectivePlan& p, const std::string& needle) {
    Status s = checkRings(p.graph, p.rings);
    EXPECT_FALSE(s) << needle;
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  };
  {
    CollectivePlan p = good;  // a rank twice
    p.rings.channels[1].order[5] = p.rings.channels[1].order[6];
    expectFail(p, "twice");
  }
  {
    CollectivePlan p = good;  // ranks of two nodes interleaved: entered off the rail
    std::swap(p.rings.channels[2].order[3], p.rings.channels[2].order[11]);
    expectFail(p, "is entered at rank");
  }
  {
    // Without rails only the contiguity rule can catch the interleaving.
    FabricInput sock;
    ASSERT_TRUE(syntheticFabric(3, 4, 0, 0, &sock));
    CollectivePlan p = planOf(sock);
    ASSERT_TRUE(checkRings(p.graph, p.rings));
    std::swap(p.rings.channels[0].order[1], p.rings.channels[0].order[5]);
    expectFail(p, "crosses between nodes 7 times instead of 3");
  }
  {
    CollectivePlan p = good;  // one node's port on another rail
    p.rings.channels[0].nodeRail[1] = 3;
    expectFail(p, "crosses rails");
  }
  {
    CollectivePlan p = good;  // node entered at a GPU that is not the rail's
    std::rotate(p.rings.channels[4].order.begin() + 8, p.rings.channels[4].order.begin() + 9,
                p.rings.channels[4].order.begin() + 16);
    expectFail(p, "not the rank attached to rail");
  }
  {
    CollectivePlan p = good;  // all channels on rail 0
    for (RingChannel& c : p.rings.channels) {
      c.rail = 0;
      std::fill(c.nodeRail.begin(), c.nodeRail.end(), 0);
    }
    Status s = buildRings(p.graph, 1, &p.rings);  // rebuild channel 0 only, then copy it everywhere
    ASSERT_TRUE(s);
    p.rings.channels.resize(8, p.rings.channels[0]);
    expectFail(p, "uses rail 1");
  }
}

TEST(PlanChecker, CatchesBrokenTrees) {
  FabricInput in;
  ASSERT_TRUE(replicateFabric(dgx(), 7, &in));
  const CollectivePlan good = planOf(in);
  ASSERT_TRUE(checkCollectivePlan(good));
  auto expectFail = [&](const CollectivePlan& p, const std::string& needle) {
    Status s = checkTrees(p.graph, p.trees);
    EXPECT_FALSE(s) << needle;
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  };
  {
    CollectivePlan p = good;  // tree 1 = tree 0: interior nodes interior in both
    p.trees.trees[1] = p.trees.trees[0];
    expectFail(p, "interior in both trees");
  }
  {
    CollectivePlan p = good;  // a leaf cut off from its parent
    NodeTree& t = p.trees.trees[0];
    int leaf = 0;  // label 1, a leaf
    int par = t.parent[0];
    for (int& c : t.children[static_cast<size_t>(par)])
      if (c == leaf) c = -1;
    if (t.children[static_cast<size_t>(par)][0] < 0) std::swap(t.children[static_cast<size_t>(par)][0], t.children[static_cast<size_t>(par)][1]);
    expectFail(p, "does not span all nodes");
  }
  {
    CollectivePlan p = good;  // a child listed by a node that is not its parent
    NodeTree& t = p.trees.trees[1];
    const int leaf = 3;
    ASSERT_FALSE(t.interior(leaf));
    t.children[static_cast<size_t>(leaf)][0] = t.root;
    expectFail(p, "whose parent is not");
  }
  {
    CollectivePlan p = good;  // one node's head on another rail
    p.trees.channels[2].nodeRail[4] = static_cast<int16_t>((p.trees.channels[2].rail + 1) % 8);
    expectFail(p, "crosses rails");
  }
}

TEST(PlanDeterminism, SameInputsInAnotherOrderGiveTheSamePlan) {
  FabricInput in;
  // Two different node descriptions, so topology indices matter.
  in.topologies = {dgx(), oci()};
  int rank = 0;
  for (int n = 0; n < 9; ++n) {
    const topo::NodeTopology& t = in.topologies[static_cast<size_t>(n % 2)];
    for (const topo::Gpu& g : t.gpus) in.ranks.push_back({rank++, "h" + std::to_string(n), g.pciBusId, n % 2});
  }
  CollectivePlan a = planOf(in);
  ASSERT_TRUE(checkCollectivePlan(a));
  FabricInput shuffled = in;
  std::mt19937 rng(7);
  std::shuffle(shuffled.ranks.begin(), shuffled.ranks.end(), rng);
  std::swap(shuffled.topologies[0], shuffled.topologies[1]);
  for (RankDescription& d : shuffled.ranks) d.topology = 1 - d.topology;
  CollectivePlan b = planOf(shuffled);
  ASSERT_EQ(a.rings.channels.size(), b.rings.channels.size());
  for (size_t c = 0; c < a.rings.channels.size(); ++c) {
    EXPECT_EQ(a.rings.channels[c].order, b.rings.channels[c].order);
    EXPECT_EQ(a.rings.channels[c].rail, b.rings.channels[c].rail);
  }
  for (int t = 0; t < 2; ++t) {
    EXPECT_EQ(a.trees.trees[static_cast<size_t>(t)].parent, b.trees.trees[static_cast<size_t>(t)].parent);
  }
  for (int c = 0; c < static_cast<int>(a.trees.channels.size()); ++c)
    for (int r = 0; r < a.graph.nRanks(); ++r) {
      RankLinks la = treeLinks(a.graph, a.trees, c, r), lb = treeLinks(b.graph, b.trees, c, r);
      EXPECT_EQ(la.up, lb.up);
      EXPECT_EQ(la.down, lb.down);
    }
  CostModel ma(a.graph, a.rings, a.trees), mb(b.graph, b.rings, b.trees);
  TunerConfig cfg;
  for (size_t bytes = 8; bytes <= (size_t{1} << 30); bytes *= 2) {
    EXPECT_EQ(ma.predict(Algo::kRing, CollType::kAllReduce, bytes).timeUs,
              mb.predict(Algo::kRing, CollType::kAllReduce, bytes).timeUs);
    Plan pa = choosePlanFromModel(cfg, ma, CollType::kAllReduce, bytes);
    Plan pb = choosePlanFromModel(cfg, mb, CollType::kAllReduce, bytes);
    EXPECT_EQ(pa.algo, pb.algo);
    EXPECT_EQ(pa.nchannels, pb.nchannels);
  }
}

TEST(PlanCost, ChoiceFlipsFromTreeToRingAsSizeGrows) {
  for (int nodes : {2, 8, 1024}) {
    FabricInput in;
    ASSERT_TRUE(syntheticFabric(nodes, 8, 8, 400000, &in));
    CollectivePlan p = planOf(in);
    CostModel m(p.graph, p.rings, p.trees);
    EXPECT_EQ(m.choose(CollType::kAllReduce, 8), Algo::kTree) << nodes;
    if (nodes == 1024) {
      // 8192 ranks: the ring's 2(n-1) hops (~17 ms) outweigh even 1 GiB; the tree stays near the
      // NIC limit (8 x 46.5 GB/s x tree efficiency).
      EXPECT_EQ(m.choose(CollType::kAllReduce, size_t{1} << 30), Algo::kTree);
      EXPECT_GT(m.predict(Algo::kTree, CollType::kAllReduce, size_t{1} << 30).busbwGBps, 250.0);
      continue;
    }
    EXPECT_EQ(m.choose(CollType::kAllReduce, size_t{1} << 30), Algo::kRing) << nodes;
    // One flip, from tree to ring.
    int flips = 0;
    Algo last = Algo::kTree;
    for (size_t b = 8; b <= (size_t{1} << 30); b *= 2) {
      Algo a = m.choose(CollType::kAllReduce, b);
      if (a != last) ++flips;
      last = a;
    }
    EXPECT_EQ(flips, 1) << nodes;
    // Large all-reduce on 8 x 400G rails: busbw at the NIC limit, 8 x 46.5 GB/s.
    AlgoCost big = m.predict(Algo::kRing, CollType::kAllReduce, size_t{1} << 30);
    EXPECT_GT(big.busbwGBps, 300.0);
    EXPECT_LT(big.busbwGBps, 8 * 50.0);
  }
  // WEFT_ALGO still overrides.
  FabricInput in;
  ASSERT_TRUE(syntheticFabric(8, 8, 8, 400000, &in));
  CollectivePlan p = planOf(in);
  CostModel m(p.graph, p.rings, p.trees);
  TunerConfig forced;
  forced.forced = true;
  forced.forcedAlgo = Algo::kRing;
  EXPECT_EQ(choosePlanFromModel(forced, m, CollType::kAllReduce, 8).algo, Algo::kRing);
  // Channels by size: one for small operations, all of them (16 tree, 8 ring) from 1 MiB.
  EXPECT_EQ(choosePlanFromModel(TunerConfig{}, m, CollType::kAllReduce, 8).nchannels, 1);
  EXPECT_EQ(choosePlanFromModel(TunerConfig{}, m, CollType::kAllReduce, size_t{1} << 20).nchannels,
            choosePlanFromModel(TunerConfig{}, m, CollType::kAllReduce, size_t{1} << 20).algo == Algo::kTree ? 16 : 8);
  EXPECT_EQ(choosePlanFromModel(TunerConfig{}, m, CollType::kAllReduce, size_t{1} << 30).nchannels, 8);
  // Only the ring exists for the other collectives, whatever WEFT_ALGO says.
  TunerConfig tree;
  tree.forced = true;
  tree.forcedAlgo = Algo::kTree;
  EXPECT_EQ(choosePlanFromModel(tree, m, CollType::kAllGather, 1 << 20).algo, Algo::kRing);
  EXPECT_EQ(choosePlanFromModel(tree, m, CollType::kAllReduce, 1 << 30).algo, Algo::kTree);
}

// Host ranks (no GPU) on one host, as the engine sees a single machine: 2 ranks tie (the ring
// wins), 3+ ranks take the tree for small sizes (a heap from the head: log-depth) and the ring for
// large ones, with the calibrated socket constants; the crossover for 4 ranks lies between 32 KiB
// and 128 KiB, where it was measured.
TEST(PlanCost, HostRanksOnOneNode) {
  for (int n : {2, 3, 4, 8}) {
    FabricInput in;
    in.topologies.push_back(syntheticNode("host", 0, 0, 0));
    for (int r = 0; r < n; ++r) in.ranks.push_back({r, "host", "", 0});
    CollectivePlan p = planOf(in);
    ASSERT_TRUE(checkCollectivePlan(p));
    EXPECT_EQ(p.trees.intra, IntraShape::kBinary);
    EXPECT_EQ(p.rings.channels.size(), 1u);
    EXPECT_EQ(p.rings.channels[0].order, [&] { std::vector<int> v(static_cast<size_t>(n)); std::iota(v.begin(), v.end(), 0); return v; }());
    CostModel m(p.graph, p.rings, p.trees);
    EXPECT_EQ(m.choose(CollType::kAllReduce, size_t{64} << 20), Algo::kRing) << n;
    EXPECT_EQ(m.choose(CollType::kAllReduce, 8), n == 2 ? Algo::kRing : Algo::kTree) << n;
    if (n == 4) {
      EXPECT_EQ(m.choose(CollType::kAllReduce, 32 << 10), Algo::kTree);
      EXPECT_EQ(m.choose(CollType::kAllReduce, 128 << 10), Algo::kRing);
    }
    // The two trees of one node are rooted at different ranks.
    EXPECT_NE(treeLinks(p.graph, p.trees, 0, 0).up, treeLinks(p.graph, p.trees, 1, 0).up);
  }
}

TEST(PlanCost, LinkSpeedsComeFromTheNodes) {
  FabricInput in;
  ASSERT_TRUE(replicateFabric(dgx(), 2, &in));
  CollectivePlan p = planOf(in);
  CostModel m(p.graph, p.rings, p.trees);
  EXPECT_EQ(m.interTransport(), Transport::kIb);
  double expect = 0;
  for (int r = 0; r < 8; ++r) expect += dgx().railPort(r).rateMbps / 8000.0 * CostConstants{}.ib.efficiency;
  EXPECT_DOUBLE_EQ(m.interGBps(), expect);
  // No rails: sockets.
  ASSERT_TRUE(syntheticFabric(4, 0, 0, 0, &in));
  CollectivePlan s = planOf(in);
  EXPECT_TRUE(checkCollectivePlan(s));
  EXPECT_EQ(CostModel(s.graph, s.rings, s.trees).interTransport(), Transport::kSocket);
}

TEST(PlanInput, ErrorsNameTheRank) {
  FabricInput in;
  ASSERT_TRUE(syntheticFabric(2, 2, 2, 400000, &in));
  SystemGraph g;
  FabricInput dup = in;
  dup.ranks[3].rank = 1;
  Status s = buildSystemGraph(dup, &g);
  EXPECT_FALSE(s);
  EXPECT_NE(s.message().find("rank 1 described itself twice"), std::string::npos) << s.message();
  FabricInput badGpu = in;
  badGpu.ranks[2].gpuBusId = "0000:ee:00.0";
  s = buildSystemGraph(badGpu, &g);
  EXPECT_FALSE(s);
  EXPECT_NE(s.message().find("drives GPU 0000:ee:00.0"), std::string::npos) << s.message();
  s = buildSystemGraph(FabricInput{}, &g);
  EXPECT_FALSE(s);
}

}  // namespace
}  // namespace weft::plan
