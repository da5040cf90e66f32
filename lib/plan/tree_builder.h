// Double binary trees across nodes, chains inside nodes, per rail.
//
// Construction ("shifted in-order double binary tree"): tree 0 is the in-order binary tree over the
// labels 1..N, node i carrying label i+1 — a label's height is its number of trailing zero bits, so
// odd labels are the leaves and even labels the interior nodes, and the root is the largest power of
// two <= N; labels above N are skipped by attaching a node to its nearest ancestor <= N. Tree 1 is
// the same tree with every label shifted by one: node i carries label ((i+1) mod N) + 1. Shifting
// flips every node's parity except node N-1's (label N in tree 0, label 1, a leaf, in tree 1), so no
// node is interior in both trees, for every N (odd or even: no exception), and the two roots differ
// when N > 2. Depth <= floor(log2 N) + 1.
//
// Tree channel c uses tree c mod 2 on rail (c / 2) mod R, so 2R channels cover both trees on every
// rail. On each node the tree attaches at the rank attached to the channel's rail (its head); the
// node's other ranks hang below the head as a chain in locality order (head, head+1, ..., head-1).
// Inter-node edges join heads, whose ports are on the channel's rail at both ends.
//
// Inside a node the shape depends on what the ranks drive (IntraShape): GPU ranks hang below the
// head as a chain (NCCL's shape: NVLink/PCIe links pipeline, and every link carries the data once);
// host ranks (sockets, shared memory: every hop costs the same fixed latency) hang below the head
// as a binary tree, so a node of P host ranks is about log2(P) hops deep rather than P-1: where the
// node has node children in that tree, the head has one local child (position 1) and position
// p >= 1 has children 2p and 2p+1; where it has none (a leaf node, or a single node) the local
// ranks form a plain heap from the head (children of p: 2p+1, 2p+2). Either way the head has at
// most three children (two nodes and one local rank). Positions count from the head in locality order.
// Without rails the heads rotate instead: tree channel c attaches at local position
// (c/2 + (c mod 2) * P/2) mod P, so tree 0 and tree 1 of one node are rooted at different ranks.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "lib/core/status.h"
#include "lib/plan/system_graph.h"

namespace weft::plan {

// A binary tree over node indices.
struct NodeTree {
  int root = -1;
  std::vector<int> parent;                  // -1 for the root
  std::vector<std::array<int, 2>> children; // -1 when absent
  int depth = 0;                            // levels (1 for a single node)
  bool interior(int node) const { return children[static_cast<size_t>(node)][0] >= 0; }
};

struct TreeChannel {
  int tree = 0;                  // 0 or 1
  int rail = -1;                 // -1: no rail (sockets)
  std::vector<int16_t> nodeRail; // per node: the rail its head's port is on for this channel
};

enum class IntraShape : uint8_t { kChain = 0, kBinary = 1 };
const char* intraShapeName(IntraShape s);

struct TreeSet {
  std::array<NodeTree, 2> trees;
  IntraShape intra = IntraShape::kChain;
  std::vector<TreeChannel> channels;
  size_t memoryBytes() const;
};

// Rank-level links of one tree channel: up toward the root, down toward the leaves.
struct RankLinks {
  int up = -1;
  std::array<int, 3> down{-1, -1, -1};
  int nDown = 0;
};

// Tree 0 / tree 1 of the construction above over n nodes.
NodeTree buildNodeTree(int nNodes, int which);

// nChannels 0: 2 per rail (at least 2). Otherwise that many (tree c mod 2, rail (c/2) mod R).
Status buildTrees(const SystemGraph& graph, int nChannels, TreeSet* out, IntraShape intra = IntraShape::kChain);
// Levels of the in-node part below (and including) the head for a node of ppn ranks; wide: the
// head has no node children (binary shape only).
int intraDepth(IntraShape shape, int ppn, bool wide = false);

// The node a channel attaches to on node n: its head's local index.
int treeHead(const SystemGraph& graph, const TreeChannel& ch, int channel, int node);
RankLinks treeLinks(const SystemGraph& graph, const TreeSet& trees, int channel, int rank);

}  // namespace weft::plan
