// The topology file (WEFT_TOPO_DUMP_FILE / WEFT_TOPO_FILE): a versioned, line-based text format
// documented in TOPO_FILE_FORMAT.md, and a compact binary form of the same content for the
// all-gather of node descriptions across ranks.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lib/core/status.h"
#include "lib/topo/topo.h"

namespace weft::topo {

inline constexpr int kTopoFileVersion = 1;

// Text form.
std::string formatTopologyText(const NodeTopology& topo);
// `what` names the input in messages (a path, or "topology text").
Status parseTopologyText(std::string_view text, NodeTopology* out,
                         const std::string& what = "topology text");
Status writeTopologyFile(const NodeTopology& topo, const std::string& path);
Status readTopologyFile(const std::string& path, NodeTopology* out);

// What other ranks need of a node, for the all-gather: GPUs with their rails, the usable ports only
// (rail r = nics[r]) with device, PCI function, port, state, link layer, rate, MTU, NUMA node,
// netdev, GUIDs, LID and the chosen GID; their distances. Dropped: excluded ports, GID tables,
// reasons, notes, source, cpulists, rate texts. OCI fixture: serializeTopology(compactTopology(t))
// is ~3.5 KB against ~9.4 KB for the full binary form and ~17 KB for the text file.
NodeTopology compactTopology(const NodeTopology& topo);

// Binary form: "WEFTTOPO", version, length, payload, FNV-1a hash of the payload.
std::vector<uint8_t> serializeTopology(const NodeTopology& topo);
Status deserializeTopology(const void* data, size_t size, NodeTopology* out);

}  // namespace weft::topo
