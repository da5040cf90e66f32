// Node topology: what one server has (GPUs by PCI bus id, RDMA ports by PCI function and port, rails,
// GID choices, PCI distances, exclusions), as plain data that lib/plan and the verbs transport consume.
//
// Sources: hwloc (CPUs, NUMA nodes, PCI tree; live or an XML), sysfs (class/infiniband, class/net; a
// configurable root), and optionally a topology file written earlier (TOPO_FILE_FORMAT.md).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "lib/core/status.h"

namespace weft::topo {

// PCI path class between two devices, nearest first (nvidia-smi `topo -m` vocabulary).
enum class PathType : uint8_t {
  kPix = 1,      // at most one PCIe bridge (same switch)
  kPxb = 2,      // several PCIe bridges, not through the host bridge
  kPhb = 3,      // through a PCIe host bridge
  kNode = 4,     // different host bridges, same NUMA node
  kSys = 5,      // across the inter-socket link
  kUnknown = 6,  // a device is missing from the PCI tree
};
const char* pathTypeName(PathType p);
bool parsePathType(const std::string& s, PathType* out);

enum class LinkLayer : uint8_t { kUnknown = 0, kInfiniBand = 1, kEthernet = 2 };
const char* linkLayerName(LinkLayer l);  // "InfiniBand", "Ethernet", "unknown"

// IB port states with the kernel's numbers (sysfs "4: ACTIVE").
enum class PortState : uint8_t {
  kUnknown = 0, kDown = 1, kInit = 2, kArmed = 3, kActive = 4, kActiveDefer = 5,
};
const char* portStateName(PortState s);

using Gid = std::array<uint8_t, 16>;

// One entry of a port's GID table as sysfs shows it.
struct GidEntry {
  int index = 0;
  Gid gid{};
  bool readable = true;  // false: gid_attrs could not be read (EINVAL for empty entries)
  std::string type;      // "RoCE v2", "IB/RoCE v1", "RoCE v1"; empty when unreadable
  std::string netdev;    // gid_attrs/ndevs/N
  bool operator==(const GidEntry&) const = default;
};

// One RDMA port: a (PCI function, port) pair. Never identified by name or GUID alone.
struct NicPort {
  std::string device;      // verbs device name, e.g. mlx5_0 (names differ across nodes; rails don't)
  std::string pciBusId;    // the PCI function, 0000:0c:00.0
  int port = 1;            // 1-based verbs port number
  PortState state = PortState::kUnknown;
  LinkLayer linkLayer = LinkLayer::kUnknown;
  uint32_t rateMbps = 0;   // from ports/N/rate, e.g. 400000
  std::string rateText;    // "400 Gb/sec (4X NDR)"
  int mtu = 0;             // active path MTU in bytes (RoCE: from the netdev MTU); 0 = ask verbs
  int netdevMtu = 0;       // the netdev's MTU, 0 when no netdev
  int numaNode = -1;
  std::string cpulist;     // device/local_cpulist
  std::string netdev;      // the port's own netdev (RoCE: eth2; IB: the IPoIB interface if any)
  std::string nodeGuid;    // as sysfs prints it
  std::string sysImageGuid;
  uint32_t lid = 0;        // InfiniBand only
  std::vector<GidEntry> gids;
  int gidIndex = -1;       // the chosen GID index; -1 = none usable
  Gid gid{};               // the chosen GID's value
  std::string gidReason;   // why this index (or why none)
  int rail = -1;           // rail number, -1 when excluded
  bool excluded = false;
  std::string exclusionReason;
  int closestGpu = -1;     // index into NodeTopology::gpus; -1 without GPUs
  PathType closestPath = PathType::kUnknown;
  bool operator==(const NicPort&) const = default;
};

struct Gpu {
  std::string pciBusId;      // 0000:1b:00.0 (lower case, with domain)
  uint16_t vendorId = 0;
  uint16_t deviceId = 0;
  int numaNode = -1;
  std::vector<int> rails;    // the rails at this GPU's smallest PCI distance
  PathType railPath = PathType::kUnknown;  // that distance
  bool operator==(const Gpu&) const = default;
};

// Distance between a GPU and a port's PCI function.
struct PciDistance {
  PathType path = PathType::kUnknown;
  int hops = -1;  // links on the path through the nearest common ancestor; -1 unknown
  bool operator==(const PciDistance&) const = default;
  bool operator<(const PciDistance& o) const {
    if (path != o.path) return path < o.path;
    // unknown hops sort last
    return static_cast<unsigned>(hops) < static_cast<unsigned>(o.hops);
  }
};

struct NodeTopology {
  static constexpr int kFormatVersion = 1;
  std::string hostName;
  std::string source;            // where it came from, e.g. "sysfs=/sys hwloc=live"
  int numaNodes = 0;
  std::vector<Gpu> gpus;         // sorted by bus id
  std::vector<NicPort> nics;     // every port seen, excluded ones too, sorted by (bus id, port)
  std::vector<int> rails;        // rails[r] = index into nics of rail r
  std::vector<std::vector<PciDistance>> distance;  // distance[gpu][nic]
  std::vector<std::string> notes;  // fallbacks taken and other facts a person should know
  bool operator==(const NodeTopology&) const = default;

  const NicPort& railPort(int r) const { return nics[static_cast<size_t>(rails[static_cast<size_t>(r)])]; }
  int gpuIndex(const std::string& busId) const;  // -1 if absent
};

// Where discovery reads from and how it chooses; fromEnv() fills it from the WEFT_* table.
struct DiscoveryOptions {
  std::string sysfsRoot = "/sys";
  std::string hwlocXml;                // empty: the live system
  std::vector<std::string> gpuBusIds;  // non-empty: these are the GPUs (from CUDA or WEFT_GPU_BUS_IDS)
  std::string ibHca;                   // WEFT_IB_HCA syntax
  std::string gidIndex;                // WEFT_IB_GID_INDEX syntax
  std::string addrFamily;              // "", "AF_INET", "AF_INET6"
  std::string addrRange;               // CIDR or empty
  int roceVersion = 2;
  std::string hostName;                // empty: gethostname()

  static DiscoveryOptions fromEnv();
};

// Discover this node (or the node the options' fixtures describe). Missing pieces (no hwloc I/O
// objects, no RDMA devices, no GPUs) give empty lists, INFO lines and notes, not errors; malformed
// settings (WEFT_IB_HCA, WEFT_IB_GID_INDEX, ...) are errors.
Status discoverNode(const DiscoveryOptions& options, NodeTopology* out);

// What the engine calls: WEFT_TOPO_FILE → read it (checked against options.gpuBusIds when given),
// else discoverNode; then WEFT_TOPO_DUMP_FILE → write it.
Status loadNodeTopology(const DiscoveryOptions& options, const std::string& topoFile,
                        const std::string& dumpFile, NodeTopology* out);
// Same, everything from the environment.
Status loadNodeTopologyFromEnv(NodeTopology* out);

// Recompute rails, per-GPU rail sets and closest GPUs from gpus, nics (exclusions set) and distance.
// discoverNode calls it; exposed for tests and for the planner's synthetic nodes.
void assignRails(NodeTopology* topo);

// Normalise a PCI bus id to "dddd:bb:dd.f" lower case; false if it is not one.
bool normalizeBusId(const std::string& in, std::string* out);

// Structural checks (indices in range, rails consistent); the file readers run it.
Status validateTopology(const NodeTopology& topo);

}  // namespace weft::topo
