#include "lib/plan/system_graph.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <string_view>
#include <tuple>
#include <unordered_map>

namespace weft::plan {

const char* transportName(Transport t) {
  switch (t) {
    case Transport::kIb: return "ib";
    case Transport::kShm: return "shm";
    default: return "socket";
  }
}

size_t SystemGraph::memoryBytes() const {
  size_t b = sizeof(*this) + nodes_.capacity() * sizeof(GraphNode);
  for (const GraphNode& n : nodes_) b += n.hostId.capacity() > 15 ? n.hostId.capacity() : 0;
  b += (rankNode_.capacity() + rankLocal_.capacity() + rankGpu_.capacity() + localRanks_.capacity() +
        railEntry_.capacity()) * sizeof(int);
  b += railMbps_.capacity() * sizeof(uint32_t) + railLinkLayer_.capacity();
  return b;
}

namespace {

// The GPU index of a bus id in a node's (sorted) GPU list; bus ids are compared normalised.
int findGpu(const topo::NodeTopology& t, const std::string& busId) {
  int g = t.gpuIndex(busId);
  if (g >= 0) return g;
  std::string norm;
  if (!topo::normalizeBusId(busId, &norm)) return -1;
  return t.gpuIndex(norm);
}

}  // namespace

Status buildSystemGraph(const FabricInput& in, SystemGraph* out) {
  *out = SystemGraph();
  const size_t n = in.ranks.size();
  if (n == 0) return invalidArgument("the plan needs at least one rank, and the fabric input has none");
  if (n > static_cast<size_t>(std::numeric_limits<int>::max() / 2))
    return invalidArgument("the fabric input has more ranks than the planner can number");

  // Ranks in rank order, whatever order their descriptions arrived in.
  std::vector<int> byRank(n, -1);
  for (size_t i = 0; i < n; ++i) {
    const RankDescription& d = in.ranks[i];
    if (d.rank < 0 || static_cast<size_t>(d.rank) >= n)
      return invalidArgument("rank " + std::to_string(d.rank) + " is outside 0.." + std::to_string(n - 1) +
                             ": every rank of a " + std::to_string(n) + "-rank fabric must describe itself once");
    if (byRank[static_cast<size_t>(d.rank)] >= 0)
      return invalidArgument("rank " + std::to_string(d.rank) + " described itself twice; each rank must appear once");
    if (d.topology < 0 || static_cast<size_t>(d.topology) >= in.topologies.size())
      return invalidArgument("rank " + std::to_string(d.rank) + " points at node description " +
                             std::to_string(d.topology) + ", but there are " +
                             std::to_string(in.topologies.size()));
    if (d.hostId.empty())
      return invalidArgument("rank " + std::to_string(d.rank) + " has no host identity; set one so ranks group into nodes");
    byRank[static_cast<size_t>(d.rank)] = static_cast<int>(i);
  }

  // Nodes by host identity, numbered by their smallest rank.
  out->rankNode_.assign(n, -1);
  out->rankGpu_.assign(n, -1);
  out->rankLocal_.assign(n, -1);
  std::unordered_map<std::string_view, int> hostNode;
  hostNode.reserve(n / 4 + 1);
  for (size_t r = 0; r < n; ++r) {
    const RankDescription& d = in.ranks[static_cast<size_t>(byRank[r])];
    auto [it, fresh] = hostNode.try_emplace(std::string_view(d.hostId), static_cast<int>(out->nodes_.size()));
    if (fresh) {
      GraphNode node;
      node.hostId = d.hostId;
      node.topology = d.topology;
      out->nodes_.push_back(std::move(node));
    }
    GraphNode& node = out->nodes_[static_cast<size_t>(it->second)];
    out->rankNode_[r] = it->second;
    ++node.nRanks;
    const topo::NodeTopology& t = in.topologies[static_cast<size_t>(node.topology)];
    if (!d.gpuBusId.empty()) {
      int g = findGpu(t, d.gpuBusId);
      if (g < 0)
        return invalidArgument("rank " + std::to_string(r) + " drives GPU " + d.gpuBusId + ", which host " +
                               d.hostId + "'s node description does not list; describe the node again or fix the bus id");
      out->rankGpu_[r] = g;
    }
  }

  // CSR of ranks per node, then each node's ranks in locality order.
  int offset = 0;
  for (GraphNode& node : out->nodes_) {
    node.firstRank = offset;
    offset += node.nRanks;
    out->maxRanksPerNode_ = std::max(out->maxRanksPerNode_, node.nRanks);
  }
  out->localRanks_.assign(n, -1);
  {
    std::vector<int> fill(out->nodes_.size(), 0);
    for (size_t r = 0; r < n; ++r) {
      int nd = out->rankNode_[r];
      out->localRanks_[static_cast<size_t>(out->nodes_[static_cast<size_t>(nd)].firstRank + fill[static_cast<size_t>(nd)]++)] =
          static_cast<int>(r);
    }
  }
  for (GraphNode& node : out->nodes_) {
    const topo::NodeTopology& t = in.topologies[static_cast<size_t>(node.topology)];
    auto key = [&](int r) {
      int g = out->rankGpu_[static_cast<size_t>(r)];
      int numa = g >= 0 ? t.gpus[static_cast<size_t>(g)].numaNode : std::numeric_limits<int>::max();
      return std::make_tuple(g < 0, numa, g, r);  // GPUs sort by bus id: index order is bus id order
    };
    int* first = out->localRanks_.data() + node.firstRank;
    std::sort(first, first + node.nRanks, [&](int a, int b) { return key(a) < key(b); });
    for (int i = 0; i < node.nRanks; ++i) out->rankLocal_[static_cast<size_t>(first[i])] = i;
  }

  // Rails every node has.
  int common = std::numeric_limits<int>::max();
  int most = 0;
  for (GraphNode& node : out->nodes_) {
    const topo::NodeTopology& t = in.topologies[static_cast<size_t>(node.topology)];
    int nr = static_cast<int>(t.rails.size());
    for (int r = 0; r < nr; ++r) {
      int idx = t.rails[static_cast<size_t>(r)];
      if (idx < 0 || static_cast<size_t>(idx) >= t.nics.size())
        return invalidArgument("host " + node.hostId + "'s node description names port " + std::to_string(idx) +
                               " as rail " + std::to_string(r) + ", but it has " + std::to_string(t.nics.size()) +
                               " ports; the description is damaged");
    }
    node.nRails = nr;
    common = std::min(common, nr);
    most = std::max(most, nr);
  }
  out->nRails_ = common;
  if (common != most)
    out->notes_.push_back("nodes have between " + std::to_string(common) + " and " + std::to_string(most) +
                          " rails; channels use the " + std::to_string(common) + " rails every node has");
  if (common == 0 && most == 0 && out->nodes_.size() > 1)
    out->notes_.push_back("no node has a usable RDMA port: inter-node traffic goes over sockets");
  else if (common == 0 && out->nodes_.size() > 1)
    out->notes_.push_back("some node has no usable RDMA port: inter-node traffic goes over sockets");

  const size_t nr = static_cast<size_t>(common);
  out->railMbps_.assign(nr, std::numeric_limits<uint32_t>::max());
  out->railLinkLayer_.assign(nr, topo::LinkLayer::kUnknown);
  out->railEntry_.assign(out->nodes_.size() * nr, 0);
  bool mixedLayer = false;
  for (size_t nd = 0; nd < out->nodes_.size(); ++nd) {
    const GraphNode& node = out->nodes_[nd];
    const topo::NodeTopology& t = in.topologies[static_cast<size_t>(node.topology)];
    const int* local = out->localRanks_.data() + node.firstRank;
    for (size_t r = 0; r < nr; ++r) {
      const size_t portIdx = static_cast<size_t>(t.rails[r]);
      const topo::NicPort& p = t.nics[portIdx];
      out->railMbps_[r] = std::min(out->railMbps_[r], p.rateMbps);
      if (nd == 0) out->railLinkLayer_[r] = p.linkLayer;
      else if (out->railLinkLayer_[r] != p.linkLayer) mixedLayer = true;
      // The rank closest to the rail's port; host ranks spread over rails in locality order.
      int best = static_cast<int>(r % static_cast<size_t>(node.nRanks));
      topo::PciDistance bestD{topo::PathType::kUnknown, -1};
      bool found = false;
      for (int i = 0; i < node.nRanks; ++i) {
        int g = out->rankGpu_[static_cast<size_t>(local[i])];
        if (g < 0) continue;
        topo::PciDistance d;
        if (static_cast<size_t>(g) < t.distance.size() && portIdx < t.distance[static_cast<size_t>(g)].size())
          d = t.distance[static_cast<size_t>(g)][portIdx];
        if (g == p.closestGpu) d = {topo::PathType::kPix, 0};  // discovery already chose it
        if (!found || d < bestD) {
          best = i;
          bestD = d;
          found = true;
        }
      }
      out->railEntry_[nd * nr + r] = best;
    }
  }
  for (size_t r = 0; r < nr; ++r)
    if (out->railMbps_[r] == std::numeric_limits<uint32_t>::max()) out->railMbps_[r] = 0;
  if (mixedLayer) out->notes_.push_back("a rail mixes InfiniBand and Ethernet ports across nodes");
  return Status::ok();
}

}  // namespace weft::plan
