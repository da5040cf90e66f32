// weft-device-bench: the device-buffer numbers of the CUDA issue, in one run, every figure next to
// its baseline measured in the same run:
//   floor    an empty kernel launched through a CUDA graph (per kernel, graph of 20, and per graph of 1)
//   copy     cudaMemcpyAsync device-to-device vs weft's reduction kernel (bf16 sum, dst = a + b), 256 MiB,
//            bytes read + written per second
//   allreduce bf16 sum at 16 KiB, 256 KiB, 4 MiB, 256 MiB on N ranks as threads sharing GPU 0: eager
//            launches, a graph of 20 captured calls (per call), and a graph of 1 call (per launch)
//            (-t N), or only the all-reduce with N ranks as processes (-p N: fork + exec, CUDA IPC;
//            under MPS when it runs)
// Usage: weft-device-bench [-t nranks] | -p nranks   (default -t 2). Prints "SKIP" and exits 77
// without a GPU.
#include <cuda_runtime.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <string>
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

const size_t kSizes[] = {16u << 10, 256u << 10, 4u << 20, 256u << 20};

// One rank's timings (us per call) of the four sizes: eager, graph of 20 (per call), graph of 1;
// `bar` is a barrier of all ranks (threads: a thread barrier; processes: weftBarrier).
struct Times {
  double t[3][4] = {};
  int wrong = 0;
};

void allReduceRank(int rank, int n, weftComm_t comm, cudaStream_t s, const std::function<void()>& bar, Times* out) {
  for (int si = 0; si < 4; ++si) {
    const size_t bytes = kSizes[si], count = bytes / 2;
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
    bar();
    auto call = [&] { WEFT_OK(weftAllReduce(send, recv, count, weftBfloat16, weftSum, comm, s)); };
    // Eager.
    const int reps = big ? 20 : 1000;
    timeOn(s, big ? 3 : 50, call);
    bar();
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
          out->wrong++;
          break;
        }
    }
    // Graphs of 20 calls and of 1 call.
    float gms[2] = {0, 0};
    const int ks[2] = {20, 1};
    for (int gi = 0; gi < 2; ++gi) {
      const int k = ks[gi];
      bar();  // nobody synchronises while a thread captures (global mode)
      cudaGraph_t g;
      cudaGraphExec_t e;
      CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
      for (int i = 0; i < k; ++i) call();
      CUDA_OK(cudaStreamEndCapture(s, &g));
      bar();
      CUDA_OK(cudaGraphInstantiate(&e, g, 0));
      const int greps = big ? (k == 1 ? 20 : 2) : (k == 1 ? 1000 : 50);
      timeOn(s, big ? 1 : 10, [&] { CUDA_OK(cudaGraphLaunch(e, s)); });
      bar();
      gms[gi] = timeOn(s, greps, [&] { CUDA_OK(cudaGraphLaunch(e, s)); }) * 1000 / (greps * k);
      bar();
      CUDA_OK(cudaGraphExecDestroy(e));
      CUDA_OK(cudaGraphDestroy(g));
    }
    out->t[0][si] = static_cast<double>(ems) * 1000 / reps;
    out->t[1][si] = gms[0];
    out->t[2][si] = gms[1];
    CUDA_OK(cudaStreamSynchronize(s));
    bar();
    CUDA_OK(cudaFree(send));
    CUDA_OK(cudaFree(recv));
  }
}

void printTimes(const Times& t, int n, const char* how) {
  std::printf("allreduce: bf16 sum, %d ranks as %s on one GPU (slowest rank, us per call)\n", n, how);
  std::printf("allreduce: %10s %12s %14s %14s %12s\n", "bytes", "eager", "graph(20)/call", "graph(1)", "busbw GB/s");
  for (int si = 0; si < 4; ++si) {
    const double algbw = kSizes[si] / (t.t[1][si] * 1e3);
    std::printf("allreduce: %10zu %12.2f %14.2f %14.2f %12.1f\n", kSizes[si], t.t[0][si], t.t[1][si], t.t[2][si],
                algbw * 2.0 * (n - 1) / n);
  }
  if (t.wrong != 0) {
    std::printf("allreduce: WRONG RESULTS in %d (rank, size) checks\n", t.wrong);
    std::exit(1);
  }
}

void allReduce(int n) {
  std::mutex mu;
  Times all;
  gpu::runRanks(n, [&](int rank, weftComm_t comm, cudaStream_t s, gpu::ThreadBarrier& bar) {
    Times mine;
    allReduceRank(rank, n, comm, s, [&] { bar.arrive_and_wait(); }, &mine);
    std::lock_guard<std::mutex> g(mu);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 4; ++j) all.t[i][j] = std::max(all.t[i][j], mine.t[i][j]);
    all.wrong += mine.wrong;
  });
  printTimes(all, n, "threads");
}

// A process rank (exec'd by allReduceProcs): times combined with a host all-reduce (max).
int processRank(int rank, int n, const char* idHex) {
  weftUniqueId id;
  for (size_t i = 0; i < sizeof id.internal; ++i) {
    char b[3] = {idHex[2 * i], idHex[2 * i + 1], 0};
    id.internal[i] = static_cast<char>(std::strtol(b, nullptr, 16));
  }
  CUDA_OK(cudaSetDevice(0));
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  weftComm_t comm;
  WEFT_OK(weftCommInitRank(&comm, n, id, rank));
  Times mine;
  allReduceRank(rank, n, comm, s, [&] { WEFT_OK(weftBarrier(comm, nullptr)); }, &mine);
  Times all;
  WEFT_OK(weftAllReduce(&mine.t[0][0], &all.t[0][0], 12, weftFloat64, weftMax, comm, nullptr));
  WEFT_OK(weftAllReduce(&mine.wrong, &all.wrong, 1, weftInt32, weftSum, comm, nullptr));
  if (rank == 0) printTimes(all, n, "processes (CUDA IPC; MPS if running)");
  WEFT_OK(weftCommDestroy(comm));
  CUDA_OK(cudaStreamDestroy(s));
  return 0;
}

int allReduceProcs(const char* self, int n) {
  weftUniqueId id;
  WEFT_OK(weftGetUniqueId(&id));
  std::string hex;
  for (char ch : id.internal) {
    char b[3];
    std::snprintf(b, sizeof b, "%02x", static_cast<unsigned char>(ch));
    hex += b;
  }
  std::fflush(stdout);
  std::vector<pid_t> pids;
  for (int r = 0; r < n; ++r) {
    pid_t p = fork();
    if (p == 0) {
      std::string rs = std::to_string(r), ns = std::to_string(n);
      char* argv[] = {const_cast<char*>(self), const_cast<char*>("--rank-process"), rs.data(), ns.data(), hex.data(), nullptr};
      execv(self, argv);
      _exit(127);
    }
    pids.push_back(p);
  }
  int failed = 0;
  for (pid_t p : pids) {
    int st = 0;
    waitpid(p, &st, 0);
    failed += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  if (failed) std::printf("allreduce: %d process ranks FAILED\n", failed);
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::strcmp(argv[1], "--rank-process") == 0) return processRank(std::atoi(argv[2]), std::atoi(argv[3]), argv[4]);
  int n = 2, procs = 0;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "-t") == 0) n = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "-p") == 0) procs = std::atoi(argv[i + 1]);
  }
  if (procs > 0) {
    // The parent never initialises CUDA (its children are exec'd): probe in a child.
    pid_t p = fork();
    if (p == 0) {
      const int rc = gpu::skipWithoutGpu("weft-device-bench") == 77 ? 77 : 0;
      std::fflush(stdout);
      _exit(rc);
    }
    int st = 0;
    waitpid(p, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77) return 77;
    return allReduceProcs(argv[0], procs);
  }
  if (int skip = gpu::skipWithoutGpu("weft-device-bench")) return skip;
  cudaDeviceProp p;
  CUDA_OK(cudaGetDeviceProperties(&p, 0));
  std::printf("device: %s, %d SMs\n", p.name, p.multiProcessorCount);
  launchFloor();
  copyVsReduce();
  allReduce(n);
  return 0;
}
