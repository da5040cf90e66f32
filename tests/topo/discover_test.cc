#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>

#include "lib/topo/topo.h"
#include "lib/topo/topo_file.h"
#include "topo/topo_test_util.h"

namespace weft::topo {
namespace {

using testing::copyFixture;
using testing::fixtureOptions;
using testing::TempDir;
using testing::writeFile;

NodeTopology discover(const DiscoveryOptions& o) {
  NodeTopology t;
  Status s = discoverNode(o, &t);
  EXPECT_TRUE(s) << s.message();
  Status v = validateTopology(t);
  EXPECT_TRUE(v) << v.message();
  return t;
}

const NicPort* port(const NodeTopology& t, const std::string& device) {
  for (const NicPort& p : t.nics)
    if (p.device == device) return &p;
  ADD_FAILURE() << "no port " << device;
  static NicPort none;
  return &none;
}

std::vector<std::string> railDevices(const NodeTopology& t, const Gpu& g) {
  std::vector<std::string> v;
  for (int r : g.rails) v.push_back(t.railPort(r).device);
  return v;
}

const std::vector<std::string> kDgxGpus = {"0000:16:00.0", "0000:1a:00.0", "0000:36:00.0", "0000:3a:00.0",
                                           "0000:96:00.0", "0000:9a:00.0", "0000:b6:00.0", "0000:ba:00.0"};
const std::vector<std::string> kDgxNics = {"mlx5_0", "mlx5_3", "mlx5_4", "mlx5_5",
                                           "mlx5_6", "mlx5_9", "mlx5_10", "mlx5_11"};
const std::vector<std::string> kOciGpus = {"0000:15:00.0", "0000:19:00.0", "0000:35:00.0", "0000:39:00.0",
                                           "0000:95:00.0", "0000:99:00.0", "0000:b5:00.0", "0000:b9:00.0"};
// Fabric functions in bus order (names deliberately not in bus order).
const std::vector<std::string> kOciFabric = {"mlx5_10", "mlx5_11", "mlx5_12", "mlx5_13", "mlx5_14", "mlx5_15",
                                             "mlx5_16", "mlx5_17", "mlx5_2",  "mlx5_3",  "mlx5_4",  "mlx5_5",
                                             "mlx5_6",  "mlx5_7",  "mlx5_8",  "mlx5_9"};

TEST(DiscoverDgx, EveryGpuHasItsOwnRail) {
  NodeTopology t = discover(fixtureOptions("dgx_h100"));
  EXPECT_EQ(t.hostName, "dgx_h100");
  EXPECT_EQ(t.numaNodes, 2);
  ASSERT_EQ(t.gpus.size(), 8u);
  ASSERT_EQ(t.nics.size(), 8u);
  ASSERT_EQ(t.rails.size(), 8u);
  for (size_t i = 0; i < 8; ++i) {
    const Gpu& g = t.gpus[i];
    EXPECT_EQ(g.pciBusId, kDgxGpus[i]);
    EXPECT_EQ(g.vendorId, 0x10de);
    EXPECT_EQ(g.numaNode, i < 4 ? 0 : 1);
    ASSERT_EQ(g.rails, std::vector<int>{static_cast<int>(i)}) << g.pciBusId;
    EXPECT_EQ(g.railPath, PathType::kPix);
    const NicPort& p = t.railPort(static_cast<int>(i));
    EXPECT_EQ(p.device, kDgxNics[i]);
    EXPECT_EQ(p.closestGpu, static_cast<int>(i));
    EXPECT_EQ(p.closestPath, PathType::kPix);
  }
  // Distance classes: same sub-switch PIX, same top switch PXB, same socket NODE, else SYS.
  EXPECT_EQ(t.distance[0][0].path, PathType::kPix);
  EXPECT_EQ(t.distance[0][1].path, PathType::kPxb);
  EXPECT_EQ(t.distance[0][2].path, PathType::kNode);
  EXPECT_EQ(t.distance[0][4].path, PathType::kSys);
  EXPECT_LT(t.distance[0][0].hops, t.distance[0][1].hops);
}

TEST(DiscoverDgx, InfiniBandPortsAndNumaFallback) {
  NodeTopology t = discover(fixtureOptions("dgx_h100"));
  for (size_t i = 0; i < t.nics.size(); ++i) {
    const NicPort& p = t.nics[i];
    EXPECT_EQ(p.linkLayer, LinkLayer::kInfiniBand);
    EXPECT_EQ(p.state, PortState::kActive);
    EXPECT_EQ(p.rateMbps, 400000u);
    EXPECT_EQ(p.lid, 0x10u + i);
    EXPECT_EQ(p.gidIndex, 0);
    EXPECT_NE(p.gidReason.find("InfiniBand"), std::string::npos);
    EXPECT_EQ(p.netdev, "ib" + std::to_string(i));
    EXPECT_EQ(p.port, 1);
    EXPECT_FALSE(p.excluded);
  }
  // mlx5_9's numa_node is -1: its NUMA node comes from local_cpulist.
  EXPECT_EQ(port(t, "mlx5_9")->numaNode, 1);
  EXPECT_EQ(port(t, "mlx5_9")->cpulist, "4-7");
  EXPECT_EQ(port(t, "mlx5_0")->numaNode, 0);
}

TEST(DiscoverOci, EveryGpuHasBothPortsOfItsDualPortNic) {
  NodeTopology t = discover(fixtureOptions("oci_h100"));
  ASSERT_EQ(t.gpus.size(), 8u);
  ASSERT_EQ(t.nics.size(), 18u);
  ASSERT_EQ(t.rails.size(), 16u);
  for (size_t i = 0; i < 8; ++i) {
    const Gpu& g = t.gpus[i];
    EXPECT_EQ(g.pciBusId, kOciGpus[i]);
    int a = static_cast<int>(2 * i), b = a + 1;
    ASSERT_EQ(g.rails, (std::vector<int>{a, b})) << g.pciBusId;
    EXPECT_EQ(g.railPath, PathType::kPix);
    const NicPort& pa = t.railPort(a);
    const NicPort& pb = t.railPort(b);
    EXPECT_EQ(pa.device, kOciFabric[2 * i]);
    EXPECT_EQ(pb.device, kOciFabric[2 * i + 1]);
    // Dual port = two PCI functions of one NIC, same sys_image_guid: still two rails, told apart by
    // PCI function, never merged by GUID.
    EXPECT_EQ(pa.sysImageGuid, pb.sysImageGuid);
    EXPECT_NE(pa.nodeGuid, pb.nodeGuid);
    EXPECT_EQ(pa.pciBusId.substr(0, 11), pb.pciBusId.substr(0, 11));
    EXPECT_EQ(pa.pciBusId.back(), '0');
    EXPECT_EQ(pb.pciBusId.back(), '1');
    EXPECT_EQ(pa.port, 1);
    EXPECT_EQ(pb.port, 1);
    EXPECT_EQ(pa.linkLayer, LinkLayer::kEthernet);
    EXPECT_EQ(pa.rateMbps, 200000u);
    EXPECT_EQ(pa.mtu, 4096);
    EXPECT_EQ(pa.netdevMtu, 9000);
    EXPECT_EQ(pa.numaNode, i < 4 ? 0 : 1);
  }
}

TEST(DiscoverOci, GidChoices) {
  NodeTopology t = discover(fixtureOptions("oci_h100"));
  struct Want { const char* dev; int index; const char* gid; const char* reason; };
  for (Want w : {Want{"mlx5_10", 3, "::ffff:10.224.0.10", "on rdma0 (the port's netdev)"},
                 Want{"mlx5_11", 5, "::ffff:10.224.1.11", "IPv4 10.224.1.11"},    // EINVAL entries skipped
                 Want{"mlx5_12", 3, "fd00:224:2::12", "routable IPv6"},           // IPv6 only
                 Want{"mlx5_13", 5, "::ffff:10.224.3.13", "on mv-rdma3 (VLAN/macvlan on rdma3)"},
                 Want{"mlx5_14", 3, "::ffff:10.224.4.14", "on rdma4.100 (VLAN/macvlan on rdma4)"},
                 Want{"mlx5_15", 5, "::ffff:10.224.5.15", "IPv4"},                // IPv4 before IPv6
                 Want{"mlx5_16", 5, "::ffff:10.224.6.16", "on rdma6"},            // not docker0's
                 Want{"mlx5_17", 3, "::ffff:10.224.7.17", "IPv4 10.224.7.17"},    // lowest of two
                 Want{"mlx5_2", 3, "::ffff:10.224.8.18", "RoCE v2"},
                 Want{"mlx5_0", 3, "::ffff:10.0.12.34", "on ens300f0"}}) {
    const NicPort* p = port(t, w.dev);
    EXPECT_EQ(p->gidIndex, w.index) << w.dev << ": " << p->gidReason;
    EXPECT_EQ(testing::formatGidForTest(p->gid), w.gid) << w.dev;
    EXPECT_NE(p->gidReason.find(w.reason), std::string::npos) << w.dev << ": " << p->gidReason;
  }
  // EINVAL entries are recorded as unreadable, not dropped silently.
  int unreadable = 0;
  for (const GidEntry& e : port(t, "mlx5_11")->gids) unreadable += e.readable ? 0 : 1;
  EXPECT_EQ(unreadable, 2);
  // The second front-end port has only link-local GIDs.
  const NicPort* fe = port(t, "mlx5_1");
  EXPECT_EQ(fe->gidIndex, -1);
  EXPECT_NE(fe->gidReason.find("no usable RoCE GID"), std::string::npos) << fe->gidReason;
  EXPECT_NE(fe->gidReason.find("ens300f1"), std::string::npos) << fe->gidReason;
}

TEST(DiscoverOci, FrontEndPortsAreExcludedWithReasons) {
  NodeTopology t = discover(fixtureOptions("oci_h100"));
  for (const char* dev : {"mlx5_0", "mlx5_1"}) {
    const NicPort* p = port(t, dev);
    EXPECT_TRUE(p->excluded) << dev;
    EXPECT_EQ(p->rail, -1);
    EXPECT_NE(p->exclusionReason.find("farther than the host bridge from every GPU"), std::string::npos)
        << p->exclusionReason;
    EXPECT_EQ(p->closestPath, PathType::kNode);
  }
  EXPECT_NE(port(t, "mlx5_1")->exclusionReason.find("no usable RoCE GID"), std::string::npos);
  for (const std::string& dev : kOciFabric) EXPECT_FALSE(port(t, dev)->excluded) << dev;
}

TEST(DiscoverOci, WeftIbHcaSelectsAndExcludes) {
  DiscoveryOptions o = fixtureOptions("oci_h100");
  o.ibHca = "=mlx5_10,mlx5_11";
  NodeTopology t = discover(o);
  ASSERT_EQ(t.rails.size(), 2u);
  EXPECT_EQ(t.railPort(0).device, "mlx5_10");
  EXPECT_EQ(t.railPort(1).device, "mlx5_11");
  EXPECT_EQ(t.gpus[0].rails, (std::vector<int>{0, 1}));
  EXPECT_EQ(t.gpus[1].rails, (std::vector<int>{0, 1}));  // nearest remaining: PXB
  EXPECT_EQ(t.gpus[1].railPath, PathType::kPxb);
  EXPECT_NE(port(t, "mlx5_12")->exclusionReason.find("not selected by WEFT_IB_HCA"), std::string::npos);

  // Prefix exclusion: ^mlx5_1 drops mlx5_1 and mlx5_10..mlx5_17.
  o.ibHca = "^mlx5_1";
  t = discover(o);
  ASSERT_EQ(t.rails.size(), 8u);
  for (int r = 0; r < 8; ++r) EXPECT_EQ(t.railPort(r).device, kOciFabric[8 + static_cast<size_t>(r)]);
  EXPECT_NE(port(t, "mlx5_13")->exclusionReason.find("excluded by WEFT_IB_HCA=^mlx5_1"), std::string::npos);
  EXPECT_EQ(t.gpus[4].rails, (std::vector<int>{0, 1}));

  // Port-qualified exact exclusion.
  o.ibHca = "^=mlx5_11:1,mlx5_2:1";
  t = discover(o);
  EXPECT_EQ(t.rails.size(), 14u);
  EXPECT_EQ(railDevices(t, t.gpus[0]), std::vector<std::string>{"mlx5_10"});
  EXPECT_EQ(railDevices(t, t.gpus[4]), std::vector<std::string>{"mlx5_3"});

  // Naming a far port explicitly keeps it.
  o.ibHca = "=mlx5_0,mlx5_10";
  t = discover(o);
  ASSERT_EQ(t.rails.size(), 2u);
  EXPECT_EQ(t.railPort(0).device, "mlx5_10");
  EXPECT_EQ(t.railPort(1).device, "mlx5_0");
  EXPECT_FALSE(port(t, "mlx5_0")->excluded);

  o.ibHca = "mlx5_0:x";
  NodeTopology bad;
  Status s = discoverNode(o, &bad);
  EXPECT_FALSE(s);
  EXPECT_NE(s.message().find("WEFT_IB_HCA"), std::string::npos);
}

TEST(DiscoverOci, DownPortIsExcluded) {
  TempDir dir;
  DiscoveryOptions o = copyFixture("oci_h100", dir);
  writeFile(o.sysfsRoot + "/class/infiniband/mlx5_11/ports/1/state", "1: DOWN\n");
  NodeTopology t = discover(o);
  const NicPort* p = port(t, "mlx5_11");
  EXPECT_TRUE(p->excluded);
  EXPECT_EQ(p->state, PortState::kDown);
  EXPECT_NE(p->exclusionReason.find("port is DOWN"), std::string::npos) << p->exclusionReason;
  EXPECT_EQ(t.rails.size(), 15u);
  EXPECT_EQ(railDevices(t, t.gpus[0]), std::vector<std::string>{"mlx5_10"});
  EXPECT_EQ(railDevices(t, t.gpus[1]), (std::vector<std::string>{"mlx5_12", "mlx5_13"}));
}

TEST(DiscoverOci, FasterPortWinsATieOnlyWhenSpeedsDiffer) {
  TempDir dir;
  DiscoveryOptions o = copyFixture("oci_h100", dir);
  writeFile(o.sysfsRoot + "/class/infiniband/mlx5_11/ports/1/rate", "100 Gb/sec (4X EDR)\n");
  NodeTopology t = discover(o);
  EXPECT_EQ(port(t, "mlx5_11")->rateMbps, 100000u);
  EXPECT_FALSE(port(t, "mlx5_11")->excluded);  // still a rail, just not GPU0's
  EXPECT_EQ(t.rails.size(), 16u);
  EXPECT_EQ(railDevices(t, t.gpus[0]), std::vector<std::string>{"mlx5_10"});
  EXPECT_EQ(railDevices(t, t.gpus[1]), (std::vector<std::string>{"mlx5_12", "mlx5_13"}));
}

TEST(DiscoverOci, LinkLocalOnlyFabricPortIsExcludedAndNamesTheFix) {
  TempDir dir;
  DiscoveryOptions o = copyFixture("oci_h100", dir);
  std::string gids = o.sysfsRoot + "/class/infiniband/mlx5_12/ports/1/";
  for (int i : {2, 3}) {
    std::filesystem::remove(gids + "gids/" + std::to_string(i));
    std::filesystem::remove(gids + "gid_attrs/types/" + std::to_string(i));
    std::filesystem::remove(gids + "gid_attrs/ndevs/" + std::to_string(i));
  }
  NodeTopology t = discover(o);
  const NicPort* p = port(t, "mlx5_12");
  EXPECT_EQ(p->gidIndex, -1);
  EXPECT_TRUE(p->excluded);
  EXPECT_NE(p->exclusionReason.find("2 link-local"), std::string::npos) << p->exclusionReason;
  EXPECT_NE(p->exclusionReason.find("give rdma2 a routable IPv4 or IPv6 address"), std::string::npos);
  EXPECT_NE(p->exclusionReason.find("WEFT_IB_GID_INDEX=mlx5_12:<index>"), std::string::npos);
  EXPECT_EQ(railDevices(t, t.gpus[1]), std::vector<std::string>{"mlx5_13"});
}

TEST(DiscoverOci, AddressFamilyRangeAndForcedIndex) {
  DiscoveryOptions o = fixtureOptions("oci_h100");
  o.addrRange = "192.168.0.0/16";
  NodeTopology t = discover(o);
  ASSERT_EQ(t.rails.size(), 1u);
  EXPECT_EQ(t.railPort(0).device, "mlx5_17");
  EXPECT_EQ(t.railPort(0).gidIndex, 5);

  o = fixtureOptions("oci_h100");
  o.addrFamily = "AF_INET6";
  t = discover(o);
  std::vector<std::string> railsV6;
  for (int r = 0; r < static_cast<int>(t.rails.size()); ++r) railsV6.push_back(t.railPort(r).device);
  EXPECT_EQ(railsV6, (std::vector<std::string>{"mlx5_12", "mlx5_15"}));
  EXPECT_EQ(port(t, "mlx5_15")->gidIndex, 3);

  o = fixtureOptions("oci_h100");
  o.gidIndex = "mlx5_10:1,mlx5_11:4";
  t = discover(o);
  EXPECT_EQ(port(t, "mlx5_10")->gidIndex, 1);
  EXPECT_NE(port(t, "mlx5_10")->gidReason.find("forced by WEFT_IB_GID_INDEX"), std::string::npos);
  EXPECT_EQ(port(t, "mlx5_11")->gidIndex, 4);
  EXPECT_EQ(port(t, "mlx5_12")->gidIndex, 3);  // automatic
}

TEST(DiscoverDgx, NicsFewerThanGpusAreShared) {
  TempDir dir;
  DiscoveryOptions o = copyFixture("dgx_h100", dir);
  for (const char* dev : {"mlx5_3", "mlx5_5", "mlx5_9", "mlx5_11"})
    std::filesystem::remove(o.sysfsRoot + "/class/infiniband/" + dev);
  NodeTopology t = discover(o);
  ASSERT_EQ(t.rails.size(), 4u);
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(t.gpus[i].rails, std::vector<int>{static_cast<int>(i / 2)}) << i;
    EXPECT_EQ(t.gpus[i].railPath, i % 2 ? PathType::kPxb : PathType::kPix);
  }
  EXPECT_EQ(t.railPort(1).device, "mlx5_4");
}

TEST(DiscoverDgx, TwoPortsOnOnePciFunction) {
  TempDir dir;
  DiscoveryOptions o = copyFixture("dgx_h100", dir);
  std::string dev = o.sysfsRoot + "/class/infiniband/mlx5_0/ports/";
  std::filesystem::copy(dev + "1", dev + "2", std::filesystem::copy_options::recursive);
  writeFile(dev + "2/lid", "0x99\n");
  NodeTopology t = discover(o);
  ASSERT_EQ(t.nics.size(), 9u);
  ASSERT_EQ(t.rails.size(), 9u);
  EXPECT_EQ(t.railPort(0).device, "mlx5_0");
  EXPECT_EQ(t.railPort(0).port, 1);
  EXPECT_EQ(t.railPort(1).device, "mlx5_0");
  EXPECT_EQ(t.railPort(1).port, 2);
  EXPECT_EQ(t.railPort(1).lid, 0x99u);
  EXPECT_EQ(t.railPort(1).pciBusId, t.railPort(0).pciBusId);
  EXPECT_EQ(t.gpus[0].rails, (std::vector<int>{0, 1}));
  EXPECT_EQ(t.gpus[1].rails, std::vector<int>{2});
  // A port-qualified WEFT_IB_HCA entry picks one of the two.
  o.ibHca = "=mlx5_0:2,mlx5_3";
  t = discover(o);
  ASSERT_EQ(t.rails.size(), 2u);
  EXPECT_EQ(t.railPort(0).port, 2);
  EXPECT_EQ(t.railPort(1).device, "mlx5_3");
}

TEST(Discover, GpuBusIdsOverride) {
  DiscoveryOptions o = fixtureOptions("oci_h100");
  o.gpuBusIds = {"0000:36:00.0", "15:00.0"};  // not GPUs in the fixture's eyes, and unsorted
  o.gpuBusIds = {"0000:35:00.0", "15:00.0"};
  NodeTopology t = discover(o);
  ASSERT_EQ(t.gpus.size(), 2u);
  EXPECT_EQ(t.gpus[0].pciBusId, "0000:15:00.0");
  EXPECT_EQ(t.gpus[1].pciBusId, "0000:35:00.0");
  EXPECT_EQ(t.gpus[0].rails, (std::vector<int>{0, 1}));
  EXPECT_EQ(t.gpus[1].rails, (std::vector<int>{4, 5}));
  EXPECT_EQ(t.gpuIndex("0000:35:00.0"), 1);
  EXPECT_EQ(t.gpuIndex("35:00.0"), 1);
  EXPECT_EQ(t.gpuIndex("0000:99:00.0"), -1);

  // A GPU missing from the PCI tree: distances unknown, every rail, and a note.
  o.gpuBusIds = {"0000:ee:00.0"};
  t = discover(o);
  ASSERT_EQ(t.gpus.size(), 1u);
  EXPECT_EQ(t.gpus[0].rails.size(), 16u);
  EXPECT_EQ(t.gpus[0].railPath, PathType::kUnknown);
  bool noted = false;
  for (const std::string& n : t.notes) noted |= n.find("0000:ee:00.0 is not in the hwloc PCI tree") != std::string::npos;
  EXPECT_TRUE(noted);

  o.gpuBusIds = {"gpu0"};
  Status s = discoverNode(o, &t);
  EXPECT_FALSE(s);
  EXPECT_NE(s.message().find("not a PCI bus id"), std::string::npos);
}

TEST(Discover, GpusFromSysfsWhenHwlocHasNoPciTree) {
  TempDir dir;
  std::string xml = dir.path() + "/cpu_only.xml";
  writeFile(xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE topology SYSTEM \"hwloc2.dtd\">\n"
            "<topology version=\"2.0\">\n"
            "  <object type=\"Machine\" os_index=\"0\" cpuset=\"0x00000001\" complete_cpuset=\"0x00000001\" "
            "allowed_cpuset=\"0x00000001\" nodeset=\"0x00000001\" complete_nodeset=\"0x00000001\" "
            "allowed_nodeset=\"0x00000001\" gp_index=\"1\">\n"
            "    <object type=\"NUMANode\" os_index=\"0\" cpuset=\"0x00000001\" complete_cpuset=\"0x00000001\" "
            "nodeset=\"0x00000001\" complete_nodeset=\"0x00000001\" gp_index=\"2\" local_memory=\"1000000\"/>\n"
            "    <object type=\"PU\" os_index=\"0\" cpuset=\"0x00000001\" complete_cpuset=\"0x00000001\" "
            "nodeset=\"0x00000001\" complete_nodeset=\"0x00000001\" gp_index=\"3\"/>\n"
            "  </object>\n</topology>\n");
  DiscoveryOptions o = fixtureOptions("dgx_h100");
  o.hwlocXml = xml;
  NodeTopology t = discover(o);
  ASSERT_EQ(t.gpus.size(), 8u);
  EXPECT_EQ(t.gpus[0].pciBusId, kDgxGpus[0]);
  EXPECT_EQ(t.gpus[0].numaNode, 0);  // from sysfs numa_node
  EXPECT_EQ(t.rails.size(), 8u);
  // Distances from the sysfs device paths instead: the same answer as hwloc gives.
  NodeTopology ref = discover(fixtureOptions("dgx_h100"));
  for (size_t g = 0; g < 8; ++g) {
    EXPECT_EQ(t.gpus[g].rails, ref.gpus[g].rails) << g;
    EXPECT_EQ(t.gpus[g].railPath, ref.gpus[g].railPath) << g;
    for (size_t n = 0; n < 8; ++n) EXPECT_EQ(t.distance[g][n], ref.distance[g][n]) << g << " " << n;
  }
  bool noted = false;
  for (const std::string& n : t.notes) noted |= n.find("from sysfs device paths") != std::string::npos;
  EXPECT_TRUE(noted);

  // Without the sysfs PCI tree either, distances are unknown and each GPU gets every rail.
  TempDir dir2;
  DiscoveryOptions c = testing::copyFixture("dgx_h100", dir2);
  c.hwlocXml = xml;
  std::filesystem::remove_all(c.sysfsRoot + "/bus");
  c.gpuBusIds = kDgxGpus;
  for (const std::string& dev : kDgxNics)  // NIC device links that no longer lead to a PCI path
    std::filesystem::remove(c.sysfsRoot + "/class/infiniband/" + dev + "/device");
  t = discover(c);
  ASSERT_EQ(t.gpus.size(), 8u);
  EXPECT_EQ(t.gpus[0].rails.size(), 8u);
  EXPECT_EQ(t.gpus[0].railPath, PathType::kUnknown);
  EXPECT_EQ(t.distance[0][0].path, PathType::kUnknown);
}

TEST(Discover, SysfsRootAloneDescribesTheWholeNode) {
  for (const char* fx : {"dgx_h100", "oci_h100"}) {
    DiscoveryOptions o = fixtureOptions(fx);
    NodeTopology ref = discover(o);
    o.hwlocXml.clear();  // not this machine's hwloc: the fixture's sysfs PCI tree
    NodeTopology t = discover(o);
    EXPECT_EQ(t.numaNodes, 2);
    ASSERT_EQ(t.gpus.size(), ref.gpus.size()) << fx;
    ASSERT_EQ(t.rails, ref.rails) << fx;
    for (size_t g = 0; g < t.gpus.size(); ++g) {
      EXPECT_EQ(t.gpus[g].rails, ref.gpus[g].rails) << fx << g;
      EXPECT_EQ(t.gpus[g].numaNode, ref.gpus[g].numaNode) << fx << g;
      EXPECT_EQ(t.distance[g], ref.distance[g]) << fx << g;
    }
    for (size_t n = 0; n < t.nics.size(); ++n) {
      EXPECT_EQ(t.nics[n].excluded, ref.nics[n].excluded) << fx << n;
      EXPECT_EQ(t.nics[n].gidIndex, ref.nics[n].gidIndex) << fx << n;
    }
  }
}

// Damaged sysfs trees (garbage, empty or missing attributes): discovery never crashes, and what it
// returns is consistent and survives a dump/load round trip.
TEST(Discover, DamagedSysfsNeverCrashes) {
  TempDir dir;
  DiscoveryOptions o = copyFixture("oci_h100", dir);
  std::vector<std::string> files;
  for (auto& e : std::filesystem::recursive_directory_iterator(o.sysfsRoot + "/devices"))
    if (e.is_regular_file() && !e.is_symlink()) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  ASSERT_GT(files.size(), 500u);
  std::mt19937 rng(4242);
  const char* junk[] = {"", "\n", "-1", "4: ACTIVE", "ffff", "0x", "1: DOWN", "RoCE v2",
                        "fe80:0000:0000:0000:0000:0000:0000:0001", "9999999999999999999999",
                        "0000:0000:0000:0000:0000:ffff:0a00:0001", "eth\x01\xff", "400 Gb/sec", "-5-3"};
  for (int round = 0; round < 15; ++round) {
    for (int k = 0; k < 40; ++k) {
      const std::string& f = files[rng() % files.size()];
      if (rng() % 5 == 0) {
        std::filesystem::remove(f);
      } else {
        std::string text = junk[rng() % (sizeof junk / sizeof junk[0])];
        if (rng() % 4 == 0) text = std::string(1 + rng() % 64, static_cast<char>(rng()));
        writeFile(f, text);
      }
    }
    NodeTopology t;
    Status s = discoverNode(o, &t);
    ASSERT_TRUE(s) << s.message();
    Status v = validateTopology(t);
    ASSERT_TRUE(v) << v.message();
    NodeTopology back;
    Status r = parseTopologyText(formatTopologyText(t), &back);
    ASSERT_TRUE(r) << r.message();
    EXPECT_EQ(back, t);
  }
}

TEST(Discover, ThisMachineLoadsWithoutCrashing) {
  DiscoveryOptions o;  // the live system: on this VM no GPU and no NIC
  NodeTopology t = discover(o);
  EXPECT_FALSE(t.hostName.empty());
  EXPECT_EQ(t.rails.size() + 0, t.rails.size());
  if (t.nics.empty()) {
    bool noted = false;
    for (const std::string& n : t.notes) noted |= n.find("RDMA") != std::string::npos;
    EXPECT_TRUE(noted);
  }
}

TEST(Discover, MissingInputs) {
  DiscoveryOptions o;
  o.sysfsRoot = "/nonexistent/weft/sys";
  o.hwlocXml = testing::fixtureDir("dgx_h100") + "/topology.xml";
  NodeTopology t = discover(o);
  EXPECT_EQ(t.gpus.size(), 8u);
  EXPECT_TRUE(t.nics.empty());
  EXPECT_TRUE(t.rails.empty());
  for (const Gpu& g : t.gpus) EXPECT_TRUE(g.rails.empty());

  o.hwlocXml = "/nonexistent/topology.xml";
  Status s = discoverNode(o, &t);
  EXPECT_FALSE(s);
  EXPECT_NE(s.message().find("WEFT_HWLOC_XML"), std::string::npos) << s.message();

  TempDir dir;
  o.hwlocXml = dir.path() + "/garbage.xml";
  writeFile(o.hwlocXml, "this is not xml\n");
  s = discoverNode(o, &t);
  EXPECT_FALSE(s);
  EXPECT_NE(s.message().find("WEFT_HWLOC_XML"), std::string::npos) << s.message();
}

TEST(Discover, OptionsFromEnvironment) {
  setenv("WEFT_SYSFS_ROOT", "/x/sys", 1);
  setenv("WEFT_HWLOC_XML", "/x/t.xml", 1);
  setenv("WEFT_GPU_BUS_IDS", "0000:15:00.0,0000:19:00.0", 1);
  setenv("WEFT_IB_HCA", "^mlx5_0", 1);
  setenv("WEFT_IB_GID_INDEX", "mlx5_2:3", 1);
  setenv("WEFT_IB_ADDR_FAMILY", "AF_INET6", 1);
  setenv("WEFT_IB_ADDR_RANGE", "fd00::/8", 1);
  setenv("WEFT_IB_ROCE_VERSION_NUM", "1", 1);
  DiscoveryOptions o = DiscoveryOptions::fromEnv();
  EXPECT_EQ(o.sysfsRoot, "/x/sys");
  EXPECT_EQ(o.hwlocXml, "/x/t.xml");
  EXPECT_EQ(o.gpuBusIds, (std::vector<std::string>{"0000:15:00.0", "0000:19:00.0"}));
  EXPECT_EQ(o.ibHca, "^mlx5_0");
  EXPECT_EQ(o.gidIndex, "mlx5_2:3");
  EXPECT_EQ(o.addrFamily, "AF_INET6");
  EXPECT_EQ(o.addrRange, "fd00::/8");
  EXPECT_EQ(o.roceVersion, 1);
  for (const char* v : {"WEFT_SYSFS_ROOT", "WEFT_HWLOC_XML", "WEFT_GPU_BUS_IDS", "WEFT_IB_HCA",
                        "WEFT_IB_GID_INDEX", "WEFT_IB_ADDR_FAMILY", "WEFT_IB_ADDR_RANGE",
                        "WEFT_IB_ROCE_VERSION_NUM"})
    unsetenv(v);
  o = DiscoveryOptions::fromEnv();
  EXPECT_EQ(o.sysfsRoot, "/sys");
  EXPECT_TRUE(o.hwlocXml.empty());
  EXPECT_TRUE(o.gpuBusIds.empty());
  EXPECT_EQ(o.roceVersion, 2);
}

TEST(Discover, BusIdNormalisation) {
  std::string b;
  EXPECT_TRUE(normalizeBusId("0000:1B:00.0", &b));
  EXPECT_EQ(b, "0000:1b:00.0");
  EXPECT_TRUE(normalizeBusId("1b:00.0", &b));
  EXPECT_EQ(b, "0000:1b:00.0");
  EXPECT_TRUE(normalizeBusId("00000000:1B:00.0", &b));  // CUDA's form
  EXPECT_EQ(b, "0000:1b:00.0");
  for (const char* bad : {"", "1b", "0000:1b:00", "0000:1b:00.8", "0000:1b:20.0", "zz:00.0",
                          "0000:100:00.0", "0000:1b:00.0x", "0000:1b:00.0 1"})
    EXPECT_FALSE(normalizeBusId(bad, &b)) << bad;
}

}  // namespace
}  // namespace weft::topo
