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
enum WaitStatus : uint32_t { kWaitReady = 0, kWaitAborted = 1, kWaitTimedOut = 2, kWaitPeerAborted = 3 };

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
struct ErrorRecord {
  uint32_t code;   // 0 = none
  int32_t peer;    // the peer whose flag was missing
  int32_t block;
  int32_t pad;
  uint64_t seq;    // the round (sequence number) it waited for
};

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
WEFT_HD void giveUp(const DevComm& c, uint32_t why, int peer, int block, uint64_t value) {
#if defined(__CUDA_ARCH__)
  const bool first = atomicCAS(reinterpret_cast<unsigned long long*>(&c.control[2]), 0ull, 1ull) == 0ull;
#else
  uint64_t zero = 0;
  const bool first = __atomic_compare_exchange_n(&c.control[2], &zero, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
#endif
  if (first && c.error != nullptr) {
    c.error->peer = peer;
    c.error->block = block;
    c.error->seq = (value + 1) / 2;  // the round
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

// Step 3: waits until every peer's flags[block] >= value. `now` returns nanoseconds. The abort word,
// the awaited peer's abort word (set when that rank is aborted or destroyed: a kernel never waits on
// a rank that is gone) and the deadline are checked every 64 polls (the abort word is in host memory:
// cheap, not free). A peer's abort word seen set, the peer's flag is read once more: a peer that
// published and then was destroyed is no failure. On failure giveUp() and returns the status.
template <class Clock>
WEFT_HD uint32_t waitPeers(const DevComm& c, int block, uint64_t value, Clock now) {
  uint64_t deadline = 0;
  for (int p = 0; p < c.nranks; ++p) {
    if (p == c.rank) continue;
    uint32_t spins = 0;
    while (loadAcquire(&c.flags[p][block], c.sysScope) < value) {
      if ((++spins & 63u) != 0) continue;
#if !defined(__CUDA_ARCH__)
      sched_yield();  // host threads playing blocks (tests) may outnumber the cores
#endif
      uint32_t why = kWaitReady;
      if (loadAbort(c.abortWord) != 0) {
        why = kWaitAborted;
      } else if (c.peerAbort[p] != nullptr && loadAbort(c.peerAbort[p]) != 0) {
        why = kWaitPeerAborted;
      } else if (c.timeoutNs != 0) {
        const uint64_t t = now();
        if (deadline == 0) deadline = t + c.timeoutNs;
        else if (t > deadline) why = kWaitTimedOut;
      }
      if (why == kWaitPeerAborted && loadAcquire(&c.flags[p][block], c.sysScope) >= value) {
        // The peer published and then ended (destroyed after its last call): not a failure.
        break;
      }
      if (why != kWaitReady) {
        giveUp(c, why, p, block, value);
        return why;
      }
    }
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

}  // namespace weft::device
