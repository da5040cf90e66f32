#include "lib/plan/tree_builder.h"

#include <algorithm>
#include <bit>

namespace weft::plan {

size_t TreeSet::memoryBytes() const {
  size_t b = sizeof(*this) + channels.capacity() * sizeof(TreeChannel);
  for (const NodeTree& t : trees) b += t.parent.capacity() * sizeof(int) + t.children.capacity() * sizeof(std::array<int, 2>);
  for (const TreeChannel& c : channels) b += c.nodeRail.capacity() * sizeof(int16_t);
  return b;
}

namespace {

// Parent label of v (1..n) in the in-order tree over 1..n; 0 for the root.
uint32_t parentLabel(uint32_t v, uint32_t n) {
  const uint32_t root = std::bit_floor(n);
  while (v != root) {
    const uint32_t b = v & (~v + 1);
    // v = b * odd; v is a left child when v / b = 1 mod 4 (parent v + b), else a right child.
    v = ((v / b) & 3u) == 1u ? v + b : v - b;
    if (v <= n) return v;
  }
  return 0;
}

}  // namespace

NodeTree buildNodeTree(int nNodes, int which) {
  NodeTree t;
  const uint32_t n = static_cast<uint32_t>(nNodes);
  t.parent.assign(n, -1);
  t.children.assign(n, {-1, -1});
  if (n == 0) return t;
  auto label = [&](uint32_t node) { return which == 0 ? node + 1 : (node + 1) % n + 1; };
  auto nodeOf = [&](uint32_t lab) { return which == 0 ? lab - 1 : (lab + n - 2) % n; };
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t v = label(i);
    const uint32_t p = parentLabel(v, n);
    if (p == 0) {
      t.root = static_cast<int>(i);
      continue;
    }
    const uint32_t pn = nodeOf(p);
    t.parent[i] = static_cast<int>(pn);
    // The left child has the smaller label.
    std::array<int, 2>& c = t.children[pn];
    c[v < p ? 0 : 1] = static_cast<int>(i);
  }
  // Keep children[0] filled first (a right child without a left one cannot occur, but be safe).
  for (auto& c : t.children)
    if (c[0] < 0 && c[1] >= 0) std::swap(c[0], c[1]);
  t.depth = static_cast<int>(std::bit_width(n));  // floor(log2 n) + 1 levels at most
  return t;
}

const char* intraShapeName(IntraShape s) { return s == IntraShape::kBinary ? "binary" : "chain"; }

int intraDepth(IntraShape shape, int ppn, bool wide) {
  if (ppn <= 1) return 1;
  if (shape == IntraShape::kChain) return ppn;
  if (wide) return static_cast<int>(std::bit_width(static_cast<unsigned>(ppn)));  // heap from the head
  // head, then a binary heap over positions 1..ppn-1 rooted at 1
  return 1 + static_cast<int>(std::bit_width(static_cast<unsigned>(ppn - 1)));
}

Status buildTrees(const SystemGraph& graph, int nChannels, TreeSet* out, IntraShape intra) {
  out->channels.clear();
  out->intra = intra;
  if (nChannels < 0) return invalidArgument("the tree channel count must not be negative");
  const int nRails = graph.nRails();
  if (nChannels == 0) nChannels = 2 * std::max(nRails, 1);
  out->trees[0] = buildNodeTree(graph.nNodes(), 0);
  out->trees[1] = buildNodeTree(graph.nNodes(), 1);
  out->channels.resize(static_cast<size_t>(nChannels));
  for (int c = 0; c < nChannels; ++c) {
    TreeChannel& ch = out->channels[static_cast<size_t>(c)];
    ch.tree = c % 2;
    ch.rail = nRails > 0 ? (c / 2) % nRails : -1;
    ch.nodeRail.assign(static_cast<size_t>(graph.nNodes()), static_cast<int16_t>(ch.rail));
  }
  return Status::ok();
}

int treeHead(const SystemGraph& graph, const TreeChannel& ch, int channel, int node) {
  const int rail = ch.nodeRail[static_cast<size_t>(node)];
  const int ppn = graph.node(node).nRanks;
  if (rail >= 0 && rail < graph.nRails()) return graph.railEntry(node, rail);
  return (channel / 2 + (channel % 2) * (ppn / 2)) % ppn;
}

RankLinks treeLinks(const SystemGraph& graph, const TreeSet& trees, int channel, int rank) {
  RankLinks l;
  const TreeChannel& ch = trees.channels[static_cast<size_t>(channel)];
  const NodeTree& t = trees.trees[static_cast<size_t>(ch.tree)];
  const int n = graph.nodeOf(rank);
  const int ppn = graph.node(n).nRanks;
  const int* local = graph.localRanks(n);
  const int head = treeHead(graph, ch, channel, n);
  const int pos = (graph.localIndex(rank) - head + ppn) % ppn;
  const bool chain = trees.intra == IntraShape::kChain;
  // Binary shape: a head without node children in this tree takes two local children (a plain heap
  // over the rotated positions); a head with node children takes one (position 1, below which
  // position p has children 2p and 2p+1), so it never serves more than three.
  const bool wide = !chain && t.children[static_cast<size_t>(n)][0] < 0;
  auto upOf = [&](int p) { return chain ? p - 1 : wide ? (p - 1) / 2 : (p == 1 ? 0 : p / 2); };
  if (pos > 0) l.up = local[(head + upOf(pos)) % ppn];
  else {
    const int p = t.parent[static_cast<size_t>(n)];
    if (p >= 0) l.up = graph.localRanks(p)[treeHead(graph, ch, channel, p)];
    for (int c : t.children[static_cast<size_t>(n)])
      if (c >= 0) l.down[static_cast<size_t>(l.nDown++)] = graph.localRanks(c)[treeHead(graph, ch, channel, c)];
  }
  int first = pos + 1, last = pos + 1;  // chain
  if (!chain) {
    if (wide) first = 2 * pos + 1, last = 2 * pos + 2;
    else if (pos == 0) first = last = 1;
    else first = 2 * pos, last = 2 * pos + 1;
  }
  for (int c = first; c <= last && c < ppn; ++c) l.down[static_cast<size_t>(l.nDown++)] = local[(head + c) % ppn];
  return l;
}

}  // namespace weft::plan
