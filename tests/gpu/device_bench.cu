// weft-device-bench: the GPU's own figures that the device all-reduce is judged against, each
// next to its baseline measured in the same run:
//   floor    an empty kernel launched through a CUDA graph (per kernel, graph of 20, and per graph of 1)
//   copy     cudaMemcpyAsync device-to-device vs weft's reduction kernel (bf16 sum, dst = a + b), 256 MiB,
//            bytes read + written per second
// The all-reduce itself (bf16, 2 ranks sharing the GPU as threads or as processes, eager and in CUDA
// graphs) is `weft-bench all_reduce --device [-G N]` (tests/gpu/device-check.sh runs both).
// Usage: weft-device-bench. Prints "SKIP" and exits 77 without a GPU.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <functional>

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
  // Interleaved, so that clock or thermal drift hits both alike.
  float copyMs = 0, redMs = 0;
  for (int k = 0; k < 3; ++k) {
    copyMs += timeOn(s, reps, copy);
    redMs += timeOn(s, reps, red);
  }
  const int total = 3 * reps;
  const double copyGBs = 2.0 * bytes * total / (copyMs * 1e6);
  const double redGBs = 3.0 * bytes * total / (redMs * 1e6);
  std::printf("copy: D2D cudaMemcpyAsync 256 MiB: %.3f ms, %.0f GB/s (read + written)\n", copyMs / total, copyGBs);
  std::printf("copy: weft reduce kernel bf16 sum 256 MiB (dst = a + b): %.3f ms, %.0f GB/s (read + written) = %.1f%% of the copy\n",
              redMs / total, redGBs, 100.0 * redGBs / copyGBs);
  CUDA_OK(cudaFree(a));
  CUDA_OK(cudaFree(b));
  CUDA_OK(cudaFree(d));
  CUDA_OK(cudaStreamDestroy(s));
}

}  // namespace

int main() {
  if (int skip = gpu::skipWithoutGpu("weft-device-bench")) return skip;
  cudaDeviceProp p;
  CUDA_OK(cudaGetDeviceProperties(&p, 0));
  std::printf("device: %s, %d SMs\n", p.name, p.multiProcessorCount);
  launchFloor();
  copyVsReduce();
  return 0;
}
