#include "lib/plan/synthetic_fabric.h"

#include <cstdio>

namespace weft::plan {

topo::NodeTopology syntheticNode(const std::string& hostName, int gpus, int rails, uint32_t nicMbps,
                                 topo::LinkLayer layer) {
  topo::NodeTopology t;
  t.hostName = hostName;
  t.source = "synthetic";
  t.numaNodes = gpus > 1 ? 2 : 1;
  char buf[32];
  for (int g = 0; g < gpus; ++g) {
    topo::Gpu gpu;
    std::snprintf(buf, sizeof buf, "0000:%02x:00.0", (16 + 16 * g) & 0xff);
    gpu.pciBusId = buf;
    gpu.vendorId = 0x10de;
    gpu.numaNode = gpus > 1 && g >= gpus / 2 ? 1 : 0;
    gpu.railPath = topo::PathType::kPix;
    t.gpus.push_back(gpu);
  }
  for (int r = 0; r < rails; ++r) {
    topo::NicPort p;
    const int g = gpus > 0 ? r * gpus / rails : -1;
    std::snprintf(buf, sizeof buf, "mlx5_%d", r);
    p.device = buf;
    std::snprintf(buf, sizeof buf, "0000:%02x:00.%d", (16 + 16 * (g < 0 ? r : g) + 1) & 0xff, r % 8);
    p.pciBusId = buf;
    p.state = topo::PortState::kActive;
    p.linkLayer = layer;
    p.rateMbps = nicMbps;
    p.mtu = 4096;
    p.numaNode = g >= 0 ? t.gpus[static_cast<size_t>(g)].numaNode : 0;
    p.gidIndex = 3;
    p.rail = r;
    p.closestGpu = g;
    p.closestPath = g >= 0 ? topo::PathType::kPix : topo::PathType::kUnknown;
    t.nics.push_back(p);
    t.rails.push_back(r);
    if (g >= 0) t.gpus[static_cast<size_t>(g)].rails.push_back(r);
  }
  t.distance.assign(static_cast<size_t>(gpus), std::vector<topo::PciDistance>(static_cast<size_t>(rails)));
  for (int g = 0; g < gpus; ++g)
    for (int r = 0; r < rails; ++r) {
      const topo::NicPort& p = t.nics[static_cast<size_t>(r)];
      topo::PciDistance d;
      if (p.closestGpu == g) d = {topo::PathType::kPix, 2};
      else if (p.numaNode == t.gpus[static_cast<size_t>(g)].numaNode) d = {topo::PathType::kNode, 6};
      else d = {topo::PathType::kSys, 8};
      t.distance[static_cast<size_t>(g)][static_cast<size_t>(r)] = d;
    }
  return t;
}

Status replicateFabric(const topo::NodeTopology& node, int nodes, FabricInput* out) {
  *out = FabricInput();
  if (nodes < 1) return invalidArgument("a fabric needs at least one node");
  out->topologies.push_back(node);
  const size_t per = node.gpus.empty() ? 1 : node.gpus.size();
  out->ranks.reserve(per * static_cast<size_t>(nodes));
  char host[32];
  int rank = 0;
  for (int n = 0; n < nodes; ++n) {
    std::snprintf(host, sizeof host, "node%05d", n);
    for (size_t g = 0; g < per; ++g) {
      RankDescription d;
      d.rank = rank++;
      d.hostId = host;
      d.gpuBusId = node.gpus.empty() ? std::string() : node.gpus[g].pciBusId;
      d.topology = 0;
      out->ranks.push_back(std::move(d));
    }
  }
  return Status::ok();
}

Status syntheticFabric(int nodes, int gpus, int rails, uint32_t nicMbps, FabricInput* out) {
  if (gpus < 0 || rails < 0) return invalidArgument("GPU and rail counts must not be negative");
  if (gpus > 64 || rails > 64) return invalidArgument("a synthetic node has at most 64 GPUs and 64 rails");
  return replicateFabric(syntheticNode("synthetic", gpus, rails, nicMbps), nodes, out);
}

}  // namespace weft::plan
