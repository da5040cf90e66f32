// Reading RDMA ports, netdevs and GID tables from a sysfs tree (the real /sys or a fixture).
#pragma once

#include <string>
#include <vector>

#include "lib/core/status.h"
#include "lib/topo/topo.h"

namespace weft::topo {

// A port as sysfs describes it, before rails and GID choice.
struct SysfsPort {
  NicPort port;
  std::vector<std::string> uppers;  // VLAN/macvlan netdevs stacked on port.netdev
  std::string pciPath;              // realpath of the PCI function's sysfs directory
};

// One read of a sysfs attribute: contents without the trailing newline, or the errno.
int readSysfs(const std::string& path, std::string* out);  // 0 or errno

// The PCI function ("dddd:bb:dd.f") in a resolved device path: the last component of that form.
std::string busIdFromPath(const std::string& path);

// "400 Gb/sec (4X NDR)" → 400000 Mbps; "2.5 Gb/sec (1X SDR)" → 2500; 0 when unparsable.
uint32_t parseRateMbps(const std::string& rate);
// "4: ACTIVE" → kActive.
PortState parsePortState(const std::string& state);
// Largest IB MTU (256..4096) a RoCE netdev MTU can carry, 0 for none.
int roceMtuFromNetdev(int netdevMtu);
// "0-3,8,10-11" → CPU numbers (at most 1<<16); false when malformed.
bool parseCpuList(const std::string& s, std::vector<int>* cpus);

// Every port under <root>/class/infiniband, sorted by (PCI bus id, port). No directory → empty list.
// notes receives facts a person should know (fallbacks, unreadable pieces).
Status readSysfsPorts(const std::string& root, std::vector<SysfsPort>* ports,
                      std::vector<std::string>* notes);

// PCI distance from two resolved sysfs device paths (.../pci0000:10/0000:10:01.0/.../0000:15:00.0),
// used when hwloc's tree lacks a device. Different host bridges: NODE when both NUMA nodes are known
// and equal, else SYS. kUnknown when a path is not a PCI device path.
PathType sysfsPathDistance(const std::string& a, const std::string& b, int numaA, int numaB,
                           int* hops);
// realpath of <root>/bus/pci/devices/<busId>, empty if absent.
std::string pciDevicePath(const std::string& root, const std::string& busId);

// NUMA node of a CPU list, from <root>/devices/system/node/node*/cpulist; -1 if unknown.
int numaNodeOfCpuList(const std::string& root, const std::string& cpulist);

}  // namespace weft::topo
