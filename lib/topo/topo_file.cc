#include "lib/topo/topo_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>

#include "lib/core/util.h"
#include "lib/topo/gid.h"

namespace weft::topo {

namespace {

constexpr size_t kMaxGpus = 1024;
constexpr size_t kMaxPorts = 4096;
constexpr size_t kMaxGids = 1024;
constexpr size_t kMaxNotes = 1024;
constexpr size_t kMaxString = 4096;
constexpr size_t kMaxFileBytes = 16u << 20;
constexpr char kMagic[8] = {'W', 'E', 'F', 'T', 'T', 'O', 'P', 'O'};

// ---------------------------------------------------------------------------------------------
// Text helpers: values are percent-encoded so that a record is space-separated tokens.

bool plainChar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c != 0 && std::strchr("._:/,()+-[]*^@!~", c) != nullptr);
}

std::string enc(const std::string& s) {
  std::string o;
  for (unsigned char c : s) {
    if (plainChar(c)) {
      o += static_cast<char>(c);
    } else {
      char b[4];
      std::snprintf(b, sizeof b, "%%%02X", c);
      o += b;
    }
  }
  return o;
}

int hexVal(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool dec(std::string_view s, std::string* out) {
  std::string o;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) return false;
      int h = hexVal(s[i + 1]), l = hexVal(s[i + 2]);
      if (h < 0 || l < 0) return false;
      o += static_cast<char>(h * 16 + l);
      i += 2;
    } else if (plainChar(static_cast<unsigned char>(s[i]))) {
      o += s[i];
    } else {
      return false;
    }
  }
  if (o.size() > kMaxString) return false;
  *out = o;
  return true;
}

bool parseI64(std::string_view s, int64_t lo, int64_t hi, int64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  size_t i = 0;
  bool neg = false;
  if (s[0] == '-') {
    neg = true;
    i = 1;
    if (s.size() == 1) return false;
  }
  int64_t v = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    if (v > (INT64_MAX - 9) / 10) return false;
    v = v * 10 + (s[i] - '0');
  }
  if (neg) v = -v;
  if (v < lo || v > hi) return false;
  *out = v;
  return true;
}

std::vector<std::string_view> splitSpaces(std::string_view line) {
  std::vector<std::string_view> t;
  size_t pos = 0;
  for (;;) {  // empty tokens are kept (an empty value, or refused later)
    size_t sp = line.find(' ', pos);
    if (sp == std::string_view::npos) {
      t.push_back(line.substr(pos));
      return t;
    }
    t.push_back(line.substr(pos, sp - pos));
    pos = sp + 1;
  }
}

std::string intList(const std::vector<int>& v) {
  std::string s;
  for (int x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s.empty() ? "-" : s;
}

PortState stateFromName(const std::string& s, bool* ok) {
  for (int i = 0; i <= 5; ++i)
    if (s == portStateName(static_cast<PortState>(i))) {
      *ok = true;
      return static_cast<PortState>(i);
    }
  *ok = false;
  return PortState::kUnknown;
}

LinkLayer linkFromName(const std::string& s, bool* ok) {
  *ok = true;
  if (s == "InfiniBand") return LinkLayer::kInfiniBand;
  if (s == "Ethernet") return LinkLayer::kEthernet;
  if (s == "unknown") return LinkLayer::kUnknown;
  *ok = false;
  return LinkLayer::kUnknown;
}

// A record's key=value fields, each allowed once.
class Fields {
 public:
  Status parse(const std::vector<std::string_view>& toks, size_t from, const std::string& where) {
    for (size_t i = from; i < toks.size(); ++i) {
      size_t eq = toks[i].find('=');
      if (eq == std::string_view::npos || eq == 0)
        return invalidArgument(where + ": \"" + std::string(toks[i].substr(0, 64)) +
                               "\" is not key=value");
      std::string key(toks[i].substr(0, eq));
      if (kv_.count(key)) return invalidArgument(where + ": field " + key + " appears twice");
      kv_[key] = toks[i].substr(eq + 1);
    }
    return Status::ok();
  }
  // Take a field; absent → default stays.
  Status str(const char* key, std::string* out, const std::string& where) {
    auto it = kv_.find(key);
    if (it == kv_.end()) return Status::ok();
    std::string v;
    if (!dec(it->second, &v))
      return invalidArgument(where + ": field " + key + " has a bad escape or character");
    kv_.erase(it);
    *out = v;
    return Status::ok();
  }
  template <typename T>
  Status num(const char* key, int64_t lo, int64_t hi, T* out, const std::string& where) {
    auto it = kv_.find(key);
    if (it == kv_.end()) return Status::ok();
    int64_t v;
    if (!parseI64(it->second, lo, hi, &v))
      return invalidArgument(where + ": field " + key + "=" + std::string(it->second.substr(0, 32)) +
                             " is not a number in [" + std::to_string(lo) + ", " +
                             std::to_string(hi) + "]");
    kv_.erase(it);
    *out = static_cast<T>(v);
    return Status::ok();
  }
  Status done(const std::string& where) {
    if (!kv_.empty())
      return invalidArgument(where + ": unknown field " + kv_.begin()->first.substr(0, 64) +
                             " (this weft reads topology format version " +
                             std::to_string(kTopoFileVersion) + ")");
    return Status::ok();
  }

 private:
  std::map<std::string, std::string_view> kv_;
};

Status parseIntList(const std::string& s, std::vector<int>* out, const std::string& what) {
  out->clear();
  if (s == "-") return Status::ok();
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t c = s.find(',', pos);
    if (c == std::string::npos) c = s.size();
    int64_t v;
    if (!parseI64(std::string_view(s).substr(pos, c - pos), 0, 1 << 20, &v))
      return invalidArgument(what + " is not a comma list of numbers");
    out->push_back(static_cast<int>(v));
    if (out->size() > kMaxPorts) return invalidArgument(what + " is too long");
    pos = c + 1;
  }
  return Status::ok();
}

}  // namespace

// -----------------------------------------------------------------------------------------------
// Validation shared by both readers.

Status validateTopology(const NodeTopology& t) {
  if (t.gpus.size() > kMaxGpus || t.nics.size() > kMaxPorts || t.notes.size() > kMaxNotes)
    return invalidArgument("too many GPUs, ports or notes");
  std::set<std::string> seen;
  for (size_t g = 0; g < t.gpus.size(); ++g) {
    const Gpu& gpu = t.gpus[g];
    std::string b;
    if (!normalizeBusId(gpu.pciBusId, &b) || b != gpu.pciBusId)
      return invalidArgument("GPU " + std::to_string(g) + " has a malformed bus id \"" +
                             gpu.pciBusId.substr(0, 64) + "\"");
    if (!seen.insert(b).second) return invalidArgument("GPU " + b + " is listed twice");
    if (g > 0 && t.gpus[g - 1].pciBusId > gpu.pciBusId)
      return invalidArgument("GPUs are not sorted by bus id");
    for (size_t i = 0; i < gpu.rails.size(); ++i) {
      if (gpu.rails[i] < 0 || static_cast<size_t>(gpu.rails[i]) >= t.rails.size())
        return invalidArgument("GPU " + b + " names rail " + std::to_string(gpu.rails[i]) +
                               " but there are " + std::to_string(t.rails.size()) + " rails");
      if (i > 0 && gpu.rails[i - 1] >= gpu.rails[i])
        return invalidArgument("GPU " + b + "'s rails are not sorted and distinct");
    }
    if (gpu.numaNode < -1) return invalidArgument("GPU " + b + " has a bad NUMA node");
  }
  std::set<std::pair<std::string, int>> ports;
  size_t usable = 0;
  for (size_t n = 0; n < t.nics.size(); ++n) {
    const NicPort& p = t.nics[n];
    std::string name = "port " + std::to_string(n) + " (" + p.device.substr(0, 64) + ")";
    if (p.device.empty()) return invalidArgument(name + " has no device name");
    if (p.port < 1 || p.port > 255) return invalidArgument(name + " has a bad port number");
    if (!p.pciBusId.empty()) {
      std::string b;
      if (!normalizeBusId(p.pciBusId, &b) || b != p.pciBusId)
        return invalidArgument(name + " has a malformed PCI bus id");
    }
    if (!ports.insert({p.pciBusId.empty() ? p.device : p.pciBusId, p.port}).second)
      return invalidArgument(name + ": the same (PCI function, port) is listed twice");
    if (p.gidIndex < -1 || p.numaNode < -1) return invalidArgument(name + " has a bad GID index or NUMA node");
    if (p.gids.size() > kMaxGids) return invalidArgument(name + " has too many GID entries");
    for (const GidEntry& e : p.gids)
      if (e.index < 0 || e.index > 65535) return invalidArgument(name + " has a bad GID entry index");
    if (p.closestGpu < -1 || p.closestGpu >= static_cast<int>(t.gpus.size()))
      return invalidArgument(name + " names a closest GPU that does not exist");
    if (p.excluded) {
      if (p.rail != -1) return invalidArgument(name + " is excluded but has a rail");
    } else {
      ++usable;
      if (p.rail < 0 || static_cast<size_t>(p.rail) >= t.rails.size() ||
          t.rails[static_cast<size_t>(p.rail)] != static_cast<int>(n))
        return invalidArgument(name + "'s rail " + std::to_string(p.rail) +
                               " does not match the rail list");
    }
  }
  if (usable != t.rails.size())
    return invalidArgument("the rail list has " + std::to_string(t.rails.size()) +
                           " entries but " + std::to_string(usable) + " ports are usable");
  if (t.distance.size() != t.gpus.size())
    return invalidArgument("the distance table does not have one row per GPU");
  for (const auto& row : t.distance) {
    if (row.size() != t.nics.size())
      return invalidArgument("the distance table does not have one column per port");
    for (const PciDistance& d : row)
      if (d.path < PathType::kPix || d.path > PathType::kUnknown || d.hops < -1 || d.hops > 1000)
        return invalidArgument("the distance table holds an invalid distance");
  }
  if (t.numaNodes < 0 || t.numaNodes > 4096) return invalidArgument("bad NUMA node count");
  return Status::ok();
}

// -----------------------------------------------------------------------------------------------
// Text.

std::string formatTopologyText(const NodeTopology& t) {
  std::string o;
  o += "weft-topology " + std::to_string(kTopoFileVersion) + "\n";
  o += "# weft node topology; format: lib/topo/TOPO_FILE_FORMAT.md\n";
  o += "host " + enc(t.hostName) + "\n";
  o += "source " + enc(t.source) + "\n";
  o += "numa-nodes " + std::to_string(t.numaNodes) + "\n";
  char hex[8];
  for (const Gpu& g : t.gpus) {
    o += "gpu " + g.pciBusId;
    std::snprintf(hex, sizeof hex, "%04x", g.vendorId);
    o += std::string(" vendor=") + hex;
    std::snprintf(hex, sizeof hex, "%04x", g.deviceId);
    o += std::string(" device=") + hex;
    o += " numa=" + std::to_string(g.numaNode) + " rails=" + intList(g.rails) +
         " rail-path=" + pathTypeName(g.railPath) + "\n";
  }
  for (const NicPort& p : t.nics) {
    o += "port " + enc(p.device) + " " + std::to_string(p.port);
    o += " pci=" + (p.pciBusId.empty() ? std::string("-") : p.pciBusId);
    o += std::string(" state=") + portStateName(p.state);
    o += std::string(" link=") + linkLayerName(p.linkLayer);
    o += " rate=" + std::to_string(p.rateMbps) + " rate-text=" + enc(p.rateText);
    o += " mtu=" + std::to_string(p.mtu) + " netdev-mtu=" + std::to_string(p.netdevMtu);
    o += " numa=" + std::to_string(p.numaNode) + " cpulist=" + enc(p.cpulist);
    o += " netdev=" + enc(p.netdev) + " node-guid=" + enc(p.nodeGuid) +
         " sys-guid=" + enc(p.sysImageGuid) + " lid=" + std::to_string(p.lid);
    o += " gid-index=" + std::to_string(p.gidIndex) + " gid=" + formatGid(p.gid);
    o += " rail=" + std::to_string(p.rail) + " closest-gpu=" + std::to_string(p.closestGpu) +
         " closest-path=" + pathTypeName(p.closestPath);
    o += std::string(" excluded=") + (p.excluded ? "1" : "0");
    o += " gid-reason=" + enc(p.gidReason) + " exclusion-reason=" + enc(p.exclusionReason) + "\n";
  }
  for (size_t n = 0; n < t.nics.size(); ++n)
    for (const GidEntry& e : t.nics[n].gids)
      o += "gid " + std::to_string(n) + " " + std::to_string(e.index) + " " + formatGid(e.gid) +
           " readable=" + (e.readable ? "1" : "0") + " type=" + enc(e.type) +
           " netdev=" + enc(e.netdev) + "\n";
  for (size_t g = 0; g < t.distance.size(); ++g)
    for (size_t n = 0; n < t.distance[g].size(); ++n)
      o += "dist " + std::to_string(g) + " " + std::to_string(n) + " " +
           pathTypeName(t.distance[g][n].path) + " " + std::to_string(t.distance[g][n].hops) + "\n";
  for (const std::string& n : t.notes) o += "note " + enc(n) + "\n";
  char end[64];
  std::snprintf(end, sizeof end, "end %016" PRIx64 "\n", hash64(o.data(), o.size()));
  return o + end;
}

Status parseTopologyText(std::string_view text, NodeTopology* out, const std::string& what) {
  auto bad = [&](size_t line, const std::string& m) {
    return invalidArgument("the topology file " + what + " is refused: line " +
                           std::to_string(line) + ": " + m +
                           "; regenerate it with WEFT_TOPO_DUMP_FILE (format: "
                           "lib/topo/TOPO_FILE_FORMAT.md)");
  };
  if (text.size() > kMaxFileBytes) return bad(0, "it is larger than 16 MiB");
  NodeTopology t;
  bool sawHeader = false, sawEnd = false;
  size_t lineNo = 0, pos = 0;
  std::vector<std::vector<bool>> distSeen;
  bool distStarted = false;
  while (pos < text.size()) {
    size_t lineStart = pos;
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) return bad(lineNo + 1, "the file is truncated (no newline at the end)");
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++lineNo;
    if (sawEnd) return bad(lineNo, "text after the end line");
    if (line.find('\r') != std::string_view::npos || line.find('\t') != std::string_view::npos ||
        line.find('\0') != std::string_view::npos)
      return bad(lineNo, "control characters in the line");
    if (!sawHeader) {
      if (line.substr(0, 14) != "weft-topology ")
        return bad(lineNo, "it does not start with \"weft-topology <version>\"; is it a weft topology file?");
      int64_t v;
      if (!parseI64(line.substr(14), 0, 1 << 30, &v)) return bad(lineNo, "the version is not a number");
      if (v != kTopoFileVersion)
        return bad(lineNo, "format version " + std::to_string(v) + " is not supported (this weft reads version " +
                               std::to_string(kTopoFileVersion) + ")");
      sawHeader = true;
      continue;
    }
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string_view> tok = splitSpaces(line);
    std::string_view kind = tok[0];
    std::string where = std::string(kind.substr(0, 16)) + " record";
    auto need = [&](size_t n) { return tok.size() >= n; };
    Status s;
    if (kind == "end") {
      if (tok.size() != 2) return bad(lineNo, "the end line must be \"end <checksum>\"");
      if (tok[1] != "-") {
        char want[32];
        std::snprintf(want, sizeof want, "%016" PRIx64, hash64(text.data(), lineStart));
        if (tok[1] != want)
          return bad(lineNo, "checksum mismatch: the file is damaged or was edited (write \"end -\" "
                             "to accept a hand-edited file)");
      }
      sawEnd = true;
    } else if (kind == "host" || kind == "source") {
      if (tok.size() != 2) return bad(lineNo, where + " needs one value");
      std::string v;
      if (!dec(tok[1], &v)) return bad(lineNo, where + " has a bad escape or character");
      (kind == "host" ? t.hostName : t.source) = v;
    } else if (kind == "numa-nodes") {
      int64_t v;
      if (tok.size() != 2 || !parseI64(tok[1], 0, 4096, &v)) return bad(lineNo, "numa-nodes needs a count");
      t.numaNodes = static_cast<int>(v);
    } else if (kind == "gpu") {
      if (!t.nics.empty() || distStarted) return bad(lineNo, "gpu records must come before port and dist records");
      if (!need(2)) return bad(lineNo, "gpu record without a bus id");
      if (t.gpus.size() >= kMaxGpus) return bad(lineNo, "too many GPUs");
      Gpu g;
      g.pciBusId = std::string(tok[1].substr(0, 64));
      Fields f;
      std::string vendor = "0000", device = "0000", rails = "-", railPath = "UNKNOWN";
      s = f.parse(tok, 2, where);
      if (s) s = f.str("vendor", &vendor, where);
      if (s) s = f.str("device", &device, where);
      if (s) s = f.num("numa", -1, 4095, &g.numaNode, where);
      if (s) s = f.str("rails", &rails, where);
      if (s) s = f.str("rail-path", &railPath, where);
      if (s) s = f.done(where);
      if (!s) return bad(lineNo, s.message());
      int64_t v;
      auto hex16 = [&](const std::string& h, uint16_t* o) {
        if (h.size() != 4) return false;
        int64_t acc = 0;
        for (char c : h) {
          int d = hexVal(c);
          if (d < 0) return false;
          acc = acc * 16 + d;
        }
        v = acc;
        *o = static_cast<uint16_t>(acc);
        return true;
      };
      if (!hex16(vendor, &g.vendorId) || !hex16(device, &g.deviceId))
        return bad(lineNo, "vendor/device must be 4 hex digits");
      s = parseIntList(rails, &g.rails, "rails");
      if (!s) return bad(lineNo, s.message());
      if (!parsePathType(railPath, &g.railPath)) return bad(lineNo, "unknown rail-path " + railPath.substr(0, 16));
      t.gpus.push_back(g);
    } else if (kind == "port") {
      if (distStarted) return bad(lineNo, "port records must come before dist records");
      if (!need(3)) return bad(lineNo, "port record needs a device name and port number");
      if (t.nics.size() >= kMaxPorts) return bad(lineNo, "too many ports");
      NicPort p;
      if (!dec(tok[1], &p.device)) return bad(lineNo, "bad device name");
      int64_t pn;
      if (!parseI64(tok[2], 1, 255, &pn)) return bad(lineNo, "bad port number");
      p.port = static_cast<int>(pn);
      Fields f;
      std::string pci = "-", state = "UNKNOWN", link = "unknown", gid = "::", path = "UNKNOWN";
      int excluded = 0;
      s = f.parse(tok, 3, where);
      if (s) s = f.str("pci", &pci, where);
      if (s) s = f.str("state", &state, where);
      if (s) s = f.str("link", &link, where);
      if (s) s = f.num("rate", 0, UINT32_MAX, &p.rateMbps, where);
      if (s) s = f.str("rate-text", &p.rateText, where);
      if (s) s = f.num("mtu", 0, 1 << 20, &p.mtu, where);
      if (s) s = f.num("netdev-mtu", 0, 1 << 20, &p.netdevMtu, where);
      if (s) s = f.num("numa", -1, 4095, &p.numaNode, where);
      if (s) s = f.str("cpulist", &p.cpulist, where);
      if (s) s = f.str("netdev", &p.netdev, where);
      if (s) s = f.str("node-guid", &p.nodeGuid, where);
      if (s) s = f.str("sys-guid", &p.sysImageGuid, where);
      if (s) s = f.num("lid", 0, 0xffff, &p.lid, where);
      if (s) s = f.num("gid-index", -1, 65535, &p.gidIndex, where);
      if (s) s = f.str("gid", &gid, where);
      if (s) s = f.num("rail", -1, 1 << 20, &p.rail, where);
      if (s) s = f.num("closest-gpu", -1, 1 << 20, &p.closestGpu, where);
      if (s) s = f.str("closest-path", &path, where);
      if (s) s = f.num("excluded", 0, 1, &excluded, where);
      if (s) s = f.str("gid-reason", &p.gidReason, where);
      if (s) s = f.str("exclusion-reason", &p.exclusionReason, where);
      if (s) s = f.done(where);
      if (!s) return bad(lineNo, s.message());
      p.pciBusId = pci == "-" ? "" : pci;
      bool ok1, ok2;
      p.state = stateFromName(state, &ok1);
      p.linkLayer = linkFromName(link, &ok2);
      if (!ok1 || !ok2) return bad(lineNo, "unknown state or link layer");
      if (!parseGidText(gid, &p.gid)) return bad(lineNo, "gid is not an IPv6-form address");
      if (!parsePathType(path, &p.closestPath)) return bad(lineNo, "unknown closest-path");
      p.excluded = excluded != 0;
      t.nics.push_back(std::move(p));
    } else if (kind == "gid") {
      if (tok.size() < 4) return bad(lineNo, "gid record needs port, index and value");
      int64_t n, idx;
      if (!parseI64(tok[1], 0, static_cast<int64_t>(t.nics.size()) - 1, &n))
        return bad(lineNo, "gid record names a port that was not listed before it");
      if (!parseI64(tok[2], 0, 65535, &idx)) return bad(lineNo, "bad GID entry index");
      GidEntry e;
      e.index = static_cast<int>(idx);
      if (!parseGidText(std::string(tok[3].substr(0, 64)), &e.gid)) return bad(lineNo, "GID value is not an IPv6-form address");
      Fields f;
      int readable = 1;
      s = f.parse(tok, 4, where);
      if (s) s = f.num("readable", 0, 1, &readable, where);
      if (s) s = f.str("type", &e.type, where);
      if (s) s = f.str("netdev", &e.netdev, where);
      if (s) s = f.done(where);
      if (!s) return bad(lineNo, s.message());
      e.readable = readable != 0;
      auto& gids = t.nics[static_cast<size_t>(n)].gids;
      if (gids.size() >= kMaxGids) return bad(lineNo, "too many GID entries");
      if (!gids.empty() && gids.back().index >= e.index) return bad(lineNo, "GID entries out of order");
      gids.push_back(e);
    } else if (kind == "dist") {
      if (!distStarted) {
        distStarted = true;
        t.distance.assign(t.gpus.size(), std::vector<PciDistance>(t.nics.size()));
        distSeen.assign(t.gpus.size(), std::vector<bool>(t.nics.size(), false));
      }
      int64_t g, n, hops;
      PciDistance d;
      if (tok.size() != 5 || !parseI64(tok[1], 0, static_cast<int64_t>(t.gpus.size()) - 1, &g) ||
          !parseI64(tok[2], 0, static_cast<int64_t>(t.nics.size()) - 1, &n) ||
          !parsePathType(std::string(tok[3].substr(0, 16)), &d.path) || !parseI64(tok[4], -1, 1000, &hops))
        return bad(lineNo, "dist record must be \"dist <gpu> <port> <PIX|PXB|PHB|NODE|SYS|UNKNOWN> <hops>\" with listed GPU and port");
      if (distSeen[static_cast<size_t>(g)][static_cast<size_t>(n)]) return bad(lineNo, "distance given twice");
      distSeen[static_cast<size_t>(g)][static_cast<size_t>(n)] = true;
      d.hops = static_cast<int>(hops);
      t.distance[static_cast<size_t>(g)][static_cast<size_t>(n)] = d;
    } else if (kind == "note") {
      if (tok.size() != 2) return bad(lineNo, "note needs one value");
      std::string v;
      if (!dec(tok[1], &v)) return bad(lineNo, "note has a bad escape or character");
      if (t.notes.size() >= kMaxNotes) return bad(lineNo, "too many notes");
      t.notes.push_back(v);
    } else {
      return bad(lineNo, "unknown record \"" + std::string(kind.substr(0, 32)) + "\"");
    }
  }
  if (!sawHeader) return bad(0, "the file is empty");
  if (!sawEnd) return bad(lineNo, "the file is truncated (no end line)");
  if (!distStarted) t.distance.assign(t.gpus.size(), std::vector<PciDistance>(t.nics.size()));
  // Rails from the ports' rail numbers.
  size_t usable = 0;
  for (const NicPort& p : t.nics)
    if (!p.excluded) ++usable;
  t.rails.assign(usable, -1);
  for (size_t n = 0; n < t.nics.size(); ++n) {
    const NicPort& p = t.nics[n];
    if (p.excluded) continue;
    if (p.rail < 0 || static_cast<size_t>(p.rail) >= usable || t.rails[static_cast<size_t>(p.rail)] != -1)
      return bad(lineNo, "port " + std::to_string(n) + " has rail " + std::to_string(p.rail) +
                             "; usable ports must be numbered 0.." + std::to_string(usable) + "-1 once each");
    t.rails[static_cast<size_t>(p.rail)] = static_cast<int>(n);
  }
  Status v = validateTopology(t);
  if (!v) return bad(lineNo, v.message());
  *out = std::move(t);
  return Status::ok();
}

Status writeTopologyFile(const NodeTopology& topo, const std::string& path) {
  std::string text = formatTopologyText(topo);
  std::string tmp = path + ".tmp" + std::to_string(getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return errnoStatus("cannot write the topology file " + tmp + " (WEFT_TOPO_DUMP_FILE); "
                       "choose a writable path", errno);
  size_t off = 0;
  while (off < text.size()) {
    ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return errnoStatus("cannot write the topology file " + path, err);
    }
    off += static_cast<size_t>(n);
  }
  if (::close(fd) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return errnoStatus("cannot write the topology file " + path, err);
  }
  return Status::ok();
}

Status readTopologyFile(const std::string& path, NodeTopology* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errnoStatus("cannot read the topology file " + path +
                           " (WEFT_TOPO_FILE); fix the path or unset it", errno);
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return errnoStatus("cannot read the topology file " + path, err);
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxFileBytes) break;
  }
  ::close(fd);
  return parseTopologyText(text, out, path);
}

// -----------------------------------------------------------------------------------------------
// Binary.

namespace {

class Writer {
 public:
  void u8(uint8_t v) { b_.push_back(v); }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) b_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void i32(int32_t v) { u32(static_cast<uint32_t>(v)); }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) b_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void str(const std::string& s) {
    u32(static_cast<uint32_t>(s.size()));
    b_.insert(b_.end(), s.begin(), s.end());
  }
  void bytes(const uint8_t* p, size_t n) { b_.insert(b_.end(), p, p + n); }
  std::vector<uint8_t>& buf() { return b_; }

 private:
  std::vector<uint8_t> b_;
};

class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  bool u8(uint8_t* v) {
    if (n_ - off_ < 1) return false;
    *v = p_[off_++];
    return true;
  }
  bool u32(uint32_t* v) {
    if (n_ - off_ < 4) return false;
    uint32_t x = 0;
    for (int i = 0; i < 4; ++i) x |= static_cast<uint32_t>(p_[off_ + static_cast<size_t>(i)]) << (8 * i);
    off_ += 4;
    *v = x;
    return true;
  }
  bool i32(int32_t* v) {
    uint32_t x;
    if (!u32(&x)) return false;
    *v = static_cast<int32_t>(x);
    return true;
  }
  bool str(std::string* s) {
    uint32_t len;
    if (!u32(&len) || len > kMaxString || n_ - off_ < len) return false;
    s->assign(reinterpret_cast<const char*>(p_ + off_), len);
    off_ += len;
    return true;
  }
  bool bytes(uint8_t* out, size_t n) {
    if (n_ - off_ < n) return false;
    std::memcpy(out, p_ + off_, n);
    off_ += n;
    return true;
  }
  // A count of items each at least minBytes long.
  bool count(uint32_t* c, size_t max, size_t minBytes) {
    if (!u32(c) || *c > max || static_cast<size_t>(*c) * minBytes > n_ - off_) return false;
    return true;
  }
  bool atEnd() const { return off_ == n_; }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t off_ = 0;
};

}  // namespace

NodeTopology compactTopology(const NodeTopology& t) {
  NodeTopology c;
  c.hostName = t.hostName;
  c.numaNodes = t.numaNodes;
  c.gpus = t.gpus;
  for (size_t r = 0; r < t.rails.size(); ++r) {
    NicPort p = t.nics[static_cast<size_t>(t.rails[r])];
    p.rateText.clear();
    p.cpulist.clear();
    p.gids.clear();
    p.gidReason.clear();
    p.exclusionReason.clear();
    c.nics.push_back(std::move(p));
    c.rails.push_back(static_cast<int>(r));
  }
  c.distance.assign(t.gpus.size(), {});
  for (size_t g = 0; g < t.gpus.size() && g < t.distance.size(); ++g)
    for (int n : t.rails) c.distance[g].push_back(t.distance[g][static_cast<size_t>(n)]);
  return c;
}

std::vector<uint8_t> serializeTopology(const NodeTopology& t) {
  Writer w;
  w.str(t.hostName);
  w.str(t.source);
  w.i32(t.numaNodes);
  w.u32(static_cast<uint32_t>(t.gpus.size()));
  for (const Gpu& g : t.gpus) {
    w.str(g.pciBusId);
    w.u32(static_cast<uint32_t>(g.vendorId) << 16 | g.deviceId);
    w.i32(g.numaNode);
    w.u8(static_cast<uint8_t>(g.railPath));
    w.u32(static_cast<uint32_t>(g.rails.size()));
    for (int r : g.rails) w.i32(r);
  }
  w.u32(static_cast<uint32_t>(t.nics.size()));
  for (const NicPort& p : t.nics) {
    w.str(p.device);
    w.str(p.pciBusId);
    w.i32(p.port);
    w.u8(static_cast<uint8_t>(p.state));
    w.u8(static_cast<uint8_t>(p.linkLayer));
    w.u32(p.rateMbps);
    w.str(p.rateText);
    w.i32(p.mtu);
    w.i32(p.netdevMtu);
    w.i32(p.numaNode);
    w.str(p.cpulist);
    w.str(p.netdev);
    w.str(p.nodeGuid);
    w.str(p.sysImageGuid);
    w.u32(p.lid);
    w.u32(static_cast<uint32_t>(p.gids.size()));
    for (const GidEntry& e : p.gids) {
      w.i32(e.index);
      w.bytes(e.gid.data(), e.gid.size());
      w.u8(e.readable ? 1 : 0);
      w.str(e.type);
      w.str(e.netdev);
    }
    w.i32(p.gidIndex);
    w.bytes(p.gid.data(), p.gid.size());
    w.str(p.gidReason);
    w.i32(p.rail);
    w.u8(p.excluded ? 1 : 0);
    w.str(p.exclusionReason);
    w.i32(p.closestGpu);
    w.u8(static_cast<uint8_t>(p.closestPath));
  }
  for (const auto& row : t.distance)
    for (const PciDistance& d : row) {
      w.u8(static_cast<uint8_t>(d.path));
      w.i32(d.hops);
    }
  w.u32(static_cast<uint32_t>(t.notes.size()));
  for (const std::string& n : t.notes) w.str(n);

  std::vector<uint8_t>& payload = w.buf();
  Writer out;
  out.bytes(reinterpret_cast<const uint8_t*>(kMagic), sizeof kMagic);
  out.u32(kTopoFileVersion);
  out.u32(static_cast<uint32_t>(payload.size()));
  out.bytes(payload.data(), payload.size());
  out.u64(hash64(payload.data(), payload.size()));
  return std::move(out.buf());
}

Status deserializeTopology(const void* data, size_t size, NodeTopology* out) {
  auto bad = [](const std::string& m) {
    return invalidArgument("a node description received from a peer is refused: " + m +
                           "; every rank must run the same weft version");
  };
  const auto* p = static_cast<const uint8_t*>(data);
  if (size < sizeof kMagic + 16 || std::memcmp(p, kMagic, sizeof kMagic) != 0)
    return bad("it does not start with the WEFTTOPO magic");
  Reader h(p + sizeof kMagic, size - sizeof kMagic);
  uint32_t version, len;
  h.u32(&version);
  h.u32(&len);
  if (version != kTopoFileVersion)
    return bad("format version " + std::to_string(version) + " (this weft reads " +
               std::to_string(kTopoFileVersion) + ")");
  if (static_cast<size_t>(len) != size - sizeof kMagic - 16) return bad("its length field does not match its size");
  const uint8_t* payload = p + sizeof kMagic + 8;
  uint64_t want = 0;
  for (int i = 0; i < 8; ++i) want |= static_cast<uint64_t>(payload[len + static_cast<size_t>(i)]) << (8 * i);
  if (hash64(payload, len) != want) return bad("checksum mismatch (damaged in transit)");

  Reader r(payload, len);
  NodeTopology t;
  const char* trunc = "it is truncated or malformed";
  uint32_t n;
  if (!r.str(&t.hostName) || !r.str(&t.source) || !r.i32(&t.numaNodes)) return bad(trunc);
  if (!r.count(&n, kMaxGpus, 17)) return bad(trunc);
  t.gpus.resize(n);
  for (Gpu& g : t.gpus) {
    uint32_t ids, nr;
    uint8_t path;
    if (!r.str(&g.pciBusId) || !r.u32(&ids) || !r.i32(&g.numaNode) || !r.u8(&path) ||
        !r.count(&nr, kMaxPorts, 4))
      return bad(trunc);
    g.vendorId = static_cast<uint16_t>(ids >> 16);
    g.deviceId = static_cast<uint16_t>(ids & 0xffff);
    if (path < 1 || path > 6) return bad("a GPU has an invalid path type");
    g.railPath = static_cast<PathType>(path);
    g.rails.resize(nr);
    for (int& x : g.rails)
      if (!r.i32(&x)) return bad(trunc);
  }
  if (!r.count(&n, kMaxPorts, 64)) return bad(trunc);
  t.nics.resize(n);
  for (NicPort& q : t.nics) {
    uint8_t state, link, excl, path;
    uint32_t ng;
    if (!r.str(&q.device) || !r.str(&q.pciBusId) || !r.i32(&q.port) || !r.u8(&state) ||
        !r.u8(&link) || !r.u32(&q.rateMbps) || !r.str(&q.rateText) || !r.i32(&q.mtu) ||
        !r.i32(&q.netdevMtu) || !r.i32(&q.numaNode) || !r.str(&q.cpulist) || !r.str(&q.netdev) ||
        !r.str(&q.nodeGuid) || !r.str(&q.sysImageGuid) || !r.u32(&q.lid) ||
        !r.count(&ng, kMaxGids, 29))
      return bad(trunc);
    if (state > 5 || link > 2) return bad("a port has an invalid state or link layer");
    q.state = static_cast<PortState>(state);
    q.linkLayer = static_cast<LinkLayer>(link);
    q.gids.resize(ng);
    for (GidEntry& e : q.gids) {
      uint8_t rd;
      if (!r.i32(&e.index) || !r.bytes(e.gid.data(), 16) || !r.u8(&rd) || !r.str(&e.type) ||
          !r.str(&e.netdev) || rd > 1)
        return bad(trunc);
      e.readable = rd != 0;
    }
    if (!r.i32(&q.gidIndex) || !r.bytes(q.gid.data(), 16) || !r.str(&q.gidReason) ||
        !r.i32(&q.rail) || !r.u8(&excl) || !r.str(&q.exclusionReason) || !r.i32(&q.closestGpu) ||
        !r.u8(&path) || excl > 1 || path < 1 || path > 6)
      return bad(trunc);
    q.excluded = excl != 0;
    q.closestPath = static_cast<PathType>(path);
  }
  t.distance.assign(t.gpus.size(), std::vector<PciDistance>(t.nics.size()));
  for (auto& row : t.distance)
    for (PciDistance& d : row) {
      uint8_t path;
      if (!r.u8(&path) || !r.i32(&d.hops) || path < 1 || path > 6) return bad(trunc);
      d.path = static_cast<PathType>(path);
    }
  if (!r.count(&n, kMaxNotes, 4)) return bad(trunc);
  t.notes.resize(n);
  for (std::string& s : t.notes)
    if (!r.str(&s)) return bad(trunc);
  if (!r.atEnd()) return bad("it has trailing bytes");
  size_t usable = 0;
  for (const NicPort& q : t.nics)
    if (!q.excluded) ++usable;
  t.rails.assign(usable, -1);
  for (size_t i = 0; i < t.nics.size(); ++i) {
    const NicPort& q = t.nics[i];
    if (q.excluded) continue;
    if (q.rail < 0 || static_cast<size_t>(q.rail) >= usable || t.rails[static_cast<size_t>(q.rail)] != -1)
      return bad("its rail numbering is inconsistent");
    t.rails[static_cast<size_t>(q.rail)] = static_cast<int>(i);
  }
  Status v = validateTopology(t);
  if (!v) return bad(v.message());
  *out = std::move(t);
  return Status::ok();
}

}  // namespace weft::topo
