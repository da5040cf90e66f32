// Which messaging transport a communicator uses, chosen once at init: the first transport of the
// preference order that WEFT_TRANSPORTS allows and that can start here. Every rank then checks that
// all ranks chose the same one (Communicator::create).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "lib/core/status.h"
#include "transports/transport.h"

namespace weft::engine {

struct TransportChoice {
  std::unique_ptr<transport::MessagingTransport> transport;
  int device = 0;    // the device this rank listens and connects on
  int kind = 0;      // index in knownTransports(), the same on every rank that chose it
  std::string name;  // "socket"
};

// Every transport this build knows, in preference order (fastest first).
const std::vector<std::string>& knownTransports();

// allowed: WEFT_TRANSPORTS (empty = all). localRank picks the device where a transport has several
// (the NIC nearest this rank's GPU, later).
Status selectTransport(const std::vector<std::string>& allowed, int localRank, TransportChoice* out);

// Start one named transport (used when ranks disagree and fall back to a common one).
Status startTransport(const std::string& name, int localRank, TransportChoice* out);

}  // namespace weft::engine
