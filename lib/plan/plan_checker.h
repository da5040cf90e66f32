// The plan checker: asserts the properties the rings and trees must have, and says in a sentence
// which one failed where. Rules:
//  rings   - every rank is in every ring exactly once;
//          - each node is entered once and left once per ring (its ranks are contiguous), and it
//            leaves on the rail it entered on (one port per node and channel);
//          - every inter-node edge is rail-local: both ends' ports are on the same rail, and the
//            rank entering a node is the one attached to that rail;
//          - the ring channels together use every rail.
//  trees   - each of the two node trees spans all nodes: one root, every node reached from it once,
//            parent and child links agree, at most two children;
//          - every node is interior in at most one tree (the shifted construction has no exception);
//          - in every tree channel every rank is reached exactly once (chains inside nodes), up and
//            down links agree, and every inter-node edge is rail-local as above;
//          - the tree channels together use every rail.
// Without rails (sockets only) the rail rules do not apply.
#pragma once

#include <cstdint>

#include "lib/core/status.h"
#include "lib/plan/ring_builder.h"
#include "lib/plan/system_graph.h"
#include "lib/plan/tree_builder.h"

namespace weft::plan {

struct CheckSummary {
  int64_t ringInterNodeEdges = 0;
  int64_t treeInterNodeEdges = 0;
  int64_t rankVisits = 0;
};

Status checkRings(const SystemGraph& graph, const RingSet& rings, CheckSummary* summary = nullptr);
Status checkTrees(const SystemGraph& graph, const TreeSet& trees, CheckSummary* summary = nullptr);

}  // namespace weft::plan
