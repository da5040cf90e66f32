#include "lib/topo/sysfs.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>

#include "lib/core/log.h"
#include "lib/topo/gid.h"

namespace weft::topo {

namespace {

constexpr int kMaxGidEntries = 1024;
constexpr int kMaxPorts = 64;

std::vector<std::string> listDir(const std::string& path) {
  std::vector<std::string> names;
  DIR* d = opendir(path.c_str());
  if (!d) return names;
  while (dirent* e = readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    names.emplace_back(e->d_name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

bool isNumber(const std::string& s) {
  if (s.empty() || s.size() > 6) return false;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

bool readInt(const std::string& path, long* out) {
  std::string s;
  if (readSysfs(path, &s) != 0 || s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(s.c_str(), &end, 0);
  if (errno != 0 || end == s.c_str()) return false;
  *out = v;
  return true;
}

bool exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

std::string realPath(const std::string& path) {
  char buf[PATH_MAX];
  if (!realpath(path.c_str(), buf)) return "";
  return buf;
}

bool isBusId(const std::string& s) {
  // dddd:bb:dd.f
  if (s.size() != 12 || s[4] != ':' || s[7] != ':' || s[10] != '.') return false;
  for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9})
    if (!std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  return s[11] >= '0' && s[11] <= '7';
}

// Netdevs stacked on `lower` (VLAN, macvlan, ...): <root>/class/net/X/lower_<lower>, transitively.
void collectUppers(const std::string& root, const std::string& lower, int depth,
                   std::vector<std::string>* out) {
  if (depth > 4) return;
  for (const std::string& name : listDir(root + "/class/net")) {
    if (name == lower) continue;
    if (!exists(root + "/class/net/" + name + "/lower_" + lower)) continue;
    if (std::find(out->begin(), out->end(), name) != out->end()) continue;
    out->push_back(name);
    collectUppers(root, name, depth + 1, out);
  }
}

}  // namespace

int readSysfs(const std::string& path, std::string* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  std::string s;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return err;
    }
    if (n == 0) break;
    s.append(buf, static_cast<size_t>(n));
    if (s.size() > (1u << 20)) break;
  }
  ::close(fd);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  *out = s;
  return 0;
}

std::string busIdFromPath(const std::string& path) {
  size_t end = path.size();
  while (end > 0) {
    size_t slash = path.rfind('/', end - 1);
    size_t begin = slash == std::string::npos ? 0 : slash + 1;
    std::string comp = path.substr(begin, end - begin);
    if (isBusId(comp)) {
      for (auto& c : comp) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return comp;
    }
    if (slash == std::string::npos) break;
    end = slash;
  }
  return "";
}

uint32_t parseRateMbps(const std::string& rate) {
  // "%d%s Gb/sec (...)" where %s may be ".5"
  const char* p = rate.c_str();
  char* end = nullptr;
  double v = std::strtod(p, &end);
  if (end == p || v <= 0 || v > 1e7) return 0;
  while (*end == ' ') ++end;
  if (std::strncmp(end, "Gb/sec", 6) != 0) return 0;
  return static_cast<uint32_t>(v * 1000.0 + 0.5);
}

PortState parsePortState(const std::string& state) {
  long n = std::strtol(state.c_str(), nullptr, 10);
  if (n >= 1 && n <= 5) return static_cast<PortState>(n);
  std::string up = state;
  for (auto& c : up) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (up.find("ACTIVE_DEFER") != std::string::npos) return PortState::kActiveDefer;
  if (up.find("ACTIVE") != std::string::npos) return PortState::kActive;
  if (up.find("ARMED") != std::string::npos) return PortState::kArmed;
  if (up.find("INIT") != std::string::npos) return PortState::kInit;
  if (up.find("DOWN") != std::string::npos) return PortState::kDown;
  return PortState::kUnknown;
}

int roceMtuFromNetdev(int netdevMtu) {
  // RoCE headers over the Ethernet payload: GRH 40 + UDP 8 + BTH 12 + extended headers 32 + ICRC 4.
  int room = netdevMtu - 96;
  for (int m = 4096; m >= 256; m /= 2)
    if (room >= m) return m;
  return 0;
}

bool parseCpuList(const std::string& s, std::vector<int>* cpus) {
  cpus->clear();
  size_t pos = 0;
  std::string t = s;
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
  if (t.empty()) return true;
  while (pos <= t.size()) {
    size_t comma = t.find(',', pos);
    if (comma == std::string::npos) comma = t.size();
    std::string item = t.substr(pos, comma - pos);
    pos = comma + 1;
    size_t dash = item.find('-');
    std::string a = item.substr(0, dash), b = dash == std::string::npos ? a : item.substr(dash + 1);
    if (!isNumber(a) || !isNumber(b)) return false;
    int lo = std::atoi(a.c_str()), hi = std::atoi(b.c_str());
    if (lo > hi || hi >= (1 << 16)) return false;
    for (int c = lo; c <= hi; ++c) cpus->push_back(c);
  }
  return true;
}

namespace {
// Components from the host bridge ("pci0000:10") down to the device; empty if not a PCI path.
std::vector<std::string> pciComponents(const std::string& path) {
  std::vector<std::string> comps;
  size_t pos = 0;
  bool started = false;
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string::npos) slash = path.size();
    std::string c = path.substr(pos, slash - pos);
    pos = slash + 1;
    if (!started && c.size() >= 8 && c.compare(0, 3, "pci") == 0 && c.find(':') != std::string::npos) {
      started = true;
      comps.push_back(c);
    } else if (started) {
      if (!isBusId(c)) break;
      comps.push_back(c);
    }
  }
  if (comps.size() < 2) comps.clear();
  return comps;
}
}  // namespace

PathType sysfsPathDistance(const std::string& a, const std::string& b, int numaA, int numaB,
                           int* hops) {
  if (hops) *hops = -1;
  std::vector<std::string> ca = pciComponents(a), cb = pciComponents(b);
  if (ca.empty() || cb.empty()) return PathType::kUnknown;
  size_t common = 0;
  while (common < ca.size() && common < cb.size() && ca[common] == cb[common]) ++common;
  if (common == 0) {
    // Different host bridges: up to the socket (NODE) or the machine (SYS), as hwloc counts it.
    bool sameNode = numaA >= 0 && numaA == numaB;
    if (hops) *hops = static_cast<int>(ca.size() + cb.size()) + (sameNode ? 0 : 2);
    return sameNode ? PathType::kNode : PathType::kSys;
  }
  if (hops) *hops = static_cast<int>(ca.size() - common + cb.size() - common);
  if (common == ca.size() || common == cb.size()) return PathType::kPix;  // one contains the other
  if (common == 1) return PathType::kPhb;
  // Common ancestor is a bridge; bridges strictly between it and each device.
  size_t belowA = ca.size() - common - 1, belowB = cb.size() - common - 1;
  return std::max(belowA, belowB) <= 1 ? PathType::kPix : PathType::kPxb;
}

std::string pciDevicePath(const std::string& root, const std::string& busId) {
  std::string p = realPath(root + "/bus/pci/devices/" + busId);
  return busIdFromPath(p) == busId ? p : "";
}

int numaNodeOfCpuList(const std::string& root, const std::string& cpulist) {
  std::vector<int> want;
  if (!parseCpuList(cpulist, &want) || want.empty()) return -1;
  std::set<int> wantSet(want.begin(), want.end());
  for (const std::string& name : listDir(root + "/devices/system/node")) {
    if (name.compare(0, 4, "node") != 0 || !isNumber(name.substr(4))) continue;
    std::string list;
    if (readSysfs(root + "/devices/system/node/" + name + "/cpulist", &list) != 0) continue;
    std::vector<int> have;
    if (!parseCpuList(list, &have)) continue;
    for (int c : have)
      if (wantSet.count(c)) return std::atoi(name.c_str() + 4);
  }
  return -1;
}

Status readSysfsPorts(const std::string& root, std::vector<SysfsPort>* ports,
                      std::vector<std::string>* notes) {
  ports->clear();
  std::string classDir = root + "/class/infiniband";
  struct stat st;
  if (stat(classDir.c_str(), &st) != 0) {
    std::string n = "no RDMA devices: " + classDir + " does not exist (no RDMA stack or hardware)";
    WEFT_INFO(TOPO, "%s", n.c_str());
    notes->push_back(n);
    return Status::ok();
  }
  for (const std::string& dev : listDir(classDir)) {
    std::string devDir = classDir + "/" + dev;
    std::string nodeGuid, sysGuid;
    readSysfs(devDir + "/node_guid", &nodeGuid);
    readSysfs(devDir + "/sys_image_guid", &sysGuid);
    std::string pciPath = realPath(devDir + "/device");
    std::string busId = busIdFromPath(pciPath);
    if (busId.empty()) {
      std::string n = dev + ": " + devDir + "/device does not resolve to a PCI function (a " +
                      "software device?); its ports cannot be placed in the PCI tree";
      WEFT_INFO(TOPO, "%s", n.c_str());
      notes->push_back(n);
    } else {
      // Trim the path to the PCI function itself (the device link may point at a child).
      size_t at = pciPath.rfind("/" + busId);
      if (at != std::string::npos) pciPath = pciPath.substr(0, at + 1 + busId.size());
    }
    // NUMA node: numa_node, else the NUMA node of local_cpulist.
    long numa = -1;
    readInt(pciPath.empty() ? devDir + "/device/numa_node" : pciPath + "/numa_node", &numa);
    std::string cpulist;
    readSysfs(pciPath.empty() ? devDir + "/device/local_cpulist" : pciPath + "/local_cpulist",
              &cpulist);
    if (numa < 0 && !cpulist.empty()) {
      numa = numaNodeOfCpuList(root, cpulist);
      if (numa >= 0)
        WEFT_INFO(TOPO, "%s: numa_node is -1; NUMA node %ld from local_cpulist %s", dev.c_str(),
                  numa, cpulist.c_str());
    }
    // Netdevs of this PCI function, with dev_port telling which port each belongs to.
    std::vector<std::pair<std::string, long>> netdevs;
    std::string netDir = (pciPath.empty() ? devDir + "/device" : pciPath) + "/net";
    for (const std::string& nd : listDir(netDir)) {
      long devPort = 0;
      if (!readInt(netDir + "/" + nd + "/dev_port", &devPort)) devPort = 0;
      netdevs.emplace_back(nd, devPort);
    }
    std::vector<std::string> portNames;
    for (const std::string& p : listDir(devDir + "/ports"))
      if (isNumber(p) && std::atoi(p.c_str()) >= 1 && std::atoi(p.c_str()) <= 255) portNames.push_back(p);
    std::sort(portNames.begin(), portNames.end(),
              [](const std::string& a, const std::string& b) { return std::atoi(a.c_str()) < std::atoi(b.c_str()); });
    if (portNames.size() > kMaxPorts) portNames.resize(kMaxPorts);
    if (portNames.empty()) {
      std::string n = dev + ": no ports under " + devDir + "/ports";
      WEFT_INFO(TOPO, "%s", n.c_str());
      notes->push_back(n);
    }
    for (const std::string& pn : portNames) {
      SysfsPort sp;
      NicPort& p = sp.port;
      sp.pciPath = pciPath;
      p.device = dev;
      p.pciBusId = busId;
      p.port = std::atoi(pn.c_str());
      p.nodeGuid = nodeGuid;
      p.sysImageGuid = sysGuid;
      p.numaNode = static_cast<int>(numa);
      p.cpulist = cpulist;
      std::string portDir = devDir + "/ports/" + pn;
      std::string s;
      if (readSysfs(portDir + "/state", &s) == 0) p.state = parsePortState(s);
      if (readSysfs(portDir + "/rate", &s) == 0) {
        p.rateText = s;
        p.rateMbps = parseRateMbps(s);
      }
      if (readSysfs(portDir + "/link_layer", &s) == 0) {
        if (s == "InfiniBand") p.linkLayer = LinkLayer::kInfiniBand;
        else if (s == "Ethernet") p.linkLayer = LinkLayer::kEthernet;
      }
      long lid = 0;
      if (readInt(portDir + "/lid", &lid) && lid > 0 && lid < 0x10000)
        p.lid = static_cast<uint32_t>(lid);
      // The port's netdev: the one whose dev_port is port-1, else the only one.
      for (const auto& [nd, dp] : netdevs)
        if (dp == p.port - 1) p.netdev = nd;
      if (p.netdev.empty() && netdevs.size() == 1) p.netdev = netdevs[0].first;
      // GID table: keep entries that hold a value or whose attributes can be read.
      std::vector<std::string> gidNames;
      for (const std::string& g : listDir(portDir + "/gids"))
        if (isNumber(g)) gidNames.push_back(g);
      std::sort(gidNames.begin(), gidNames.end(),
                [](const std::string& a, const std::string& b) { return std::atoi(a.c_str()) < std::atoi(b.c_str()); });
      if (gidNames.size() > kMaxGidEntries) gidNames.resize(kMaxGidEntries);
      for (const std::string& gn : gidNames) {
        GidEntry e;
        e.index = std::atoi(gn.c_str());
        std::string raw;
        if (readSysfs(portDir + "/gids/" + gn, &raw) != 0 || !parseSysfsGid(raw, &e.gid)) continue;
        if (gidIsZero(e.gid)) continue;  // an empty slot (its attributes read EINVAL)
        int e1 = readSysfs(portDir + "/gid_attrs/types/" + gn, &e.type);
        int e2 = readSysfs(portDir + "/gid_attrs/ndevs/" + gn, &e.netdev);
        if (e1 != 0 || e.type.empty()) {
          e.readable = false;
          e.type.clear();
          e.netdev.clear();
        } else if (e2 != 0) {
          e.netdev.clear();  // IB GIDs have no netdev
          if (p.linkLayer == LinkLayer::kEthernet) e.readable = false;
        }
        p.gids.push_back(e);
      }
      if (p.netdev.empty() && p.linkLayer == LinkLayer::kEthernet) {
        // Fall back to the netdev of the first RoCE GID (the port's link-local default entry).
        for (const GidEntry& e : p.gids)
          if (e.readable && !e.netdev.empty() && gidIsLinkLocal(e.gid)) {
            p.netdev = e.netdev;
            break;
          }
      }
      if (!p.netdev.empty()) {
        long mtu = 0;
        if (readInt(root + "/class/net/" + p.netdev + "/mtu", &mtu) && mtu > 0 && mtu < (1 << 20))
          p.netdevMtu = static_cast<int>(mtu);
        if (p.linkLayer == LinkLayer::kEthernet) p.mtu = roceMtuFromNetdev(p.netdevMtu);
        collectUppers(root, p.netdev, 0, &sp.uppers);
      }
      ports->push_back(std::move(sp));
    }
  }
  std::sort(ports->begin(), ports->end(), [](const SysfsPort& a, const SysfsPort& b) {
    if (a.port.pciBusId != b.port.pciBusId) return a.port.pciBusId < b.port.pciBusId;
    if (a.port.port != b.port.port) return a.port.port < b.port.port;
    return a.port.device < b.port.device;
  });
  if (ports->empty()) {
    std::string n = "no RDMA ports under " + classDir;
    WEFT_INFO(TOPO, "%s", n.c_str());
    notes->push_back(n);
  }
  return Status::ok();
}

}  // namespace weft::topo
