// The device protocol (lib/device/protocol.h) on the host: threads play the kernel's blocks, with
// the same header functions the GPU kernel uses (publish, waitPeers, stageSlot, shareOf), so the
// protocol's ordering (two staging halves, monotonic per-block flags that are also the counters) is
// checked on every CI run without a GPU. Random delays make fast ranks run ahead of slow ones.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

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
  int nblocks = 0;
  uint64_t stageBytes = 0;
  std::vector<std::vector<char>> stage;      // per rank, 2 halves
  std::vector<std::vector<uint64_t>> flags;  // per rank, kMaxBlocks
  uint32_t abortWord = 0;
  std::vector<uint32_t> peerAbortWords;
  ErrorRecord error{};
  std::vector<DevComm> comms;

  World(int nranks, int blocks, uint64_t stage, uint64_t timeoutNs) : n(nranks), nblocks(blocks), stageBytes(stage) {
    this->stage.assign(static_cast<size_t>(n), std::vector<char>(2 * stage));
    peerAbortWords.assign(static_cast<size_t>(n), 0);
    flags.assign(static_cast<size_t>(n), std::vector<uint64_t>(kMaxBlocks + 2, 0));
    for (int r = 0; r < n; ++r) {
      DevComm c;
      c.rank = r;
      c.nranks = n;
      c.stageBytes = stage;
      for (int p = 0; p < n; ++p) {
        c.stage[p] = this->stage[static_cast<size_t>(p)].data();
        c.flags[p] = flags[static_cast<size_t>(p)].data();
      }
      c.control = flags[static_cast<size_t>(r)].data() + kMaxBlocks;
      c.abortWord = &abortWord;
      for (int p = 0; p < n; ++p)
        if (p != r) c.peerAbort[p] = &peerAbortWords[static_cast<size_t>(p)];
      c.error = &error;
      c.timeoutNs = timeoutNs;
      comms.push_back(c);
    }
  }
};

// One block of one rank running one call, int64 sum, unit = 8 bytes (one element) or 16 bytes.
// Returns the wait status.
uint32_t playBlock(const DevComm& c, int b, int nblocks, const int64_t* send, int64_t* recv, uint64_t bytes,
                   uint64_t unit, std::mt19937* rng) {
  const uint64_t base = callBase(c);
  const uint64_t rounds = roundsFor(c, bytes);
  auto jitter = [&] {
    const unsigned j = (*rng)() % 8;
    if (j == 0) std::this_thread::sleep_for(std::chrono::microseconds((*rng)() % 200));
    else if (j < 3) std::this_thread::yield();
  };
  for (uint64_t k = 0; k < rounds; ++k) {
    const uint64_t seq = base + 1 + k;
    const uint64_t off = k * c.stageBytes;
    const uint64_t rb = std::min<uint64_t>(c.stageBytes, bytes - off);
    const Share sh = shareOf(rb, unit);
    char* mine = stageSlot(c, c.rank, seq);
    const char* src = reinterpret_cast<const char*>(send) + off;
    for (uint64_t u = static_cast<uint64_t>(b); u < sh.units; u += static_cast<uint64_t>(nblocks))
      std::memcpy(mine + u * unit, src + u * unit, unit);
    const bool tail = sh.tailBytes != 0 && b == tailOwner(sh, nblocks, 1);
    if (tail) std::memcpy(mine + sh.tailBegin, src + sh.tailBegin, sh.tailBytes);
    jitter();
    publish(c, b, seq);
    const uint32_t st = waitPeers(c, b, seq, hostNow);
    if (st != kWaitReady) return st;
    char* out = reinterpret_cast<char*>(recv) + off;
    auto reduceRange = [&](uint64_t begin, uint64_t len) {
      for (uint64_t e = begin; e < begin + len; e += 8) {
        int64_t acc = 0;
        for (int p = 0; p < c.nranks; ++p) {
          int64_t v;
          std::memcpy(&v, stageSlot(c, p, seq) + e, 8);
          acc += v;
          if (p == 0) jitter();  // a slow reader: peers may run ahead meanwhile
        }
        std::memcpy(out + e, &acc, 8);
      }
    };
    for (uint64_t u = static_cast<uint64_t>(b); u < sh.units; u += static_cast<uint64_t>(nblocks))
      reduceRange(u * unit, unit);
    if (tail) reduceRange(sh.tailBegin, sh.tailBytes);
  }
  finishCall(c, static_cast<unsigned>(nblocks), rounds);
  return kWaitReady;
}

int64_t inputOf(int rank, int call, size_t i) { return static_cast<int64_t>((rank + 1) * 1000003 + call * 7919 + i * 31); }

void runCalls(int n, int nblocks, uint64_t stageBytes, uint64_t unit, const std::vector<size_t>& counts,
              bool varyGrid = false) {
  World w(n, nblocks, stageBytes, 0);
  const int ncalls = static_cast<int>(counts.size());
  // [rank][call] buffers
  std::vector<std::vector<std::vector<int64_t>>> send(static_cast<size_t>(n)), recv(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r)
    for (int k = 0; k < ncalls; ++k) {
      std::vector<int64_t> s(counts[static_cast<size_t>(k)]);
      for (size_t i = 0; i < s.size(); ++i) s[i] = inputOf(r, k, i);
      send[static_cast<size_t>(r)].push_back(s);
      recv[static_cast<size_t>(r)].emplace_back(s.size(), -1);
    }
  std::vector<std::unique_ptr<gpu::ThreadBarrier>> kernelEnd;
  for (int r = 0; r < n; ++r) kernelEnd.push_back(std::make_unique<gpu::ThreadBarrier>(nblocks));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int r = 0; r < n; ++r)
    for (int b = 0; b < nblocks; ++b)
      threads.emplace_back([&, r, b] {
        std::mt19937 rng(static_cast<unsigned>(r * 131 + b));
        for (int k = 0; k < ncalls; ++k) {
          const auto& s = send[static_cast<size_t>(r)][static_cast<size_t>(k)];
          auto& o = recv[static_cast<size_t>(r)][static_cast<size_t>(k)];
          // Grid and unit change from call to call (as sizes and alignment do on the GPU), so which
          // block owns which staging bytes changes too.
          const int grid = varyGrid ? 1 + (k * 5 + 3) % nblocks : nblocks;
          const uint64_t u = varyGrid && k % 3 == 1 ? 8 : unit;
          if (b < grid &&
              playBlock(w.comms[static_cast<size_t>(r)], b, grid, s.data(), o.data(), s.size() * 8, u, &rng) != kWaitReady)
            failures++;
          kernelEnd[static_cast<size_t>(r)]->arrive_and_wait();  // the next launch starts after this one
        }
      });
  for (auto& t : threads) t.join();
  ASSERT_EQ(failures.load(), 0);
  for (int k = 0; k < ncalls; ++k)
    for (size_t i = 0; i < counts[static_cast<size_t>(k)]; ++i) {
      int64_t want = 0;
      for (int p = 0; p < n; ++p) want += inputOf(p, k, i);
      for (int r = 0; r < n; ++r)
        ASSERT_EQ(recv[static_cast<size_t>(r)][static_cast<size_t>(k)][i], want)
            << n << " ranks, " << nblocks << " blocks: rank " << r << " call " << k << " element " << i;
    }
  // Every rank counted the same rounds, and every block published the same sequence numbers.
  uint64_t rounds = 0;
  for (size_t c : counts) rounds += (c * 8 + stageBytes - 1) / stageBytes;
  for (int r = 0; r < n; ++r) EXPECT_EQ(w.comms[static_cast<size_t>(r)].control[0], rounds) << "rank " << r;
  for (int b = 0; b < nblocks; ++b)
    for (int r = 1; r < n; ++r) EXPECT_EQ(w.flags[static_cast<size_t>(r)][static_cast<size_t>(b)], w.flags[0][static_cast<size_t>(b)]);
}

TEST(DeviceProtocol, ShareCoversTheRound) {
  const Share s = shareOf(100, 16);
  EXPECT_EQ(s.units, 6u);
  EXPECT_EQ(s.tailBegin, 96u);
  EXPECT_EQ(s.tailBytes, 4u);
  DevComm c;
  c.stageBytes = 64;
  EXPECT_EQ(roundsFor(c, 0), 0u);
  EXPECT_EQ(roundsFor(c, 64), 1u);
  EXPECT_EQ(roundsFor(c, 65), 2u);
  char buf[1];
  c.stage[1] = buf;
  EXPECT_EQ(stageSlot(c, 1, 4), buf);
  EXPECT_EQ(stageSlot(c, 1, 5), buf + 64);
}

TEST(DeviceProtocol, TwoRanksManyCallsManyRounds) {
  // Sizes in elements (8 bytes): single-round, multi-round with tails, zero, odd.
  runCalls(2, 3, 256, 16, {1, 7, 32, 33, 100, 0, 257, 64, 5, 1000});
}

TEST(DeviceProtocol, ThreeAndFourRanksElementUnits) {
  runCalls(3, 2, 128, 8, {3, 50, 17, 200, 1});
  runCalls(4, 4, 512, 16, {999, 64, 65, 1, 300});
}

TEST(DeviceProtocol, GridAndUnitChangeBetweenCalls) {
  runCalls(3, 4, 256, 16, {999, 64, 65, 1, 300, 31, 500, 2, 129, 77, 1000, 3}, true);
  runCalls(2, 5, 128, 16, {333, 1, 70, 17, 257, 5, 90, 600}, true);
}

TEST(DeviceProtocol, AbortEndsAWaitOnARankThatNeverArrives) {
  World w(2, 1, 256, 0);  // no deadline: only the abort word can end the wait
  std::vector<int64_t> send(8, 1), recv(8, 0);
  std::mt19937 rng(1);
  const auto t0 = std::chrono::steady_clock::now();
  std::thread aborter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    __atomic_store_n(&w.abortWord, 1u, __ATOMIC_RELEASE);
  });
  const uint32_t st = playBlock(w.comms[0], 0, 1, send.data(), recv.data(), 64, 16, &rng);
  aborter.join();
  EXPECT_EQ(st, kWaitAborted);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(50));
  EXPECT_EQ(w.error.code, kWaitAborted);
  EXPECT_EQ(w.error.peer, 1);
  EXPECT_EQ(w.error.block, 0);
  EXPECT_EQ(w.error.seq, 1u);
}

TEST(DeviceProtocol, APeersAbortEndsAWaitOnIt) {
  World w(3, 1, 256, 0);
  w.flags[1][0] = 1;  // rank 1 arrived; rank 2 never does and is aborted
  std::vector<int64_t> send(8, 1), recv(8, 0);
  std::mt19937 rng(3);
  std::thread aborter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    __atomic_store_n(&w.peerAbortWords[2], 1u, __ATOMIC_RELEASE);
  });
  const uint32_t st = playBlock(w.comms[0], 0, 1, send.data(), recv.data(), 64, 16, &rng);
  aborter.join();
  EXPECT_EQ(st, kWaitPeerAborted);
  EXPECT_EQ(w.error.code, kWaitPeerAborted);
  EXPECT_EQ(w.error.peer, 2);
}

TEST(DeviceProtocol, DeadlineEndsAWait) {
  World w(3, 1, 256, 30'000'000);  // 30 ms
  // Rank 1 arrives, rank 2 never does.
  w.flags[1][0] = 1;
  std::vector<int64_t> send(8, 1), recv(8, 0);
  std::mt19937 rng(2);
  const auto t0 = std::chrono::steady_clock::now();
  const uint32_t st = playBlock(w.comms[0], 0, 1, send.data(), recv.data(), 64, 16, &rng);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(st, kWaitTimedOut);
  EXPECT_GE(took, std::chrono::milliseconds(30));
  EXPECT_LT(took, std::chrono::seconds(5));
  EXPECT_EQ(w.error.code, kWaitTimedOut);
  EXPECT_EQ(w.error.peer, 2);
}

}  // namespace
}  // namespace weft::device
