#include "lib/plan/plan_checker.h"

#include <string>
#include <vector>

namespace weft::plan {

namespace {

std::string str(int64_t v) { return std::to_string(v); }

// Rail-local: both ends on one valid rail, and the receiving rank is the one attached to it.
Status checkEdge(const SystemGraph& g, const std::vector<int16_t>& nodeRail, const char* what, int channel,
                 int from, int to, int toLocalExpected) {
  const int a = g.nodeOf(from), b = g.nodeOf(to);
  const int ra = nodeRail[static_cast<size_t>(a)], rb = nodeRail[static_cast<size_t>(b)];
  if (ra != rb)
    return internalError(std::string(what) + " channel " + str(channel) + ": the edge from rank " + str(from) +
                         " (node " + str(a) + ", rail " + str(ra) + ") to rank " + str(to) + " (node " + str(b) +
                         ", rail " + str(rb) + ") crosses rails; inter-node edges must stay on one rail");
  if (ra < 0 || ra >= g.nRails())
    return internalError(std::string(what) + " channel " + str(channel) + ": the edge from rank " + str(from) +
                         " to rank " + str(to) + " uses rail " + str(ra) + ", but the fabric's rails are 0.." +
                         str(g.nRails() - 1));
  if (toLocalExpected >= 0 && g.localIndex(to) != toLocalExpected)
    return internalError(std::string(what) + " channel " + str(channel) + ": node " + str(b) + " is entered at rank " +
                         str(to) + ", which is not the rank attached to rail " + str(rb) + " (rank " +
                         str(g.localRanks(b)[toLocalExpected]) + ")");
  return Status::ok();
}

}  // namespace

Status checkRings(const SystemGraph& g, const RingSet& rings, CheckSummary* summary) {
  const int n = g.nRanks(), nNodes = g.nNodes();
  if (rings.channels.empty()) return internalError("the plan has no ring channel");
  std::vector<int> seen(static_cast<size_t>(n), -1);
  std::vector<char> railUsed(static_cast<size_t>(g.nRails()), 0);
  for (size_t c = 0; c < rings.channels.size(); ++c) {
    const RingChannel& ch = rings.channels[c];
    const int ci = static_cast<int>(c);
    if (ch.order.size() != static_cast<size_t>(n))
      return internalError("ring " + str(ci) + " has " + str(static_cast<int64_t>(ch.order.size())) +
                           " ranks; every ring must hold all " + str(n));
    if (ch.nodeRail.size() != static_cast<size_t>(nNodes))
      return internalError("ring " + str(ci) + " names ports for " + str(static_cast<int64_t>(ch.nodeRail.size())) +
                           " nodes, the fabric has " + str(nNodes));
    for (int i = 0; i < n; ++i) {
      const int r = ch.order[static_cast<size_t>(i)];
      if (r < 0 || r >= n) return internalError("ring " + str(ci) + " holds rank " + str(r) + ", which does not exist");
      if (seen[static_cast<size_t>(r)] == ci)
        return internalError("ring " + str(ci) + " holds rank " + str(r) + " twice; every rank must be in every ring exactly once");
      seen[static_cast<size_t>(r)] = ci;
    }
    if (summary) summary->rankVisits += n;
    if (nNodes == 1) continue;
    int64_t crossings = 0;
    for (int i = 0; i < n; ++i) {
      const int from = ch.order[static_cast<size_t>(i)], to = ch.order[static_cast<size_t>((i + 1) % n)];
      if (g.nodeOf(from) == g.nodeOf(to)) continue;
      ++crossings;
      if (g.nRails() == 0) continue;
      const int b = g.nodeOf(to);
      const int rb = ch.nodeRail[static_cast<size_t>(b)];
      WEFT_TRY(checkEdge(g, ch.nodeRail, "ring", ci, from, to, rb >= 0 && rb < g.nRails() ? g.railEntry(b, rb) : -1));
      railUsed[static_cast<size_t>(rb)] = 1;
    }
    if (crossings != nNodes)
      return internalError("ring " + str(ci) + " crosses between nodes " + str(crossings) + " times instead of " +
                           str(nNodes) + ": some node is entered more than once, so its ranks are not contiguous");
    if (summary) summary->ringInterNodeEdges += crossings;
  }
  if (nNodes > 1)
    for (int r = 0; r < g.nRails(); ++r)
      if (!railUsed[static_cast<size_t>(r)] && rings.channels.size() >= static_cast<size_t>(g.nRails()))
        return internalError("no ring channel uses rail " + str(r) + "; the channels must spread over all " +
                             str(g.nRails()) + " rails");
  return Status::ok();
}

Status checkTrees(const SystemGraph& g, const TreeSet& trees, CheckSummary* summary) {
  const int n = g.nRanks(), nNodes = g.nNodes();
  // Node trees: span all nodes.
  std::vector<int> stack;
  for (int t = 0; t < 2; ++t) {
    const NodeTree& tr = trees.trees[static_cast<size_t>(t)];
    const std::string name = "tree " + str(t);
    if (tr.parent.size() != static_cast<size_t>(nNodes) || tr.children.size() != static_cast<size_t>(nNodes))
      return internalError(name + " covers " + str(static_cast<int64_t>(tr.parent.size())) + " nodes; it must span all " +
                           str(nNodes));
    if (tr.root < 0 || tr.root >= nNodes || tr.parent[static_cast<size_t>(tr.root)] != -1)
      return internalError(name + " has no valid root");
    std::vector<char> reached(static_cast<size_t>(nNodes), 0);
    int64_t count = 0;
    stack.assign(1, tr.root);
    while (!stack.empty()) {
      const int v = stack.back();
      stack.pop_back();
      if (reached[static_cast<size_t>(v)])
        return internalError(name + " reaches node " + str(v) + " twice; a tree has one path to each node");
      reached[static_cast<size_t>(v)] = 1;
      ++count;
      for (int c : tr.children[static_cast<size_t>(v)]) {
        if (c < 0) continue;
        if (c >= nNodes || tr.parent[static_cast<size_t>(c)] != v)
          return internalError(name + ": node " + str(v) + " lists child " + str(c) + ", whose parent is not " + str(v));
        stack.push_back(c);
      }
    }
    if (count != nNodes) {
      int missing = 0;
      while (reached[static_cast<size_t>(missing)]) ++missing;
      return internalError(name + " does not span all nodes: node " + str(missing) + " is not reached from root " +
                           str(tr.root));
    }
  }
  for (int v = 0; v < nNodes; ++v)
    if (trees.trees[0].interior(v) && trees.trees[1].interior(v))
      return internalError("node " + str(v) + " is interior in both trees; the double binary tree must make every node "
                           "interior in at most one of them");
  // Rank level, per channel.
  if (trees.channels.empty()) return internalError("the plan has no tree channel");
  std::vector<int> seen(static_cast<size_t>(n), -1);
  std::vector<char> railUsed(static_cast<size_t>(g.nRails()), 0);
  std::vector<std::pair<int, int>> work;  // (rank, expected up)
  for (size_t c = 0; c < trees.channels.size(); ++c) {
    const TreeChannel& ch = trees.channels[c];
    const int ci = static_cast<int>(c);
    if (ch.tree != 0 && ch.tree != 1) return internalError("tree channel " + str(ci) + " names tree " + str(ch.tree));
    if (ch.nodeRail.size() != static_cast<size_t>(nNodes))
      return internalError("tree channel " + str(ci) + " names ports for " +
                           str(static_cast<int64_t>(ch.nodeRail.size())) + " nodes, the fabric has " + str(nNodes));
    const NodeTree& tr = trees.trees[static_cast<size_t>(ch.tree)];
    const int rootRank = g.localRanks(tr.root)[treeHead(g, ch, ci, tr.root)];
    work.assign(1, {rootRank, -1});
    int64_t visits = 0;
    while (!work.empty()) {
      auto [r, up] = work.back();
      work.pop_back();
      if (seen[static_cast<size_t>(r)] == ci)
        return internalError("tree channel " + str(ci) + " reaches rank " + str(r) + " twice");
      seen[static_cast<size_t>(r)] = ci;
      ++visits;
      const RankLinks l = treeLinks(g, trees, ci, r);
      if (l.up != up)
        return internalError("tree channel " + str(ci) + ": rank " + str(r) + " sends up to rank " + str(l.up) +
                             " but is reached from rank " + str(up));
      for (int k = 0; k < l.nDown; ++k) {
        const int d = l.down[static_cast<size_t>(k)];
        if (g.nodeOf(d) != g.nodeOf(r)) {
          if (summary) ++summary->treeInterNodeEdges;
          if (g.nRails() > 0) {
            const int rb = ch.nodeRail[static_cast<size_t>(g.nodeOf(d))];
            WEFT_TRY(checkEdge(g, ch.nodeRail, "tree", ci, r, d,
                               rb >= 0 && rb < g.nRails() ? g.railEntry(g.nodeOf(d), rb) : -1));
            // The parent's end is its head too: the rank attached to the rail.
            const int a = g.nodeOf(r);
            if (g.localIndex(r) != g.railEntry(a, ch.nodeRail[static_cast<size_t>(a)]))
              return internalError("tree channel " + str(ci) + ": rank " + str(r) + " links node " + str(a) +
                                   " to another node but is not attached to rail " +
                                   str(ch.nodeRail[static_cast<size_t>(a)]));
            railUsed[static_cast<size_t>(rb)] = 1;
          }
        }
        work.push_back({d, r});
      }
    }
    if (visits != n)
      return internalError("tree channel " + str(ci) + " reaches " + str(visits) + " of " + str(n) +
                           " ranks; every rank must be in the tree exactly once");
    if (summary) summary->rankVisits += visits;
  }
  if (nNodes > 1)
    for (int r = 0; r < g.nRails(); ++r)
      if (!railUsed[static_cast<size_t>(r)] && trees.channels.size() >= 2 * static_cast<size_t>(g.nRails()))
        return internalError("no tree channel uses rail " + str(r) + "; the channels must spread over all " +
                             str(g.nRails()) + " rails");
  return Status::ok();
}

}  // namespace weft::plan
