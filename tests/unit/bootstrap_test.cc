// The bootstrap in one process (ranks as threads): rendezvous, tagged messages, all-gather,
// barrier, error broadcast; and the unique id's encoding.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "lib/bootstrap/bootstrap.h"
#include "lib/bootstrap/root.h"
#include "lib/bootstrap/unique_id.h"
#include "lib/core/util.h"

namespace weft::bootstrap {
namespace {

TEST(UniqueId, RoundTripAndCorruptionAreDetected) {
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  UniqueId id;
  ASSERT_TRUE(startRoot(&id).isOk());
  unsigned char bytes[kUniqueIdBytes];
  encodeUniqueId(id, bytes);
  UniqueId back;
  ASSERT_TRUE(decodeUniqueId(bytes, &back).isOk());
  EXPECT_EQ(0, std::memcmp(back.secret, id.secret, kSecretBytes));
  EXPECT_EQ(back.root.str(), id.root.str());
  for (size_t i = 0; i < kUniqueIdBytes; ++i) {
    unsigned char bad[kUniqueIdBytes];
    std::memcpy(bad, bytes, sizeof bad);
    bad[i] ^= 0x40;
    EXPECT_FALSE(decodeUniqueId(bad, &back).isOk()) << "byte " << i;
  }
}

TEST(Bootstrap, RendezvousMessagesAllGatherBarrier) {
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  const int n = 5;
  UniqueId id;
  ASSERT_TRUE(startRoot(&id).isOk());
  std::vector<std::unique_ptr<Bootstrap>> b(n);
  std::vector<Status> st(n);
  std::vector<std::thread> th;
  for (int r = 0; r < n; ++r) th.emplace_back([&, r] { st[r] = Bootstrap::create(id, n, r, nullptr, 10000, &b[r]); });
  for (auto& t : th) t.join();
  th.clear();
  for (int r = 0; r < n; ++r) ASSERT_TRUE(st[r].isOk()) << st[r].message();
  std::vector<std::vector<int>> gathered(n, std::vector<int>(n, -1));
  for (int r = 0; r < n; ++r)
    th.emplace_back([&, r] {
      uint64_t deadline = nowNs() + 10000000000ull;
      gathered[r][r] = r * 10;
      st[r] = b[r]->allGather(gathered[r].data(), sizeof(int), deadline);
      if (st[r]) st[r] = b[r]->barrier(deadline);
      int msg = r + 100;
      if (st[r]) st[r] = b[r]->send((r + 2) % n, 42, &msg, sizeof msg);
      std::vector<char> got;
      if (st[r]) st[r] = b[r]->recv((r + n - 2) % n, 42, &got, deadline);
      if (st[r] && (got.size() != sizeof(int) || *reinterpret_cast<int*>(got.data()) != (r + n - 2) % n + 100))
        st[r] = internalError("wrong message");
    });
  for (auto& t : th) t.join();
  for (int r = 0; r < n; ++r) {
    ASSERT_TRUE(st[r].isOk()) << st[r].message();
    for (int k = 0; k < n; ++k) EXPECT_EQ(gathered[r][k], k * 10);
  }
  // A failure broadcast by rank 3 reaches everyone.
  b[3]->broadcastError(Code::kRemote, "rank 3 saw something bad");
  uint64_t until = nowNs() + 3000000000ull;
  for (int r = 0; r < n; ++r) {
    if (r == 3) continue;
    while (!b[r]->hasError() && nowNs() < until) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_TRUE(b[r]->hasError()) << r;
    EXPECT_EQ(b[r]->error().message(), "rank 3 saw something bad");
  }
  // A receive that nobody answers times out with the peer's name.
  std::vector<char> got;
  Status t = b[0]->recv(1, 777, &got, nowNs() + 50000000ull);
  EXPECT_FALSE(t.isOk());
  b.clear();
}

// The failure hook (the device path's way to end GPU waits): called with -1 when a peer reports a
// failure, and with the rank of a peer whose process died (rank 2 is a forked process that exits
// without destroying its bootstrap); never after it is cleared.
TEST(Bootstrap, FailureHookSeesReportedFailuresAndDeadPeers) {
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  const int n = 3;
  UniqueId id;
  ASSERT_TRUE(startRoot(&id).isOk());
  std::fflush(stdout);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::unique_ptr<Bootstrap> b;
    if (!Bootstrap::create(id, n, 2, nullptr, 10000, &b)) _exit(2);
    std::vector<int> g(n, 0);
    g[2] = 2;
    if (!b->allGather(g.data(), sizeof(int), nowNs() + 10000000000ull)) _exit(3);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // rank 1's report reaches rank 0 first
    _exit(0);  // dies: no goodbye
  }
  std::vector<std::unique_ptr<Bootstrap>> b(2);
  std::vector<Status> st(2);
  std::vector<std::thread> th;
  for (int r = 0; r < 2; ++r) th.emplace_back([&, r] { st[r] = Bootstrap::create(id, n, r, nullptr, 10000, &b[r]); });
  for (auto& t : th) t.join();
  for (int r = 0; r < 2; ++r) ASSERT_TRUE(st[r].isOk()) << st[r].message();
  std::mutex mu;
  std::vector<int> seen;
  b[0]->setFailureHook([&](int rank) {
    std::lock_guard<std::mutex> g(mu);
    seen.push_back(rank);
  });
  th.clear();
  for (int r = 0; r < 2; ++r)
    th.emplace_back([&, r] {
      std::vector<int> g(n, 0);
      g[static_cast<size_t>(r)] = r;
      st[r] = b[r]->allGather(g.data(), sizeof(int), nowNs() + 10000000000ull);
    });
  for (auto& t : th) t.join();
  for (int r = 0; r < 2; ++r) ASSERT_TRUE(st[r].isOk()) << st[r].message();
  b[1]->broadcastError(Code::kRemote, "rank 1 failed");
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  auto has = [&](int v) {
    std::lock_guard<std::mutex> g(mu);
    return std::find(seen.begin(), seen.end(), v) != seen.end();
  };
  const uint64_t until = nowNs() + 5000000000ull;
  while ((!has(-1) || !has(2)) && nowNs() < until) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_TRUE(has(-1)) << "rank 1's reported failure did not reach the hook";
  EXPECT_TRUE(has(2)) << "rank 2's death did not reach the hook";
  b[0]->setFailureHook({});
  size_t before;
  {
    std::lock_guard<std::mutex> g(mu);
    before = seen.size();
  }
  b[1]->broadcastError(Code::kRemote, "again");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  {
    std::lock_guard<std::mutex> g(mu);
    EXPECT_EQ(seen.size(), before) << "a cleared hook was called";
  }
  b.clear();
}

}  // namespace
}  // namespace weft::bootstrap
