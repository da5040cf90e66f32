// Synthetic fabrics for the planner's tests, benchmark and `weft-topo plan`: N identical nodes of
// G GPUs and R rails (rail r attached to GPU r*G/R, first half of the GPUs on NUMA node 0), or N
// copies of a real node description (a topology file or a fixture), one rank per GPU.
#pragma once

#include <cstdint>
#include <string>

#include "lib/core/status.h"
#include "lib/plan/system_graph.h"
#include "lib/topo/topo.h"

namespace weft::plan {

// One synthetic node: GPUs 0000:(16+16g):00.0, NIC of rail r next to its GPU, named mlx5_<r>.
topo::NodeTopology syntheticNode(const std::string& hostName, int gpus, int rails, uint32_t nicMbps,
                                 topo::LinkLayer layer = topo::LinkLayer::kInfiniBand);

// nodes copies of one node description, ranks numbered node by node in GPU order (a host rank per
// node when it has no GPU). Hosts are named node00000, node00001, ...
Status replicateFabric(const topo::NodeTopology& node, int nodes, FabricInput* out);

Status syntheticFabric(int nodes, int gpus, int rails, uint32_t nicMbps, FabricInput* out);

}  // namespace weft::plan
