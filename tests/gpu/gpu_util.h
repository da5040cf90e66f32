// Helpers shared by the GPU test and benchmark binaries (public API + CUDA runtime).
#pragma once

#include <cuda_runtime.h>
#include <weft/weft.h>

#include "tests/gpu/thread_barrier.h"
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#define CUDA_OK(x)                                                                                  \
  do {                                                                                              \
    cudaError_t e_ = (x);                                                                           \
    if (e_ != cudaSuccess) {                                                                        \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));       \
      std::fflush(stdout);                                                                        \
      std::_Exit(1);                                                                                 \
    }                                                                                               \
  } while (0)

#define WEFT_OK(x)                                                                                  \
  do {                                                                                              \
    weftResult_t r_ = (x);                                                                          \
    if (r_ != weftSuccess) {                                                                        \
      std::fprintf(stderr, "%s:%d: %s: %s (%s)\n", __FILE__, __LINE__, #x, weftGetErrorString(r_),     \
                   weftGetLastError(nullptr));                                                      \
      std::fflush(stdout);                                                                        \
      std::_Exit(1);                                                                                 \
    }                                                                                               \
  } while (0)

namespace gpu {

// 0 when a CUDA device is usable, else prints the skip line and returns 77 (ctest's skip code).
inline int skipWithoutGpu(const char* what) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    std::printf("SKIP %s: no CUDA device (%s)\n", what, e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return 77;
  }
  return 0;
}

// n ranks as threads of this process on GPU 0: body(rank, comm, stream, barrier) on each thread.
// Each rank gets its own non-blocking stream (ranks on the legacy default stream would serialise
// their kernels and wait on each other forever).
inline void runRanks(int n, const std::function<void(int, weftComm_t, cudaStream_t, ThreadBarrier&)>& body,
                     weftConfig_t* config = nullptr, bool destroy = true) {
  weftUniqueId id;
  WEFT_OK(weftGetUniqueId(&id));
  ThreadBarrier bar(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      CUDA_OK(cudaSetDevice(0));
      cudaStream_t s;
      CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
      weftComm_t comm;
      if (config) WEFT_OK(weftCommInitRankConfig(&comm, n, id, r, config));
      else WEFT_OK(weftCommInitRank(&comm, n, id, r));
      body(r, comm, s, bar);
      CUDA_OK(cudaStreamSynchronize(s));
      bar.arrive_and_wait();
      if (destroy) WEFT_OK(weftCommDestroy(comm));
      CUDA_OK(cudaStreamDestroy(s));
    });
  for (auto& t : threads) t.join();
}

}  // namespace gpu
