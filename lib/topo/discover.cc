// Node discovery: hwloc PCI tree + sysfs ports → GPUs, ports, GID choices, exclusions, rails.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>

#include "lib/core/config.h"
#include "lib/core/log.h"
#include "lib/topo/gid.h"
#include "lib/topo/hca_filter.h"
#include "lib/topo/pci_tree.h"
#include "lib/topo/sysfs.h"
#include "lib/topo/topo.h"
#include "lib/topo/topo_file.h"

namespace weft::topo {

const char* pathTypeName(PathType p) {
  switch (p) {
    case PathType::kPix: return "PIX";
    case PathType::kPxb: return "PXB";
    case PathType::kPhb: return "PHB";
    case PathType::kNode: return "NODE";
    case PathType::kSys: return "SYS";
    case PathType::kUnknown: return "UNKNOWN";
  }
  return "UNKNOWN";
}

bool parsePathType(const std::string& s, PathType* out) {
  for (PathType p : {PathType::kPix, PathType::kPxb, PathType::kPhb, PathType::kNode,
                     PathType::kSys, PathType::kUnknown})
    if (s == pathTypeName(p)) {
      *out = p;
      return true;
    }
  return false;
}

const char* linkLayerName(LinkLayer l) {
  switch (l) {
    case LinkLayer::kInfiniBand: return "InfiniBand";
    case LinkLayer::kEthernet: return "Ethernet";
    case LinkLayer::kUnknown: return "unknown";
  }
  return "unknown";
}

const char* portStateName(PortState s) {
  switch (s) {
    case PortState::kDown: return "DOWN";
    case PortState::kInit: return "INIT";
    case PortState::kArmed: return "ARMED";
    case PortState::kActive: return "ACTIVE";
    case PortState::kActiveDefer: return "ACTIVE_DEFER";
    case PortState::kUnknown: return "UNKNOWN";
  }
  return "UNKNOWN";
}

int NodeTopology::gpuIndex(const std::string& busId) const {
  std::string b;
  if (!normalizeBusId(busId, &b)) return -1;
  for (size_t i = 0; i < gpus.size(); ++i)
    if (gpus[i].pciBusId == b) return static_cast<int>(i);
  return -1;
}

bool normalizeBusId(const std::string& in, std::string* out) {
  // Accept dddd:bb:dd.f, bb:dd.f, and CUDA's 8-digit domain form 00000000:bb:dd.f.
  std::string s;
  for (char c : in) s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.erase(0, 1);
  unsigned dom = 0, bus = 0, dev = 0, fn = 0;
  int n = 0;
  size_t colons = static_cast<size_t>(std::count(s.begin(), s.end(), ':'));
  if (colons == 2) {
    size_t c1 = s.find(':');
    if (c1 == 0 || c1 > 8) return false;
    if (std::sscanf(s.c_str(), "%x:%x:%x.%x%n", &dom, &bus, &dev, &fn, &n) != 4) return false;
    if (dom > 0xffff) return false;
  } else if (colons == 1) {
    if (std::sscanf(s.c_str(), "%x:%x.%x%n", &bus, &dev, &fn, &n) != 3) return false;
  } else {
    return false;
  }
  if (static_cast<size_t>(n) != s.size() || bus > 0xff || dev > 0x1f || fn > 7) return false;
  for (char c : s)
    if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.') return false;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04x:%02x:%02x.%x", dom, bus, dev, fn);
  *out = buf;
  return true;
}

DiscoveryOptions DiscoveryOptions::fromEnv() {
  DiscoveryOptions o;
  o.sysfsRoot = config::getString("WEFT_SYSFS_ROOT");
  o.hwlocXml = config::getString("WEFT_HWLOC_XML");
  std::string gpus = config::getString("WEFT_GPU_BUS_IDS");
  size_t pos = 0;
  while (pos < gpus.size()) {
    size_t comma = gpus.find(',', pos);
    if (comma == std::string::npos) comma = gpus.size();
    std::string item = gpus.substr(pos, comma - pos);
    if (!item.empty()) o.gpuBusIds.push_back(item);
    pos = comma + 1;
  }
  o.ibHca = config::getString("WEFT_IB_HCA");
  o.gidIndex = config::getString("WEFT_IB_GID_INDEX");
  o.addrFamily = config::getString("WEFT_IB_ADDR_FAMILY");
  o.addrRange = config::getString("WEFT_IB_ADDR_RANGE");
  o.roceVersion = static_cast<int>(config::getInt("WEFT_IB_ROCE_VERSION_NUM"));
  return o;
}

namespace {

std::string portName(const NicPort& p) { return p.device + " port " + std::to_string(p.port); }

// GPUs from sysfs PCI devices when hwloc gave no PCI tree.
std::vector<PciDevice> sysfsNvidiaGpus(const std::string& root) {
  std::vector<PciDevice> out;
  std::string dir = root + "/bus/pci/devices";
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name, bus;
    if (!normalizeBusId(name, &bus)) continue;
    std::string cls, vendor, device;
    if (readSysfs(dir + "/" + name + "/class", &cls) != 0) continue;
    if (readSysfs(dir + "/" + name + "/vendor", &vendor) != 0) continue;
    readSysfs(dir + "/" + name + "/device", &device);
    unsigned long c = std::strtoul(cls.c_str(), nullptr, 16);
    unsigned long v = std::strtoul(vendor.c_str(), nullptr, 16);
    if (v != 0x10de || ((c >> 8) != 0x0302 && (c >> 8) != 0x0300)) continue;
    PciDevice p;
    p.busId = bus;
    p.vendorId = static_cast<uint16_t>(v);
    p.deviceId = static_cast<uint16_t>(std::strtoul(device.c_str(), nullptr, 16));
    p.classId = static_cast<uint16_t>(c >> 8);
    out.push_back(p);
  }
  closedir(d);
  std::sort(out.begin(), out.end(),
            [](const PciDevice& a, const PciDevice& b) { return a.busId < b.busId; });
  return out;
}

void note(NodeTopology* t, const std::string& n) { t->notes.push_back(n); }

int countSysfsNumaNodes(const std::string& root) {
  int n = 0;
  DIR* d = opendir((root + "/devices/system/node").c_str());
  if (!d) return 0;
  while (dirent* e = readdir(d)) {
    const char* name = e->d_name;
    if (std::strncmp(name, "node", 4) != 0 || !name[4]) continue;
    bool digits = true;
    for (const char* c = name + 4; *c; ++c) digits = digits && std::isdigit(static_cast<unsigned char>(*c));
    n += digits ? 1 : 0;
  }
  closedir(d);
  return n;
}

}  // namespace

void assignRails(NodeTopology* topo) {
  const size_t nG = topo->gpus.size(), nN = topo->nics.size();
  auto dist = [&](size_t g, size_t n) {
    if (g < topo->distance.size() && n < topo->distance[g].size()) return topo->distance[g][n];
    return PciDistance{};
  };
  // Closest GPU of every port (ties: lower bus id, i.e. lower index).
  for (size_t n = 0; n < nN; ++n) {
    NicPort& p = topo->nics[n];
    p.closestGpu = -1;
    p.closestPath = PathType::kUnknown;
    PciDistance best;
    for (size_t g = 0; g < nG; ++g) {
      PciDistance d = dist(g, n);
      if (d.path == PathType::kUnknown) continue;
      if (p.closestGpu < 0 || d < best) {
        best = d;
        p.closestGpu = static_cast<int>(g);
      }
    }
    p.closestPath = best.path;
    p.rail = -1;
  }
  // Rails: usable ports ordered by closest GPU's bus id, then PCI function, then port.
  std::vector<int> order;
  for (size_t n = 0; n < nN; ++n)
    if (!topo->nics[n].excluded) order.push_back(static_cast<int>(n));
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    const NicPort& pa = topo->nics[static_cast<size_t>(a)];
    const NicPort& pb = topo->nics[static_cast<size_t>(b)];
    // Ports without a known closest GPU go after the others.
    unsigned ga = static_cast<unsigned>(pa.closestGpu), gb = static_cast<unsigned>(pb.closestGpu);
    if (ga != gb) return ga < gb;
    if (pa.pciBusId != pb.pciBusId) return pa.pciBusId < pb.pciBusId;
    return pa.port < pb.port;
  });
  topo->rails = order;
  for (size_t r = 0; r < order.size(); ++r) topo->nics[static_cast<size_t>(order[r])].rail = static_cast<int>(r);
  // Each GPU: the rails at its smallest distance; the faster port wins a tie only when speeds differ.
  for (size_t g = 0; g < nG; ++g) {
    Gpu& gpu = topo->gpus[g];
    gpu.rails.clear();
    gpu.railPath = PathType::kUnknown;
    bool any = false;
    PciDistance best;
    for (int n : order) {
      PciDistance d = dist(g, static_cast<size_t>(n));
      if (d.path == PathType::kUnknown) continue;
      if (!any || d < best) best = d;
      any = true;
    }
    std::vector<int> cands;
    if (!any) {
      cands = order;  // distances unknown: every rail
    } else {
      for (int n : order)
        if (dist(g, static_cast<size_t>(n)) == best) cands.push_back(n);
      gpu.railPath = best.path;
    }
    uint32_t fastest = 0;
    for (int n : cands) fastest = std::max(fastest, topo->nics[static_cast<size_t>(n)].rateMbps);
    for (int n : cands)
      if (topo->nics[static_cast<size_t>(n)].rateMbps == fastest)
        gpu.rails.push_back(topo->nics[static_cast<size_t>(n)].rail);
    std::sort(gpu.rails.begin(), gpu.rails.end());
  }
}

Status discoverNode(const DiscoveryOptions& options, NodeTopology* out) {
  HcaFilter hca;
  WEFT_TRY(HcaFilter::parse(options.ibHca, &hca));
  GidPolicy policy;
  WEFT_TRY(GidPolicy::parse(options.gidIndex, options.addrFamily, options.addrRange,
                            options.roceVersion, &policy));
  NodeTopology t;
  std::string root = options.sysfsRoot.empty() ? std::string("/sys") : options.sysfsRoot;
  t.source = "sysfs=" + root + " hwloc=" + (options.hwlocXml.empty() ? "live" : options.hwlocXml);

  // The live hwloc topology describes this machine; when WEFT_SYSFS_ROOT points at another tree
  // (a fixture) without an XML, the PCI tree comes from that sysfs instead.
  PciTree tree;
  bool defaultRoot = root == "/sys" || root == "/sys/";
  if (!options.hwlocXml.empty() || defaultRoot) {
    WEFT_TRY(PciTree::load(options.hwlocXml, &tree, &t.notes));
  } else {
    std::string n = "WEFT_SYSFS_ROOT=" + root + " without WEFT_HWLOC_XML: the PCI tree and GPUs "
                    "come from that sysfs, not from this machine's hwloc";
    WEFT_INFO(TOPO, "%s", n.c_str());
    note(&t, n);
  }
  // Host name: given, else the XML's (a fixture describes another machine), else ours.
  t.hostName = !options.hostName.empty() ? options.hostName : tree.hostName();
  if (t.hostName.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    t.hostName = host;
  }
  t.numaNodes = tree.numaNodes();
  if (t.numaNodes == 0) t.numaNodes = countSysfsNumaNodes(root);

  // GPUs.
  std::vector<PciDevice> gpuDevs;
  if (!options.gpuBusIds.empty()) {
    for (const std::string& id : options.gpuBusIds) {
      PciDevice d;
      if (!normalizeBusId(id, &d.busId))
        return invalidArgument("GPU bus id \"" + id +
                               "\" (WEFT_GPU_BUS_IDS or CUDA) is not a PCI bus id; write "
                               "dddd:bb:dd.f, e.g. 0000:1b:00.0");
      if (!tree.device(d.busId, &d)) {
        bool inSysfs = !pciDevicePath(root, d.busId).empty();
        std::string n = "GPU " + d.busId + " is not in the hwloc PCI tree" +
                        (tree.pciDeviceCount() ? "" : " (hwloc has none)") +
                        (inSysfs ? "; distances from its sysfs path"
                                 : " nor under " + root + "/bus/pci/devices; its distances to "
                                   "the NICs are unknown");
        if (inSysfs) WEFT_INFO(TOPO, "%s", n.c_str());
        else WEFT_WARN(TOPO, "%s", n.c_str());
        note(&t, n);
      }
      if (std::none_of(gpuDevs.begin(), gpuDevs.end(),
                       [&](const PciDevice& x) { return x.busId == d.busId; }))
        gpuDevs.push_back(d);
    }
    std::sort(gpuDevs.begin(), gpuDevs.end(),
              [](const PciDevice& a, const PciDevice& b) { return a.busId < b.busId; });
  } else if (tree.pciDeviceCount() > 0) {
    gpuDevs = tree.nvidiaGpus();
  } else {
    gpuDevs = sysfsNvidiaGpus(root);
  }
  if (gpuDevs.empty()) {
    std::string n = "no GPUs: no NVIDIA 3D/VGA controller in the PCI tree and WEFT_GPU_BUS_IDS "
                    "is unset; rails are numbered without GPU affinity";
    WEFT_INFO(TOPO, "%s", n.c_str());
    note(&t, n);
  }
  for (const PciDevice& d : gpuDevs) {
    Gpu g;
    g.pciBusId = d.busId;
    g.vendorId = d.vendorId;
    g.deviceId = d.deviceId;
    g.numaNode = tree.numaNodeOf(d.busId);
    if (g.numaNode < 0) {
      std::string s;
      if (readSysfs(root + "/bus/pci/devices/" + d.busId + "/numa_node", &s) == 0)
        g.numaNode = std::max(-1, std::atoi(s.c_str()));
    }
    t.gpus.push_back(g);
  }

  // Ports.
  std::vector<SysfsPort> ports;
  WEFT_TRY(readSysfsPorts(root, &ports, &t.notes));
  for (SysfsPort& sp : ports) {
    NicPort p = sp.port;
    if (p.numaNode < 0 && !p.pciBusId.empty()) p.numaNode = tree.numaNodeOf(p.pciBusId);
    if (!p.pciBusId.empty() && tree.pciDeviceCount() > 0 && !tree.contains(p.pciBusId)) {
      std::string n = portName(p) + ": PCI function " + p.pciBusId +
                      " is not in the hwloc PCI tree" +
                      (sp.pciPath.empty() ? "; its distances are unknown"
                                          : "; distances from its sysfs path");
      WEFT_INFO(TOPO, "%s", n.c_str());
      note(&t, n);
    }
    GidChoice gc = chooseGid(p, sp.uppers, policy);
    p.gidIndex = gc.index;
    p.gid = gc.gid;
    p.gidReason = gc.reason;
    t.nics.push_back(std::move(p));
  }

  // Distances: hwloc's PCI tree, else the sysfs device paths.
  std::vector<std::string> gpuPaths;
  for (const Gpu& g : t.gpus) gpuPaths.push_back(pciDevicePath(root, g.pciBusId));
  bool fromSysfs = false;
  t.distance.assign(t.gpus.size(), std::vector<PciDistance>(t.nics.size()));
  for (size_t g = 0; g < t.gpus.size(); ++g)
    for (size_t n = 0; n < t.nics.size(); ++n) {
      PciDistance d;
      if (!t.nics[n].pciBusId.empty())
        d.path = tree.distance(t.gpus[g].pciBusId, t.nics[n].pciBusId, &d.hops);
      if (d.path == PathType::kUnknown && !gpuPaths[g].empty() && !ports[n].pciPath.empty()) {
        d.path = sysfsPathDistance(gpuPaths[g], ports[n].pciPath, t.gpus[g].numaNode,
                                   t.nics[n].numaNode, &d.hops);
        fromSysfs |= d.path != PathType::kUnknown;
      }
      if (d.path == PathType::kUnknown) d.hops = -1;
      t.distance[g][n] = d;
    }
  if (fromSysfs) {
    std::string n = "some PCI distances come from sysfs device paths because hwloc's PCI tree "
                    "lacks those devices";
    WEFT_INFO(TOPO, "%s", n.c_str());
    note(&t, n);
  }

  // Exclusions.
  for (size_t n = 0; n < t.nics.size(); ++n) {
    NicPort& p = t.nics[n];
    std::vector<std::string> why;
    bool far = false;
    bool named = !hca.empty() && hca.names(p.device, p.port);
    if (!hca.accepts(p.device, p.port))
      why.push_back(hca.excludeMode() ? "excluded by WEFT_IB_HCA=" + hca.spec()
                                      : "not selected by WEFT_IB_HCA=" + hca.spec());
    if (p.state != PortState::kActive && p.state != PortState::kActiveDefer)
      why.push_back(std::string("port is ") + portStateName(p.state) +
                    " (not ACTIVE); check the cable and the switch port, or exclude it with "
                    "WEFT_IB_HCA=^" + p.device);
    if (p.linkLayer == LinkLayer::kUnknown)
      why.push_back("link layer unknown (neither InfiniBand nor Ethernet)");
    if (p.gidIndex < 0) why.push_back(p.gidReason);  // already names the fix
    if (!t.gpus.empty()) {
      PciDistance best;
      int bestGpu = -1;
      for (size_t g = 0; g < t.gpus.size(); ++g) {
        PciDistance d = t.distance[g][n];
        if (d.path == PathType::kUnknown) continue;
        if (bestGpu < 0 || d < best) {
          best = d;
          bestGpu = static_cast<int>(g);
        }
      }
      if (bestGpu >= 0 && best.path > PathType::kPhb) {
        far = true;
        std::string reason = std::string("farther than the host bridge from every GPU (nearest: GPU ") +
                          t.gpus[static_cast<size_t>(bestGpu)].pciBusId + " at " +
                          pathTypeName(best.path) + ")";
        if (named && !hca.excludeMode()) {
          far = false;
          WEFT_INFO(TOPO, "%s is %s but kept: WEFT_IB_HCA names it", portName(p).c_str(),
                    reason.c_str());
        } else {
          why.push_back(reason);
        }
      }
    }
    // A port that would be used but has no GID is worth a warning; the reason names the fix.
    if (p.gidIndex < 0 && !far && (p.state == PortState::kActive || p.state == PortState::kActiveDefer) &&
        hca.accepts(p.device, p.port))
      WEFT_WARN(TOPO, "%s (%s): %s", portName(p).c_str(), p.pciBusId.c_str(), p.gidReason.c_str());
    if (!why.empty()) {
      p.excluded = true;
      p.exclusionReason = why[0];
      for (size_t i = 1; i < why.size(); ++i) p.exclusionReason += "; " + why[i];
    }
  }

  assignRails(&t);

  // Explain.
  for (const NicPort& p : t.nics) {
    if (p.excluded) {
      WEFT_INFO(TOPO, "%s (%s) excluded: %s", portName(p).c_str(), p.pciBusId.c_str(),
                p.exclusionReason.c_str());
      continue;
    }
    WEFT_INFO(TOPO, "rail %d: %s (%s) %s %s %s, NUMA %d, netdev %s, GID %d: %s", p.rail,
              portName(p).c_str(), p.pciBusId.c_str(), portStateName(p.state),
              linkLayerName(p.linkLayer), p.rateText.c_str(), p.numaNode,
              p.netdev.empty() ? "-" : p.netdev.c_str(), p.gidIndex, p.gidReason.c_str());
  }
  for (const Gpu& g : t.gpus) {
    std::string rails;
    for (int r : g.rails) rails += (rails.empty() ? "" : ",") + std::to_string(r);
    WEFT_INFO(TOPO, "GPU %s (NUMA %d): rails %s at %s", g.pciBusId.c_str(), g.numaNode,
              rails.empty() ? "none" : rails.c_str(), pathTypeName(g.railPath));
  }
  WEFT_INFO(TOPO, "node %s: %zu GPUs, %zu RDMA ports, %zu rails, %d NUMA nodes (%s)",
            t.hostName.c_str(), t.gpus.size(), t.nics.size(), t.rails.size(), t.numaNodes,
            t.source.c_str());
  *out = std::move(t);
  return Status::ok();
}

Status loadNodeTopology(const DiscoveryOptions& options, const std::string& topoFile,
                        const std::string& dumpFile, NodeTopology* out) {
  NodeTopology t;
  if (!topoFile.empty()) {
    WEFT_TRY(readTopologyFile(topoFile, &t));
    if (!options.gpuBusIds.empty()) {
      for (const std::string& id : options.gpuBusIds) {
        std::string b;
        if (!normalizeBusId(id, &b))
          return invalidArgument("GPU bus id \"" + id + "\" is not a PCI bus id (dddd:bb:dd.f)");
        if (t.gpuIndex(b) < 0)
          return invalidArgument("the topology file " + topoFile + " (WEFT_TOPO_FILE) describes " +
                                 "no GPU " + b + " but this process drives it; the file is from "
                                 "another machine: regenerate it with WEFT_TOPO_DUMP_FILE here or "
                                 "unset WEFT_TOPO_FILE");
      }
    }
    WEFT_INFO(TOPO, "node topology read from %s (WEFT_TOPO_FILE): %zu GPUs, %zu ports, %zu rails",
              topoFile.c_str(), t.gpus.size(), t.nics.size(), t.rails.size());
  } else {
    WEFT_TRY(discoverNode(options, &t));
  }
  if (!dumpFile.empty()) {
    WEFT_TRY(writeTopologyFile(t, dumpFile));
    WEFT_INFO(TOPO, "node topology written to %s (WEFT_TOPO_DUMP_FILE)", dumpFile.c_str());
  }
  *out = std::move(t);
  return Status::ok();
}

Status loadNodeTopologyFromEnv(NodeTopology* out) {
  return loadNodeTopology(DiscoveryOptions::fromEnv(), config::getString("WEFT_TOPO_FILE"),
                          config::getString("WEFT_TOPO_DUMP_FILE"), out);
}

}  // namespace weft::topo
