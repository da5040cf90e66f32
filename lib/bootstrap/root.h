// The rendezvous root: started by weftGetUniqueId in the calling process, it collects one hello
// per rank, refuses wrong secrets, versions, rank counts and duplicate ranks with a reason, sends
// everyone the address table and exits. If not every rank arrives within WEFT_INIT_TIMEOUT_MS of
// the first one, it tells the ranks that came which ones never did.
#pragma once

#include "lib/bootstrap/unique_id.h"
#include "lib/core/status.h"

namespace weft::bootstrap {

// Listens on the chosen interface, draws a random secret, fills *id and starts the root thread.
Status startRoot(UniqueId* id);

// The root of a launcher-provided rendezvous: listens on `at` (or on every address with that port
// when `at` is not an address of this host) with the given secret.
Status startRootAt(const net::SockAddr& at, const unsigned char secret[kSecretBytes], UniqueId* id);

}  // namespace weft::bootstrap
