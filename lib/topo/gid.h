// RoCE/IB GID handling: parsing sysfs and text forms, and the per-port GID choice.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "lib/core/status.h"
#include "lib/topo/topo.h"

namespace weft::topo {

// sysfs form: 8 colon-separated groups of 4 hex digits.
bool parseSysfsGid(const std::string& s, Gid* out);
// Text form as inet_ntop writes IPv6 ("fe80::1", "::ffff:10.0.0.1"); parseGidText accepts any
// inet_pton AF_INET6 form.
std::string formatGid(const Gid& g);
bool parseGidText(const std::string& s, Gid* out);

bool gidIsZero(const Gid& g);
bool gidIsLinkLocal(const Gid& g);   // fe80::/10
bool gidIsIpv4Mapped(const Gid& g);  // ::ffff:a.b.c.d

// The knobs of the choice: WEFT_IB_GID_INDEX, WEFT_IB_ADDR_FAMILY, WEFT_IB_ADDR_RANGE,
// WEFT_IB_ROCE_VERSION_NUM.
struct GidPolicy {
  int globalIndex = -1;                               // -1: automatic
  std::vector<std::pair<std::string, int>> perDevice;  // exact device name → index
  int family = 0;                                     // 0 auto (IPv4-mapped first), 4, 6
  bool hasRange = false;
  Gid rangeAddr{};
  int rangeBits = 0;                                  // prefix length in IPv6 bits (IPv4 /n → 96+n)
  bool rangeIpv4 = false;
  int roceVersion = 2;
  std::string gidIndexSpec, rangeSpec;                // as given, for messages

  static Status parse(const std::string& gidIndex, const std::string& family,
                      const std::string& range, int roceVersion, GidPolicy* out);
  // The forced index for this device, or -1.
  int forcedIndex(const std::string& device) const;
  bool inRange(const Gid& g) const;
};

struct GidChoice {
  int index = -1;
  Gid gid{};
  std::string reason;
};

// Choose the GID index of one port. `uppers` are netdevs stacked on the port's netdev (VLAN,
// macvlan), which are acceptable too.
GidChoice chooseGid(const NicPort& port, const std::vector<std::string>& uppers,
                    const GidPolicy& policy);

}  // namespace weft::topo
