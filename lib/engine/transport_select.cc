#include "lib/engine/transport_select.h"

#include <algorithm>

#include "lib/core/config.h"
#include "lib/core/log.h"
#include "lib/topo/topo.h"
#ifdef WEFT_HAVE_IB_TRANSPORT
#include "transports/ib/ib_transport.h"
#endif

namespace weft::engine {

namespace {

#ifdef WEFT_HAVE_IB_TRANSPORT
// The verbs transport over the ports discovery chose (rails first, one per local rank in turn).
Status startIb(int localRank, TransportChoice* out) {
  std::vector<std::string> devices;
  WEFT_TRY(transport::ibProbeDevices(&devices));  // before discovery: cheap when there is no device
  topo::NodeTopology node;
  WEFT_TRY(topo::loadNodeTopologyFromEnv(&node).withContext("RDMA port discovery"));
  std::vector<transport::IbPortSpec> ports;
  for (size_t r = 0; r < node.rails.size(); ++r) {
    const topo::NicPort& p = node.railPort(static_cast<int>(r));
    if (p.excluded) continue;
    if (p.linkLayer == topo::LinkLayer::kEthernet && p.gidIndex < 0) continue;
    ports.push_back({p.device, p.port, p.linkLayer == topo::LinkLayer::kEthernet ? p.gidIndex : -1});
  }
  if (ports.empty()) {  // discovery's reasons name the fix (e.g. only link-local GIDs)
    std::string why;
    for (const topo::NicPort& p : node.nics)
      if (p.excluded && !p.exclusionReason.empty()) why += (why.empty() ? "" : "; ") + p.exclusionReason;
    if (!why.empty()) return systemError("no usable RDMA port: " + why);
  }
  Status s;
  out->transport = transport::createIbTransport(ports, &s);
  if (!s) return s;
  out->device = ports.empty() ? 0 : localRank % static_cast<int>(ports.size());
  return Status::ok();
}
#endif

bool required(const char* what) {
  std::string req = config::getString("WEFT_REQUIRE");
  size_t start = 0;
  while (start <= req.size()) {
    size_t end = req.find(',', start);
    if (end == std::string::npos) end = req.size();
    if (req.compare(start, end - start, what) == 0) return true;
    start = end + 1;
  }
  return false;
}

}  // namespace

// Fastest first (Communicator::create falls back to the largest index any rank chose). ib is only
// tried when WEFT_TRANSPORTS names it or WEFT_REQUIRE=rdma, until it has run in the field. At
// namespace scope: initialised at load, never half-initialised in a forked child.
#ifdef WEFT_HAVE_IB_TRANSPORT
const std::vector<std::string> kKnownTransports = {"ib", "socket"};
#else
const std::vector<std::string> kKnownTransports = {"socket"};
#endif

const std::vector<std::string>& knownTransports() { return kKnownTransports; }

Status startTransport(const std::string& name, int localRank, TransportChoice* out) {
  const auto& known = knownTransports();
  auto it = std::find(known.begin(), known.end(), name);
  if (it == known.end()) return invalidArgument("\"" + name + "\" is not a transport of this build");
  Status s;
  if (name == "socket") {
    out->transport = transport::createSocketTransport(&s);
    out->device = 0;
  }
#ifdef WEFT_HAVE_IB_TRANSPORT
  if (name == "ib") s = startIb(localRank, out);
#endif
  if (!s) return s.withContext("starting the " + name + " transport");
  out->kind = static_cast<int>(it - known.begin());
  out->name = name;
  return Status::ok();
}

Status selectTransport(const std::vector<std::string>& allowed, int localRank, TransportChoice* out) {
  std::string tried;
  std::string names;
  for (const std::string& name : knownTransports()) names += (names.empty() ? "" : ", ") + name;
  std::vector<std::string> order = knownTransports();
  if (required("rdma")) {  // an RDMA transport or nothing
    order.erase(std::remove_if(order.begin(), order.end(), [](const std::string& n) { return n != "ib"; }), order.end());
    if (order.empty()) return systemError("WEFT_REQUIRE=rdma, but this build has no RDMA transport (it was built without <infiniband/verbs.h>)");
  }
  for (const std::string& name : order) {
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), name) == allowed.end()) continue;
    if (name == "ib" && allowed.empty() && !required("rdma")) continue;  // opt-in for now (see above)
    Status s = startTransport(name, localRank, out);
    if (s) return Status::ok();
    if (name == "ib" && required("rdma"))
      return systemError(s.message() + " (WEFT_REQUIRE=rdma makes this an error instead of a fallback to another transport)");
    WEFT_INFO(NET, "transport %s unavailable: %s", name.c_str(), s.message().c_str());
    tried += (tried.empty() ? "" : "; ") + s.message();
  }
  if (tried.empty())
    return invalidArgument("WEFT_TRANSPORTS excludes every transport of this build (known: " + names + ")");
  return systemError("no allowed transport could start: " + tried);
}

}  // namespace weft::engine
