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

int mod(int a, int n) { return ((a % n) + n) % n; }
int positionOf(const std::vector<int>& ring, int rank) {
  return static_cast<int>(std::find(ring.begin(), ring.end(), rank) - ring.begin());
}

// A rank's place on a ring: its position and its neighbours.
struct RingPos {
  int n, pos, next, prev;
};
RingPos ringPos(const std::vector<int>& ring, int rank) {
  const int n = static_cast<int>(ring.size());
  const int pos = positionOf(ring, rank);
  return {n, pos, ring[static_cast<size_t>(mod(pos + 1, n))], ring[static_cast<size_t>(mod(pos - 1, n))]};
}

Step sendTo(Step st, int peer) {
  st.sendPeers[st.nsend++] = peer;
  return st;
}
Step recvFrom(Step st, int peer) {
  st.recvPeers[st.nrecv++] = peer;
  return st;
}
Schedule single(std::vector<Step> steps) {
  Schedule s;
  s.phases.push_back(Phase{std::move(steps)});
  return s;
}
}  // namespace

void sliceOf(size_t count, int n, int k, size_t* offset, size_t* len) { segment(count, n, k, offset, len); }

Schedule ringAllReduce(const std::vector<int>& ring, int rank, size_t count, size_t offset, int channel) {
  const RingPos rp = ringPos(ring, rank);
  const int n = rp.n, pos = rp.pos, next = rp.next, prev = rp.prev;
  auto seg = [&](int k) {
    Step st;
    segment(count, n, mod(k, n), &st.inOffset, &st.count);
    st.inOffset += offset;
    st.outOffset = st.inOffset;
    st.channel = channel;
    return st;
  };
  std::vector<Step> steps;
  if (n == 1) {
    Step st = seg(0);
    st.useInput = st.writeOutput = st.finalize = true;
    return single({st});
  }
  // Reduce-scatter: send my segment, then receive-reduce-forward n-2 times; the last receive
  // completes segment pos+1, which this rank owns: finalize, store and forward it.
  Step first = seg(pos);
  first.useInput = true;
  steps.push_back(sendTo(first, next));
  for (int k = 1; k < n - 1; ++k) {
    Step st = seg(pos - k);
    st.useInput = true;
    steps.push_back(sendTo(recvFrom(st, prev), next));
  }
  Step own = seg(pos + 1);
  own.useInput = own.writeOutput = own.finalize = true;
  steps.push_back(sendTo(recvFrom(own, prev), next));
  // All-gather: receive, store and forward n-2 times, then receive and store.
  for (int k = 0; k < n - 2; ++k) {
    Step st = seg(pos - k);
    st.writeOutput = true;
    steps.push_back(sendTo(recvFrom(st, prev), next));
  }
  Step last = seg(pos + 2);
  last.writeOutput = true;
  steps.push_back(recvFrom(last, prev));
  return single(std::move(steps));
}

Schedule treeAllReduce(const TreeNeighbors& t, size_t count, size_t offset, int channel) {
  Step u;
  u.count = count;
  u.inOffset = u.outOffset = offset;
  u.channel = channel;
  u.useInput = true;
  for (int c : t.down) u = recvFrom(u, c);
  Schedule s;
  Step d;
  d.count = count;
  d.inOffset = d.outOffset = offset;
  d.channel = channel;
  if (t.up >= 0) {
    s.phases.push_back(Phase{{sendTo(u, t.up)}});
    d.writeOutput = true;
    d = recvFrom(d, t.up);
  } else {
    // The root completes the reduction; its broadcast waits for phase 2 (see the header).
    u.writeOutput = u.finalize = true;
    s.phases.push_back(Phase{{u}});
    if (t.down.empty()) return s;
    d.useInput = d.inputIsOutput = true;
  }
  for (int c : t.down) d = sendTo(d, c);
  s.phases.push_back(Phase{{d}});
  return s;
}

Schedule treeAllReduce(const std::vector<int>& order, int rank, size_t count) {
  const int n = static_cast<int>(order.size());
  const int i = positionOf(order, rank);
  TreeNeighbors t;
  t.up = i == 0 ? -1 : order[static_cast<size_t>((i - 1) / 2)];
  for (int c = 2 * i + 1; c <= 2 * i + 2 && c < n; ++c) t.down.push_back(order[static_cast<size_t>(c)]);
  return treeAllReduce(t, count);
}

Schedule mergeSchedules(std::vector<Schedule> parts) {
  if (parts.size() == 1) return std::move(parts[0]);
  Schedule out;
  for (Schedule& p : parts) {
    if (out.phases.size() < p.phases.size()) out.phases.resize(p.phases.size());
    for (size_t i = 0; i < p.phases.size(); ++i)
      for (Step& st : p.phases[i].steps) out.phases[i].steps.push_back(st);
  }
  return out;
}

Schedule oneShotAllReduce(int nranks, int rank, size_t count) {
  Step all;
  all.count = count;
  all.useInput = all.writeOutput = all.finalize = true;
  if (nranks == 1) return single({all});
  Step out;  // my input to every peer
  out.count = count;
  out.useInput = true;
  for (int p = 0; p < nranks; ++p) {
    if (p == rank) continue;
    out = sendTo(out, p);
    all = recvFrom(all, p);  // ascending: operand order is rank order
  }
  all.inputPos = rank;
  return single({out, all});
}

Schedule twoShotAllReduce(int nranks, int rank, size_t count) {
  auto slice = [&](int k) {
    Step st;
    segment(count, nranks, k, &st.inOffset, &st.count);
    st.outOffset = st.inOffset;
    return st;
  };
  if (nranks == 1) {
    Step st = slice(0);
    st.useInput = st.writeOutput = st.finalize = true;
    return single({st});
  }
  std::vector<Step> steps;
  // Reduce-scatter: slice p of my input to its owner p.
  for (int p = 0; p < nranks; ++p) {
    if (p == rank) continue;
    Step st = slice(p);
    st.useInput = true;
    steps.push_back(sendTo(st, p));
  }
  // My slice: every peer's part and mine, in rank order; the result is stored and sent to every
  // peer (the all-gather's send).
  Step mine = slice(rank);
  mine.useInput = mine.writeOutput = mine.finalize = true;
  mine.inputPos = rank;
  for (int p = 0; p < nranks; ++p)
    if (p != rank) mine = recvFrom(mine, p);
  for (int p = 0; p < nranks; ++p)
    if (p != rank) mine = sendTo(mine, p);
  steps.push_back(mine);
  // All-gather: every peer's reduced slice.
  for (int p = 0; p < nranks; ++p) {
    if (p == rank) continue;
    Step st = slice(p);
    st.writeOutput = true;
    steps.push_back(recvFrom(st, p));
  }
  return single(std::move(steps));
}

Schedule ringAllGather(const std::vector<int>& ring, int rank, size_t count) {
  const RingPos rp = ringPos(ring, rank);
  const int n = rp.n, pos = rp.pos, next = rp.next, prev = rp.prev;
  auto block = [&](int p) {
    Step st;
    st.count = count;
    st.outOffset = static_cast<size_t>(ring[static_cast<size_t>(mod(p, n))]) * count;
    return st;
  };
  Step mine = block(pos);
  mine.useInput = mine.writeOutput = true;
  if (n == 1) return single({mine});
  std::vector<Step> steps = {sendTo(mine, next)};
  for (int k = 1; k < n; ++k) {
    Step st = block(pos - k);
    st.writeOutput = true;
    st = recvFrom(st, prev);
    steps.push_back(k < n - 1 ? sendTo(st, next) : st);
  }
  return single(std::move(steps));
}

Schedule ringReduceScatter(const std::vector<int>& ring, int rank, size_t recvcount) {
  const RingPos rp = ringPos(ring, rank);
  const int n = rp.n, pos = rp.pos, next = rp.next, prev = rp.prev;
  auto block = [&](int p) {
    Step st;
    st.count = recvcount;
    st.inOffset = static_cast<size_t>(ring[static_cast<size_t>(mod(p, n))]) * recvcount;
    st.useInput = true;
    return st;
  };
  Step own = block(pos);
  own.writeOutput = own.finalize = true;
  if (n == 1) return single({own});
  std::vector<Step> steps = {sendTo(block(pos - 1), next)};
  for (int k = 1; k < n - 1; ++k) steps.push_back(sendTo(recvFrom(block(pos - 1 - k), prev), next));
  steps.push_back(recvFrom(own, prev));
  return single(std::move(steps));
}

Schedule chainBroadcast(const std::vector<int>& ring, int rank, size_t count, int root) {
  const RingPos rp = ringPos(ring, rank);
  const int n = rp.n, pos = rp.pos, next = rp.next, prev = rp.prev;
  const int rel = mod(pos - positionOf(ring, root), n);
  Step st;
  st.count = count;
  st.writeOutput = true;
  if (rel == 0) st.useInput = true;
  else st = recvFrom(st, prev);
  if (rel < n - 1) st = sendTo(st, next);
  return single({st});
}

Schedule chainReduce(const std::vector<int>& ring, int rank, size_t count, int root) {
  const RingPos rp = ringPos(ring, rank);
  const int n = rp.n, pos = rp.pos, next = rp.next, prev = rp.prev;
  const int rel = mod(pos - positionOf(ring, root), n);
  // The chain runs rel 1 -> 2 -> ... -> n-1 -> root (rel 0).
  Step st;
  st.count = count;
  st.useInput = true;
  if (rel != 1 && n > 1) st = recvFrom(st, prev);
  if (rel == 0) st.writeOutput = st.finalize = true;
  else st = sendTo(st, next);
  return single({st});
}

Schedule pairwiseAlltoAll(int nranks, int rank, size_t count) {
  std::vector<Step> steps;
  Step local;
  local.count = count;
  local.useInput = local.writeOutput = true;
  local.inOffset = local.outOffset = static_cast<size_t>(rank) * count;
  steps.push_back(local);
  for (int k = 1; k < nranks; ++k) {
    int to = mod(rank + k, nranks), from = mod(rank - k, nranks);
    Step s;
    s.count = count;
    s.useInput = true;
    s.inOffset = static_cast<size_t>(to) * count;
    steps.push_back(sendTo(s, to));
    Step r;
    r.count = count;
    r.writeOutput = true;
    r.outOffset = static_cast<size_t>(from) * count;
    steps.push_back(recvFrom(r, from));
  }
  return single(std::move(steps));
}

Schedule p2pSend(int peer, size_t count) {
  Step st;
  st.count = count;
  st.useInput = true;
  st.channel = kP2pChannel;
  return single({sendTo(st, peer)});
}

Schedule p2pRecv(int peer, size_t count) {
  Step st;
  st.count = count;
  st.writeOutput = true;
  st.channel = kP2pChannel;
  return single({recvFrom(st, peer)});
}

void schedulePeers(const Schedule& s, std::vector<PeerChannel>* sendPeers, std::vector<PeerChannel>* recvPeers) {
  for (const Phase& p : s.phases)
    for (const Step& st : p.steps) {
      for (int k = 0; k < st.nsend; ++k) sendPeers->push_back({st.sendPeers[k], st.channel});
      for (int k = 0; k < st.nrecv; ++k) recvPeers->push_back({st.recvPeers[k], st.channel});
    }
  for (auto* v : {sendPeers, recvPeers}) {
    std::sort(v->begin(), v->end());
    v->erase(std::unique(v->begin(), v->end()), v->end());
  }
}

}  // namespace weft::coll
