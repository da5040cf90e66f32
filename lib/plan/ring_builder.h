// Rail-optimised rings. Channel c runs on rail c mod R (R = the rails every node has), so the
// channels spread over all rails. On every node a channel enters at the rank attached to its rail
// (the GPU closest to the rail's port), walks the node's ranks in PCI/NUMA locality order from
// there (rotated: entry, entry+1, ..., entry-1), and leaves from the last one through the same
// rail's port; the next node is entered on that rail again. So every inter-node edge joins two
// ports of one rail (one leaf switch), and each node is entered and left once per channel.
// Without rails (sockets) the channels rotate their entry rank instead.
#pragma once

#include <cstdint>
#include <vector>

#include "lib/core/status.h"
#include "lib/plan/system_graph.h"

namespace weft::plan {

struct RingChannel {
  int rail = -1;                // -1: no rail (sockets)
  std::vector<int> order;       // the ranks in ring order; order[i] sends to order[i+1]
  std::vector<int16_t> nodeRail;  // per node: the rail its port for this channel is on
};

struct RingSet {
  std::vector<RingChannel> channels;
  size_t memoryBytes() const;
};

// nChannels 0: one channel per rail (at least one). Otherwise that many, rail c mod R.
Status buildRings(const SystemGraph& graph, int nChannels, RingSet* out);

}  // namespace weft::plan
