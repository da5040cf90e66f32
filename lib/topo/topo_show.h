// `weft-topo show`: the node as a person wants to read it, and as JSON for machines.
#pragma once

#include <string>

#include "lib/topo/topo.h"

namespace weft::topo {

std::string renderTopologyText(const NodeTopology& topo);
std::string renderTopologyJson(const NodeTopology& topo);

}  // namespace weft::topo
