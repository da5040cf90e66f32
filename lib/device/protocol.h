// The device protocol: what the all-reduce kernels and the host agree on, compiled by both nvcc
// (device code) and g++ (the library, and tests/unit/device_protocol_test.cc where host threads play
// the kernel's blocks). Nothing here depends on CUDA headers.
//
// Memory, per rank (allocated once at init, never during a call):
//   flags[kMaxBlocks]   device memory; flags[b] = the last sequence number block b of this rank
//                       published (monotonic; a block that sits out a call keeps its old value).
//   control[2]          device memory, after the flags: control[0] = the rank's round counter (the
//                       sequence number of its last round), control[1] = blocks of the running call
//                       that have finished. Every block of a call reads the counter at its start; the
//                       last block to finish advances it by the call's rounds. So per-call state lives
//                       in device memory and graph replays keep counting.
//   stage[2][stageBytes] device memory; round with sequence s uses half (s & 1).
//   abortWord           host-mapped; weftCommAbort (any thread) and destroy set it to non-zero.
//                       Peers poll it too while they wait on this rank.
//   error               host-mapped; the first block that gives up records why (code, peer, seq).
//
// One round (sequence s) of block b on rank r:
//   1. copy this block's share of the user's send data into stage[r][s & 1];
//   2. publish: release-store flags[r][b] = s;
//   3. wait until flags[p][b] >= s for every peer p (acquire loads), polling the abort word and a
//      deadline (%globaltimer on the GPU) between loads;
//   4. reduce stage[0..n-1][s & 1] in rank order 0..n-1 (every rank: bitwise the same result).
// Why two halves suffice. Inside a call: block b of rank r writes half (s & 1) again at s + 2 only
// after its round s + 1 saw every peer's flag >= s + 1, and a peer publishes s + 1 only after its
// block b finished reading round s: within a call every block owns the same bytes of a half in every
// round (the tail of the last round included, see tailOwner) and on every rank, since the share
// depends only on (count, type, alignment, grid), which every rank has alike. Across calls, where
// grid and unit may change (and so which block owns which bytes): the round counter is per rank, so a
// call's first round uses the half its previous call's last round did not; when rank r starts call
// B, every peer has published the last round of call A for every block (r's call A waited for it),
// so no peer still reads the other half; and before r's block writes the last-round half again
// (B's second round) it has seen each peer publish B's first round, so that peer's call A kernel has
// ended (stream order).
#pragma once

#include <stddef.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define WEFT_HD __host__ __device__ __forceinline__
#else
#define WEFT_HD inline
#endif

namespace weft::device {

inline constexpr int kMaxRanks = 8;      // ranks sharing one GPU (threads of one process)
inline constexpr int kMaxBlocks = 128;   // grid bound of the collective kernels
inline constexpr int kBlockThreads = 512;

// What a wait gives back.
// kWaitPeerAborted: the awaited peer's own abort word is set (it was aborted or destroyed).
enum WaitStatus : uint32_t { kWaitReady = 0, kWaitAborted = 1, kWaitTimedOut = 2, kWaitPeerAborted = 3 };

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
  uint64_t stageBytes = 0;             // bytes per half; a multiple of 16
  char* stage[kMaxRanks] = {};         // each rank's staging base (2 halves)
  uint64_t* flags[kMaxRanks] = {};     // each rank's flags[kMaxBlocks]
  uint64_t* control = nullptr;         // this rank's control[2] (round counter, blocks done)
  volatile uint32_t* abortWord = nullptr;  // host-mapped (device address)
  volatile uint32_t* peerAbort[kMaxRanks] = {};  // each rank's abort word (ranks share a process)
  ErrorRecord* error = nullptr;        // host-mapped (device address)
  uint64_t timeoutNs = 0;              // per wait; 0 = only the abort word ends a wait
};

// ---- Memory-order primitives, device and host.

WEFT_HD uint64_t loadAcquire(const uint64_t* p) {
#if defined(__CUDA_ARCH__)
  uint64_t v;
  asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
#else
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#endif
}

WEFT_HD void storeRelease(uint64_t* p, uint64_t v) {
#if defined(__CUDA_ARCH__)
  asm volatile("st.release.gpu.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
#else
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

// ---- Protocol steps.

// Staging half of `rank` for sequence `seq`.
WEFT_HD char* stageSlot(const DevComm& c, int rank, uint64_t seq) {
  return c.stage[rank] + (seq & 1u) * c.stageBytes;
}

// Rounds a call of `bytes` takes.
WEFT_HD uint64_t roundsFor(const DevComm& c, uint64_t bytes) {
  return bytes == 0 ? 0 : (bytes + c.stageBytes - 1) / c.stageBytes;
}

// The rank's round counter at the start of a call (the previous call, if any, has ended: stream
// order). Round k of this call has sequence number callBase + 1 + k.
WEFT_HD uint64_t callBase(const DevComm& c) { return loadAcquire(&c.control[0]); }

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
WEFT_HD void publish(const DevComm& c, int block, uint64_t seq) { storeRelease(&c.flags[c.rank][block], seq); }

// Step 3: waits until every peer's flags[block] >= seq. `now` returns nanoseconds. The abort word,
// the awaited peer's abort word (set when that rank is aborted or destroyed: a kernel never waits on
// a rank that is gone) and the deadline are checked every 64 polls (the abort word is in host memory: cheap, not free).
// On failure records the first failure in c.error (if still empty) and returns its status.
template <class Clock>
WEFT_HD uint32_t waitPeers(const DevComm& c, int block, uint64_t seq, Clock now) {
  uint64_t deadline = 0;
  for (int p = 0; p < c.nranks; ++p) {
    if (p == c.rank) continue;
    uint32_t spins = 0;
    while (loadAcquire(&c.flags[p][block]) < seq) {
      if ((++spins & 63u) != 0) continue;
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
      if (why != kWaitReady) {
        if (c.error != nullptr && c.error->code == 0) {
          c.error->peer = p;
          c.error->block = block;
          c.error->seq = seq;
          c.error->code = why;  // last: the host reads code first
        }
        return why;
      }
    }
  }
  return kWaitReady;
}

// Which share of a round a block owns: units (16-byte vectors, or single elements when the user's
// buffers are not 16-byte aligned) unit % (nblocks * threads) interleaved, so block b thread t owns
// units b*T + t + k*nblocks*T. The tail elements past the last whole unit belong to block 0.
struct Share {
  uint64_t units;       // whole units in the round
  uint64_t tailBegin;   // byte offset of the tail in the round
  uint64_t tailBytes;
};
WEFT_HD Share shareOf(uint64_t roundBytes, uint64_t unitBytes) {
  Share s;
  s.units = roundBytes / unitBytes;
  s.tailBegin = s.units * unitBytes;
  s.tailBytes = roundBytes - s.tailBegin;
  return s;
}

// The block that owns the tail: the owner of the (partial) unit it lies in, i.e. the block that owns
// those bytes of the half in the call's full rounds. (Any other block would race with a peer still
// reading the same bytes of the round two earlier.)
WEFT_HD int tailOwner(const Share& s, int nblocks, int threadsPerBlock) {
  return static_cast<int>((s.units / static_cast<uint64_t>(threadsPerBlock)) % static_cast<uint64_t>(nblocks));
}

}  // namespace weft::device
