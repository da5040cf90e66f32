#include "lib/topo/gid.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cstring>

namespace weft::topo {

namespace {
int hexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

bool parseIndex(const std::string& s, int* out) {
  std::string t = trim(s);
  if (t.empty() || t.size() > 5) return false;
  bool neg = t[0] == '-';
  size_t i = neg ? 1 : 0;
  if (i == t.size()) return false;
  int v = 0;
  for (; i < t.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(t[i]))) return false;
    v = v * 10 + (t[i] - '0');
  }
  *out = neg ? -v : v;
  return true;
}

std::string ipv4Text(const Gid& g) {
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, g.data() + 12, buf, sizeof buf);
  return buf;
}
}  // namespace

bool parseSysfsGid(const std::string& raw, Gid* out) {
  std::string s = trim(raw);
  if (s.size() != 39) return false;
  Gid g{};
  for (int grp = 0; grp < 8; ++grp) {
    size_t base = static_cast<size_t>(grp) * 5;
    if (grp < 7 && s[base + 4] != ':') return false;
    int v = 0;
    for (int k = 0; k < 4; ++k) {
      int d = hexDigit(s[base + static_cast<size_t>(k)]);
      if (d < 0) return false;
      v = v * 16 + d;
    }
    g[static_cast<size_t>(grp) * 2] = static_cast<uint8_t>(v >> 8);
    g[static_cast<size_t>(grp) * 2 + 1] = static_cast<uint8_t>(v & 0xff);
  }
  *out = g;
  return true;
}

std::string formatGid(const Gid& g) {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, g.data(), buf, sizeof buf);
  return buf;
}

bool parseGidText(const std::string& s, Gid* out) {
  Gid g{};
  if (inet_pton(AF_INET6, s.c_str(), g.data()) != 1) return false;
  *out = g;
  return true;
}

bool gidIsZero(const Gid& g) {
  return std::all_of(g.begin(), g.end(), [](uint8_t b) { return b == 0; });
}
bool gidIsLinkLocal(const Gid& g) { return g[0] == 0xfe && (g[1] & 0xc0) == 0x80; }
bool gidIsIpv4Mapped(const Gid& g) {
  for (int i = 0; i < 10; ++i)
    if (g[static_cast<size_t>(i)] != 0) return false;
  return g[10] == 0xff && g[11] == 0xff;
}

Status GidPolicy::parse(const std::string& gidIndex, const std::string& family,
                        const std::string& range, int roceVersion, GidPolicy* out) {
  GidPolicy p;
  p.gidIndexSpec = gidIndex;
  p.rangeSpec = range;
  std::string spec = trim(gidIndex);
  if (!spec.empty()) {
    size_t start = 0;
    while (start <= spec.size()) {
      size_t comma = spec.find(',', start);
      if (comma == std::string::npos) comma = spec.size();
      std::string item = trim(spec.substr(start, comma - start));
      start = comma + 1;
      if (item.empty()) continue;
      size_t colon = item.rfind(':');
      int idx = 0;
      if (colon == std::string::npos) {
        if (!parseIndex(item, &idx) || idx < -1 || idx > 65535)
          return invalidArgument("WEFT_IB_GID_INDEX=\"" + gidIndex + "\": \"" + item +
                                 "\" is not a GID index; give a number (-1 = automatic) or "
                                 "device:index pairs such as mlx5_0:3,mlx5_1:5");
        p.globalIndex = idx;
      } else {
        std::string dev = trim(item.substr(0, colon));
        if (dev.empty() || !parseIndex(item.substr(colon + 1), &idx) || idx < -1 || idx > 65535)
          return invalidArgument("WEFT_IB_GID_INDEX=\"" + gidIndex + "\": \"" + item +
                                 "\" is not device:index; write e.g. mlx5_0:3");
        p.perDevice.emplace_back(dev, idx);
      }
    }
  }
  std::string fam = trim(family);
  if (fam.empty() || fam == "auto") p.family = 0;
  else if (fam == "AF_INET" || fam == "inet" || fam == "4") p.family = 4;
  else if (fam == "AF_INET6" || fam == "inet6" || fam == "6") p.family = 6;
  else
    return invalidArgument("WEFT_IB_ADDR_FAMILY=\"" + family +
                           "\" is not an address family; use AF_INET or AF_INET6, or unset it "
                           "for IPv4 first, then IPv6");
  std::string r = trim(range);
  if (!r.empty()) {
    size_t slash = r.find('/');
    std::string addr = r.substr(0, slash);
    int bits = -1;
    bool bitsOk = slash != std::string::npos && parseIndex(r.substr(slash + 1), &bits);
    unsigned char v4[4];
    Gid v6{};
    if (bitsOk && inet_pton(AF_INET, addr.c_str(), v4) == 1 && bits >= 0 && bits <= 32) {
      p.rangeIpv4 = true;
      p.rangeAddr[10] = 0xff;
      p.rangeAddr[11] = 0xff;
      std::memcpy(p.rangeAddr.data() + 12, v4, 4);
      p.rangeBits = 96 + bits;
    } else if (bitsOk && inet_pton(AF_INET6, addr.c_str(), v6.data()) == 1 && bits >= 0 &&
               bits <= 128) {
      p.rangeAddr = v6;
      p.rangeBits = bits;
    } else {
      return invalidArgument("WEFT_IB_ADDR_RANGE=\"" + range +
                             "\" is not a CIDR range; write e.g. 10.0.0.0/8 or fd00::/8");
    }
    p.hasRange = true;
  }
  if (roceVersion != 1 && roceVersion != 2)
    return invalidArgument("WEFT_IB_ROCE_VERSION_NUM=" + std::to_string(roceVersion) +
                           " is not a RoCE version; use 1 or 2");
  p.roceVersion = roceVersion;
  *out = p;
  return Status::ok();
}

int GidPolicy::forcedIndex(const std::string& device) const {
  for (const auto& [dev, idx] : perDevice)
    if (dev == device) return idx;
  return globalIndex;
}

bool GidPolicy::inRange(const Gid& g) const {
  if (!hasRange) return true;
  if (rangeIpv4 != gidIsIpv4Mapped(g)) return false;
  for (int bit = 0; bit < rangeBits; ++bit) {
    size_t byte = static_cast<size_t>(bit / 8);
    uint8_t mask = static_cast<uint8_t>(0x80 >> (bit % 8));
    if ((g[byte] & mask) != (rangeAddr[byte] & mask)) return false;
  }
  return true;
}

GidChoice chooseGid(const NicPort& port, const std::vector<std::string>& uppers,
                    const GidPolicy& policy) {
  GidChoice c;
  std::string where = port.device + " port " + std::to_string(port.port);
  int forced = policy.forcedIndex(port.device);
  if (forced >= 0) {
    for (const GidEntry& e : port.gids) {
      if (e.index != forced) continue;
      c.index = forced;
      c.gid = e.gid;
      c.reason = "index " + std::to_string(forced) + " forced by WEFT_IB_GID_INDEX=" +
                 policy.gidIndexSpec;
      if (!e.readable || gidIsZero(e.gid))
        c.reason += " (warning: that entry is empty or unreadable here)";
      else if (gidIsLinkLocal(e.gid))
        c.reason += " (warning: " + formatGid(e.gid) + " is link-local, not routable)";
      else
        c.reason += " (" + (e.type.empty() ? std::string("?") : e.type) + " " + formatGid(e.gid) +
                    (e.netdev.empty() ? "" : " on " + e.netdev) + ")";
      return c;
    }
    c.reason = "WEFT_IB_GID_INDEX=" + policy.gidIndexSpec + " forces index " +
               std::to_string(forced) + " but " + where + " has no such GID entry (" +
               std::to_string(port.gids.size()) + " entries); set a valid index or unset it";
    return c;
  }

  if (port.linkLayer == LinkLayer::kInfiniBand) {
    c.index = 0;
    for (const GidEntry& e : port.gids)
      if (e.index == 0) c.gid = e.gid;
    c.reason = "InfiniBand: LID routing with the default GID (index 0)";
    return c;
  }

  const std::string wantType = policy.roceVersion == 2 ? "RoCE v2" : "v1";
  int nUnreadable = 0, nEmpty = 0, nLinkLocal = 0, nType = 0, nNetdev = 0, nFamily = 0,
      nRange = 0;
  struct Cand {
    int rank;  // lower is better
    const GidEntry* e;
    bool upper;
  };
  std::vector<Cand> cands;
  for (const GidEntry& e : port.gids) {
    if (!e.readable) { ++nUnreadable; continue; }
    if (gidIsZero(e.gid)) { ++nEmpty; continue; }
    if (gidIsLinkLocal(e.gid)) { ++nLinkLocal; continue; }
    bool typeOk = policy.roceVersion == 2 ? e.type == "RoCE v2"
                                          : e.type.find("v1") != std::string::npos;
    if (!typeOk) { ++nType; continue; }
    bool upper = false;
    if (!port.netdev.empty() && e.netdev != port.netdev) {
      if (std::find(uppers.begin(), uppers.end(), e.netdev) == uppers.end()) {
        ++nNetdev;
        continue;
      }
      upper = true;
    }
    bool v4 = gidIsIpv4Mapped(e.gid);
    if ((policy.family == 4 && !v4) || (policy.family == 6 && v4)) { ++nFamily; continue; }
    if (!policy.inRange(e.gid)) { ++nRange; continue; }
    cands.push_back({(v4 ? 0 : 2) + (upper ? 1 : 0), &e, upper});
  }
  if (!cands.empty()) {
    auto best = std::min_element(cands.begin(), cands.end(), [](const Cand& a, const Cand& b) {
      return a.rank != b.rank ? a.rank < b.rank : a.e->index < b.e->index;
    });
    const GidEntry& e = *best->e;
    bool v4 = gidIsIpv4Mapped(e.gid);
    c.index = e.index;
    c.gid = e.gid;
    c.reason = "index " + std::to_string(e.index) + ": " + e.type + " " +
               (v4 ? "IPv4 " + ipv4Text(e.gid) : "IPv6 " + formatGid(e.gid));
    if (port.netdev.empty())
      c.reason += " on " + (e.netdev.empty() ? std::string("?") : e.netdev) +
                  " (the port's netdev is unknown)";
    else if (best->upper)
      c.reason += " on " + e.netdev + " (VLAN/macvlan on " + port.netdev + ")";
    else
      c.reason += " on " + e.netdev + " (the port's netdev)";
    if (!v4 && policy.family == 0) c.reason += "; no IPv4-mapped entry, routable IPv6 used";
    if (policy.hasRange) c.reason += "; inside WEFT_IB_ADDR_RANGE=" + policy.rangeSpec;
    return c;
  }
  std::string why;
  auto add = [&](int n, const char* what) {
    if (n == 0) return;
    if (!why.empty()) why += ", ";
    why += std::to_string(n) + " " + what;
  };
  add(nLinkLocal, "link-local");
  add(nType, ("not " + wantType).c_str());
  add(nNetdev, "on other netdevs");
  add(nFamily, "of the other address family");
  add(nRange, "outside WEFT_IB_ADDR_RANGE");
  add(nUnreadable, "unreadable");
  add(nEmpty, "empty");
  if (why.empty()) why = "the GID table is empty";
  std::string nd = port.netdev.empty() ? std::string("the port's netdev") : port.netdev;
  c.reason = "no usable RoCE GID on " + where + " (" + why + "); give " + nd +
             " a routable IPv4 or IPv6 address";
  if (policy.family != 0 || policy.hasRange)
    c.reason += ", relax WEFT_IB_ADDR_FAMILY/WEFT_IB_ADDR_RANGE";
  c.reason += ", or set WEFT_IB_GID_INDEX=" + port.device + ":<index>";
  return c;
}

}  // namespace weft::topo
