#include "lib/plan/ring_builder.h"

#include <string>

namespace weft::plan {

size_t RingSet::memoryBytes() const {
  size_t b = sizeof(*this) + channels.capacity() * sizeof(RingChannel);
  for (const RingChannel& c : channels) b += c.order.capacity() * sizeof(int) + c.nodeRail.capacity() * sizeof(int16_t);
  return b;
}

Status buildRings(const SystemGraph& graph, int nChannels, RingSet* out) {
  out->channels.clear();
  if (nChannels < 0) return invalidArgument("the ring channel count must not be negative");
  const int nRails = graph.nRails();
  if (nChannels == 0) nChannels = nRails > 0 ? nRails : 1;
  if (nRails > INT16_MAX) return invalidArgument("more rails than the planner can number");
  out->channels.resize(static_cast<size_t>(nChannels));
  const int nNodes = graph.nNodes();
  for (int c = 0; c < nChannels; ++c) {
    RingChannel& ch = out->channels[static_cast<size_t>(c)];
    ch.rail = nRails > 0 ? c % nRails : -1;
    ch.order.resize(static_cast<size_t>(graph.nRanks()));
    ch.nodeRail.assign(static_cast<size_t>(nNodes), static_cast<int16_t>(ch.rail));
    int* dst = ch.order.data();
    for (int n = 0; n < nNodes; ++n) {
      const int ppn = graph.node(n).nRanks;
      const int* local = graph.localRanks(n);
      const int entry = ch.rail >= 0 ? graph.railEntry(n, ch.rail) : c % ppn;
      for (int i = entry; i < ppn; ++i) *dst++ = local[i];
      for (int i = 0; i < entry; ++i) *dst++ = local[i];
    }
  }
  return Status::ok();
}

}  // namespace weft::plan
