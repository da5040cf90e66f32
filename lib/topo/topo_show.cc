#include "lib/topo/topo_show.h"

#include <algorithm>
#include <cstdio>

#include "lib/topo/gid.h"

namespace weft::topo {

namespace {

std::string pad(const std::string& s, size_t w) {
  return s.size() >= w ? s + " " : s + std::string(w - s.size(), ' ');
}

std::string hex4(uint16_t v) {
  char b[8];
  std::snprintf(b, sizeof b, "%04x", v);
  return b;
}

std::string jsonStr(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\t': o += "\\t"; break;
      case '\r': o += "\\r"; break;
      default:
        if (c < 0x20) {
          char b[8];
          std::snprintf(b, sizeof b, "\\u%04x", c);
          o += b;
        } else {
          o += static_cast<char>(c);
        }
    }
  }
  return o + "\"";
}

std::string jsonInts(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

}  // namespace

std::string renderTopologyText(const NodeTopology& t) {
  std::string o;
  o += "node " + (t.hostName.empty() ? std::string("?") : t.hostName) + "  (" + t.source + ")\n";
  o += "NUMA nodes: " + std::to_string(t.numaNodes) + "\n\n";

  o += "GPUs: " + std::to_string(t.gpus.size()) + (t.gpus.empty() ? " (none found)\n" : "\n");
  for (size_t g = 0; g < t.gpus.size(); ++g) {
    const Gpu& gpu = t.gpus[g];
    std::string rails;
    for (int r : gpu.rails) {
      const NicPort& p = t.railPort(r);
      rails += (rails.empty() ? "" : ", ") + std::string("rail ") + std::to_string(r) + " = " +
               p.device + ":" + std::to_string(p.port);
    }
    o += "  GPU" + pad(std::to_string(g), 3) + pad(gpu.pciBusId, 14) + "[" + hex4(gpu.vendorId) +
         ":" + hex4(gpu.deviceId) + "]  NUMA " + pad(std::to_string(gpu.numaNode), 3) +
         pad(rails.empty() ? "-" : pathTypeName(gpu.railPath), 5) + (rails.empty() ? "no rails" : rails) + "\n";
  }

  o += "\nRDMA ports: " + std::to_string(t.nics.size()) + ", rails: " +
       std::to_string(t.rails.size()) + (t.nics.empty() ? " (no RDMA devices)\n" : "\n");
  if (!t.nics.empty()) {
    o += "  " + pad("rail", 5) + pad("device:port", 13) + pad("PCI function", 14) + pad("state", 7) +
         pad("link", 11) + pad("rate", 21) + pad("MTU", 5) + pad("NUMA", 5) + pad("netdev", 10) +
         pad("closest GPU", 12) + "GID\n";
    for (int pass = 0; pass < 2; ++pass) {
      std::vector<size_t> idx;
      if (pass == 0) {
        for (int n : t.rails) idx.push_back(static_cast<size_t>(n));
      } else {
        for (size_t n = 0; n < t.nics.size(); ++n)
          if (t.nics[n].excluded) idx.push_back(n);
      }
      for (size_t n : idx) {
        const NicPort& p = t.nics[n];
        std::string closest = p.closestGpu < 0 ? std::string("-")
                                               : "GPU" + std::to_string(p.closestGpu) + " " +
                                                     pathTypeName(p.closestPath);
        std::string gid = p.gidIndex < 0 ? std::string("none")
                                         : std::to_string(p.gidIndex) + " " + formatGid(p.gid);
        o += "  " + pad(p.excluded ? "-" : std::to_string(p.rail), 5) +
             pad(p.device + ":" + std::to_string(p.port), 13) +
             pad(p.pciBusId.empty() ? "?" : p.pciBusId, 14) + pad(portStateName(p.state), 7) +
             pad(linkLayerName(p.linkLayer), 11) + pad(p.rateText.empty() ? "?" : p.rateText, 21) +
             pad(p.mtu ? std::to_string(p.mtu) : "-", 5) + pad(std::to_string(p.numaNode), 5) +
             pad(p.netdev.empty() ? "-" : p.netdev, 10) + pad(closest, 12) + gid + "\n";
        bool gidInReason = p.excluded && p.exclusionReason.find(p.gidReason) != std::string::npos;
        if (!gidInReason) o += "        GID choice: " + p.gidReason + "\n";
        if (p.excluded) o += "        EXCLUDED: " + p.exclusionReason + "\n";
      }
    }
  }

  if (!t.gpus.empty() && !t.nics.empty()) {
    o += "\nPCI distances (GPU x port; PIX < PXB < PHB < NODE < SYS):\n";
    std::string head = pad("", 8);
    for (const NicPort& p : t.nics) head += pad(p.device + (p.port != 1 ? ":" + std::to_string(p.port) : ""), 9);
    while (!head.empty() && head.back() == ' ') head.pop_back();
    o += head + "\n";
    for (size_t g = 0; g < t.gpus.size(); ++g) {
      o += "  " + pad("GPU" + std::to_string(g), 6);
      std::string row;
      for (size_t n = 0; n < t.nics.size(); ++n) row += pad(pathTypeName(t.distance[g][n].path), 9);
      while (!row.empty() && row.back() == ' ') row.pop_back();
      o += row + "\n";
    }
  }

  if (!t.notes.empty()) {
    o += "\nNotes:\n";
    for (const std::string& n : t.notes) o += "  - " + n + "\n";
  }
  return o;
}

std::string renderTopologyJson(const NodeTopology& t) {
  std::string o = "{\n";
  o += "  \"format\": \"weft-topology\",\n  \"version\": " + std::to_string(NodeTopology::kFormatVersion) + ",\n";
  o += "  \"host\": " + jsonStr(t.hostName) + ",\n";
  o += "  \"source\": " + jsonStr(t.source) + ",\n";
  o += "  \"numaNodes\": " + std::to_string(t.numaNodes) + ",\n";
  o += "  \"gpus\": [";
  for (size_t g = 0; g < t.gpus.size(); ++g) {
    const Gpu& gpu = t.gpus[g];
    o += std::string(g ? "," : "") + "\n    {\"index\": " + std::to_string(g) +
         ", \"busId\": " + jsonStr(gpu.pciBusId) + ", \"vendorId\": " + jsonStr(hex4(gpu.vendorId)) +
         ", \"deviceId\": " + jsonStr(hex4(gpu.deviceId)) + ", \"numaNode\": " +
         std::to_string(gpu.numaNode) + ", \"rails\": " + jsonInts(gpu.rails) +
         ", \"railPath\": " + jsonStr(pathTypeName(gpu.railPath)) + "}";
  }
  o += t.gpus.empty() ? "],\n" : "\n  ],\n";
  o += "  \"ports\": [";
  for (size_t n = 0; n < t.nics.size(); ++n) {
    const NicPort& p = t.nics[n];
    o += std::string(n ? "," : "") + "\n    {\"index\": " + std::to_string(n) +
         ", \"device\": " + jsonStr(p.device) + ", \"port\": " + std::to_string(p.port) +
         ", \"busId\": " + jsonStr(p.pciBusId) + ", \"state\": " + jsonStr(portStateName(p.state)) +
         ", \"linkLayer\": " + jsonStr(linkLayerName(p.linkLayer)) +
         ", \"rateMbps\": " + std::to_string(p.rateMbps) + ", \"rate\": " + jsonStr(p.rateText) +
         ", \"mtu\": " + std::to_string(p.mtu) + ", \"netdevMtu\": " + std::to_string(p.netdevMtu) +
         ", \"numaNode\": " + std::to_string(p.numaNode) + ", \"cpulist\": " + jsonStr(p.cpulist) +
         ", \"netdev\": " + jsonStr(p.netdev) + ", \"nodeGuid\": " + jsonStr(p.nodeGuid) +
         ", \"sysImageGuid\": " + jsonStr(p.sysImageGuid) + ", \"lid\": " + std::to_string(p.lid) +
         ", \"gidIndex\": " + std::to_string(p.gidIndex) + ", \"gid\": " + jsonStr(formatGid(p.gid)) +
         ", \"gidReason\": " + jsonStr(p.gidReason) + ", \"rail\": " + std::to_string(p.rail) +
         ", \"excluded\": " + (p.excluded ? "true" : "false") +
         ", \"exclusionReason\": " + jsonStr(p.exclusionReason) +
         ", \"closestGpu\": " + std::to_string(p.closestGpu) +
         ", \"closestPath\": " + jsonStr(pathTypeName(p.closestPath)) + ", \"gids\": [";
    for (size_t i = 0; i < p.gids.size(); ++i) {
      const GidEntry& e = p.gids[i];
      o += std::string(i ? ", " : "") + "{\"index\": " + std::to_string(e.index) +
           ", \"gid\": " + jsonStr(formatGid(e.gid)) + ", \"readable\": " +
           (e.readable ? "true" : "false") + ", \"type\": " + jsonStr(e.type) +
           ", \"netdev\": " + jsonStr(e.netdev) + "}";
    }
    o += "]}";
  }
  o += t.nics.empty() ? "],\n" : "\n  ],\n";
  o += "  \"rails\": " + jsonInts(t.rails) + ",\n";
  o += "  \"distances\": [";
  for (size_t g = 0; g < t.distance.size(); ++g) {
    o += std::string(g ? "," : "") + "\n    [";
    for (size_t n = 0; n < t.distance[g].size(); ++n)
      o += std::string(n ? ", " : "") + "{\"path\": " + jsonStr(pathTypeName(t.distance[g][n].path)) +
           ", \"hops\": " + std::to_string(t.distance[g][n].hops) + "}";
    o += "]";
  }
  o += t.distance.empty() ? "],\n" : "\n  ],\n";
  o += "  \"notes\": [";
  for (size_t i = 0; i < t.notes.size(); ++i) o += std::string(i ? ", " : "") + jsonStr(t.notes[i]);
  o += "]\n}\n";
  return o;
}

}  // namespace weft::topo
