#pragma once

#include <cstdint>
#include <string>

namespace weft::bootstrap {

// Host identity: a hash of the boot id and the network-namespace inode (two network namespaces on
// one machine are two hosts), overridable with WEFT_HOST_ID. Decides shared-memory eligibility and
// node grouping.
uint64_t hostId();
std::string hostName();

}  // namespace weft::bootstrap
