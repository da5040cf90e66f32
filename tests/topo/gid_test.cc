#include "lib/topo/gid.h"

#include <gtest/gtest.h>

namespace weft::topo {
namespace {

Gid g(const char* text) {
  Gid x{};
  EXPECT_TRUE(parseGidText(text, &x)) << text;
  return x;
}

GidEntry entry(int index, const char* gid, const char* type, const char* ndev) {
  GidEntry e;
  e.index = index;
  e.gid = g(gid);
  if (type == nullptr) {
    e.readable = false;
  } else {
    e.type = type;
    e.netdev = ndev ? ndev : "";
  }
  return e;
}

NicPort rocePort(std::vector<GidEntry> gids) {
  NicPort p;
  p.device = "mlx5_4";
  p.port = 1;
  p.linkLayer = LinkLayer::kEthernet;
  p.netdev = "eth4";
  p.gids = std::move(gids);
  return p;
}

GidPolicy policy(const std::string& idx = "", const std::string& fam = "",
                 const std::string& range = "", int ver = 2) {
  GidPolicy p;
  Status s = GidPolicy::parse(idx, fam, range, ver, &p);
  EXPECT_TRUE(s) << s.message();
  return p;
}

TEST(Gid, SysfsAndTextForms) {
  Gid x;
  ASSERT_TRUE(parseSysfsGid("0000:0000:0000:0000:0000:ffff:0a00:0001", &x));
  EXPECT_TRUE(gidIsIpv4Mapped(x));
  EXPECT_EQ(formatGid(x), "::ffff:10.0.0.1");
  ASSERT_TRUE(parseSysfsGid("fe80:0000:0000:0000:a088:c203:0042:1a00\n", &x));
  EXPECT_TRUE(gidIsLinkLocal(x));
  EXPECT_EQ(formatGid(x), "fe80::a088:c203:42:1a00");
  EXPECT_FALSE(parseSysfsGid("fe80::1", &x));
  EXPECT_FALSE(parseSysfsGid("fe80:0000:0000:0000:a088:c203:0042:1a0g", &x));
  EXPECT_FALSE(parseSysfsGid("", &x));
  ASSERT_TRUE(parseSysfsGid("0000:0000:0000:0000:0000:0000:0000:0000", &x));
  EXPECT_TRUE(gidIsZero(x));
  EXPECT_FALSE(gidIsLinkLocal(g("fd00::1")));
  EXPECT_TRUE(gidIsLinkLocal(g("febf::1")));
}

TEST(Gid, StandardMlx5TableChoosesIndex3) {
  NicPort p = rocePort({entry(0, "fe80::1", "IB/RoCE v1", "eth4"), entry(1, "fe80::1", "RoCE v2", "eth4"),
                        entry(2, "::ffff:10.1.2.3", "IB/RoCE v1", "eth4"),
                        entry(3, "::ffff:10.1.2.3", "RoCE v2", "eth4")});
  GidChoice c = chooseGid(p, {}, policy());
  EXPECT_EQ(c.index, 3);
  EXPECT_EQ(formatGid(c.gid), "::ffff:10.1.2.3");
  EXPECT_NE(c.reason.find("IPv4 10.1.2.3 on eth4 (the port's netdev)"), std::string::npos) << c.reason;
  // RoCE v1 when asked.
  c = chooseGid(p, {}, policy("", "", "", 1));
  EXPECT_EQ(c.index, 2);
}

TEST(Gid, LinkLocalOnlyHasNoChoiceAndNamesTheFix) {
  NicPort p = rocePort({entry(0, "fe80::1", "IB/RoCE v1", "eth4"), entry(1, "fe80::1", "RoCE v2", "eth4")});
  GidChoice c = chooseGid(p, {}, policy());
  EXPECT_EQ(c.index, -1);
  EXPECT_NE(c.reason.find("2 link-local"), std::string::npos) << c.reason;
  EXPECT_NE(c.reason.find("give eth4 a routable IPv4 or IPv6 address"), std::string::npos) << c.reason;
  EXPECT_NE(c.reason.find("WEFT_IB_GID_INDEX=mlx5_4:<index>"), std::string::npos) << c.reason;
}

TEST(Gid, Ipv6OnlyUsesRoutableIpv6) {
  NicPort p = rocePort({entry(0, "fe80::1", "IB/RoCE v1", "eth4"), entry(1, "fe80::1", "RoCE v2", "eth4"),
                        entry(2, "fd00::5", "IB/RoCE v1", "eth4"), entry(3, "fd00::5", "RoCE v2", "eth4")});
  GidChoice c = chooseGid(p, {}, policy());
  EXPECT_EQ(c.index, 3);
  EXPECT_NE(c.reason.find("routable IPv6"), std::string::npos) << c.reason;
  // AF_INET insists on IPv4 and finds none.
  c = chooseGid(p, {}, policy("", "AF_INET"));
  EXPECT_EQ(c.index, -1);
  EXPECT_NE(c.reason.find("other address family"), std::string::npos) << c.reason;
}

TEST(Gid, Ipv4MappedComesBeforeIpv6UnlessAskedOtherwise) {
  NicPort p = rocePort({entry(0, "fe80::1", "RoCE v2", "eth4"), entry(1, "fd00::5", "RoCE v2", "eth4"),
                        entry(2, "::ffff:10.0.0.5", "RoCE v2", "eth4")});
  EXPECT_EQ(chooseGid(p, {}, policy()).index, 2);
  EXPECT_EQ(chooseGid(p, {}, policy("", "AF_INET6")).index, 1);
  EXPECT_EQ(chooseGid(p, {}, policy("", "AF_INET")).index, 2);
}

TEST(Gid, MacvlanAndVlanEntriesAreAcceptedOtherNetdevsAreNot) {
  NicPort p = rocePort({entry(0, "fe80::1", "RoCE v2", "eth4"),
                        entry(1, "::ffff:172.17.0.1", "RoCE v2", "docker0"),
                        entry(2, "fe80::2", "RoCE v2", "mv0"),
                        entry(3, "::ffff:10.0.0.7", "RoCE v2", "mv0")});
  GidChoice c = chooseGid(p, {"mv0"}, policy());
  EXPECT_EQ(c.index, 3);
  EXPECT_NE(c.reason.find("on mv0 (VLAN/macvlan on eth4)"), std::string::npos) << c.reason;
  // Without knowing mv0 sits on eth4, nothing qualifies.
  c = chooseGid(p, {}, policy());
  EXPECT_EQ(c.index, -1);
  EXPECT_NE(c.reason.find("on other netdevs"), std::string::npos) << c.reason;
  // The port's own netdev wins over an upper.
  p.gids.push_back(entry(4, "::ffff:10.0.0.8", "RoCE v2", "eth4"));
  EXPECT_EQ(chooseGid(p, {"mv0"}, policy()).index, 4);
}

TEST(Gid, UnreadableEntriesAreSkipped) {
  NicPort p = rocePort({entry(0, "fe80::1", "RoCE v2", "eth4"), entry(1, "::ffff:10.0.0.9", nullptr, nullptr),
                        entry(2, "::ffff:10.0.0.9", nullptr, nullptr),
                        entry(3, "::ffff:10.0.0.1", "RoCE v2", "eth4")});
  EXPECT_EQ(chooseGid(p, {}, policy()).index, 3);
  p.gids.pop_back();
  GidChoice c = chooseGid(p, {}, policy());
  EXPECT_EQ(c.index, -1);
  EXPECT_NE(c.reason.find("2 unreadable"), std::string::npos) << c.reason;
}

TEST(Gid, AddressRange) {
  NicPort p = rocePort({entry(2, "::ffff:10.1.0.1", "RoCE v2", "eth4"),
                        entry(3, "::ffff:192.168.7.1", "RoCE v2", "eth4"),
                        entry(4, "fd00:1::1", "RoCE v2", "eth4")});
  EXPECT_EQ(chooseGid(p, {}, policy("", "", "192.168.0.0/16")).index, 3);
  EXPECT_EQ(chooseGid(p, {}, policy("", "", "10.0.0.0/8")).index, 2);
  EXPECT_EQ(chooseGid(p, {}, policy("", "", "fd00::/16")).index, 4);
  GidChoice c = chooseGid(p, {}, policy("", "", "172.16.0.0/12"));
  EXPECT_EQ(c.index, -1);
  EXPECT_NE(c.reason.find("outside WEFT_IB_ADDR_RANGE"), std::string::npos) << c.reason;
}

TEST(Gid, ForcedIndexGlobalAndPerDevice) {
  NicPort p = rocePort({entry(0, "fe80::1", "RoCE v2", "eth4"), entry(3, "::ffff:10.0.0.1", "RoCE v2", "eth4")});
  GidChoice c = chooseGid(p, {}, policy("0"));
  EXPECT_EQ(c.index, 0);
  EXPECT_NE(c.reason.find("forced by WEFT_IB_GID_INDEX=0"), std::string::npos);
  EXPECT_NE(c.reason.find("link-local"), std::string::npos);  // warns
  EXPECT_EQ(chooseGid(p, {}, policy("mlx5_3:0,mlx5_4:3")).index, 3);
  EXPECT_EQ(chooseGid(p, {}, policy("0,mlx5_4:3")).index, 3);      // per device beats global
  EXPECT_EQ(chooseGid(p, {}, policy("mlx5_3:0")).index, 3);        // other device: automatic
  EXPECT_EQ(chooseGid(p, {}, policy("-1")).index, 3);              // -1 = automatic
  c = chooseGid(p, {}, policy("7"));
  EXPECT_EQ(c.index, -1);
  EXPECT_NE(c.reason.find("no such GID entry"), std::string::npos);
}

TEST(Gid, InfiniBandUsesTheDefaultGid) {
  NicPort p;
  p.device = "mlx5_0";
  p.linkLayer = LinkLayer::kInfiniBand;
  p.gids = {entry(0, "fe80::a088:c203:42:1a00", "IB/RoCE v1", "")};
  GidChoice c = chooseGid(p, {}, policy());
  EXPECT_EQ(c.index, 0);
  EXPECT_EQ(formatGid(c.gid), "fe80::a088:c203:42:1a00");
  EXPECT_NE(c.reason.find("InfiniBand"), std::string::npos);
}

TEST(Gid, PolicyErrorsNameTheVariable) {
  GidPolicy p;
  struct Case { const char *idx, *fam, *range; int ver; const char* var; };
  for (Case k : {Case{"x", "", "", 2, "WEFT_IB_GID_INDEX"}, Case{"mlx5_0:", "", "", 2, "WEFT_IB_GID_INDEX"},
                 Case{":3", "", "", 2, "WEFT_IB_GID_INDEX"}, Case{"-5", "", "", 2, "WEFT_IB_GID_INDEX"},
                 Case{"", "AF_UNIX", "", 2, "WEFT_IB_ADDR_FAMILY"},
                 Case{"", "", "10.0.0.0", 2, "WEFT_IB_ADDR_RANGE"},
                 Case{"", "", "10.0.0.0/33", 2, "WEFT_IB_ADDR_RANGE"},
                 Case{"", "", "zz/8", 2, "WEFT_IB_ADDR_RANGE"},
                 Case{"", "", "", 3, "WEFT_IB_ROCE_VERSION_NUM"}}) {
    Status s = GidPolicy::parse(k.idx, k.fam, k.range, k.ver, &p);
    EXPECT_FALSE(s) << k.idx << k.fam << k.range;
    EXPECT_NE(s.message().find(k.var), std::string::npos) << s.message();
  }
}

}  // namespace
}  // namespace weft::topo
