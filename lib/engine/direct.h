// The direct all-reduce region: one shared mapping per communicator whose ranks are all on this
// host, through which one-shot and two-shot all-reduces read the peers' inputs in place (no
// channel, no transport).
//
// Setup (collective, at communicator creation): rank 0 creates a memfd (MFD_CLOEXEC), sizes and maps
// it, and hands the descriptor to every other rank over an abstract AF_UNIX socket (SCM_RIGHTS) whose
// name and a random cookie travel over the bootstrap. No file is ever created, so nothing survives a
// kill -9 (the memory lives as long as a mapping does). Every rank maps it with MAP_POPULATE: the
// pages are resident and mapped before the first call, so a call takes no page fault.
//
// Layout: a header page, then per rank a control block (RankCtl), then per rank two input slots
// and two result slots (parity 0/1), page-aligned.
//
// Protocol (rounds): a call runs in rounds of at most slotBytes of input per rank; every round has a
// number k (a per-communicator counter, the same on every rank) and uses the slots of parity k & 1.
//   one-shot round k: copy own input chunk into in[me][k&1] (a call of at most kInlineBytes: into
//     arrive[me][k&1].small); write arrive[me][k&1].desc; publish arrive[me][k&1] = k; wait arrive[q] >= k for every peer q (checking desc[q][k&1] = ours: the op
//     check); reduce in[0..n-1][k&1] in rank order into the output.
//   two-shot round k: the same first half; then reduce slice `me` of the n input slots in rank
//     order into res[me][k&1]; publish done[me] = k; wait done[q] >= k and copy slice q from
//     res[q][k&1] into the output.
// A rank publishes arrive = k only after it has finished round k-1 (all reading of slots of
// parity (k-1)&1 and earlier); and in round k-1 it waited for every peer's arrive >= k-1, i.e. for
// every peer to have finished round k-2. So when a rank writes its slots of parity k&1 in round k,
// no peer still reads what it wrote there in round k-2: two parities suffice.
//
// Waiting: a waiter spins briefly on the peer's word, then yields, then increments a waiter count
// and sleeps in FUTEX_WAIT (shared, not private) in bounded slices on a shared counter. With more
// ranks than cores (counting mode) every rank increments the counter after publishing its word
// and the increment that completes the round (a multiple of n) calls FUTEX_WAKE, only when the
// waiter count is non-zero: one wake-up call per round. Otherwise publishing is a plain store;
// after its own waits of the round a rank fences and, only if it sees a sleeper, bumps the counter
// and wakes (a rank sleeps only after its own word is visible, so the last arriver never sleeps
// and its settle wakes the rest).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "lib/bootstrap/bootstrap.h"
#include "lib/core/status.h"

namespace weft::engine {

// What a rank is running: compared between ranks (the op check of the direct path).
struct DirectDesc {
  uint32_t seq = 0;  // collective number on this communicator
  uint8_t coll = 0, dtype = 0, redop = 0, algo = 0;
  uint64_t count = 0;
  bool operator==(const DirectDesc& o) const {
    return seq == o.seq && coll == o.coll && dtype == o.dtype && redop == o.redop && algo == o.algo && count == o.count;
  }
  bool operator!=(const DirectDesc& o) const { return !(*this == o); }
};
static_assert(sizeof(DirectDesc) == 16);

struct OpHeader;  // lib/engine/channel.h
// The channels' op header as a direct descriptor (a channel collective's announcement), and back.
DirectDesc descOf(const OpHeader& h);
OpHeader headerOf(const DirectDesc& d);

struct alignas(128) FutexWord {
  std::atomic<uint32_t> value{0};
};

// Inputs of at most this many bytes travel inside the arrive line itself (one cache-line transfer
// per peer and call: flag, op check and data together).
inline constexpr size_t kInlineBytes = 32;

// One per round parity, each on its own 128-byte block: a round's line is written once by its
// owner and then only read until the round after next, so readers never contend with the writer.
struct alignas(128) ArriveLine {
  std::atomic<uint32_t> value{0};  // futex word: last round of this parity whose input is published
  uint32_t pad = 0;
  DirectDesc desc;                 // the call that round belongs to (the op check)
  alignas(8) unsigned char small[kInlineBytes];  // a one-round one-shot input of <= kInlineBytes
};
static_assert(sizeof(DirectDesc) + 8 + kInlineBytes <= 64, "the arrive fields share one cache line");

struct RankCtl {
  ArriveLine arrive[2];
  FutexWord done;            // two-shot: last round whose result slice this rank has published
  // The collective this rank is in when it runs through the channels (not direct): a seqlock
  // (gen odd while writing), so that a direct rank waiting at the same sequence number can tell
  // that its peer called something else.
  alignas(128) std::atomic<uint32_t> gen{0};
  DirectDesc current;
};

// Shared by all ranks: arrivals and results counted across ranks, so that a sleeping rank sleeps
// once per round (until all have arrived) and only the last arriver calls FUTEX_WAKE.
struct SharedCtl {
  FutexWord arrivals;
  FutexWord arrivalWaiters;
  FutexWord dones;
  FutexWord doneWaiters;
};

class DirectRegion {
 public:
  // Collective over the bootstrap (every rank must call it, in the same order relative to other
  // bootstrap traffic). On failure *out stays null and the status says why.
  static Status create(bootstrap::Bootstrap& bs, int rank, int nranks, size_t slotBytes, bool counting,
                       uint64_t deadlineNs, std::unique_ptr<DirectRegion>* out);
  ~DirectRegion();
  DirectRegion(const DirectRegion&) = delete;
  DirectRegion& operator=(const DirectRegion&) = delete;

  size_t slotBytes() const { return slotBytes_; }
  size_t resultBytes() const { return resultBytes_; }
  size_t mappedBytes() const { return mapBytes_; }
  RankCtl& ctl(int r) const { return ctls_[r]; }
  char* input(int r, uint32_t round) const { return inputs_ + (static_cast<size_t>(r) * 2 + (round & 1)) * slotBytes_; }
  char* result(int r, uint32_t round) const {
    return results_ + (static_cast<size_t>(r) * 2 + (round & 1)) * resultBytes_;
  }

  // Store round k into this rank's word (release), then count the arrival (or, done: the published
  // result) in the shared counter; the last of the n ranks wakes the sleepers, if any.
  void publish(std::atomic<uint32_t>& word, bool done, uint32_t k);
  // After this rank's waits of the round: wake sleepers (not counting mode; see direct.cc).
  void settle(bool done);
  // Counting mode (set at creation, the same on every rank): the counters count arrivals exactly
  // (used when this host's ranks outnumber its cores, where ranks sleep often). Otherwise a
  // counter is only a wake-up sequence, bumped by a publisher that sees a sleeper, and the fast
  // path costs no shared read-modify-write.
  bool counting() const { return counting_; }
  // The shared counters a sleeper waits on: n x k once every rank has arrived at (done) round k.
  std::atomic<uint32_t>& counter(bool done) const { return done ? shared_->dones.value : shared_->arrivals.value; }
  std::atomic<uint32_t>& counterWaiters(bool done) const {
    return done ? shared_->doneWaiters.value : shared_->arrivalWaiters.value;
  }
  // Wake everyone sleeping on any word (abort).
  void wakeAll() const;
  // A peer process that has exited (its pidfd is readable), or -1. A system call: slow path only.
  int exitedPeer() const;
  // Announce a collective that runs through the channels (the seqlock in RankCtl::current).
  void announce(int rank, const DirectDesc& d) const;
  // The peer's announced channel collective, if one is readable now.
  bool announced(int peer, DirectDesc* d) const;

 private:
  DirectRegion() = default;
  int nranks_ = 0;
  char* base_ = nullptr;
  size_t mapBytes_ = 0;
  size_t slotBytes_ = 0, resultBytes_ = 0;
  RankCtl* ctls_ = nullptr;
  SharedCtl* shared_ = nullptr;
  bool counting_ = false;
  char* inputs_ = nullptr;
  char* results_ = nullptr;
  std::vector<int> pidfds_;  // per rank; -1 for ourselves, ranks in this process, or unknown
};

}  // namespace weft::engine
