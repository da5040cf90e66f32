// Fork safety: a process forks (without exec) while weft's background threads work -- rendezvous
// roots of weftGetUniqueId, bootstrap services, init, logging at TRACE -- and every child must be
// able to log and to create, use and destroy its own communicator. A lock or a one-time
// initialisation some parent thread was inside at fork() would leave the child hung on it; each
// child is bounded by a deadline and killed (a failure) when it passes it.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <weft/weft.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

namespace {

long long nowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// A 1-rank communicator: init (rendezvous root thread, bootstrap service, discovery, transport
// choice, plan, all logging), one all-reduce checked, destroy. 0 or the failing step.
int oneRankRound() {
  weftUniqueId id;
  if (weftGetUniqueId(&id) != weftSuccess) return 10;
  weftComm_t comm = nullptr;
  if (weftCommInitRank(&comm, 1, id, 0) != weftSuccess) {
    fprintf(stderr, "fork_test: pid %d: weftCommInitRank failed: %s\n", static_cast<int>(getpid()),
            weftGetLastError(nullptr));
    return 11;
  }
  float v[3] = {1.5f, -2.0f, 4.0f}, out[3] = {};
  if (weftAllReduce(v, out, 3, weftFloat32, weftSum, comm, nullptr) != weftSuccess) return 12;
  if (out[0] != 1.5f || out[1] != -2.0f || out[2] != 4.0f) return 13;
  if (weftCommDestroy(comm) != weftSuccess) return 14;
  return 0;
}

TEST(Fork, ChildrenForkedWhileLibraryThreadsWorkCanLogAndInit) {
  // Every log line at TRACE (to /dev/null): the log lock is taken all the time by the busy threads.
  setenv("WEFT_DEBUG", "TRACE", 1);
  setenv("WEFT_DEBUG_FILE", "/dev/null", 1);
  constexpr int kChildren = 100;  // without the handlers 2 of 3 runs of 60 hung (on the log lock)
  constexpr int kBusyThreads = 2;
  constexpr long long kChildDeadlineMs = 30000;
  std::atomic<bool> stop{false};
  std::atomic<int> busyRounds{0}, busyFailures{0};
  std::vector<std::thread> busy;
  for (int t = 0; t < kBusyThreads; ++t) {
    busy.emplace_back([&] {
      while (!stop.load()) {
        if (oneRankRound() != 0) busyFailures.fetch_add(1);
        busyRounds.fetch_add(1);
      }
    });
  }
  // Wait until the busy threads are in their loops (their first rounds load settings and discover).
  const long long startWait = nowMs();
  while (busyRounds.load() < 2 && nowMs() - startWait < 60000) usleep(1000);
  ASSERT_GE(busyRounds.load(), 2) << "the background communicators never completed a round";

  int hung = 0, failed = 0;
  std::string failures;
  for (int i = 0; i < kChildren; ++i) {
    usleep(static_cast<useconds_t>((i * 7919) % 3000));  // fork at varied points of the threads' work
    const pid_t pid = fork();
    if (pid == 0) {
      // Only this thread exists here; log (an error message is logged and recorded) and init.
      weftComm_t bad = nullptr;
      weftUniqueId none{};
      (void)weftCommInitRank(&bad, 0, none, 0);  // invalid: logs at INFO, records the last error
      _exit(oneRankRound());
    }
    ASSERT_GT(pid, 0) << "fork failed";
    const long long deadline = nowMs() + kChildDeadlineMs;
    int st = 0;
    pid_t r = 0;
    while ((r = waitpid(pid, &st, WNOHANG)) == 0 && nowMs() < deadline) usleep(2000);
    if (r == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      ++hung;
      failures += "child " + std::to_string(i) + " hung (killed after 30 s); ";
    } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      ++failed;
      failures += "child " + std::to_string(i) + " status " + std::to_string(st) + "; ";
    }
    if (hung) break;  // one hang is the finding; do not wait 30 s for each of the rest
  }
  stop.store(true);
  for (auto& t : busy) t.join();
  EXPECT_EQ(hung, 0) << failures;
  EXPECT_EQ(failed, 0) << failures;
  EXPECT_EQ(busyFailures.load(), 0);
  EXPECT_GT(busyRounds.load(), 2);
}

}  // namespace
