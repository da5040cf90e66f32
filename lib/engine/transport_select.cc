#include "lib/engine/transport_select.h"

#include <algorithm>

#include "lib/core/log.h"

namespace weft::engine {

const std::vector<std::string>& knownTransports() {
  static const std::vector<std::string> kKnown = {"socket"};
  return kKnown;
}

Status startTransport(const std::string& name, int localRank, TransportChoice* out) {
  (void)localRank;
  const auto& known = knownTransports();
  auto it = std::find(known.begin(), known.end(), name);
  if (it == known.end()) return invalidArgument("\"" + name + "\" is not a transport of this build");
  Status s;
  if (name == "socket") {
    out->transport = transport::createSocketTransport(&s);
    out->device = 0;
  }
  if (!s) return s.withContext("starting the " + name + " transport");
  out->kind = static_cast<int>(it - known.begin());
  out->name = name;
  return Status::ok();
}

Status selectTransport(const std::vector<std::string>& allowed, int localRank, TransportChoice* out) {
  std::string tried;
  for (const std::string& name : knownTransports()) {
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), name) == allowed.end()) continue;
    Status s = startTransport(name, localRank, out);
    if (s) return Status::ok();
    WEFT_INFO(NET, "transport %s unavailable: %s", name.c_str(), s.message().c_str());
    tried += (tried.empty() ? "" : "; ") + s.message();
  }
  if (tried.empty())
    return invalidArgument("WEFT_TRANSPORTS excludes every transport of this build (known: socket)");
  return systemError("no allowed transport could start: " + tried);
}

}  // namespace weft::engine
