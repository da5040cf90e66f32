// The system graph: every rank's node description, all-gathered, turned into nodes (by host
// identity), their ranks in PCI/NUMA locality order, and the rails they share.
//
// Rails come from lib/topo: rail r of a node is numbered by the closest GPU's bus id, then PCI
// function, then port, so rail r is the same fabric plane on every node even when the verbs device
// names or their enumeration order differ. The graph never looks at device names.
//
// Everything here is a pure function of its inputs: the ranks are taken in rank order, nodes are
// numbered by their smallest rank, so the graph is the same whatever order the descriptions arrived in.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lib/core/status.h"
#include "lib/topo/topo.h"

namespace weft::plan {

// What one rank contributes to the all-gather.
struct RankDescription {
  int rank = -1;
  std::string hostId;    // host identity (bootstrap's WEFT_HOST_ID or boot id + hostname)
  std::string gpuBusId;  // the GPU this rank drives; empty: none (a host rank)
  int topology = -1;     // index into FabricInput::topologies: the node's description
};

// The input of the planner. Ranks of one host normally share one topology entry (deduplicated
// after the all-gather); any number of ranks may point at the same entry (synthetic fabrics do).
struct FabricInput {
  std::vector<topo::NodeTopology> topologies;
  std::vector<RankDescription> ranks;  // any order; rank numbers 0..n-1, each once
};

enum class Transport : uint8_t { kSocket = 0, kIb = 1, kShm = 2 };
const char* transportName(Transport t);

// One node of the graph. Ranks are stored in the graph's flat arrays (CSR by node).
struct GraphNode {
  std::string hostId;
  int topology = -1;        // index into FabricInput::topologies
  int firstRank = 0;        // offset into SystemGraph::localRanks_ of this node's ranks
  int nRanks = 0;
  int nRails = 0;           // usable rails of this node
};

class SystemGraph {
 public:
  int nRanks() const { return static_cast<int>(rankNode_.size()); }
  int nNodes() const { return static_cast<int>(nodes_.size()); }
  // Rails every node has (the planes a channel can use end to end); 0: no RDMA, sockets only.
  int nRails() const { return nRails_; }
  Transport interTransport() const { return nRails_ > 0 ? Transport::kIb : Transport::kSocket; }

  const GraphNode& node(int n) const { return nodes_[static_cast<size_t>(n)]; }
  int nodeOf(int rank) const { return rankNode_[static_cast<size_t>(rank)]; }
  // The node's ranks in locality order (NUMA node, then GPU bus id, then rank).
  const int* localRanks(int n) const { return localRanks_.data() + node(n).firstRank; }
  // Position of a rank in its node's locality order.
  int localIndex(int rank) const { return rankLocal_[static_cast<size_t>(rank)]; }
  // GPU index (into the node's topology) of a rank; -1 for a host rank.
  int gpuOf(int rank) const { return rankGpu_[static_cast<size_t>(rank)]; }
  // The local index of the rank attached to rail r on node n: the GPU closest to the rail's port
  // (PCI path class, then hops, then locality order). Channels on rail r enter the node there.
  int railEntry(int n, int rail) const {
    return railEntry_[static_cast<size_t>(n) * static_cast<size_t>(nRails_) + static_cast<size_t>(rail)];
  }
  // Slowest port speed of rail r over all nodes (Mb/s); the rail's link speed.
  uint32_t railMbps(int rail) const { return railMbps_[static_cast<size_t>(rail)]; }
  topo::LinkLayer railLinkLayer(int rail) const { return railLinkLayer_[static_cast<size_t>(rail)]; }
  int maxRanksPerNode() const { return maxRanksPerNode_; }
  // Facts a person should know (rails dropped because a node lacks them, ...).
  const std::vector<std::string>& notes() const { return notes_; }
  // Bytes held by the graph's arrays (for the scale benchmark).
  size_t memoryBytes() const;

 private:
  friend Status buildSystemGraph(const FabricInput& in, SystemGraph* out);
  std::vector<GraphNode> nodes_;
  std::vector<int> rankNode_, rankLocal_, rankGpu_;
  std::vector<int> localRanks_;
  std::vector<int> railEntry_;  // nNodes x nRails
  std::vector<uint32_t> railMbps_;
  std::vector<topo::LinkLayer> railLinkLayer_;
  std::vector<std::string> notes_;
  int nRails_ = 0;
  int maxRanksPerNode_ = 0;
};

// Checks the input (ranks 0..n-1 each once, topology indices and GPU bus ids valid) and builds the
// graph. Errors are sentences naming the rank and what to fix.
Status buildSystemGraph(const FabricInput& in, SystemGraph* out);

}  // namespace weft::plan
