// The device protocol: what the collective kernels and the host agree on, compiled by both nvcc
// (device code) and g++ (the library, and tests/gpu/device_protocol_test.cc where host threads play
// the kernel's blocks through the very same runCall()). Nothing here depends on CUDA headers.
//
// Memory, per rank (allocated once at init, never during a call; peers in other processes reach it
// through CUDA IPC handles opened at init):
//   flags[kMaxBlocks]   device memory; flags[b] = the last value block b of this rank published
//                       (monotonic; a block that sits out a call keeps its old value). Round s
//                       publishes flagA(s) = 2s-1 ("my data of round s is in my staging") and, in the
//                       two-shot all-reduce, flagB(s) = 2s ("my reduced slice is in my staging").
//   control[3]          device memory, after the flags: control[0] = the rank's round counter (the
//                       sequence number of its last round), control[1] = blocks of the running call
//                       that have finished, control[2] = 1 once a block claimed the error record. Every block of a call reads the counter at its start; the
//                       last block to finish advances it by the call's rounds. So per-call state lives
//                       in device memory and graph replays keep counting.
//   stage[2][stageBytes] device memory; round with sequence s uses half (s & 1).
//   abortWord           host-mapped; weftCommAbort (any thread) and destroy set it to non-zero.
//                       Peers poll it too while they wait on this rank (ranks in other processes map
//                       it from a shared-memory segment registered with CUDA).
//   error               host-mapped; the first block that gives up records why (code, peer, seq)
//                       and every block that gives up sets this rank's abort word (giveUp).
//
// One round (sequence s) of block b on rank r, every collective (runCall below):
//   1. copy this block's share of the user's input into stage[r][s & 1] (the layout per collective
//      is in runCall);
//   2. publish: release-store flags[r][b] = flagA(s);
//   3. wait until flags[p][b] >= flagA(s) for every peer p (acquire loads), polling the abort words
//      and a deadline (%globaltimer on the GPU) between loads;
//   4. read the peers' staging: reduce in rank order 0..n-1 (all-reduce one-shot, reduce,
//      reduce-scatter: every rank gets the same bits), or copy (all-gather, broadcast). The two-shot
//      all-reduce reduces only its slice r, stores it into recv and into its own staging (slice r
//      of its own staging is read by no peer in step 4), publishes flagB(s), waits for every peer's
//      flagB(s) and copies the peers' reduced slices.
// Ownership: staging byte x belongs to the 16-byte granule x / 16, and granule G to thread
// G mod (nblocks * kBlockThreads) (block = that / kBlockThreads) whatever the types and the user
// buffers' alignment (a misaligned buffer is read element by element, a granule at a time). Every
// range the protocol touches starts on a granule; so block b of every rank touches exactly the
// staging bytes that block b of every other rank touches, and the per-block flags order them.
// Why two halves suffice. Inside a call: block b of rank r writes half (s & 1) again at s + 2 only
// after its round s + 1 saw every peer's flag >= flagA(s + 1), and a peer publishes flagA(s + 1) only
// after its block b finished reading round s (both steps 4). Across calls, where the grid may
// change (and so which block owns which bytes): the round counter is per rank, so a call's first
// round uses the half its previous call's last round did not, which every peer finished reading
// before it published that last round (r's previous call waited for it); r writes the last round's
// half again only in the call's second round, after it has seen each peer publish the first round,
// so that peer's previous kernel has ended (calls of a rank are ordered: stream order, and an event
// when a call changes stream).
#pragma once

#include <stddef.h>
#include <stdint.h>
#if !defined(__CUDA_ARCH__)
#include <sched.h>
#endif

#if defined(__CUDACC__)
#define WEFT_HD __host__ __device__ __forceinline__
#else
#define WEFT_HD inline
#endif

namespace weft::device {

inline constexpr int kMaxRanks = 8;      // ranks of one communicator on the device path
inline constexpr int kMaxBlocks = 128;   // grid bound of the collective kernels
inline constexpr int kBlockThreads = 512;
inline constexpr uint64_t kGranule = 16;
inline constexpr int kControlWords = 3;  // control[]: round counter, blocks done, error claimed  // ownership unit of staging bytes (one 16-byte vector)

// What a wait gives back.
// kWaitPeerAborted: the awaited peer's own abort word is set (it was aborted or destroyed).
// kWaitMismatch: a receive found its matching send (same pair, same position in posting order) of
// another byte count.
enum WaitStatus : uint32_t { kWaitReady = 0, kWaitAborted = 1, kWaitTimedOut = 2, kWaitPeerAborted = 3, kWaitMismatch = 4 };

// The collectives the kernel runs (CallDesc::kind).
enum CollKind : uint32_t {
  kCollAllReduceOneShot = 0,
  kCollAllReduceTwoShot = 1,
  kCollReduceScatter = 2,
  kCollAllGather = 3,
  kCollBroadcast = 4,
  kCollReduce = 5,
};

// Host-mapped; written by the first block that gives up (code = WaitStatus), read by the host.
// 40 bytes: it lives in a 64-byte part of a host slot (cuda_device.cc).
struct ErrorRecord {
  uint32_t code;   // 0 = none
  int32_t peer;    // the peer whose flag was missing (kWaitMismatch: whose send disagreed)
  int32_t block;   // the block (point-to-point: the pair block)
  uint32_t what;   // ErrorWhat: a collective's round, a send or a receive
  uint64_t seq;    // the round (sequence number) it waited for (point-to-point: of that direction)
  uint64_t theirs; // kWaitMismatch: the bytes of the peer's send
  uint64_t mine;   // kWaitMismatch: the bytes of this rank's receive
};
enum ErrorWhat : uint32_t { kWhatColl = 0, kWhatSend = 1, kWhatRecv = 2 };

// The kernel's view of the communicator: constant after init, passed by value to every launch.
struct DevComm {
  int rank = 0;
  int nranks = 0;
  int sysScope = 0;                    // 1: some peer is on another GPU (flags and fences at system scope)
  uint64_t stageBytes = 0;             // bytes per half; a multiple of 16
  char* stage[kMaxRanks] = {};         // each rank's staging base (2 halves), as mapped in this process
  uint64_t* flags[kMaxRanks] = {};     // each rank's flags[kMaxBlocks]
  uint64_t* control = nullptr;         // this rank's control[2] (round counter, blocks done)
  volatile uint32_t* abortWord = nullptr;  // host-mapped (device address)
  volatile uint32_t* peerAbort[kMaxRanks] = {};  // each peer's abort word (device addresses)
  ErrorRecord* error = nullptr;        // host-mapped (device address)
  uint64_t timeoutNs = 0;              // per wait; 0 = only the abort words end a wait
  uint64_t p2pBytes = 0;               // point-to-point staging bytes per half per destination; a multiple of 16
  char* p2p[kMaxRanks] = {};           // each rank's point-to-point region (p2pRegionBytes), as mapped
};

// One call: what every rank passes alike (kind, root, bytes) and its own buffers.
struct CallDesc {
  uint32_t kind = kCollAllReduceOneShot;
  int32_t root = 0;       // broadcast, reduce
  int32_t avg = 0;        // divide the reduction by nranks (weftAvg)
  int32_t pad = 0;
  uint64_t bytes = 0;     // per rank: all-reduce/broadcast/reduce count*es, all-gather sendcount*es,
                          // reduce-scatter recvcount*es
  const char* send = nullptr;
  char* recv = nullptr;
};

// ---- Memory-order primitives, device and host.

WEFT_HD uint64_t loadAcquire(const uint64_t* p, int sys = 0) {
#if defined(__CUDA_ARCH__)
  uint64_t v;
  if (sys) asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  else asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
#else
  (void)sys;
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#endif
}

WEFT_HD void storeRelease(uint64_t* p, uint64_t v, int sys = 0) {
#if defined(__CUDA_ARCH__)
  if (sys) asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
  else asm volatile("st.release.gpu.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
#else
  (void)sys;
  __atomic_store_n(p, v, __ATOMIC_RELEASE);
#endif
}

WEFT_HD uint32_t loadAbort(const volatile uint32_t* p) {
#if defined(__CUDA_ARCH__)
  return *p;  // host-mapped: volatile reads go to system memory every time
#else
  return __atomic_load_n(const_cast<const uint32_t*>(p), __ATOMIC_ACQUIRE);
#endif
}

WEFT_HD uint64_t flagA(uint64_t seq) { return 2 * seq - 1; }
WEFT_HD uint64_t flagB(uint64_t seq) { return 2 * seq; }
WEFT_HD uint64_t minU(uint64_t a, uint64_t b) { return a < b ? a : b; }

// ---- Protocol steps.

// Staging half of `rank` for sequence `seq`.
WEFT_HD char* stageSlot(const DevComm& c, int rank, uint64_t seq) {
  return c.stage[rank] + (seq & 1u) * c.stageBytes;
}

// Bytes of one rank's data per round: the reduce-scatter stages n pieces of this size per round
// (piece p at p * chunk), every other collective one piece at 0.
WEFT_HD uint64_t chunkBytes(const DevComm& c, const CallDesc& d) {
  if (d.kind == kCollReduceScatter) {
    const uint64_t per = c.stageBytes / static_cast<uint64_t>(c.nranks) / kGranule * kGranule;
    return per == 0 ? kGranule : per;  // init guarantees stageBytes >= nranks * 16
  }
  return c.stageBytes;
}

// Rounds a call takes.
WEFT_HD uint64_t roundsOf(const DevComm& c, const CallDesc& d) {
  const uint64_t chunk = chunkBytes(c, d);
  return d.bytes == 0 ? 0 : (d.bytes + chunk - 1) / chunk;
}

// Two-shot: rank p's slice [*lo, *hi) of a round of `len` bytes (granule-aligned starts).
WEFT_HD void twoShotSlice(uint64_t len, int nranks, int p, uint64_t* lo, uint64_t* hi) {
  uint64_t q = (len + static_cast<uint64_t>(nranks) - 1) / static_cast<uint64_t>(nranks);
  q = (q + kGranule - 1) / kGranule * kGranule;
  *lo = minU(static_cast<uint64_t>(p) * q, len);
  *hi = minU(static_cast<uint64_t>(p + 1) * q, len);
}

// The rank's round counter at the start of a call (the previous call, if any, has ended: stream
// order, or the communicator's event when the stream changed; cuda_device.cc run()). Round k of this call has sequence number callBase + 1 + k.
WEFT_HD uint64_t callBase(const DevComm& c) { return loadAcquire(&c.control[0]); }

// What an executor's base() returns (one thread per block reads it): kAbortedBase when this rank's
// abort word is already set (a call queued behind one that gave up, or launched after an abort),
// else callBase().
inline constexpr uint64_t kAbortedBase = ~0ull;
WEFT_HD uint64_t callStart(const DevComm& c) { return loadAbort(c.abortWord) != 0 ? kAbortedBase : callBase(c); }

// One thread per block, after the block's last round: the last block of the call advances the
// rank's round counter by `rounds`.
WEFT_HD void finishCall(const DevComm& c, unsigned nblocks, uint64_t rounds) {
#if defined(__CUDA_ARCH__)
  __threadfence();
  const unsigned long long prev = atomicAdd(reinterpret_cast<unsigned long long*>(&c.control[1]), 1ull);
  if (prev == nblocks - 1) {
    c.control[1] = 0;
    storeRelease(&c.control[0], c.control[0] + rounds);
  }
#else
  const uint64_t prev = __atomic_fetch_add(&c.control[1], 1, __ATOMIC_ACQ_REL);
  if (prev == nblocks - 1) {
    __atomic_store_n(&c.control[1], 0, __ATOMIC_RELAXED);
    storeRelease(&c.control[0], c.control[0] + rounds);
  }
#endif
}

// Step 2.
WEFT_HD void publish(const DevComm& c, int block, uint64_t value) {
  storeRelease(&c.flags[c.rank][block], value, c.sysScope);
}

// A block that gives up: the first one (of this rank) claims the error record (control[2], in
// device memory: blocks of one kernel race for it) and fills it, code last after a system fence
// (the host reads code first); then every giving-up block sets this rank's own abort word, so that
// its queued calls (or graph replays) and its peers, which wait on this rank's flags, stop at once
// instead of each waiting the full deadline.
WEFT_HD void giveUp(const DevComm& c, uint32_t why, int peer, int block, uint64_t seq, uint32_t what = kWhatColl,
                    uint64_t theirs = 0, uint64_t mine = 0) {
#if defined(__CUDA_ARCH__)
  const bool first = atomicCAS(reinterpret_cast<unsigned long long*>(&c.control[2]), 0ull, 1ull) == 0ull;
#else
  uint64_t zero = 0;
  const bool first = __atomic_compare_exchange_n(&c.control[2], &zero, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
#endif
  if (first && c.error != nullptr) {
    c.error->peer = peer;
    c.error->block = block;
    c.error->seq = seq;
    c.error->what = what;
    c.error->theirs = theirs;
    c.error->mine = mine;
#if defined(__CUDA_ARCH__)
    __threadfence_system();
    *reinterpret_cast<volatile uint32_t*>(&c.error->code) = why;
#else
    __atomic_store_n(&c.error->code, why, __ATOMIC_RELEASE);
#endif
  }
  if (c.abortWord != nullptr) {
#if defined(__CUDA_ARCH__)
    __threadfence_system();
    *c.abortWord = 1u;
#else
    __atomic_store_n(const_cast<uint32_t*>(c.abortWord), 1u, __ATOMIC_RELEASE);
#endif
  }
}

// Waits until *flag >= value, `peer` being the rank that publishes it. `now` returns nanoseconds.
// The abort word, the peer's abort word (set when that rank is aborted or destroyed: a kernel never
// waits on a rank that is gone) and the deadline (*deadline: 0 = not started; shared by the waits of
// one step) are checked every 64 polls (the abort word is in host memory: cheap, not free). A peer's
// abort word seen set, the flag is read once more: a peer that published and then was destroyed is
// no failure. On failure giveUp(..., seq, what) and returns the status.
template <class Clock>
WEFT_HD uint32_t waitFlag(const DevComm& c, const uint64_t* flag, uint64_t value, int peer, int block, uint64_t seq,
                          uint32_t what, Clock now, uint64_t* deadline) {
  uint32_t spins = 0;
  while (loadAcquire(flag, c.sysScope) < value) {
    if ((++spins & 63u) != 0) continue;
#if !defined(__CUDA_ARCH__)
    sched_yield();  // host threads playing blocks (tests) may outnumber the cores
#endif
    uint32_t why = kWaitReady;
    if (loadAbort(c.abortWord) != 0) {
      why = kWaitAborted;
    } else if (c.peerAbort[peer] != nullptr && loadAbort(c.peerAbort[peer]) != 0) {
      why = kWaitPeerAborted;
    } else if (c.timeoutNs != 0) {
      const uint64_t t = now();
      if (*deadline == 0) *deadline = t + c.timeoutNs;
      else if (t > *deadline) why = kWaitTimedOut;
    }
    if (why == kWaitPeerAborted && loadAcquire(flag, c.sysScope) >= value) {
      // The peer published and then ended (destroyed after its last call): not a failure.
      break;
    }
    if (why != kWaitReady) {
      giveUp(c, why, peer, block, seq, what);
      return why;
    }
  }
  return kWaitReady;
}

// Step 3: waits until every peer's flags[block] >= value (waitFlag, one deadline for the step).
template <class Clock>
WEFT_HD uint32_t waitPeers(const DevComm& c, int block, uint64_t value, Clock now) {
  uint64_t deadline = 0;
  for (int p = 0; p < c.nranks; ++p) {
    if (p == c.rank) continue;
    const uint32_t why = waitFlag(c, &c.flags[p][block], value, p, block, (value + 1) / 2, kWhatColl, now, &deadline);
    if (why != kWaitReady) return why;
  }
  return kWaitReady;
}

// The first granule at or after `lo` (a granule boundary) that thread g of `stride` threads owns.
WEFT_HD uint64_t firstOwned(uint64_t lo, uint64_t g, uint64_t stride) {
  const uint64_t g0 = lo / kGranule;
  return g0 + (g + stride - g0 % stride) % stride;
}

// The whole call, played by one thread of one block (all threads of all blocks run it alike).
// X is the executor: the GPU's (collectives/device/kernels.cu) or a host test's. It provides
//   uint64_t base(c)                          callStart(c), read once and the same for the whole block
//   void copy(dst, src, lo, hi)               dst[x - lo] = src[x - lo] for the owned granules of
//                                             staging range [lo, hi)
//   void reduce(dst, dst2, srcs, n, lo, hi, avg)  dst (and dst2 when not null)[x - lo] = srcs[0] OP
//                                             ... OP srcs[n-1] (then / n when avg), owned granules
//   uint32_t sync(c, publishValue, waitValue) block barrier; one thread publishes, waits for every
//                                             peer; barrier; the wait's status for every thread
//   void finish(c, rounds)                    block barrier, then one thread: finishCall
// Returns the first wait failure (the kernel then stops: its peers see no further flags and end at
// their own deadlines or abort words), else kWaitReady.
#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <class X>
WEFT_HD uint32_t runCall(const DevComm& c, const CallDesc& d, X& x) {
  const int n = c.nranks, r = c.rank;
  const uint64_t base = x.base(c);
  // A call queued behind one that gave up (or launched after an abort) does nothing: the rank's
  // round counter did not advance, and its peers have stopped too.
  if (base == kAbortedBase) return kWaitAborted;
  const uint64_t chunk = chunkBytes(c, d);
  const uint64_t rounds = roundsOf(c, d);
  for (uint64_t k = 0; k < rounds; ++k) {
    const uint64_t seq = base + 1 + k;
    const uint64_t off = k * chunk;
    const uint64_t len = minU(chunk, d.bytes - off);
    char* mine = stageSlot(c, r, seq);
    const char* st[kMaxRanks];
    for (int p = 0; p < n; ++p) st[p] = stageSlot(c, p, seq);
    // 1. Copy in.
    if (d.kind == kCollReduceScatter) {
      for (int p = 0; p < n; ++p) {
        const uint64_t lo = static_cast<uint64_t>(p) * chunk;
        x.copy(mine + lo, d.send + static_cast<uint64_t>(p) * d.bytes + off, lo, lo + len);
      }
    } else if (d.kind != kCollBroadcast || r == d.root) {
      x.copy(mine, d.send + off, 0, len);
    }
    // 2-3. Publish, wait for every peer.
    uint32_t w = x.sync(c, flagA(seq), flagA(seq));
    if (w != kWaitReady) return w;
    // 4. Read the peers' staging.
    const char* src[kMaxRanks];
    switch (d.kind) {
      case kCollAllReduceOneShot:
        x.reduce(d.recv + off, static_cast<char*>(nullptr), st, n, 0, len, d.avg);
        break;
      case kCollReduce:
        if (r == d.root) x.reduce(d.recv + off, static_cast<char*>(nullptr), st, n, 0, len, d.avg);
        break;
      case kCollReduceScatter: {
        const uint64_t lo = static_cast<uint64_t>(r) * chunk;
        for (int p = 0; p < n; ++p) src[p] = st[p] + lo;
        x.reduce(d.recv + off, static_cast<char*>(nullptr), src, n, lo, lo + len, d.avg);
        break;
      }
      case kCollAllGather:
        for (int p = 0; p < n; ++p) {
          char* dst = d.recv + static_cast<uint64_t>(p) * d.bytes + off;
          if (p == r && dst == d.send + off) continue;  // in place
          x.copy(dst, st[p], 0, len);
        }
        break;
      case kCollBroadcast:
        if (r != d.root || d.send != d.recv) x.copy(d.recv + off, st[d.root], 0, len);
        break;
      case kCollAllReduceTwoShot: {
        uint64_t lo, hi;
        twoShotSlice(len, n, r, &lo, &hi);
        for (int p = 0; p < n; ++p) src[p] = st[p] + lo;
        if (lo < hi) x.reduce(d.recv + off + lo, mine + lo, src, n, lo, hi, d.avg);
        w = x.sync(c, flagB(seq), flagB(seq));
        if (w != kWaitReady) return w;
        for (int p = 0; p < n; ++p) {
          if (p == r) continue;
          twoShotSlice(len, n, p, &lo, &hi);
          if (lo < hi) x.copy(d.recv + off + lo, st[p] + lo, lo, hi);
        }
        break;
      }
      default:
        break;
    }
  }
  x.finish(c, rounds);
  return kWaitReady;
}

// ---- Point-to-point: weftSend / weftRecv / weftAllToAll on device buffers.
//
// Memory, per rank r, the point-to-point region (allocated at init with the rest, so it is already
// mapped by every peer; offsets below, all 16-byte aligned):
//   sent[d][b]      uint64, written by r as SENDER to d: the last pair sequence whose data pair
//                   block b of r put into its staging for d (monotonic)
//   ack[s][b]       uint64, written by r as RECEIVER from s: the last pair sequence of s -> r whose
//                   staging pair block b of r has finished reading (monotonic)
//   seq[d]          r's send sequence to d (the last round r sent to d, over all calls);
//   seq[kMaxRanks + s]  r's receive sequence from s. Both are read by every block at a launch's
//                   start and advanced by the launch's last block (finishP2p; control[1] counts the
//                   blocks, as finishCall), so graph replays keep counting.
//   hdr[d][2]       uint64, by r as sender to d: the byte count of the send whose round uses half h
//   stage[slot(r, d)][2][p2pBytes]  r's staging for destination d (slot: d, minus one above r)
//
// Direction s -> d, round with pair sequence q (q = 1, 2, ... over all sends s -> d ever), pair
// block b (every direction of the pair uses the same P = p2pBlocksPerPeer blocks):
//   sender s:   wait ack_d[s][b] >= q - 2 (d has finished reading half q & 1 of round q - 2);
//               copy the round's bytes, b's granules, into stage_s[d][q & 1]; block 0 writes
//               hdr_s[d][q & 1] = the send's byte count; release-publish sent_s[d][b] = q.
//   receiver d: wait sent_s[d][b] >= q; block 0 compares hdr_s[d][q & 1] with its receive's byte
//               count (a mismatch gives up with kWaitMismatch: the pair's counters would otherwise
//               silently desynchronise); copy b's granules of stage_s[d][q & 1] into the user's
//               buffer; release-publish ack_d[s][b] = q.
// Lanes. A launch gives every (peer, direction) it uses its own P = p2pBlocksPerPeer blocks: the
// send lane of peer d runs this rank's sends to d, round after round; the receive lane of peer s its
// receives from s. The two directions of a pair never wait on each other inside a rank (but for
// the in-place rule below), as NCCL's sends and receives progress independently.
// Ownership: lane block b (of P), thread t owns staging granule G when G mod (P * threads) is
// b * threads + t, for every round of every call: P is fixed per communicator (a function of the
// comm-agreed grid bound and nranks), so the flags of pair block b cover exactly the granules pair
// block b touches, on both ranks and across calls (the collectives' grid may change per call, the
// pair's never does).
// Why two halves suffice. The sender writes half h = q & 1 in round q only after ack[b] >= q - 2,
// i.e. after the receiver's pair block b finished reading half h in round q - 2 (the last round
// that used it, rounds being in order per block); the receiver reads half h of round q only after
// sent[b] >= q, and the sender does not write half h again before ack[b] >= q, which the receiver
// publishes after reading. The hdr word of half h follows the same argument (block 0 writes it
// before sent[0] = q and reads it after sent[0] >= q, before ack[0] = q). Sequences are per pair and
// direction and persist in device memory, so the argument holds across calls and launches.
// Deadlock freedom. One launch carries every send and receive a rank posted in a group (an
// ungrouped weftSend/weftRecv is a launch of its own); its lanes are resident together (the planner
// refuses a launch with more lanes than the grid bound allows: grid <= the grid bound, as the
// collectives'). A send round q waits only for the peer's receive of round q - 2; a receive round q
// only for the peer's send of round q (and, in place, for this rank's own send of round q, below).
// So a send of at most two rounds completes whatever the peer does next, a longer one needs the
// peer's matching receive to be running (in this launch or a later one whose predecessors finish),
// and a receive needs the peer's send to be running: exactly NCCL's rule. In particular a group
// {send, recv} on one rank matches separate recv-then-send or send-then-recv calls on the other:
// the receive lane does not wait for the send lane nor the reverse.
// Several sends to one peer run in posting order, matched in order with the peer's receives.
// In place (all-to-all with sendbuff == recvbuff, or a send and a receive of one buffer with one
// peer, same position in posting order and the same rounds before it; the planner marks such a
// receive afterSend): the receive lane's round k writes exactly the bytes the send lane's round k
// (the same launch-local round, the same lane block, the same granules) copies into staging, so
// before it the receive block waits for this rank's own sent[b] >= sbase + k (a local wait in one
// direction: a receive waits for a send of this rank, never the reverse, so it adds no cycle within
// the rank). Across ranks it does add one dependency: an in-place receive of round k needs the
// peer to have received this rank's round k - 2, so an in-place exchange longer than two rounds
// needs the peer's receive running alongside its send (one group on the peer too, as all-to-all
// posts it); otherwise the wait ends at the deadline with an error, never a hang.
// Sends to itself are copies (every block, after its lane's rounds).

inline constexpr int kMaxP2pOps = 64;  // operations per launch (the kernel argument stays < 4 KiB)
enum P2pDir : int32_t { kP2pSend = 0, kP2pRecv = 1, kP2pSelf = 2 };

struct P2pOp {
  const char* src = nullptr;  // send, self
  char* dst = nullptr;        // recv, self
  uint64_t bytes = 0;
  int32_t peer = 0;
  int16_t dir = kP2pSend;
  int16_t afterSend = 0;  // a receive in place: each round waits for this rank's send of that round
};

// One launch: the operations in posting order (self sends paired with self receives into kP2pSelf),
// and the lanes that get blocks: lane i (lanes[i] = peer * 2 + kP2pSend or kP2pRecv) runs on blocks
// [i * P, (i + 1) * P).
struct P2pDesc {
  int32_t nops = 0;
  int32_t nlanes = 0;
  int32_t blocksPerPeer = 1;  // P, blocks per lane
  int32_t pad = 0;
  int32_t lanes[2 * kMaxRanks] = {};
  P2pOp ops[kMaxP2pOps] = {};
};

inline constexpr uint64_t kP2pSentOff = 0;
inline constexpr uint64_t kP2pAckOff = kP2pSentOff + 8ull * kMaxRanks * kMaxBlocks;
inline constexpr uint64_t kP2pSeqOff = kP2pAckOff + 8ull * kMaxRanks * kMaxBlocks;
inline constexpr uint64_t kP2pHdrOff = kP2pSeqOff + 8ull * 2 * kMaxRanks;
inline constexpr uint64_t kP2pStageOff = (kP2pHdrOff + 8ull * 2 * kMaxRanks + 255) / 256 * 256;

// Bytes of a rank's point-to-point region (zero the first kP2pStageOff at init).
WEFT_HD uint64_t p2pRegionBytes(int nranks, uint64_t p2pBytes) {
  return kP2pStageOff + static_cast<uint64_t>(nranks > 1 ? nranks - 1 : 0) * 2 * p2pBytes;
}
// Blocks per lane: the grid bound shared by the 2 * (nranks - 1) lanes of an all-to-all. Every
// rank computes it from the same (comm-agreed) values.
WEFT_HD int p2pBlocksPerPeer(int maxBlocks, int nranks) {
  int p = nranks > 1 ? maxBlocks / (2 * (nranks - 1)) : maxBlocks;
  if (p > kMaxBlocks) p = kMaxBlocks;
  return p < 1 ? 1 : p;
}
WEFT_HD uint64_t* p2pWord(const DevComm& c, int owner, uint64_t off) {
  return reinterpret_cast<uint64_t*>(c.p2p[owner] + off);
}
WEFT_HD uint64_t* sentFlag(const DevComm& c, int owner, int to, int b) {
  return p2pWord(c, owner, kP2pSentOff) + static_cast<uint64_t>(to) * kMaxBlocks + static_cast<uint64_t>(b);
}
WEFT_HD uint64_t* ackFlag(const DevComm& c, int owner, int from, int b) {
  return p2pWord(c, owner, kP2pAckOff) + static_cast<uint64_t>(from) * kMaxBlocks + static_cast<uint64_t>(b);
}
WEFT_HD uint64_t* sendSeq(const DevComm& c, int to) { return p2pWord(c, c.rank, kP2pSeqOff) + to; }
WEFT_HD uint64_t* recvSeq(const DevComm& c, int from) { return p2pWord(c, c.rank, kP2pSeqOff) + kMaxRanks + from; }
WEFT_HD uint64_t* hdrWord(const DevComm& c, int owner, int to, uint64_t seq) {
  return p2pWord(c, owner, kP2pHdrOff) + 2 * static_cast<uint64_t>(to) + (seq & 1u);
}
WEFT_HD char* p2pStage(const DevComm& c, int owner, int to, uint64_t seq) {
  const uint64_t slot = static_cast<uint64_t>(to < owner ? to : to - 1);
  return c.p2p[owner] + kP2pStageOff + (slot * 2 + (seq & 1u)) * c.p2pBytes;
}
WEFT_HD uint64_t p2pRounds(const DevComm& c, uint64_t bytes) { return (bytes + c.p2pBytes - 1) / c.p2pBytes; }

// One thread per block, at a launch's start: false when this rank's abort word is set (nothing is
// done); else the pair's send and receive sequences (peer < 0: none).
WEFT_HD bool p2pBegin(const DevComm& c, int peer, uint64_t* sbase, uint64_t* rbase) {
  if (loadAbort(c.abortWord) != 0) return false;
  *sbase = *rbase = 0;
  if (peer >= 0) {
    *sbase = loadAcquire(sendSeq(c, peer));
    *rbase = loadAcquire(recvSeq(c, peer));
  }
  return true;
}

// One thread per block: waits for *flag >= value; then, when hdr is given (the receiver's block 0),
// checks the sender's byte count.
template <class Clock>
WEFT_HD uint32_t p2pLeaderWait(const DevComm& c, const uint64_t* flag, uint64_t value, int peer, int block, uint64_t seq,
                               uint32_t what, const uint64_t* hdr, uint64_t want, Clock now) {
  uint64_t deadline = 0;
  const uint32_t w = waitFlag(c, flag, value, peer, block, seq, what, now, &deadline);
  if (w != kWaitReady || hdr == nullptr) return w;
#if defined(__CUDA_ARCH__)
  const uint64_t theirs = *reinterpret_cast<const volatile uint64_t*>(hdr);
#else
  const uint64_t theirs = __atomic_load_n(hdr, __ATOMIC_RELAXED);
#endif
  if (theirs != want) {
    giveUp(c, kWaitMismatch, peer, block, seq, what, theirs, want);
    return kWaitMismatch;
  }
  return kWaitReady;
}

// One thread per block, after the block's data is fenced: the header word (block 0 of a sender),
// then the flag.
WEFT_HD void p2pLeaderPost(const DevComm& c, uint64_t* flag, uint64_t value, uint64_t* hdr, uint64_t hdrValue) {
  if (hdr != nullptr) {
#if defined(__CUDA_ARCH__)
    *reinterpret_cast<volatile uint64_t*>(hdr) = hdrValue;
#else
    __atomic_store_n(hdr, hdrValue, __ATOMIC_RELAXED);
#endif
  }
  storeRelease(flag, value, c.sysScope);
}

// One thread per block, after the block's work: the last block of the launch advances the pair
// sequences by the rounds of every send and receive.
WEFT_HD void finishP2p(const DevComm& c, const P2pDesc& d, unsigned nblocks) {
#if defined(__CUDA_ARCH__)
  __threadfence();
  const unsigned long long prev = atomicAdd(reinterpret_cast<unsigned long long*>(&c.control[1]), 1ull);
  if (prev != nblocks - 1) return;
  c.control[1] = 0;
#else
  const uint64_t prev = __atomic_fetch_add(&c.control[1], 1, __ATOMIC_ACQ_REL);
  if (prev != nblocks - 1) return;
  __atomic_store_n(&c.control[1], 0, __ATOMIC_RELAXED);
#endif
  for (int i = 0; i < d.nops; ++i) {
    const P2pOp& o = d.ops[i];
    if (o.dir == kP2pSend) storeRelease(sendSeq(c, o.peer), *sendSeq(c, o.peer) + p2pRounds(c, o.bytes));
    else if (o.dir == kP2pRecv) storeRelease(recvSeq(c, o.peer), *recvSeq(c, o.peer) + p2pRounds(c, o.bytes));
  }
}

// The next operation at or after i with this peer and direction (d.nops: none).
WEFT_HD int nextP2p(const P2pDesc& d, int i, int peer, int32_t dir) {
  while (i < d.nops && (d.ops[i].peer != peer || d.ops[i].dir != dir)) ++i;
  return i;
}

// A whole launch, played by one thread of one block (every thread of every block runs it alike).
// Besides runCall's copy, the executor X provides
//   int block, grid                         this block, the launch's blocks
//   void own(idx, count)                    granule ownership: block idx of count (its threads)
//   bool begin(c, peer, &sbase, &rbase)     p2pBegin by one thread, shared with the block
//   uint32_t await(c, flag, value, peer, block, seq, what, hdr, want)  p2pLeaderWait by one thread
//                                           (block barrier after); the status for every thread
//   void post(c, flag, value, hdr, hdrValue)  fence, block barrier, p2pLeaderPost by one thread
//   void end(c, d)                          block barrier, then one thread: finishP2p
// Returns the first failure (the block stops; the others stop at the abort word it raises).
#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <class X>
WEFT_HD uint32_t runP2p(const DevComm& c, const P2pDesc& d, X& x) {
  const int P = d.blocksPerPeer;
  const int li = x.block / P;
  const int lane = li < d.nlanes ? d.lanes[li] : -1;
  const int peer = lane >= 0 ? lane >> 1 : -1;
  uint64_t sbase = 0, rbase = 0;
  if (!x.begin(c, peer, &sbase, &rbase)) return kWaitAborted;
  if (peer >= 0) {
    const int pb = x.block - li * P;  // lane (pair) block
    x.own(pb, P);
    const uint64_t H = c.p2pBytes;
    if ((lane & 1) == kP2pSend) {
      uint64_t q = sbase;  // the pair's send sequence
      for (int i = nextP2p(d, 0, peer, kP2pSend); i < d.nops; i = nextP2p(d, i + 1, peer, kP2pSend)) {
        const P2pOp& o = d.ops[i];
        for (uint64_t off = 0; off < o.bytes; off += H) {
          ++q;
          const uint64_t len = minU(H, o.bytes - off);
          uint32_t w = x.await(c, ackFlag(c, peer, c.rank, pb), q > 2 ? q - 2 : 0, peer, pb, q, kWhatSend,
                               static_cast<const uint64_t*>(nullptr), 0);
          if (w != kWaitReady) return w;
          x.copy(p2pStage(c, c.rank, peer, q), o.src + off, 0, len);
          x.post(c, sentFlag(c, c.rank, peer, pb), q, pb == 0 ? hdrWord(c, c.rank, peer, q) : nullptr, o.bytes);
        }
      }
    } else {
      uint64_t q = rbase;  // the pair's receive sequence
      for (int i = nextP2p(d, 0, peer, kP2pRecv); i < d.nops; i = nextP2p(d, i + 1, peer, kP2pRecv)) {
        const P2pOp& o = d.ops[i];
        for (uint64_t off = 0; off < o.bytes; off += H) {
          ++q;
          const uint64_t len = minU(H, o.bytes - off);
          uint32_t w;
          if (o.afterSend != 0) {
            // In place: this rank's send lane copied these bytes out (launch-local round q - rbase).
            w = x.await(c, sentFlag(c, c.rank, peer, pb), sbase + (q - rbase), peer, pb, q, kWhatRecv,
                        static_cast<const uint64_t*>(nullptr), 0);
            if (w != kWaitReady) return w;
          }
          w = x.await(c, sentFlag(c, peer, c.rank, pb), q, peer, pb, q, kWhatRecv,
                      pb == 0 ? static_cast<const uint64_t*>(hdrWord(c, peer, c.rank, q)) : nullptr, o.bytes);
          if (w != kWaitReady) return w;
          x.copy(o.dst + off, p2pStage(c, peer, c.rank, q), 0, len);
          x.post(c, ackFlag(c, c.rank, peer, pb), q, static_cast<uint64_t*>(nullptr), 0);
        }
      }
    }
  }
  // Sends to itself: every block, the launch's ownership.
  x.own(x.block, x.grid);
  for (int i = 0; i < d.nops; ++i) {
    const P2pOp& o = d.ops[i];
    if (o.dir == kP2pSelf && o.src != o.dst) x.copy(o.dst, o.src, 0, o.bytes);
  }
  x.end(c, d);
  return kWaitReady;
}

}  // namespace weft::device
