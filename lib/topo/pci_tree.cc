#include "lib/topo/pci_tree.h"

#include <hwloc.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>

#include "lib/core/log.h"

namespace weft::topo {

struct PciTree::Impl {
  hwloc_topology_t topo = nullptr;
  std::map<std::string, hwloc_obj_t> byBusId;
  int numaNodes = 0;
  ~Impl() {
    if (topo) hwloc_topology_destroy(topo);
  }
};

namespace {
std::string busIdOf(hwloc_obj_t o) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04x:%02x:%02x.%01x", o->attr->pcidev.domain, o->attr->pcidev.bus,
                o->attr->pcidev.dev, o->attr->pcidev.func);
  return buf;
}

bool isHostBridge(hwloc_obj_t o) {
  return o->type == HWLOC_OBJ_BRIDGE && o->attr->bridge.upstream_type == HWLOC_OBJ_BRIDGE_HOST;
}
}  // namespace

PciTree::PciTree() : impl_(std::make_unique<Impl>()) {}
PciTree::~PciTree() = default;
PciTree::PciTree(PciTree&&) noexcept = default;
PciTree& PciTree::operator=(PciTree&&) noexcept = default;

Status PciTree::load(const std::string& xmlPath, PciTree* out, std::vector<std::string>* notes) {
  auto impl = std::make_unique<Impl>();
  if (hwloc_topology_init(&impl->topo) != 0) {
    impl->topo = nullptr;
    return systemError("hwloc_topology_init failed; the hwloc library is unusable");
  }
  // Without an I/O filter hwloc drops every PCI and OS device, even from an XML.
  hwloc_topology_set_io_types_filter(impl->topo, HWLOC_TYPE_FILTER_KEEP_ALL);
  // The Linux backend reads the PCI tree from sysfs by itself; the libpciaccess-based "pci" plugin
  // adds nothing there and leaks on every load, so leave it out.
  hwloc_topology_set_components(impl->topo, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST, "pci");
  if (!xmlPath.empty()) {
    FILE* f = std::fopen(xmlPath.c_str(), "r");
    if (!f)
      return errnoStatus("cannot open the hwloc XML " + xmlPath +
                             " (WEFT_HWLOC_XML); fix the path or unset it to use the live system",
                         errno);
    std::fclose(f);
    if (hwloc_topology_set_xml(impl->topo, xmlPath.c_str()) != 0)
      return invalidArgument("hwloc cannot use " + xmlPath +
                             " as an XML topology (WEFT_HWLOC_XML); check it is an hwloc XML "
                             "export (lstopo --of xml)");
  }
  if (hwloc_topology_load(impl->topo) != 0) {
    if (!xmlPath.empty())
      return invalidArgument("hwloc cannot load the XML topology " + xmlPath +
                             " (WEFT_HWLOC_XML); check it is a valid hwloc 2 XML export");
    std::string n = "hwloc could not load the live topology; PCI distances and NUMA placement "
                    "are unknown";
    WEFT_WARN(TOPO, "%s", n.c_str());
    notes->push_back(n);
    *out = PciTree();
    return Status::ok();
  }
  for (hwloc_obj_t o = hwloc_get_next_pcidev(impl->topo, nullptr); o;
       o = hwloc_get_next_pcidev(impl->topo, o))
    impl->byBusId.emplace(busIdOf(o), o);
  impl->numaNodes = hwloc_get_nbobjs_by_type(impl->topo, HWLOC_OBJ_NUMANODE);
  if (impl->byBusId.empty()) {
    std::string n = std::string("hwloc reports no PCI devices") +
                    (xmlPath.empty() ? " (no PCI plugin or no access to the PCI bus)"
                                     : " in " + xmlPath) +
                    "; PCI distances are unknown";
    WEFT_INFO(TOPO, "%s", n.c_str());
    notes->push_back(n);
  }
  out->impl_ = std::move(impl);
  return Status::ok();
}

bool PciTree::loaded() const { return impl_ && impl_->topo; }
std::string PciTree::hostName() const {
  if (!impl_ || !impl_->topo || hwloc_topology_is_thissystem(impl_->topo)) return "";
  const char* h = hwloc_obj_get_info_by_name(hwloc_get_root_obj(impl_->topo), "HostName");
  return h ? h : "";
}

int PciTree::numaNodes() const { return impl_ ? impl_->numaNodes : 0; }
int PciTree::pciDeviceCount() const { return impl_ ? static_cast<int>(impl_->byBusId.size()) : 0; }

std::vector<PciDevice> PciTree::nvidiaGpus() const {
  std::vector<PciDevice> gpus;
  if (!impl_) return gpus;
  for (const auto& [busId, o] : impl_->byBusId) {
    uint16_t cls = o->attr->pcidev.class_id;
    if (o->attr->pcidev.vendor_id == 0x10de && (cls == 0x0302 || cls == 0x0300)) {
      PciDevice d;
      device(busId, &d);
      gpus.push_back(d);
    }
  }
  return gpus;  // std::map iteration: already sorted by bus id
}

bool PciTree::contains(const std::string& busId) const {
  return impl_ && impl_->byBusId.count(busId) != 0;
}

bool PciTree::device(const std::string& busId, PciDevice* out) const {
  if (!impl_) return false;
  auto it = impl_->byBusId.find(busId);
  if (it == impl_->byBusId.end()) return false;
  hwloc_obj_t o = it->second;
  out->busId = busId;
  out->vendorId = o->attr->pcidev.vendor_id;
  out->deviceId = o->attr->pcidev.device_id;
  out->classId = o->attr->pcidev.class_id;
  return true;
}

int PciTree::numaNodeOf(const std::string& busId) const {
  if (!impl_) return -1;
  auto it = impl_->byBusId.find(busId);
  if (it == impl_->byBusId.end()) return -1;
  hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(impl_->topo, it->second);
  if (!anc || !anc->nodeset || hwloc_bitmap_weight(anc->nodeset) != 1) return -1;
  return hwloc_bitmap_first(anc->nodeset);
}

PathType PciTree::distance(const std::string& a, const std::string& b, int* hops) const {
  if (hops) *hops = -1;
  if (!impl_) return PathType::kUnknown;
  auto ia = impl_->byBusId.find(a), ib = impl_->byBusId.find(b);
  if (ia == impl_->byBusId.end() || ib == impl_->byBusId.end()) return PathType::kUnknown;
  // Nearest common ancestor by walking parents (hwloc_get_common_ancestor_obj is unsafe on I/O
  // objects at different depths in hwloc 2.9).
  std::vector<hwloc_obj_t> up;
  for (hwloc_obj_t o = ia->second; o; o = o->parent) up.push_back(o);
  hwloc_obj_t c = nullptr;
  int hopsB = 0;
  for (hwloc_obj_t o = ib->second; o; o = o->parent, ++hopsB)
    if (std::find(up.begin(), up.end(), o) != up.end()) {
      c = o;
      break;
    }
  if (!c) return PathType::kUnknown;
  int hopsA = static_cast<int>(std::find(up.begin(), up.end(), c) - up.begin());
  if (hops) *hops = hopsA + hopsB;
  if (c == ia->second || c == ib->second) return PathType::kPix;
  if (c->type == HWLOC_OBJ_BRIDGE) {
    if (isHostBridge(c)) return PathType::kPhb;
    auto bridgesBelow = [&](hwloc_obj_t from) {
      int n = 0;
      for (hwloc_obj_t o = from->parent; o && o != c; o = o->parent)
        if (o->type == HWLOC_OBJ_BRIDGE) ++n;
      return n;
    };
    return std::max(bridgesBelow(ia->second), bridgesBelow(ib->second)) <= 1 ? PathType::kPix
                                                                             : PathType::kPxb;
  }
  if (c->type == HWLOC_OBJ_PCI_DEVICE) return PathType::kPix;
  if (!c->nodeset || hwloc_bitmap_weight(c->nodeset) <= 1) return PathType::kNode;
  return PathType::kSys;
}

}  // namespace weft::topo
