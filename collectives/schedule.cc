#include "collectives/schedule.h"

#include <algorithm>

namespace weft::coll {

namespace {
// Segment s of n over count elements: sizes differ by at most one element.
void segment(size_t count, int n, int s, size_t* offset, size_t* len) {
  size_t k = static_cast<size_t>(n), i = static_cast<size_t>(s);
  size_t base = count / k, rem = count % k;
  *offset = i * base + std::min(i, rem);
  *len = base + (i < rem ? 1 : 0);
}
}  // namespace

Schedule ringAllReduce(const std::vector<int>& ring, int rank, size_t count) {
  const int n = static_cast<int>(ring.size());
  int pos = static_cast<int>(std::find(ring.begin(), ring.end(), rank) - ring.begin());
  const int next = ring[static_cast<size_t>((pos + 1) % n)];
  const int prev = ring[static_cast<size_t>((pos + n - 1) % n)];
  Schedule s;
  Phase ph;
  auto seg = [&](int k) {
    Step st;
    segment(count, n, ((k % n) + n) % n, &st.offset, &st.count);
    return st;
  };
  if (n == 1) {
    Step st = seg(0);
    st.useInput = st.writeOutput = st.finalize = true;
    ph.steps.push_back(st);
    s.phases.push_back(ph);
    return s;
  }
  // Reduce-scatter: send my segment, then receive-reduce-forward n-2 times; the last receive
  // completes segment pos+1, which this rank owns: finalize, store and forward it.
  {
    Step st = seg(pos);
    st.useInput = true;
    st.sendPeers[0] = next;
    st.nsend = 1;
    ph.steps.push_back(st);
  }
  for (int k = 1; k < n - 1; ++k) {
    Step st = seg(pos - k);
    st.useInput = true;
    st.recvPeers[0] = prev;
    st.nrecv = 1;
    st.sendPeers[0] = next;
    st.nsend = 1;
    ph.steps.push_back(st);
  }
  {
    Step st = seg(pos + 1);
    st.useInput = true;
    st.recvPeers[0] = prev;
    st.nrecv = 1;
    st.writeOutput = true;
    st.finalize = true;
    st.sendPeers[0] = next;
    st.nsend = 1;
    ph.steps.push_back(st);
  }
  // All-gather: receive, store and forward n-2 times, then receive and store.
  for (int k = 0; k < n - 2; ++k) {
    Step st = seg(pos - k);
    st.recvPeers[0] = prev;
    st.nrecv = 1;
    st.writeOutput = true;
    st.sendPeers[0] = next;
    st.nsend = 1;
    ph.steps.push_back(st);
  }
  {
    Step st = seg(pos + 2);
    st.recvPeers[0] = prev;
    st.nrecv = 1;
    st.writeOutput = true;
    ph.steps.push_back(st);
  }
  s.phases.push_back(ph);
  return s;
}

Schedule treeAllReduce(const std::vector<int>& order, int rank, size_t count) {
  const int n = static_cast<int>(order.size());
  int i = static_cast<int>(std::find(order.begin(), order.end(), rank) - order.begin());
  int parent = i == 0 ? -1 : order[static_cast<size_t>((i - 1) / 2)];
  int children[2];
  int nchildren = 0;
  for (int c = 2 * i + 1; c <= 2 * i + 2 && c < n; ++c) children[nchildren++] = order[static_cast<size_t>(c)];
  Schedule s;
  Phase up, down;
  Step u;
  u.offset = 0;
  u.count = count;
  u.useInput = true;
  for (int c = 0; c < nchildren; ++c) u.recvPeers[u.nrecv++] = children[c];
  if (parent >= 0) {
    u.sendPeers[0] = parent;
    u.nsend = 1;
    up.steps.push_back(u);
    Step d;
    d.offset = 0;
    d.count = count;
    d.recvPeers[0] = parent;
    d.nrecv = 1;
    d.writeOutput = true;
    for (int c = 0; c < nchildren; ++c) d.sendPeers[d.nsend++] = children[c];
    down.steps.push_back(d);
    s.phases.push_back(up);
    s.phases.push_back(down);
  } else {
    // The root completes the reduction and starts the broadcast in the same step.
    u.writeOutput = true;
    u.finalize = true;
    for (int c = 0; c < nchildren; ++c) u.sendPeers[u.nsend++] = children[c];
    up.steps.push_back(u);
    s.phases.push_back(up);
  }
  return s;
}

void schedulePeers(const Schedule& s, std::vector<int>* sendPeers, std::vector<int>* recvPeers) {
  sendPeers->clear();
  recvPeers->clear();
  for (const Phase& p : s.phases)
    for (const Step& st : p.steps) {
      for (int k = 0; k < st.nsend; ++k) sendPeers->push_back(st.sendPeers[k]);
      for (int k = 0; k < st.nrecv; ++k) recvPeers->push_back(st.recvPeers[k]);
    }
  for (auto* v : {sendPeers, recvPeers}) {
    std::sort(v->begin(), v->end());
    v->erase(std::unique(v->begin(), v->end()), v->end());
  }
}

}  // namespace weft::coll
