// The shared futex (lib/core/futex): a waiter in one process is woken by a waker in another (a
// private futex never would: the test would then fail on its wait deadline), wait returns at once
// when the word already differs, and a wait with a timeout returns.
#include "lib/core/futex.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <new>

#include "lib/core/util.h"

namespace weft {
namespace {

constexpr uint64_t kSec = 1000000000ull;

// Waits until *w != v, sleeping in the futex; false if 20 s pass (a lost wake-up).
bool waitChange(std::atomic<uint32_t>* w, uint32_t v) {
  const uint64_t deadline = nowNs() + 20 * kSec;
  while (w->load() == v) {
    if (nowNs() > deadline) return false;
    futex::wait(w, v, 20 * kSec);
  }
  return true;
}

TEST(Futex, PingPongAcrossProcesses) {
  void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  auto* word = new (p) std::atomic<uint32_t>(0);
  const uint32_t rounds = 300;
  pid_t child = fork();
  if (child == 0) {
    // Odd values are the child's turn to answer.
    for (uint32_t i = 0; i < rounds; ++i) {
      if (!waitChange(word, 2 * i)) _exit(1);
      word->store(2 * i + 2);
      futex::wakeAll(word);
    }
    _exit(0);
  }
  bool ok = true;
  for (uint32_t i = 0; i < rounds && ok; ++i) {
    word->store(2 * i + 1);
    futex::wakeAll(word);
    ok = waitChange(word, 2 * i + 1);
  }
  int st = 0;
  waitpid(child, &st, 0);
  EXPECT_TRUE(ok) << "a wake-up from the other process was lost";
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "the child lost a wake-up";
  munmap(p, 4096);
}

TEST(Futex, WaitReturnsWhenTheWordDiffersOrTheTimeoutPasses) {
  std::atomic<uint32_t> w{5};
  uint64_t t0 = nowNs();
  futex::wait(&w, 4, 10 * kSec);  // differs: returns at once
  futex::wait(&w, 5, 20000000);   // 20 ms timeout
  EXPECT_LT(nowNs() - t0, 5 * kSec);  // a bound far above both, so a hang fails instead of blocking
}

}  // namespace
}  // namespace weft
