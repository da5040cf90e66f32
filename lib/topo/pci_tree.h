// The PCI tree, CPUs and NUMA nodes from hwloc (the live system or an hwloc XML).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "lib/core/status.h"
#include "lib/topo/topo.h"

namespace weft::topo {

struct PciDevice {
  std::string busId;  // dddd:bb:dd.f
  uint16_t vendorId = 0;
  uint16_t deviceId = 0;
  uint16_t classId = 0;  // 0x0302 3D controller, 0x0300 VGA, 0x0207 InfiniBand, 0x0200 Ethernet
};

class PciTree {
 public:
  PciTree();
  ~PciTree();
  PciTree(PciTree&&) noexcept;
  PciTree& operator=(PciTree&&) noexcept;

  // xmlPath empty: the live system. A live load that fails gives an empty tree and a note; an XML
  // that cannot be loaded is an error (it was asked for explicitly).
  static Status load(const std::string& xmlPath, PciTree* out, std::vector<std::string>* notes);

  bool loaded() const;
  // The HostName info of an XML topology (empty for the live system or when absent).
  std::string hostName() const;
  int numaNodes() const;
  int pciDeviceCount() const;
  // PCI devices of an NVIDIA GPU class (3D controller or VGA, vendor 0x10de), sorted by bus id.
  std::vector<PciDevice> nvidiaGpus() const;
  bool contains(const std::string& busId) const;
  bool device(const std::string& busId, PciDevice* out) const;
  // NUMA node of the device's non-I/O ancestor when it covers exactly one node, else -1.
  int numaNodeOf(const std::string& busId) const;
  // Path class between two PCI functions; kUnknown if either is missing. hops (optional) receives
  // the number of links on the path through the nearest common ancestor.
  PathType distance(const std::string& a, const std::string& b, int* hops = nullptr) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::topo
