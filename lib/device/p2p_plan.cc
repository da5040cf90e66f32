// Planning one point-to-point launch (p2p_plan.h).
#include "lib/device/p2p_plan.h"

#include <algorithm>
#include <cstdint>
#include <string>

namespace weft::device {

void appendAllToAll(int rank, int nranks, const void* send, void* recv, size_t bytes, void* stream,
                    std::vector<P2pCall>* calls) {
  (void)rank;
  for (int p = 0; p < nranks; ++p) {
    const size_t off = static_cast<size_t>(p) * bytes;
    calls->push_back({false, const_cast<char*>(static_cast<const char*>(send)) + off, bytes, p, stream});
    calls->push_back({true, static_cast<char*>(recv) + off, bytes, p, stream});
  }
}

namespace {

bool overlap(const P2pCall& a, const P2pCall& b) {
  const auto x = reinterpret_cast<uintptr_t>(a.buf), y = reinterpret_cast<uintptr_t>(b.buf);
  return x < y + b.bytes && y < x + a.bytes;
}

std::string name(const P2pCall& c, int rank) {
  return std::string(c.recv ? "a receive from rank " : "a send to rank ") + std::to_string(c.peer) +
         (c.peer == rank ? " (itself)" : "") + " of " + std::to_string(c.bytes) + " bytes";
}

}  // namespace

Status planP2p(int rank, int nranks, int maxBlocks, uint64_t p2pBytes, const std::vector<P2pCall>& all,
               P2pDesc* desc, int* nblocks) {
  *desc = P2pDesc{};
  *nblocks = 0;
  std::vector<P2pCall> calls;
  for (const P2pCall& c : all) {
    if (c.peer < 0 || c.peer >= nranks)
      return invalidUsage("peer " + std::to_string(c.peer) + " is outside [0, nranks=" + std::to_string(nranks) + ")");
    if (c.bytes != 0) calls.push_back(c);
  }
  if (calls.empty()) return Status::ok();
  for (const P2pCall& c : calls)
    if (c.stream != calls[0].stream)
      return invalidUsage("device sends and receives of one communicator in one group must use one stream (" +
                          name(calls[0], rank) + " and " + name(c, rank) +
                          " use two): they run as one kernel on that stream");
  // Position of each call among its pair's sends (or receives), and the rounds before it.
  const size_t n = calls.size();
  std::vector<size_t> pos(n), roundsBefore(n);
  {
    std::vector<size_t> cnt(2 * static_cast<size_t>(nranks), 0), rounds(2 * static_cast<size_t>(nranks), 0);
    for (size_t i = 0; i < n; ++i) {
      const size_t k = 2 * static_cast<size_t>(calls[i].peer) + (calls[i].recv ? 1 : 0);
      pos[i] = cnt[k]++;
      roundsBefore[i] = rounds[k];
      rounds[k] += (calls[i].bytes + p2pBytes - 1) / p2pBytes;
    }
  }
  std::vector<bool> afterSend(n, false);
  for (size_t i = 0; i < n; ++i) {
    if (calls[i].recv) continue;
    for (size_t j = 0; j < n; ++j) {
      if (!calls[j].recv || !overlap(calls[i], calls[j])) continue;
      const bool same = calls[i].buf == calls[j].buf && calls[i].bytes == calls[j].bytes &&
                        calls[i].peer == calls[j].peer && pos[i] == pos[j];
      const bool lockstep = same && (calls[i].peer == rank || roundsBefore[i] == roundsBefore[j]);
      if (lockstep && calls[i].peer != rank) afterSend[j] = true;
      if (!lockstep)
        return invalidUsage(name(calls[i], rank) + " reads a buffer that " + name(calls[j], rank) +
                            " of the same group writes: only the in-place forms are allowed (the same buffer and "
                            "size sent to and received from one peer at the same position, as weftAlltoAll in place)");
    }
  }
  // Sends to itself pair with receives from itself, in order.
  std::vector<size_t> selfSend, selfRecv;
  for (size_t i = 0; i < n; ++i)
    if (calls[i].peer == rank) (calls[i].recv ? selfRecv : selfSend).push_back(i);
  if (selfSend.size() != selfRecv.size())
    return invalidUsage(std::to_string(selfSend.size()) + " send(s) to rank " + std::to_string(rank) + " (itself) and " +
                        std::to_string(selfRecv.size()) +
                        " receive(s) from itself in one group: each send to itself needs its receive in the same group");
  for (size_t k = 0; k < selfSend.size(); ++k)
    if (calls[selfSend[k]].bytes != calls[selfRecv[k]].bytes)
      return invalidUsage(name(calls[selfSend[k]], rank) + " is matched with " + name(calls[selfRecv[k]], rank) +
                          ": the sizes must agree");
  const size_t nops = n - selfSend.size();
  if (nops > static_cast<size_t>(kMaxP2pOps))
    return invalidUsage("a group of " + std::to_string(nops) + " device sends/receives (sends to itself counted once) " +
                        "on one communicator: at most " + std::to_string(kMaxP2pOps) + " per group");
  bool laneUsed[2 * kMaxRanks] = {};
  size_t k = 0;
  uint64_t selfBytes = 0;
  for (size_t i = 0; i < n; ++i) {
    const P2pCall& c = calls[i];
    P2pOp o;
    o.bytes = c.bytes;
    o.peer = c.peer;
    if (c.peer == rank) {
      if (c.recv) continue;
      const P2pCall& r = calls[selfRecv[k++]];
      o.dir = kP2pSelf;
      o.src = static_cast<const char*>(c.buf);
      o.dst = static_cast<char*>(r.buf);
      selfBytes = std::max<uint64_t>(selfBytes, c.bytes);
    } else if (c.recv) {
      o.dir = kP2pRecv;
      o.dst = static_cast<char*>(c.buf);
      o.afterSend = afterSend[i] ? 1 : 0;
    } else {
      o.dir = kP2pSend;
      o.src = static_cast<const char*>(c.buf);
    }
    if (c.peer != rank) laneUsed[2 * c.peer + (c.recv ? kP2pRecv : kP2pSend)] = true;
    desc->ops[desc->nops++] = o;
  }
  for (int l = 0; l < 2 * nranks && l < 2 * kMaxRanks; ++l)
    if (laneUsed[l]) desc->lanes[desc->nlanes++] = l;
  desc->blocksPerPeer = p2pBlocksPerPeer(maxBlocks, nranks);
  if (desc->nlanes > 0) {
    // Every lane's blocks wait on peers while the others run: they must all be resident at once,
    // which the grid bound (SMs / ranks on the GPU) is the communicator's promise of.
    if (desc->nlanes * desc->blocksPerPeer > std::max(1, maxBlocks))
      return invalidUsage("this group needs " + std::to_string(desc->nlanes) +
                          " blocks resident at once (one per peer and direction: its sends to and receives from " +
                          "other ranks) but the communicator's grid bound is " + std::to_string(std::max(1, maxBlocks)) +
                          " (SMs per rank on this GPU): use fewer peers per group (split an all-to-all into "
                          "groups of fewer peers) or fewer ranks per GPU");
    *nblocks = desc->nlanes * desc->blocksPerPeer;
  } else {
    // Only copies to itself: about 32 KiB per block, up to the grid bound.
    const uint64_t perBlock = static_cast<uint64_t>(kBlockThreads) * kGranule * 4;
    *nblocks = static_cast<int>(std::clamp<uint64_t>((selfBytes + perBlock - 1) / perBlock, 1, static_cast<uint64_t>(std::max(1, maxBlocks))));
  }
  return Status::ok();
}

bool DeviceGroup::keepsCollectives(const void* comm) const {
  return std::any_of(items_.begin(), items_.end(), [&](const Item& i) { return i.p2p && i.comm == comm; });
}

void DeviceGroup::addP2p(const void* comm, const P2pCall& call) { items_.push_back({comm, true, call, 0}); }

void DeviceGroup::addCollective(const void* comm, size_t index) { items_.push_back({comm, false, P2pCall{}, index}); }

Status DeviceGroup::launches(std::vector<Launch>* out) const {
  out->clear();
  std::vector<const void*> comms;
  for (const Item& i : items_)
    if (std::find(comms.begin(), comms.end(), i.comm) == comms.end()) comms.push_back(i.comm);
  int p2pComms = 0;
  for (const void* c : comms)
    if (keepsCollectives(c)) ++p2pComms;
  if (p2pComms > 1)
    return invalidUsage("a group has device sends/receives (or all-to-all) on " + std::to_string(p2pComms) +
                        " communicators: at most one per group (each communicator runs as its own kernel, and two "
                        "ranks could queue them in opposite orders and wait on each other forever); use one group "
                        "per communicator, in the same order on every rank (none of the group's device sends, "
                        "receives and the collectives kept with them was run)");
  for (const void* c : comms)
    for (const Item& i : items_) {
      if (i.comm != c) continue;
      if (i.p2p && !out->empty() && out->back().p2p && out->back().comm == c) {
        out->back().calls.push_back(i.call);
        continue;
      }
      Launch l;
      l.comm = c;
      l.p2p = i.p2p;
      if (i.p2p) l.calls.push_back(i.call);
      l.index = i.index;
      out->push_back(std::move(l));
    }
  return Status::ok();
}

}  // namespace weft::device
