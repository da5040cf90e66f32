// A plain reusable thread barrier (mutex + condition variable, generation counted). The GPU tests
// use it instead of std::barrier: a run on the H100 showed a thread passing a std::barrier (GCC 12
// libstdc++, linked statically) before its peer arrived -- one thread instantiated a CUDA graph
// while the other was still capturing -- and this one is simple enough to be obviously right.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace gpu {

class ThreadBarrier {
 public:
  explicit ThreadBarrier(int n) : n_(n) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> g(mu_);
    const uint64_t gen = gen_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++gen_;
      cv_.notify_all();
      return;
    }
    cv_.wait(g, [&] { return gen_ != gen; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_;
  int arrived_ = 0;
  uint64_t gen_ = 0;
};

}  // namespace gpu
