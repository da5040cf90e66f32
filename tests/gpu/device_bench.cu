// weft-device-bench: the device-buffer numbers of the CUDA issue, in one run, every figure next to
// its baseline measured in the same run:
//   floor    an empty kernel launched through a CUDA graph (per kernel, graph of 20, and per graph of 1)
//   copy     cudaMemcpyAsync device-to-device vs weft's reduction kernel (bf16 sum, dst = a + b), 256 MiB,
//            bytes read + written per second
//   allreduce bf16 sum at 16 KiB, 256 KiB, 4 MiB, 256 MiB on N ranks as threads sharing GPU 0: eager
//            launches, a graph of 20 captured calls (per call), and a graph of 1 call (per launch)
// Usage: weft-device-bench [-t nranks]   (default 2). Prints "SKIP" and exits 77 without a GPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <vector>

#include "lib/device/device.h"
#include "tests/gpu/gpu_util.h"

namespace {

__global__ void emptyKernel() {}

float timeOn(cudaStream_t s, int reps, const std::function<void()>& body) {
  cudaEvent_t a, b;
  CUDA_OK(cudaEventCreate(&a));
  CUDA_OK(cudaEventCreate(&b));
  CUDA_OK(cudaEventRecord(a, s));
  for (int i = 0; i < reps; ++i) body();
  CUDA_OK(cudaEventRecord(b, s));
  CUDA_OK(cudaEventSynchronize(b));
  float ms = 0;
  CUDA_OK(cudaEventElapsedTime(&ms, a, b));
  CUDA_OK(cudaEventDestroy(a));
  CUDA_OK(cudaEventDestroy(b));
  return ms;
}

void launchFloor() {
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  for (int k : {1, 20}) {
    cudaGraph_t g;
    cudaGraphExec_t e;
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < k; ++i) emptyKernel<<<1, 1, 0, s>>>();
    CUDA_OK(cudaStreamEndCapture(s, &g));
    CUDA_OK(cudaGraphInstantiate(&e, g, 0));
    timeOn(s, 50, [&] { CUDA_OK(cudaGraphLaunch(e, s)); });
    const int reps = 2000 / k;
    const float ms = timeOn(s, reps, [&] { CUDA_OK(cudaGraphLaunch(e, s)); });
    std::printf("floor: empty kernel, graph of %2d: %.2f us per kernel (%.2f us per graph launch)\n", k,
                ms * 1000 / (reps * k), ms * 1000 / reps);
    CUDA_OK(cudaGraphExecDestroy(e));
    CUDA_OK(cudaGraphDestroy(g));
  }
  CUDA_OK(cudaStreamDestroy(s));
}

void copyVsReduce() {
  const size_t bytes = 256ull << 20, count = bytes / 2;
  char *a, *b, *d;
  CUDA_OK(cudaMalloc(&a, bytes));
  CUDA_OK(cudaMalloc(&b, bytes));
  CUDA_OK(cudaMalloc(&d, bytes));
  CUDA_OK(cudaMemset(a, 0x11, bytes));
  CUDA_OK(cudaMemset(b, 0x22, bytes));
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const int reps = 20;
  auto copy = [&] { CUDA_OK(cudaMemcpyAsync(d, a, bytes, cudaMemcpyDeviceToDevice, s)); };
  auto red = [&] {
    weft::Status st = weft::device::reduceOnDevice(weft::DataType::kBfloat16, weft::RedOp::kSum, d, a, b, count, s);
    if (!st) {
      std::fprintf(stderr, "reduce: %s\n", st.message().c_str());
      std::exit(1);
    }
  };
  timeOn(s, 3, copy);
  timeOn(s, 3, red);
  const float copyMs = timeOn(s, reps, copy);
  const float redMs = timeOn(s, reps, red);
  const double copyGBs = 2.0 * bytes * reps / (copyMs * 1e6);
  const double redGBs = 3.0 * bytes * reps / (redMs * 1e6);
  std::printf("copy: D2D cudaMemcpyAsync 256 MiB: %.3f ms, %.0f GB/s (read + written)\n", copyMs / reps, copyGBs);
  std::printf("copy: weft reduce kernel bf16 sum 256 MiB (dst = a + b): %.3f ms, %.0f GB/s (read + written) = %.1f%% of the copy\n",
              redMs / reps, redGBs, 100.0 * redGBs / copyGBs);
  CUDA_OK(cudaFree(a));
  CUDA_OK(cudaFree(b));
  CUDA_OK(cudaFree(d));
  CUDA_OK(cudaStreamDestroy(s));
}

void allReduce(int n) {
  const size_t sizes[] = {16u << 10, 256u << 10, 4u << 20, 256u << 20};
  std::mutex mu;
  std::vector<double> eager(4, 0), graph20(4, 0), graph1(4, 0);
  std::atomic<int> wrong{0};
  gpu::runRanks(n, [&](int rank, weftComm_t comm, cudaStream_t s, gpu::ThreadBarrier& bar) {
    for (int si = 0; si < 4; ++si) {
      const size_t bytes = sizes[si], count = bytes / 2;
      const bool big = bytes >= (64u << 20);
      uint16_t *send, *recv;
      CUDA_OK(cudaMalloc(&send, bytes));
      CUDA_OK(cudaMalloc(&recv, bytes));
      // Input: every element = rank + 1 (bf16 0x3f80 = 1.0, 0x4000 = 2.0, ...).
      std::vector<uint16_t> h(count);
      {
        const float v = static_cast<float>(rank + 1);
        uint32_t u;
        std::memcpy(&u, &v, 4);
        std::fill(h.begin(), h.end(), static_cast<uint16_t>(u >> 16));
      }
      CUDA_OK(cudaMemcpyAsync(send, h.data(), bytes, cudaMemcpyHostToDevice, s));
      CUDA_OK(cudaStreamSynchronize(s));
      bar.arrive_and_wait();
      auto call = [&] { WEFT_OK(weftAllReduce(send, recv, count, weftBfloat16, weftSum, comm, s)); };
      // Eager.
      const int reps = big ? 20 : 1000;
      timeOn(s, big ? 3 : 50, call);
      bar.arrive_and_wait();
      const float ems = timeOn(s, reps, call);
      // Check the result once.
      CUDA_OK(cudaMemcpyAsync(h.data(), recv, bytes, cudaMemcpyDeviceToHost, s));
      CUDA_OK(cudaStreamSynchronize(s));
      {
        const float want = static_cast<float>(n * (n + 1) / 2);
        uint32_t u;
        std::memcpy(&u, &want, 4);
        const uint16_t w = static_cast<uint16_t>(u >> 16);
        for (size_t i = 0; i < count; i += 97)
          if (h[i] != w) {
            wrong++;
            break;
          }
      }
      // Graphs of 20 calls and of 1 call.
      float gms[2] = {0, 0};
      const int ks[2] = {20, 1};
      for (int gi = 0; gi < 2; ++gi) {
        const int k = ks[gi];
        bar.arrive_and_wait();  // nobody synchronises while a thread captures (global mode)
        cudaGraph_t g;
        cudaGraphExec_t e;
        CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        for (int i = 0; i < k; ++i) call();
        CUDA_OK(cudaStreamEndCapture(s, &g));
        bar.arrive_and_wait();
        CUDA_OK(cudaGraphInstantiate(&e, g, 0));
        const int greps = big ? (k == 1 ? 20 : 2) : (k == 1 ? 1000 : 50);
        timeOn(s, big ? 1 : 10, [&] { CUDA_OK(cudaGraphLaunch(e, s)); });
        bar.arrive_and_wait();
        gms[gi] = timeOn(s, greps, [&] { CUDA_OK(cudaGraphLaunch(e, s)); }) * 1000 / (greps * k);
        bar.arrive_and_wait();
        CUDA_OK(cudaGraphExecDestroy(e));
        CUDA_OK(cudaGraphDestroy(g));
      }
      {
        std::lock_guard<std::mutex> g(mu);
        eager[si] = std::max(eager[si], static_cast<double>(ems) * 1000 / reps);
        graph20[si] = std::max(graph20[si], static_cast<double>(gms[0]));
        graph1[si] = std::max(graph1[si], static_cast<double>(gms[1]));
      }
      CUDA_OK(cudaStreamSynchronize(s));
      bar.arrive_and_wait();
      CUDA_OK(cudaFree(send));
      CUDA_OK(cudaFree(recv));
    }
  });
  std::printf("allreduce: bf16 sum, %d ranks as threads on one GPU (slowest rank, us per call)\n", n);
  std::printf("allreduce: %10s %12s %14s %14s %12s\n", "bytes", "eager", "graph(20)/call", "graph(1)", "busbw GB/s");
  for (int si = 0; si < 4; ++si) {
    const double algbw = sizes[si] / (graph20[si] * 1e3);
    std::printf("allreduce: %10zu %12.2f %14.2f %14.2f %12.1f\n", sizes[si], eager[si], graph20[si], graph1[si],
                algbw * 2.0 * (n - 1) / n);
  }
  if (wrong.load() != 0) {
    std::printf("allreduce: WRONG RESULTS in %d (rank, size) checks\n", wrong.load());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int n = 2;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "-t") == 0) n = std::atoi(argv[i + 1]);
  if (int skip = gpu::skipWithoutGpu("weft-device-bench")) return skip;
  cudaDeviceProp p;
  CUDA_OK(cudaGetDeviceProperties(&p, 0));
  std::printf("device: %s, %d SMs\n", p.name, p.multiProcessorCount);
  launchFloor();
  copyVsReduce();
  allReduce(n);
  return 0;
}
