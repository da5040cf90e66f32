// The device protocol (lib/device/protocol.h) on the host: threads play the kernel's blocks through
// the very runCall() the GPU kernel runs (only the executor differs: memcpy and integer sums instead
// of vector loads), so every collective's staging layout, the flag values (flagA/flagB), the two
// staging halves and the per-block ownership are checked on every CI run without a GPU. Random
// delays make fast ranks run ahead of slow ones; grids change between calls; results are compared
// with sums computed here independently. Abort, a peer's abort and the deadline end waits.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "lib/device/p2p_plan.h"
#include "lib/device/protocol.h"
#include "tests/gpu/thread_barrier.h"

namespace weft::device {
namespace {

uint64_t hostNow() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

struct World {
  int n = 0;
  uint64_t stageBytes = 0;
  std::vector<std::vector<char>> stage;      // per rank, 2 halves
  std::vector<std::vector<uint64_t>> flags;  // per rank, kMaxBlocks + control
  std::vector<uint32_t> abortWords;          // per rank
  ErrorRecord errors[kMaxRanks]{};  // per rank, as on the GPU
  ErrorRecord& error = errors[0];
  std::vector<DevComm> comms;

  uint64_t p2pBytes = 0;
  std::vector<std::vector<char>> p2p;  // per rank, the point-to-point region

  World(int nranks, uint64_t stage, uint64_t timeoutNs, uint64_t p2pHalf = 256) : n(nranks), stageBytes(stage), p2pBytes(p2pHalf) {
    this->stage.assign(static_cast<size_t>(n), std::vector<char>(2 * stage + 64));
    p2p.assign(static_cast<size_t>(n), std::vector<char>(p2pRegionBytes(n, p2pHalf) + 64, 0));
    abortWords.assign(static_cast<size_t>(n), 0);
    flags.assign(static_cast<size_t>(n), std::vector<uint64_t>(kMaxBlocks + kControlWords, 0));
    for (int r = 0; r < n; ++r) {
      DevComm c;
      c.rank = r;
      c.nranks = n;
      c.stageBytes = stage;
      for (int p = 0; p < n; ++p) {
        // 16-byte aligned staging, as cudaMalloc gives.
        char* b = this->stage[static_cast<size_t>(p)].data();
        c.stage[p] = b + ((16 - reinterpret_cast<uintptr_t>(b) % 16) % 16);
        c.flags[p] = flags[static_cast<size_t>(p)].data();
        char* q = p2p[static_cast<size_t>(p)].data();
        c.p2p[p] = q + ((16 - reinterpret_cast<uintptr_t>(q) % 16) % 16);
      }
      c.p2pBytes = p2pHalf;
      c.control = flags[static_cast<size_t>(r)].data() + kMaxBlocks;
      c.abortWord = &abortWords[static_cast<size_t>(r)];
      for (int p = 0; p < n; ++p)
        if (p != r) c.peerAbort[p] = &abortWords[static_cast<size_t>(p)];
      c.error = &errors[r];
      c.timeoutNs = timeoutNs;
      comms.push_back(c);
    }
  }
};

// The host executor: one thread per block; elements E, sums wrap around (unsigned).
template <class E>
struct HostExec {
  int block = 0;
  int grid = 1;
  uint64_t g = 0, stride = 1;
  std::mt19937* rng = nullptr;

  void jitter() {
    const unsigned j = (*rng)() % 64;
    if (j == 0) std::this_thread::sleep_for(std::chrono::microseconds((*rng)() % 100));
    else if (j < 4) std::this_thread::yield();
  }
  uint64_t base(const DevComm& c) { return callStart(c); }
  void copy(char* dst, const char* src, uint64_t lo, uint64_t hi) {
    EXPECT_EQ(lo % kGranule, 0u);
    for (uint64_t G = firstOwned(lo, g, stride); G * kGranule < hi; G += stride) {
      const uint64_t x = G * kGranule - lo;
      std::memcpy(dst + x, src + x, minU(kGranule, hi - G * kGranule));
      jitter();
    }
  }
  void reduce(char* dst, char* dst2, const char* const* srcs, int n, uint64_t lo, uint64_t hi, int avg) {
    EXPECT_EQ(avg, 0);
    for (uint64_t G = firstOwned(lo, g, stride); G * kGranule < hi; G += stride) {
      const uint64_t x = G * kGranule - lo;
      const uint64_t nb = minU(kGranule, hi - G * kGranule);
      for (uint64_t e = 0; e < nb; e += sizeof(E)) {
        E acc;
        std::memcpy(&acc, srcs[0] + x + e, sizeof(E));
        for (int p = 1; p < n; ++p) {
          E v;
          std::memcpy(&v, srcs[p] + x + e, sizeof(E));
          acc = static_cast<E>(acc + v);
        }
        std::memcpy(dst + x + e, &acc, sizeof(E));
        if (dst2 != nullptr) std::memcpy(dst2 + x + e, &acc, sizeof(E));
      }
      jitter();
    }
  }
  uint32_t sync(const DevComm& c, uint64_t pub, uint64_t wait) {
    jitter();
    publish(c, block, pub);
    return waitPeers(c, block, wait, hostNow);
  }
  void finish(const DevComm& c, uint64_t rounds) { finishCall(c, static_cast<unsigned>(stride), rounds); }
  // Point-to-point (runP2p): one thread per block.
  void own(int idx, int count) {
    g = static_cast<uint64_t>(idx);
    stride = static_cast<uint64_t>(count);
  }
  bool begin(const DevComm& c, int peer, uint64_t* s, uint64_t* r) { return p2pBegin(c, peer, s, r); }
  uint32_t await(const DevComm& c, const uint64_t* flag, uint64_t value, int peer, int pb, uint64_t seq, uint32_t what,
                 const uint64_t* hdr, uint64_t want) {
    jitter();
    return p2pLeaderWait(c, flag, value, peer, pb, seq, what, hdr, want, hostNow);
  }
  void post(const DevComm& c, uint64_t* flag, uint64_t value, uint64_t* hdr, uint64_t hdrValue) {
    jitter();
    p2pLeaderPost(c, flag, value, hdr, hdrValue);
  }
  void end(const DevComm& c, const P2pDesc& d) { finishP2p(c, d, static_cast<unsigned>(grid)); }
};

// One call of a sequence: kind, elements per rank (see CallDesc::bytes), root, in place.
struct Call {
  CollKind kind;
  size_t count;
  int root = 0;
  bool inPlace = false;
};

template <class E>
E inputOf(int rank, int call, size_t i) {
  return static_cast<E>(static_cast<uint64_t>(rank + 1) * 1000003u + static_cast<uint64_t>(call) * 7919u + i * 31u);
}

// Buffers of one rank for one call, and what it must hold afterwards.
template <class E>
struct Bufs {
  std::vector<E> send, recv, want;
};

template <class E>
Bufs<E> makeBufs(const Call& k, int n, int r, int callNo) {
  Bufs<E> b;
  const size_t c = k.count, N = static_cast<size_t>(n);
  auto in = [&](int rank, size_t i) { return inputOf<E>(rank, callNo, i); };
  auto sum = [&](size_t i) {
    E s = 0;
    for (int p = 0; p < n; ++p) s = static_cast<E>(s + in(p, i));
    return s;
  };
  switch (k.kind) {
    case kCollAllReduceOneShot:
    case kCollAllReduceTwoShot:
    case kCollReduce:
      for (size_t i = 0; i < c; ++i) b.send.push_back(in(r, i));
      b.recv.assign(c, static_cast<E>(0x5a));
      b.want = b.recv;
      if (k.kind != kCollReduce || r == k.root)
        for (size_t i = 0; i < c; ++i) b.want[i] = sum(i);
      break;
    case kCollBroadcast:
      for (size_t i = 0; i < c; ++i) b.send.push_back(in(k.root, i));
      b.recv.assign(c, static_cast<E>(0x5a));
      b.want = b.send;
      break;
    case kCollAllGather:
      for (size_t i = 0; i < c; ++i) b.send.push_back(in(r, i));
      b.recv.assign(c * N, static_cast<E>(0x5a));
      for (int p = 0; p < n; ++p)
        for (size_t i = 0; i < c; ++i) b.want.push_back(in(p, i));
      break;
    case kCollReduceScatter:
      for (size_t i = 0; i < c * N; ++i) b.send.push_back(in(r, i));
      b.recv.assign(c, static_cast<E>(0x5a));
      for (size_t i = 0; i < c; ++i) {
        E s = 0;
        for (int p = 0; p < n; ++p) s = static_cast<E>(s + in(p, static_cast<size_t>(r) * c + i));
        b.want.push_back(s);
      }
      break;
  }
  if (k.inPlace) {
    // Move the input to where the in-place call expects it.
    if (k.kind == kCollAllGather) {
      std::copy(b.send.begin(), b.send.end(), b.recv.begin() + static_cast<ptrdiff_t>(static_cast<size_t>(r) * c));
    } else if (k.kind == kCollReduceScatter) {
      // recv is sendbuff + r * count: run on send, compare that part
    } else if (k.kind != kCollBroadcast || r == k.root) {
      b.recv = b.send;
    }
  }
  return b;
}

template <class E>
CallDesc descOf(const Call& k, int r, Bufs<E>& b) {
  CallDesc d;
  d.kind = k.kind;
  d.root = k.root;
  d.bytes = k.count * sizeof(E);
  d.send = reinterpret_cast<const char*>(b.send.data());
  d.recv = reinterpret_cast<char*>(b.recv.data());
  if (k.inPlace) {
    if (k.kind == kCollAllGather) d.send = d.recv + static_cast<size_t>(r) * d.bytes;
    else if (k.kind == kCollReduceScatter) d.recv = const_cast<char*>(d.send) + static_cast<size_t>(r) * d.bytes;
    else if (k.kind != kCollBroadcast || r == k.root) d.send = d.recv;
  }
  if (k.kind == kCollBroadcast && r != k.root) d.send = nullptr;
  if (k.kind == kCollReduce && r != k.root) d.recv = nullptr;
  return d;
}

template <class E>
void runCalls(int n, int maxBlocks, uint64_t stageBytes, const std::vector<Call>& calls, bool varyGrid) {
  World w(n, stageBytes, 0);
  const int ncalls = static_cast<int>(calls.size());
  std::vector<std::vector<Bufs<E>>> bufs(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r)
    for (int k = 0; k < ncalls; ++k) bufs[static_cast<size_t>(r)].push_back(makeBufs<E>(calls[static_cast<size_t>(k)], n, r, k));
  std::vector<std::unique_ptr<gpu::ThreadBarrier>> kernelEnd;
  for (int r = 0; r < n; ++r) kernelEnd.push_back(std::make_unique<gpu::ThreadBarrier>(maxBlocks));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int r = 0; r < n; ++r)
    for (int b = 0; b < maxBlocks; ++b)
      threads.emplace_back([&, r, b] {
        std::mt19937 rng(static_cast<unsigned>(r * 131 + b));
        for (int k = 0; k < ncalls; ++k) {
          // The grid changes from call to call (as sizes do on the GPU), so which block owns which
          // staging bytes changes too; every rank uses the same grid for one call.
          const int grid = varyGrid ? 1 + (k * 5 + 3) % maxBlocks : maxBlocks;
          const CallDesc d = descOf(calls[static_cast<size_t>(k)], r, bufs[static_cast<size_t>(r)][static_cast<size_t>(k)]);
          if (b < grid) {
            HostExec<E> x;
            x.block = b;
            x.g = static_cast<uint64_t>(b);
            x.stride = static_cast<uint64_t>(grid);
            x.rng = &rng;
            if (runCall(w.comms[static_cast<size_t>(r)], d, x) != kWaitReady) failures++;
          }
          kernelEnd[static_cast<size_t>(r)]->arrive_and_wait();  // the next launch starts after this one
        }
      });
  for (auto& t : threads) t.join();
  ASSERT_EQ(failures.load(), 0);
  uint64_t rounds = 0;
  for (int k = 0; k < ncalls; ++k) {
    const Call& c = calls[static_cast<size_t>(k)];
    for (int r = 0; r < n; ++r) {
      Bufs<E>& b = bufs[static_cast<size_t>(r)][static_cast<size_t>(k)];
      const std::vector<E>* got = &b.recv;
      std::vector<E> part;
      if (c.kind == kCollReduceScatter && c.inPlace) {
        part.assign(b.send.begin() + static_cast<ptrdiff_t>(static_cast<size_t>(r) * c.count),
                    b.send.begin() + static_cast<ptrdiff_t>(static_cast<size_t>(r + 1) * c.count));
        got = &part;
      }
      ASSERT_EQ(got->size(), b.want.size());
      for (size_t i = 0; i < b.want.size(); ++i)
        ASSERT_EQ(static_cast<uint64_t>((*got)[i]), static_cast<uint64_t>(b.want[i]))
            << n << " ranks, elements of " << sizeof(E) << " bytes: call " << k << " (kind " << c.kind << ", count "
            << c.count << ", root " << c.root << (c.inPlace ? ", in place" : "") << ") rank " << r << " element " << i;
    }
    CallDesc d;
    d.kind = c.kind;
    d.bytes = c.count * sizeof(E);
    rounds += roundsOf(w.comms[0], d);
  }
  // Every rank counted the same rounds, and every block published the same values.
  for (int r = 0; r < n; ++r) EXPECT_EQ(w.comms[static_cast<size_t>(r)].control[0], rounds) << "rank " << r;
  for (int b = 0; b < maxBlocks; ++b)
    for (int r = 1; r < n; ++r) EXPECT_EQ(w.flags[static_cast<size_t>(r)][static_cast<size_t>(b)], w.flags[0][static_cast<size_t>(b)]);
}

// Every kind, sizes from zero to many rounds, odd ones, roots, in place.
std::vector<Call> mixedCalls(int n, size_t scale) {
  std::vector<Call> v;
  const size_t sizes[] = {1, 7, 33, 0, 100 * scale, 257 * scale + 3, 64, 5, 1000 * scale + 1};
  int i = 0;
  for (size_t c : sizes) {
    for (CollKind k : {kCollAllReduceOneShot, kCollAllReduceTwoShot, kCollReduceScatter, kCollAllGather, kCollBroadcast,
                       kCollReduce}) {
      Call call;
      call.kind = k;
      call.count = c;
      call.root = i % n;
      call.inPlace = (i % 3) == 1;
      v.push_back(call);
      ++i;
    }
  }
  return v;
}

TEST(DeviceProtocol, Geometry) {
  DevComm c;
  c.nranks = 3;
  c.stageBytes = 256;
  CallDesc d;
  d.bytes = 0;
  EXPECT_EQ(roundsOf(c, d), 0u);
  d.bytes = 256;
  EXPECT_EQ(roundsOf(c, d), 1u);
  d.bytes = 257;
  EXPECT_EQ(roundsOf(c, d), 2u);
  d.kind = kCollReduceScatter;  // 3 pieces of 80 bytes (granules) per round
  EXPECT_EQ(chunkBytes(c, d), 80u);
  EXPECT_EQ(roundsOf(c, d), 4u);
  char buf[512];  // two halves of 256
  c.stage[1] = buf;
  EXPECT_EQ(stageSlot(c, 1, 4), buf);
  EXPECT_EQ(stageSlot(c, 1, 5), buf + 256);
  // Two-shot slices: granule-aligned starts, cover the round, the last ones may be short or empty.
  uint64_t lo, hi, end = 0;
  for (int p = 0; p < 3; ++p) {
    twoShotSlice(40, 3, p, &lo, &hi);
    EXPECT_EQ(lo, end);
    EXPECT_EQ(lo % kGranule, 0u);
    end = hi;
  }
  EXPECT_EQ(end, 40u);
  twoShotSlice(20, 3, 2, &lo, &hi);
  EXPECT_EQ(lo, 20u);
  EXPECT_EQ(hi, 20u);
  // Ownership: every granule of a range has exactly one owner among `stride` threads.
  for (uint64_t stride : {1u, 3u, 7u}) {
    std::vector<int> owners(40, 0);
    for (uint64_t g = 0; g < stride; ++g)
      for (uint64_t G = firstOwned(48, g, stride); G * kGranule < 48 + 40 * kGranule; G += stride) owners[G - 3]++;
    for (int o : owners) EXPECT_EQ(o, 1);
  }
  EXPECT_EQ(flagA(1), 1u);
  EXPECT_EQ(flagB(1), 2u);
  EXPECT_LT(flagB(1), flagA(2));
}

TEST(DeviceProtocol, TwoRanksEveryCollective) { runCalls<uint64_t>(2, 3, 256, mixedCalls(2, 1), false); }

TEST(DeviceProtocol, ByteElementsTailsInEveryGranule) { runCalls<uint8_t>(3, 2, 128, mixedCalls(3, 1), false); }

TEST(DeviceProtocol, FourAndEightRanks) {
  runCalls<uint64_t>(4, 4, 512, mixedCalls(4, 1), false);
  runCalls<uint32_t>(8, 2, 256, mixedCalls(8, 1), false);
}

TEST(DeviceProtocol, GridChangesBetweenCalls) {
  runCalls<uint64_t>(3, 4, 256, mixedCalls(3, 2), true);
  runCalls<uint16_t>(2, 5, 128, mixedCalls(2, 2), true);
}

TEST(DeviceProtocol, TwoShotOnlyManyRounds) {
  std::vector<Call> v;
  for (size_t c : {1000u, 17u, 4096u, 3u, 999u}) v.push_back({kCollAllReduceTwoShot, c, 0, c == 17u});
  runCalls<uint64_t>(5, 3, 160, v, true);
}

uint32_t playOne(World& w, int rank, CollKind kind, size_t count, std::vector<uint64_t>* send, std::vector<uint64_t>* recv,
                 int nblocks = 1) {
  CallDesc d;
  d.kind = kind;
  d.bytes = count * 8;
  d.send = reinterpret_cast<const char*>(send->data());
  d.recv = reinterpret_cast<char*>(recv->data());
  std::vector<uint32_t> st(static_cast<size_t>(nblocks), 0);
  std::vector<std::thread> blocks;
  for (int b = 0; b < nblocks; ++b)
    blocks.emplace_back([&, b] {
      std::mt19937 rng(static_cast<unsigned>(b + 1));
      HostExec<uint64_t> x;
      x.rng = &rng;
      x.block = b;
      x.g = static_cast<uint64_t>(b);
      x.stride = static_cast<uint64_t>(nblocks);
      st[static_cast<size_t>(b)] = runCall(w.comms[static_cast<size_t>(rank)], d, x);
    });
  for (auto& t : blocks) t.join();
  for (uint32_t s : st)
    if (s != kWaitReady) return s;
  return kWaitReady;
}

TEST(DeviceProtocol, AbortEndsAWaitOnARankThatNeverArrives) {
  World w(2, 256, 0);  // no deadline: only the abort word can end the wait
  std::vector<uint64_t> send(8, 1), recv(8, 0);
  const auto t0 = std::chrono::steady_clock::now();
  std::thread aborter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    __atomic_store_n(&w.abortWords[0], 1u, __ATOMIC_RELEASE);
  });
  const uint32_t st = playOne(w, 0, kCollAllReduceOneShot, 8, &send, &recv);
  aborter.join();
  EXPECT_EQ(st, kWaitAborted);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(50));
  EXPECT_EQ(w.error.code, kWaitAborted);
  EXPECT_EQ(w.error.peer, 1);
  EXPECT_EQ(w.error.block, 0);
  EXPECT_EQ(w.error.seq, 1u);
  EXPECT_EQ(w.comms[0].control[0], 0u);  // the call did not complete: the counter stays
}

TEST(DeviceProtocol, APeersAbortEndsAWaitOnIt) {
  World w(3, 256, 0);
  w.flags[1][0] = flagA(1);  // rank 1 arrived; rank 2 never does and is aborted
  std::vector<uint64_t> send(8, 1), recv(8, 0);
  std::thread aborter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    __atomic_store_n(&w.abortWords[2], 1u, __ATOMIC_RELEASE);
  });
  const uint32_t st = playOne(w, 0, kCollAllGather, 8, &send, &recv);
  aborter.join();
  EXPECT_EQ(st, kWaitPeerAborted);
  EXPECT_EQ(w.error.code, kWaitPeerAborted);
  EXPECT_EQ(w.error.peer, 2);
}

TEST(DeviceProtocol, TwoShotPeerGoneBetweenItsSteps) {
  // Rank 1 published its data (flagA) but died before its reduced slice (flagB): rank 0 passes the
  // first wait, then its second wait ends at the deadline and names rank 1 and round 1.
  World w(2, 256, 20'000'000);
  w.flags[1][0] = flagA(1);
  std::vector<uint64_t> send(32, 1), recv(32, 0);
  const uint32_t st = playOne(w, 0, kCollAllReduceTwoShot, 32, &send, &recv);
  EXPECT_EQ(st, kWaitTimedOut);
  EXPECT_EQ(w.error.peer, 1);
  EXPECT_EQ(w.error.seq, 1u);
  EXPECT_EQ(w.flags[0][0], flagB(1));  // rank 0 got as far as publishing its slice
}

TEST(DeviceProtocol, DeadlineEndsAWait) {
  World w(3, 256, 30'000'000);  // 30 ms
  w.flags[1][0] = flagA(1);     // rank 1 arrives, rank 2 never does
  std::vector<uint64_t> send(8 * 3, 1), recv(8, 0);
  const auto t0 = std::chrono::steady_clock::now();
  const uint32_t st = playOne(w, 0, kCollReduceScatter, 8, &send, &recv);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(st, kWaitTimedOut);
  EXPECT_GE(took, std::chrono::milliseconds(30));
  EXPECT_LT(took, std::chrono::seconds(5));
  EXPECT_EQ(w.error.code, kWaitTimedOut);
  EXPECT_EQ(w.error.peer, 2);
}


TEST(DeviceProtocol, TimeoutStopsQueuedCallsAndPeersAtOnce) {
  // Rank 0 gives up on rank 1 (deadline): its own abort word is set, so its next (queued) call
  // ends at once with "aborted", the error record keeps the first failure (the timeout, claimed by
  // one of the blocks), and rank 1, arriving late, ends its second call on rank 0's abort word
  // ("peer aborted"), not at its own deadline.
  World w(2, 256, 20'000'000);
  std::vector<uint64_t> send(32, 1), recv(32, 0);  // one round
  EXPECT_EQ(playOne(w, 0, kCollAllReduceOneShot, 32, &send, &recv, 1), kWaitTimedOut);
  EXPECT_EQ(w.abortWords[0], 1u);
  EXPECT_EQ(w.errors[0].code, kWaitTimedOut);
  EXPECT_EQ(w.errors[0].peer, 1);
  EXPECT_EQ(w.flags[0][kMaxBlocks + 2], 1u);  // claimed
  EXPECT_EQ(playOne(w, 0, kCollAllReduceOneShot, 32, &send, &recv, 4), kWaitAborted);  // the queued call
  EXPECT_EQ(w.flags[0][0], flagA(1));  // it published nothing
  EXPECT_EQ(w.flags[0][1], 0u);
  std::vector<uint64_t> send1(32, 2), recv1(32, 0);
  EXPECT_EQ(playOne(w, 1, kCollAllReduceOneShot, 32, &send1, &recv1, 1), kWaitReady);  // rank 0 had published round 1
  EXPECT_EQ(recv1, std::vector<uint64_t>(32, 3));
  // Rank 1's next call: each of its 4 blocks ends on rank 0's abort word, or on rank 1's own once
  // its first block gave up; the record says why the first one did.
  EXPECT_NE(playOne(w, 1, kCollAllReduceOneShot, 32, &send1, &recv1, 4), kWaitReady);
  EXPECT_EQ(w.errors[0].code, kWaitTimedOut);  // first failure wins
  EXPECT_EQ(w.errors[1].code, kWaitPeerAborted);
  EXPECT_EQ(w.errors[1].peer, 0);
  EXPECT_EQ(w.abortWords[1], 1u);  // rank 1 gave up too: its own later calls stop at once
}

TEST(DeviceProtocol, ManyBlocksGivingUpClaimTheRecordOnce) {
  World w(2, 256, 10'000'000);
  std::vector<uint64_t> send(32, 1), recv(32, 0);
  const uint32_t st = playOne(w, 0, kCollAllReduceOneShot, 32, &send, &recv, 8);
  EXPECT_TRUE(st == kWaitTimedOut || st == kWaitAborted) << st;
  EXPECT_EQ(w.errors[0].code, kWaitTimedOut);  // the first to give up timed out; later ones saw the abort word
  EXPECT_EQ(w.errors[0].peer, 1);
  EXPECT_EQ(w.errors[0].seq, 1u);
  EXPECT_EQ(w.flags[0][kMaxBlocks + 2], 1u);
}

TEST(DeviceProtocol, APeerThatFinishedAndThenEndedIsNoFailure) {
  // The peer publishes its last round and is destroyed (abort word) right after, while this rank
  // polls: the abort word may be seen before the flag. The flag is read again then: never a
  // spurious "peer aborted". Many tries, the peer's timing jittered.
  std::mt19937 rng(7);
  int spurious = 0;
  for (int i = 0; i < 400; ++i) {
    World w(2, 256, 0);
    std::vector<uint64_t> send(8, 1), recv(8, 0);
    const unsigned delayUs = rng() % 200;
    std::thread peer([&] {
      std::this_thread::sleep_for(std::chrono::microseconds(delayUs));
      storeRelease(&w.flags[1][0], flagA(1));
      __atomic_store_n(&w.abortWords[1], 1u, __ATOMIC_RELEASE);
    });
    const uint32_t st = playOne(w, 0, kCollBroadcast, 8, &send, &recv);
    peer.join();
    spurious += st != kWaitReady;
  }
  EXPECT_EQ(spurious, 0);
}

// ---- Point-to-point (runP2p): sends, receives and all-to-all, host threads as blocks.

// What a message from src to dst (the k-th between them, in posting order) holds: computed here,
// independently of the protocol.
unsigned char msgByte(int src, int dst, int k, size_t i) {
  return static_cast<unsigned char>((src * 131 + dst * 29 + k * 71 + static_cast<int>(i) * 7 + static_cast<int>(i >> 8)) & 0xff);
}
constexpr unsigned char kPoison = 0xee;
constexpr size_t kGuard = 48;  // bytes past every receive buffer that must stay untouched

// One posted operation of the test: a send to peer, a receive from peer, or an all-to-all.
struct TOp {
  enum Kind { kSend, kRecv, kAllToAll } kind;
  int peer = 0;
  size_t bytes = 0;  // all-to-all: per peer
  bool inPlace = false;
  size_t misalign = 0;  // the buffer starts this many bytes past a 16-byte boundary
};
using Launch = std::vector<TOp>;  // one kernel: an ungrouped call, or a group

// A rank's buffers for one launch and what its receive buffers must hold afterwards.
struct TBuf {
  std::vector<char> mem;
  char* p = nullptr;
  std::vector<char> want;  // empty: a send buffer (must stay as it was: `orig`)
  std::vector<char> orig;
  size_t bytes = 0;
};

struct P2pRun {
  int n;
  World w;
  std::vector<std::vector<Launch>> script;                         // [rank][launch]
  std::vector<std::vector<std::vector<P2pCall>>> calls;            // [rank][launch]
  std::vector<std::vector<TBuf>> bufs;                             // [rank]: every buffer
  std::vector<uint32_t> status;                                    // per rank: the first failure
  P2pRun(int nranks, uint64_t p2pBytes, uint64_t timeoutNs, std::vector<std::vector<Launch>> s)
      : n(nranks), w(nranks, 256, timeoutNs, p2pBytes), script(std::move(s)) {
    calls.resize(static_cast<size_t>(n));
    bufs.resize(static_cast<size_t>(n));
    status.assign(static_cast<size_t>(n), kWaitReady);
    // Messages counted per (src, dst) in posting order: the k-th send s -> d meets the k-th receive.
    std::vector<std::vector<int>> sent(static_cast<size_t>(n), std::vector<int>(static_cast<size_t>(n), 0));
    auto recvd = sent;
    for (int r = 0; r < n; ++r) {
      for (const Launch& l : script[static_cast<size_t>(r)]) {
        std::vector<P2pCall> cs;
        for (const TOp& o : l) {
          auto make = [&](size_t bytes, size_t mis) -> TBuf& {
            bufs[static_cast<size_t>(r)].emplace_back();
            TBuf& b = bufs[static_cast<size_t>(r)].back();
            b.mem.assign(bytes + kGuard + 32, static_cast<char>(kPoison));
            char* base = b.mem.data();
            b.p = base + ((16 - reinterpret_cast<uintptr_t>(base) % 16) % 16) + mis;
            b.bytes = bytes;
            return b;
          };
          if (o.kind == TOp::kSend) {
            TBuf& b = make(o.bytes, o.misalign);
            const int k = sent[static_cast<size_t>(r)][static_cast<size_t>(o.peer)]++;
            for (size_t i = 0; i < o.bytes; ++i) b.p[i] = static_cast<char>(msgByte(r, o.peer, k, i));
            b.orig.assign(b.p, b.p + o.bytes + kGuard);
            cs.push_back({false, b.p, o.bytes, o.peer, nullptr});
          } else if (o.kind == TOp::kRecv) {
            TBuf& b = make(o.bytes, o.misalign);
            const int k = recvd[static_cast<size_t>(r)][static_cast<size_t>(o.peer)]++;
            b.want.assign(o.bytes + kGuard, static_cast<char>(kPoison));
            for (size_t i = 0; i < o.bytes; ++i) b.want[i] = static_cast<char>(msgByte(o.peer, r, k, i));
            cs.push_back({true, b.p, o.bytes, o.peer, nullptr});
          } else {
            const size_t B = o.bytes, N = static_cast<size_t>(n);
            TBuf& sb = make(B * N, o.misalign);
            for (int p = 0; p < n; ++p) {
              const int k = sent[static_cast<size_t>(r)][static_cast<size_t>(p)]++;
              for (size_t i = 0; i < B; ++i) sb.p[static_cast<size_t>(p) * B + i] = static_cast<char>(msgByte(r, p, k, i));
            }
            std::vector<char> want(B * N + kGuard, static_cast<char>(kPoison));
            for (int p = 0; p < n; ++p) {
              const int k = recvd[static_cast<size_t>(r)][static_cast<size_t>(p)]++;
              for (size_t i = 0; i < B; ++i) want[static_cast<size_t>(p) * B + i] = static_cast<char>(msgByte(p, r, k, i));
            }
            char* sendp = sb.p;
            char* recvp = sb.p;
            if (o.inPlace) {
              sb.want = want;
            } else {
              sb.orig.assign(sb.p, sb.p + B * N + kGuard);
              TBuf& rb = make(B * N, o.misalign);
              rb.want = want;
              recvp = rb.p;
            }
            appendAllToAll(r, n, sendp, recvp, B, nullptr, &cs);
          }
        }
        calls[static_cast<size_t>(r)].push_back(cs);
      }
    }
  }

  // Plays every rank's launches with up to maxBlocks host threads per rank as blocks.
  void play(int maxBlocks) {
    std::vector<std::vector<P2pDesc>> descs(static_cast<size_t>(n));
    std::vector<std::vector<int>> grids(static_cast<size_t>(n));
    for (int r = 0; r < n; ++r)
      for (auto& cs : calls[static_cast<size_t>(r)]) {
        P2pDesc d;
        int nb = 0;
        Status st = planP2p(r, n, maxBlocks, w.p2pBytes, cs, &d, &nb);
        ASSERT_TRUE(st.isOk()) << st.message();
        ASSERT_LE(nb, maxBlocks);
        descs[static_cast<size_t>(r)].push_back(d);
        grids[static_cast<size_t>(r)].push_back(nb);
      }
    std::vector<std::unique_ptr<gpu::ThreadBarrier>> kernelEnd;
    for (int r = 0; r < n; ++r) kernelEnd.push_back(std::make_unique<gpu::ThreadBarrier>(maxBlocks));
    std::vector<std::thread> threads;
    std::mutex mu;
    for (int r = 0; r < n; ++r)
      for (int b = 0; b < maxBlocks; ++b)
        threads.emplace_back([&, r, b] {
          std::mt19937 rng(static_cast<unsigned>(r * 977 + b * 13 + 5));
          bool failed = false;
          for (size_t k = 0; k < descs[static_cast<size_t>(r)].size(); ++k) {
            const int grid = grids[static_cast<size_t>(r)][k];
            if (b < grid && grid > 0 && !failed) {
              HostExec<uint8_t> x;
              x.block = b;
              x.grid = grid;
              x.own(b, grid);
              x.rng = &rng;
              const uint32_t st = runP2p(w.comms[static_cast<size_t>(r)], descs[static_cast<size_t>(r)][k], x);
              if (st != kWaitReady) {
                failed = true;  // as a kernel that gave up: its stream's later launches see the abort word
                std::lock_guard<std::mutex> g(mu);
                if (status[static_cast<size_t>(r)] == kWaitReady) status[static_cast<size_t>(r)] = st;
              }
            }
            kernelEnd[static_cast<size_t>(r)]->arrive_and_wait();
          }
        });
    for (auto& t : threads) t.join();
  }

  // Every receive holds its message (and nothing past its end changed), every send buffer is as
  // it was, and the pair counters agree.
  void check(const std::string& what) {
    for (int r = 0; r < n; ++r) {
      ASSERT_EQ(status[static_cast<size_t>(r)], kWaitReady) << what << ": rank " << r;
      size_t idx = 0;
      for (TBuf& b : bufs[static_cast<size_t>(r)]) {
        const std::vector<char>& want = b.want.empty() ? b.orig : b.want;
        for (size_t i = 0; i < want.size(); ++i)
          ASSERT_EQ(static_cast<int>(static_cast<unsigned char>(b.p[i])), static_cast<int>(static_cast<unsigned char>(want[i])))
              << what << ": rank " << r << " buffer " << idx << " (" << (b.want.empty() ? "send" : "receive") << " of "
              << b.bytes << " bytes) byte " << i << (i >= b.bytes ? " (past its end)" : "");
        ++idx;
      }
    }
    for (int s = 0; s < n; ++s)
      for (int d = 0; d < n; ++d) {
        if (s == d) continue;
        EXPECT_EQ(*sendSeq(w.comms[static_cast<size_t>(s)], d), *recvSeq(w.comms[static_cast<size_t>(d)], s))
            << what << ": pair " << s << " -> " << d;
      }
  }
};

void runScript(int n, uint64_t p2pBytes, int maxBlocks, std::vector<std::vector<Launch>> script, const std::string& what) {
  P2pRun run(n, p2pBytes, 20'000'000'000ull, std::move(script));  // 20 s: a deadlock fails, never hangs
  run.play(maxBlocks);
  run.check(what + ", " + std::to_string(n) + " ranks, " + std::to_string(maxBlocks) + " blocks max");
}

TEST(DeviceP2p, PairUngroupedManyRoundsOddSizes) {
  // Rank 0 sends to rank 1 call by call (one launch each), then receives; 1 to 17 rounds of 256 bytes.
  std::vector<std::vector<Launch>> s(2);
  int i = 0;
  for (size_t bytes : {1u, 15u, 16u, 17u, 255u, 256u, 257u, 1000u, 4099u, 512u}) {
    const size_t mis = (i++ % 3 == 2) ? 3 : 0;
    s[0].push_back({{TOp::kSend, 1, bytes, false, mis}});
    s[1].push_back({{TOp::kRecv, 0, bytes, false, 0}});
  }
  s[0].push_back({{TOp::kRecv, 1, 777, false, 5}});
  s[1].push_back({{TOp::kSend, 0, 777, false, 1}});
  runScript(2, 256, 3, s, "pair");
  runScript(2, 4096, 1, s, "pair, one round each");
}

TEST(DeviceP2p, RingExchangeInOneGroup) {
  // Every rank sends to r + 1 and receives from r - 1 in one group; three groups in a row, each
  // several rounds (a send kernel waiting for an ack behind the peer's own send would deadlock).
  for (int n : {2, 3, 5, 8}) {
    std::vector<std::vector<Launch>> s(static_cast<size_t>(n));
    for (int it = 0; it < 3; ++it)
      for (int r = 0; r < n; ++r) {
        const int next = (r + 1) % n, prev = (r + n - 1) % n;
        const size_t out = 900 + static_cast<size_t>(37 * r + 101 * it), in = 900 + static_cast<size_t>(37 * prev + 101 * it);
        s[static_cast<size_t>(r)].push_back({{TOp::kSend, next, out}, {TOp::kRecv, prev, in}});
      }
    runScript(n, 256, n == 8 ? 7 : 2 * (n - 1), s, "ring");
  }
}

TEST(DeviceP2p, AllToAllInAndOutOfPlace) {
  for (int n : {2, 3, 4, 8}) {
    std::vector<std::vector<Launch>> s(static_cast<size_t>(n));
    int i = 0;
    for (size_t bytes : {1u, 48u, 300u, 1001u, 16u}) {
      for (bool inPlace : {false, true}) {
        for (int r = 0; r < n; ++r) s[static_cast<size_t>(r)].push_back({{TOp::kAllToAll, 0, bytes, inPlace, (i % 4 == 3) ? 8u : 0u}});
        ++i;
      }
    }
    runScript(n, 128, n == 8 ? 14 : 4 * (n - 1), s, "all-to-all");  // 8 ranks: one block per lane
  }
}

TEST(DeviceP2p, AllToAllBlocksChangeNothing) {
  // One block per lane, and many: the pair's ownership is fixed per communicator either way.
  std::vector<std::vector<Launch>> s(3);
  for (size_t bytes : {2000u, 33u})
    for (int r = 0; r < 3; ++r) s[static_cast<size_t>(r)].push_back({{TOp::kAllToAll, 0, bytes, bytes == 33u}});
  runScript(3, 256, 4, s, "all-to-all, one block per lane");
  runScript(3, 256, 24, s, "all-to-all, six blocks per lane");
}

TEST(DeviceP2p, SeveralSendsToOnePeerMatchedInOrder) {
  // Rank 0 posts two sends to 1 with a receive from 1 between them, and a send to 2; rank 1 posts
  // its receives and send in another interleaving; all in one group per rank. Then the same
  // messages as separate launches on one side only.
  std::vector<std::vector<Launch>> s(3);
  s[0].push_back({{TOp::kSend, 1, 700}, {TOp::kRecv, 1, 333}, {TOp::kSend, 1, 50}, {TOp::kSend, 2, 1200}, {TOp::kRecv, 2, 10}});
  s[1].push_back({{TOp::kRecv, 0, 700}, {TOp::kSend, 0, 333}, {TOp::kRecv, 0, 50}});
  s[2].push_back({{TOp::kSend, 0, 10}, {TOp::kRecv, 0, 1200}});
  s[0].push_back({{TOp::kSend, 1, 64}, {TOp::kSend, 1, 65}, {TOp::kSend, 1, 600}});
  s[1].push_back({{TOp::kRecv, 0, 64}});
  s[1].push_back({{TOp::kRecv, 0, 65}});
  s[1].push_back({{TOp::kRecv, 0, 600}});
  runScript(3, 256, 4, s, "several sends to one peer");
}

// A group on one rank, separate calls on the other (review finding 1): the group's receive must
// not wait behind its send's later rounds, nor its send behind its receive. With one block running
// both directions in lockstep both hung (the first at rank 0's receive, the second at its send).
TEST(DeviceP2p, GroupedSendRecvVsRecvThenSend) {
  std::vector<std::vector<Launch>> s(2);
  s[0].push_back({{TOp::kSend, 1, 768}, {TOp::kRecv, 1, 256}});  // 3 rounds out, 1 in
  s[1].push_back({{TOp::kRecv, 0, 768}});
  s[1].push_back({{TOp::kSend, 0, 256}});
  runScript(2, 256, 2, s, "grouped {send, recv} vs recv then send");
  runScript(2, 256, 8, s, "grouped {send, recv} vs recv then send");
}
TEST(DeviceP2p, GroupedSendRecvVsSendThenRecv) {
  std::vector<std::vector<Launch>> s(2);
  s[0].push_back({{TOp::kSend, 1, 768}, {TOp::kRecv, 1, 1280}});  // 3 rounds out, 5 in
  s[1].push_back({{TOp::kSend, 0, 1280}});
  s[1].push_back({{TOp::kRecv, 0, 768}});
  runScript(2, 256, 2, s, "grouped {send, recv} vs send then recv");
  // The receive posted first in the group, and many rounds each way.
  std::vector<std::vector<Launch>> t(2);
  t[0].push_back({{TOp::kRecv, 1, 5000, false, 3}, {TOp::kSend, 1, 4100}});
  t[1].push_back({{TOp::kSend, 0, 5000}});
  t[1].push_back({{TOp::kRecv, 0, 4100, false, 5}});
  runScript(2, 256, 4, t, "grouped {recv, send} vs send then recv");
  // Three ranks: a pipeline stage (receive from the previous, send to the next) in one group on
  // rank 1, separate calls on its neighbours in the order a pipeline posts them.
  std::vector<std::vector<Launch>> u(3);
  u[0].push_back({{TOp::kSend, 1, 3000}});
  u[0].push_back({{TOp::kRecv, 1, 2000}});
  u[1].push_back({{TOp::kSend, 2, 3000}, {TOp::kRecv, 0, 3000}, {TOp::kRecv, 2, 2000}, {TOp::kSend, 0, 2000}});
  u[2].push_back({{TOp::kSend, 1, 2000}});
  u[2].push_back({{TOp::kRecv, 1, 3000}});
  runScript(3, 256, 4, u, "pipeline stage grouped, neighbours ungrouped");
}
// Random groups on 3 ranks (the reviewer's check, kept): per ordered pair 0-2 messages of 1-2000
// bytes, each rank one group with its sends and receives in a random interleaving (the order within
// a pair and direction kept), one block per lane.
TEST(DeviceP2p, RandomGroupsOnThreeRanks) {
  std::mt19937 rng(7);
  const int n = 3;
  for (int it = 0; it < 30; ++it) {
    std::vector<std::vector<std::vector<size_t>>> msgs(n, std::vector<std::vector<size_t>>(n));
    for (int a = 0; a < n; ++a)
      for (int b = 0; b < n; ++b)
        if (a != b)
          for (unsigned j = 0, k = rng() % 3; j < k; ++j) msgs[a][b].push_back(1 + rng() % 2000);
    std::vector<std::vector<Launch>> s(n);
    for (int r = 0; r < n; ++r) {
      std::vector<std::vector<TOp>> lists;  // per peer and direction, in order
      for (int p = 0; p < n; ++p) {
        if (p == r) continue;
        lists.emplace_back();
        for (size_t b : msgs[r][p]) lists.back().push_back({TOp::kSend, p, b});
        lists.emplace_back();
        for (size_t b : msgs[p][r]) lists.back().push_back({TOp::kRecv, p, b});
      }
      std::vector<size_t> next(lists.size(), 0);
      Launch group;
      for (;;) {
        std::vector<size_t> live;
        for (size_t q = 0; q < lists.size(); ++q)
          if (next[q] < lists[q].size()) live.push_back(q);
        if (live.empty()) break;
        const size_t q = live[rng() % live.size()];
        group.push_back(lists[q][next[q]++]);
      }
      s[r].push_back(group);
    }
    runScript(n, 256, 4, s, "random groups " + std::to_string(it));
  }
}

// Lanes run independently, so the in-place forms rely on the receive lane waiting for this rank's
// own send of each round: many rounds, one block per lane and several, both sides grouped.
TEST(DeviceP2p, InPlaceManyRoundsWithLanes) {
  for (int blocks : {2, 6}) {
    std::vector<std::vector<Launch>> s(3);
    for (int r = 0; r < 3; ++r) s[r].push_back({{TOp::kAllToAll, 0, 2600, true, 0}});
    runScript(3, 256, blocks * 2, s, "all-to-all in place, " + std::to_string(blocks) + " blocks per lane");
  }
}

TEST(DeviceP2p, SelfSendRecvAndInPlacePair) {
  // Sends to itself are copies inside the launch, next to a pair exchange in place (one buffer
  // sent to and received from the same peer: the in-place form the planner allows).
  std::vector<std::vector<Launch>> s(2);
  s[0].push_back({{TOp::kSend, 0, 1000}, {TOp::kSend, 1, 520}, {TOp::kRecv, 0, 1000}, {TOp::kRecv, 1, 520}});
  s[1].push_back({{TOp::kRecv, 0, 520}, {TOp::kSend, 1, 3}, {TOp::kRecv, 1, 3}, {TOp::kSend, 0, 520}});
  s[0].push_back({{TOp::kSend, 0, 17}, {TOp::kRecv, 0, 17}});  // only copies: no peer
  s[1].push_back({{TOp::kSend, 1, 5000}, {TOp::kRecv, 1, 5000}});
  runScript(2, 256, 2, s, "self");
}

TEST(DeviceP2p, InPlaceExchangeWithOnePeer) {
  // weftSend(buf) + weftRecv(buf) with one peer in one group: each rank ends with the other's data.
  World w(2, 256, 20'000'000'000ull, 128);
  const size_t B = 1000;
  std::vector<char> buf[2];
  for (int r = 0; r < 2; ++r) {
    buf[r].resize(B);
    for (size_t i = 0; i < B; ++i) buf[r][i] = static_cast<char>(msgByte(r, 1 - r, 0, i));
  }
  std::vector<std::thread> ts;
  std::atomic<int> bad{0};
  for (int r = 0; r < 2; ++r)
    ts.emplace_back([&, r] {
      std::vector<P2pCall> cs = {{false, buf[r].data(), B, 1 - r, nullptr}, {true, buf[r].data(), B, 1 - r, nullptr}};
      P2pDesc d;
      int nb = 0;
      if (!planP2p(r, 2, 2, w.p2pBytes, cs, &d, &nb).isOk() || nb != 2) {
        bad++;
        return;
      }
      std::vector<std::thread> blocks;  // the send lane and the receive lane
      for (int b = 0; b < nb; ++b)
        blocks.emplace_back([&, b] {
          std::mt19937 rng(static_cast<unsigned>(r * 7 + b));
          HostExec<uint8_t> x;
          x.rng = &rng;
          x.block = b;
          x.grid = nb;
          x.own(b, nb);
          if (runP2p(w.comms[static_cast<size_t>(r)], d, x) != kWaitReady) bad++;
        });
      for (auto& t : blocks) t.join();
    });
  for (auto& t : ts) t.join();
  ASSERT_EQ(bad.load(), 0);
  for (int r = 0; r < 2; ++r)
    for (size_t i = 0; i < B; ++i) ASSERT_EQ(static_cast<unsigned char>(buf[r][i]), msgByte(1 - r, r, 0, i)) << r << " " << i;
}

// Plays one launch of one rank alone (its peers never arrive, or only as the test arranges). One
// block per peer by default: with more, the first block to give up raises the abort word and the
// others report "aborted", in whatever order they get there.
uint32_t playP2p(World& w, int rank, const std::vector<P2pCall>& cs, int maxBlocks = 1) {
  P2pDesc d;
  int nb = 0;
  Status st = planP2p(rank, w.n, maxBlocks, w.p2pBytes, cs, &d, &nb);
  EXPECT_TRUE(st.isOk()) << st.message();
  std::vector<uint32_t> res(static_cast<size_t>(nb), 0);
  std::vector<std::thread> ts;
  for (int b = 0; b < nb; ++b)
    ts.emplace_back([&, b] {
      std::mt19937 rng(static_cast<unsigned>(b + 11));
      HostExec<uint8_t> x;
      x.rng = &rng;
      x.block = b;
      x.grid = nb;
      x.own(b, nb);
      res[static_cast<size_t>(b)] = runP2p(w.comms[static_cast<size_t>(rank)], d, x);
    });
  for (auto& t : ts) t.join();
  for (uint32_t r : res)
    if (r != kWaitReady) return r;
  return kWaitReady;
}

TEST(DeviceP2p, AbortEndsAReceiveThatNeverComes) {
  World w(2, 256, 0);  // no deadline
  std::vector<char> buf(100);
  std::thread aborter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(40));
    __atomic_store_n(&w.abortWords[0], 1u, __ATOMIC_RELEASE);
  });
  EXPECT_EQ(playP2p(w, 0, {{true, buf.data(), 100, 1, nullptr}}), kWaitAborted);
  aborter.join();
  EXPECT_EQ(w.errors[0].code, kWaitAborted);
  EXPECT_EQ(w.errors[0].what, kWhatRecv);
  EXPECT_EQ(w.errors[0].peer, 1);
  EXPECT_EQ(*recvSeq(w.comms[0], 1), 0u);  // nothing completed
  // A launch after the abort does nothing.
  EXPECT_EQ(playP2p(w, 0, {{false, buf.data(), 100, 1, nullptr}}), kWaitAborted);
  EXPECT_EQ(*sentFlag(w.comms[0], 0, 1, 0), 0u);
}

TEST(DeviceP2p, DeadlineEndsASendTheReceiverNeverFrees) {
  // Two rounds fit the two halves; the third waits for the receiver's ack of round 1.
  World w(2, 256, 30'000'000);  // 30 ms
  std::vector<char> buf(3 * 256, 1);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(playP2p(w, 0, {{false, buf.data(), buf.size(), 1, nullptr}}), kWaitTimedOut);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, std::chrono::milliseconds(30));
  EXPECT_LT(took, std::chrono::seconds(5));
  EXPECT_EQ(w.errors[0].code, kWaitTimedOut);
  EXPECT_EQ(w.errors[0].what, kWhatSend);
  EXPECT_EQ(w.errors[0].peer, 1);
  EXPECT_EQ(w.errors[0].seq, 3u);
  EXPECT_EQ(w.abortWords[0], 1u);  // its later launches stop at once
}

TEST(DeviceP2p, ADeadPeerEndsTheWaitOnIt) {
  World w(3, 256, 0);
  std::vector<char> a(64), b(64);
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    __atomic_store_n(&w.abortWords[2], 1u, __ATOMIC_RELEASE);  // the bootstrap's failure hook sets it
  });
  EXPECT_EQ(playP2p(w, 0, {{true, a.data(), 64, 2, nullptr}, {false, b.data(), 64, 1, nullptr}}, 2), kWaitPeerAborted);
  killer.join();
  EXPECT_EQ(w.errors[0].code, kWaitPeerAborted);
  EXPECT_EQ(w.errors[0].peer, 2);
  EXPECT_EQ(w.errors[0].what, kWhatRecv);
}

TEST(DeviceP2p, CountMismatchIsDetectedNotSilentlyDesynchronised) {
  // Rank 0 sends 40 bytes, rank 1 receives 48: rank 1 gives up naming both sizes (kWaitMismatch),
  // and copies nothing past its own 48 bytes.
  World w(2, 256, 2'000'000'000ull);
  std::vector<char> s(40, 7), r(48 + kGuard, static_cast<char>(kPoison));
  EXPECT_EQ(playP2p(w, 0, {{false, s.data(), 40, 1, nullptr}}), kWaitReady);  // fits the staging: done
  EXPECT_EQ(playP2p(w, 1, {{true, r.data(), 48, 0, nullptr}}), kWaitMismatch);
  EXPECT_EQ(w.errors[1].code, kWaitMismatch);
  EXPECT_EQ(w.errors[1].peer, 0);
  EXPECT_EQ(w.errors[1].theirs, 40u);
  EXPECT_EQ(w.errors[1].mine, 48u);
  EXPECT_EQ(w.abortWords[1], 1u);
  for (size_t i = 48; i < r.size(); ++i) ASSERT_EQ(static_cast<unsigned char>(r[i]), kPoison);
  // The sender's next send to rank 1 then ends on rank 1's abort word, not at its deadline.
  std::vector<char> big(1000, 1);
  EXPECT_EQ(playP2p(w, 0, {{false, big.data(), big.size(), 1, nullptr}}), kWaitPeerAborted);
}

TEST(DeviceP2p, InterleavedWithCollectives) {
  // Collective calls and point-to-point launches of one communicator alternate (they share the
  // blocks-done counter control[1] and nothing else): an all-reduce, a ring group, an all-gather,
  // an all-to-all, an all-reduce again, each checked, and the round counter and pair sequences
  // agree at the end.
  const int n = 3, maxBlocks = 4;
  World w(n, 256, 20'000'000'000ull, 128);
  const size_t cnt = 100;  // uint64 elements: 800 bytes, several rounds of both stagings
  std::vector<std::vector<uint64_t>> in(n), ar1(n), ag(n), ar2(n);
  std::vector<std::vector<char>> ringOut(n), ringIn(n), a2aS(n), a2aR(n);
  const size_t rb = 700, ab = 333;
  for (int r = 0; r < n; ++r) {
    for (size_t i = 0; i < cnt; ++i) in[r].push_back(static_cast<uint64_t>(r + 1) * 1000003u + i);
    ar1[r].assign(cnt, 0);
    ar2[r].assign(cnt, 0);
    ag[r].assign(cnt * n, 0);
    ringOut[r].resize(rb);
    ringIn[r].assign(rb, 0);
    for (size_t i = 0; i < rb; ++i) ringOut[r][i] = static_cast<char>(msgByte(r, (r + 1) % n, 0, i));
    a2aS[r].resize(ab * n);
    a2aR[r].assign(ab * n, 0);
    for (int p = 0; p < n; ++p)
      for (size_t i = 0; i < ab; ++i) a2aS[r][static_cast<size_t>(p) * ab + i] = static_cast<char>(msgByte(r, p, 7, i));
  }
  std::vector<std::unique_ptr<gpu::ThreadBarrier>> kernelEnd;
  for (int r = 0; r < n; ++r) kernelEnd.push_back(std::make_unique<gpu::ThreadBarrier>(maxBlocks));
  std::atomic<int> failures{0};
  std::vector<std::thread> ts;
  for (int r = 0; r < n; ++r)
    for (int b = 0; b < maxBlocks; ++b)
      ts.emplace_back([&, r, b] {
        std::mt19937 rng(static_cast<unsigned>(r * 31 + b));
        const DevComm& c = w.comms[static_cast<size_t>(r)];
        auto coll = [&](CollKind k, const std::vector<uint64_t>& send, std::vector<uint64_t>& recv, int grid) {
          CallDesc d;
          d.kind = k;
          d.bytes = cnt * 8;
          d.send = reinterpret_cast<const char*>(send.data());
          d.recv = reinterpret_cast<char*>(recv.data());
          if (b < grid) {
            HostExec<uint64_t> x;
            x.block = b;
            x.grid = grid;
            x.g = static_cast<uint64_t>(b);
            x.stride = static_cast<uint64_t>(grid);
            x.rng = &rng;
            if (runCall(c, d, x) != kWaitReady) failures++;
          }
          kernelEnd[static_cast<size_t>(r)]->arrive_and_wait();
        };
        auto p2p = [&](const std::vector<P2pCall>& cs) {
          P2pDesc d;
          int grid = 0;
          if (!planP2p(r, n, maxBlocks, w.p2pBytes, cs, &d, &grid).isOk()) failures++;
          if (b < grid) {
            HostExec<uint64_t> x;
            x.block = b;
            x.grid = grid;
            x.own(b, grid);
            x.rng = &rng;
            if (runP2p(c, d, x) != kWaitReady) failures++;
          }
          kernelEnd[static_cast<size_t>(r)]->arrive_and_wait();
        };
        coll(kCollAllReduceOneShot, in[static_cast<size_t>(r)], ar1[static_cast<size_t>(r)], 3);
        p2p({{false, ringOut[static_cast<size_t>(r)].data(), rb, (r + 1) % n, nullptr},
             {true, ringIn[static_cast<size_t>(r)].data(), rb, (r + n - 1) % n, nullptr}});
        coll(kCollAllGather, in[static_cast<size_t>(r)], ag[static_cast<size_t>(r)], 1);
        std::vector<P2pCall> a2a;
        appendAllToAll(r, n, a2aS[static_cast<size_t>(r)].data(), a2aR[static_cast<size_t>(r)].data(), ab, nullptr, &a2a);
        p2p(a2a);
        coll(kCollAllReduceTwoShot, in[static_cast<size_t>(r)], ar2[static_cast<size_t>(r)], 2);
      });
  for (auto& t : ts) t.join();
  ASSERT_EQ(failures.load(), 0);
  for (int r = 0; r < n; ++r) {
    for (size_t i = 0; i < cnt; ++i) {
      uint64_t sum = 0;
      for (int p = 0; p < n; ++p) sum += in[p][i];
      ASSERT_EQ(ar1[r][i], sum) << r << " " << i;
      ASSERT_EQ(ar2[r][i], sum) << r << " " << i;
      for (int p = 0; p < n; ++p) ASSERT_EQ(ag[r][static_cast<size_t>(p) * cnt + i], in[p][i]);
    }
    const int prev = (r + n - 1) % n;
    for (size_t i = 0; i < rb; ++i) ASSERT_EQ(static_cast<unsigned char>(ringIn[r][i]), msgByte(prev, r, 0, i)) << r << " " << i;
    for (int p = 0; p < n; ++p)
      for (size_t i = 0; i < ab; ++i)
        ASSERT_EQ(static_cast<unsigned char>(a2aR[r][static_cast<size_t>(p) * ab + i]), msgByte(p, r, 7, i)) << r << " " << p << " " << i;
    // 800 bytes in 256-byte rounds: 4 rounds per collective (all-gather too), 3 collectives.
    EXPECT_EQ(w.comms[static_cast<size_t>(r)].control[0], 12u) << r;
    EXPECT_EQ(w.comms[static_cast<size_t>(r)].control[1], 0u) << r;  // every launch's last block reset it
    // Ring: 700 bytes = 6 rounds of 128 to the next rank; all-to-all: 333 bytes = 3 rounds per pair.
    EXPECT_EQ(*sendSeq(w.comms[static_cast<size_t>(r)], (r + 1) % n), 6u + 3u);
    EXPECT_EQ(*recvSeq(w.comms[static_cast<size_t>(r)], prev), 6u + 3u);
  }
}

TEST(DeviceP2p, PlannerRefusals) {
  std::vector<char> a(4096), b(4096);
  P2pDesc d;
  int nb = 0;
  auto plan = [&](int rank, std::vector<P2pCall> cs) { return planP2p(rank, 4, 8, 256, cs, &d, &nb); };
  int s1 = 0, s2 = 0;
  Status st = plan(0, {{false, a.data(), 10, 1, &s1}, {true, b.data(), 10, 2, &s2}});
  EXPECT_EQ(st.code(), Code::kInvalidUsage);
  EXPECT_NE(st.message().find("one stream"), std::string::npos) << st.message();
  st = plan(1, {{false, a.data(), 10, 1, nullptr}});
  EXPECT_EQ(st.code(), Code::kInvalidUsage);
  EXPECT_NE(st.message().find("itself"), std::string::npos) << st.message();
  st = plan(1, {{false, a.data(), 10, 1, nullptr}, {true, b.data(), 12, 1, nullptr}});
  EXPECT_EQ(st.code(), Code::kInvalidUsage);
  EXPECT_NE(st.message().find("sizes must agree"), std::string::npos) << st.message();
  // A ring in place (send to 1, receive from 3, one buffer): the receive would overwrite bytes not
  // yet sent.
  st = plan(0, {{false, a.data(), 1000, 1, nullptr}, {true, a.data(), 1000, 3, nullptr}});
  EXPECT_EQ(st.code(), Code::kInvalidUsage);
  EXPECT_NE(st.message().find("in-place"), std::string::npos) << st.message();
  // Overlapping, not the same buffer.
  st = plan(0, {{false, a.data(), 1000, 1, nullptr}, {true, a.data() + 16, 1000, 1, nullptr}});
  EXPECT_EQ(st.code(), Code::kInvalidUsage);
  // Same buffer with one peer, but at another position (different rounds before it).
  st = plan(0, {{false, b.data(), 300, 1, nullptr}, {false, a.data(), 100, 1, nullptr}, {true, a.data(), 100, 1, nullptr}});
  EXPECT_EQ(st.code(), Code::kInvalidUsage);
  // Too many operations.
  std::vector<P2pCall> many;
  for (int i = 0; i <= kMaxP2pOps; ++i) many.push_back({i % 2 == 1, a.data() + 32 * i, 16, 1 + i % 3, nullptr});
  st = plan(0, many);
  EXPECT_EQ(st.code(), Code::kInvalidUsage);
  EXPECT_NE(st.message().find("at most"), std::string::npos) << st.message();
  st = plan(0, {{false, a.data(), 10, 4, nullptr}});
  EXPECT_EQ(st.code(), Code::kInvalidUsage);
  // Accepted: in place with one peer; all-to-all in place; zero bytes dropped.
  EXPECT_TRUE(plan(0, {{false, a.data(), 1000, 1, nullptr}, {true, a.data(), 1000, 1, nullptr}}).isOk());
  std::vector<P2pCall> a2a;
  appendAllToAll(2, 4, a.data(), a.data(), 1000, nullptr, &a2a);
  ASSERT_TRUE(plan(2, a2a).isOk());
  EXPECT_EQ(d.nlanes, 6);  // a send lane and a receive lane per peer
  EXPECT_EQ(d.nops, 7);   // 3 sends, 3 receives, one copy to itself
  EXPECT_EQ(d.blocksPerPeer, 1);
  EXPECT_EQ(nb, 6);
  int inPlace = 0;
  for (int i = 0; i < d.nops; ++i) inPlace += d.ops[i].afterSend;
  EXPECT_EQ(inPlace, 3);  // the receives from the 3 peers wait for this rank's own sends
  // More lanes than the grid bound: 8 ranks' all-to-all needs 14 co-resident blocks.
  a2a.clear();
  appendAllToAll(0, 8, a.data(), b.data(), 100, nullptr, &a2a);
  st = planP2p(0, 8, 13, 256, a2a, &d, &nb);
  EXPECT_EQ(st.code(), Code::kInvalidUsage);
  EXPECT_NE(st.message().find("grid bound is 13"), std::string::npos) << st.message();
  ASSERT_TRUE(planP2p(0, 8, 14, 256, a2a, &d, &nb).isOk());
  EXPECT_EQ(nb, 14);
  // A ring (send to the next, receive from the previous) fits in 2.
  ASSERT_TRUE(planP2p(3, 8, 2, 256, {{false, a.data(), 100, 4, nullptr}, {true, b.data(), 100, 2, nullptr}}, &d, &nb).isOk());
  EXPECT_EQ(nb, 2);
  st = planP2p(3, 8, 1, 256, {{false, a.data(), 100, 4, nullptr}, {true, b.data(), 100, 2, nullptr}}, &d, &nb);
  EXPECT_EQ(st.code(), Code::kInvalidUsage);
  EXPECT_TRUE(plan(0, {{false, a.data(), 0, 1, nullptr}}).isOk());
  EXPECT_EQ(d.nops, 0);
}

// weftGroupEnd's launches (api.cc through DeviceGroup, the part that needs no GPU): a
// communicator's collectives posted after its first send/receive are kept and run in posting order
// with them (review finding 3: an all-reduce ran ahead of a grouped all-to-all, so the group
// {all-to-all, all-reduce} on one rank and the same calls ungrouped on another deadlocked), and
// sends/receives on two communicators in one group are refused (finding 2).
TEST(DeviceP2p, GroupLaunchOrder) {
  int c1 = 0, c2 = 0;
  char a[64], b[64];
  DeviceGroup g;
  EXPECT_FALSE(g.keepsCollectives(&c1));  // before a send/receive: launched when posted
  std::vector<P2pCall> a2a;
  appendAllToAll(0, 2, a, b, 32, nullptr, &a2a);
  for (auto& x : a2a) g.addP2p(&c1, x);
  EXPECT_TRUE(g.keepsCollectives(&c1));
  EXPECT_FALSE(g.keepsCollectives(&c2));
  g.addCollective(&c1, 0);                                  // the all-reduce after the all-to-all
  g.addP2p(&c1, {false, a, 8, 1, nullptr});                 // two more sends/receives: one kernel
  g.addP2p(&c1, {true, b, 8, 1, nullptr});
  g.addCollective(&c1, 1);
  std::vector<DeviceGroup::Launch> l;
  ASSERT_TRUE(g.launches(&l).isOk());
  ASSERT_EQ(l.size(), 4u);
  EXPECT_TRUE(l[0].p2p);
  EXPECT_EQ(l[0].calls.size(), a2a.size());
  EXPECT_FALSE(l[1].p2p);
  EXPECT_EQ(l[1].index, 0u);
  EXPECT_TRUE(l[2].p2p);
  ASSERT_EQ(l[2].calls.size(), 2u);
  EXPECT_FALSE(l[2].calls[0].recv);
  EXPECT_TRUE(l[2].calls[1].recv);
  EXPECT_FALSE(l[3].p2p);
  EXPECT_EQ(l[3].index, 1u);
  for (auto& x : l) EXPECT_EQ(x.comm, &c1);
  // A second communicator with only collectives kept? None are (they ran when posted); with a
  // send/receive of its own the group is refused, nothing launched.
  g.addP2p(&c2, {true, b, 8, 1, nullptr});
  Status st = g.launches(&l);
  EXPECT_EQ(st.code(), Code::kInvalidUsage);
  EXPECT_NE(st.message().find("2 communicators"), std::string::npos) << st.message();
  EXPECT_TRUE(l.empty());
}

// A group whose last send the peer needs before it sends what the group receives: rank 0's group
// {send 1000, recv 600, recv 300, send 100} is one launch; rank 1 receives both messages first,
// then sends, call by call. The send lane finishes both sends while the receive lane waits (in
// lockstep, rank 0 stopped at its first receive and rank 1 never got the 100 bytes).
TEST(DeviceP2p, GroupedAndUngroupedRanksAgree) {
  std::vector<std::vector<Launch>> s(2);
  // rank 0's group {send 1000, recv 600, recv 300, send 100} fuses into one launch;
  s[0].push_back({{TOp::kSend, 1, 1000}, {TOp::kRecv, 1, 600}, {TOp::kRecv, 1, 300}, {TOp::kSend, 1, 100}});
  // rank 1 posts the same messages call by call, receives first.
  s[1].push_back({{TOp::kRecv, 0, 1000}});
  s[1].push_back({{TOp::kRecv, 0, 100}});
  s[1].push_back({{TOp::kSend, 0, 600}});
  s[1].push_back({{TOp::kSend, 0, 300}});
  runScript(2, 128, 2, s, "grouped vs ungrouped, receives first");
}

TEST(DeviceP2p, Geometry) {
  EXPECT_EQ(p2pBlocksPerPeer(66, 2), 33);  // per lane: a peer's sends, or its receives
  EXPECT_EQ(p2pBlocksPerPeer(16, 8), 1);
  EXPECT_EQ(p2pBlocksPerPeer(28, 8), 2);
  EXPECT_EQ(p2pBlocksPerPeer(4, 8), 1);
  EXPECT_EQ(p2pBlocksPerPeer(1000, 2), kMaxBlocks);
  EXPECT_EQ(kP2pStageOff % 256, 0u);
  EXPECT_EQ(p2pRegionBytes(4, 1024), kP2pStageOff + 3 * 2 * 1024);
  // Staging slots: rank 2 of 4 keeps destinations 0, 1, 3 in slots 0, 1, 2; halves by sequence.
  DevComm c;
  c.p2pBytes = 1024;
  std::vector<char> mem(p2pRegionBytes(4, 1024));
  char* region = mem.data();
  c.p2p[2] = region;
  EXPECT_EQ(p2pStage(c, 2, 0, 2), region + kP2pStageOff);
  EXPECT_EQ(p2pStage(c, 2, 0, 3), region + kP2pStageOff + 1024);
  EXPECT_EQ(p2pStage(c, 2, 3, 1), region + kP2pStageOff + 5 * 1024);
  static_assert(sizeof(P2pDesc) + sizeof(DevComm) < 4000, "kernel arguments must stay under 4 KiB");
}

}  // namespace
}  // namespace weft::device
