// Device-buffer all-reduce through the public API, ranks as threads sharing GPU 0. Checked against
// tests/support's independently computed reference (every type and op, odd sizes, in place,
// misaligned, several rounds of staging), bitwise-identical results on every rank, CUDA graph
// capture and 100 replays, mixing host and device buffers, host buffers in a CUDA process, the NULL
// and blocking streams refused (ranks share the GPU), calls on two streams ordered, a call queued
// before destroy completing, and the device-side abort and deadline of a kernel waiting on a rank that never arrives.
// Prints "SKIP" and exits 77 without a GPU.
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>

#include "support/reference.h"
#include "tests/gpu/gpu_util.h"

namespace {

std::atomic<int> gFailures{0};
std::mutex gPrintMu;

#define CHECK(cond, ...)                                         \
  do {                                                           \
    if (!(cond)) {                                               \
      std::lock_guard<std::mutex> g_(gPrintMu);                  \
      std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::printf(__VA_ARGS__);                                  \
      std::printf("\n");                                         \
      gFailures++;                                               \
    }                                                            \
  } while (0)

using Clock = std::chrono::steady_clock;
double msSince(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// Every type and op, several sizes and layouts, on n thread-ranks.
void testResults(int n) {
  const size_t counts[] = {1, 7, 1000, 4099, 70001, 300007};
  std::vector<std::vector<std::vector<char>>> results(static_cast<size_t>(n));  // [rank][case]
  int cases = 0;
  gpu::runRanks(n, [&](int rank, weftComm_t comm, cudaStream_t s, gpu::ThreadBarrier& bar) {
    auto& mine = results[static_cast<size_t>(rank)];
    // Allocated once: cudaMalloc/cudaFree synchronise the device, and with ranks as threads a peer's
    // kernel may be waiting for this rank's next launch meanwhile (a deadlock until the timeout).
    const size_t maxBytes = 300007 * 8 + 64;
    char *dsend = nullptr, *drecv = nullptr;
    CUDA_OK(cudaMalloc(&dsend, maxBytes));
    CUDA_OK(cudaMalloc(&drecv, maxBytes));
    bar.arrive_and_wait();  // no rank launches while another may still be allocating
    for (int t = 0; t < weftNumTypes; ++t)
      for (int o = 0; o < weftNumOps; ++o)
        for (size_t count : counts)
          for (int layout = 0; layout < 3; ++layout) {  // 0 out of place, 1 in place, 2 misaligned by one element
            const auto type = static_cast<weftDataType_t>(t);
            const auto op = static_cast<weftRedOp_t>(o);
            const size_t es = weft::test::typeBytes(type), bytes = count * es;
            std::vector<char> in(bytes), want(bytes), got(bytes);
            weft::test::fillInput(type, op, rank, n, in.data(), count);
            weft::test::fillExpected(type, op, n, want.data(), count);
            char* sp = dsend + (layout == 2 ? es : 0);
            char* rp = layout == 1 ? sp : drecv + (layout == 2 ? es : 0);
            CUDA_OK(cudaMemcpyAsync(sp, in.data(), bytes, cudaMemcpyHostToDevice, s));
            weftResult_t r = weftAllReduce(sp, rp, count, type, op, comm, s);
            CHECK(r == weftSuccess, "%s %s count %zu layout %d: %s", weft::test::typeLabel(type),
                  weft::test::opLabel(op), count, layout, weftGetLastError(comm));
            CUDA_OK(cudaStreamSynchronize(s));
            CUDA_OK(cudaMemcpyAsync(got.data(), rp, bytes, cudaMemcpyDeviceToHost, s));
            CUDA_OK(cudaStreamSynchronize(s));
            size_t nwrong = 0;
            const long long bad = weft::test::firstMismatch(type, got.data(), want.data(), count, &nwrong);
            CHECK(bad < 0, "%d ranks %s %s count %zu layout %d: %zu wrong, first at %lld", n,
                  weft::test::typeLabel(type), weft::test::opLabel(op), count, layout, nwrong, bad);
            mine.push_back(std::move(got));
          }
    CUDA_OK(cudaStreamSynchronize(s));
    bar.arrive_and_wait();
    CUDA_OK(cudaFree(dsend));
    CUDA_OK(cudaFree(drecv));
    if (rank == 0) cases = static_cast<int>(mine.size());
  });
  for (int r = 1; r < n; ++r)
    for (size_t c = 0; c < results[0].size(); ++c)
      CHECK(results[static_cast<size_t>(r)][c] == results[0][c], "rank %d case %zu differs from rank 0 bitwise", r, c);
  std::printf("results: %d ranks, %d cases (12 types x 5 ops x 6 sizes x 3 layouts) checked\n", n, cases);
}

// bf16 sum captured once in a CUDA graph, replayed 100 times with new inputs.
void testGraphReplays() {
  const int n = 2;
  const size_t count = 8192;
  gpu::runRanks(n, [&](int rank, weftComm_t comm, cudaStream_t s, gpu::ThreadBarrier& bar) {
    const size_t bytes = count * 2;
    uint16_t *dsend, *drecv;
    CUDA_OK(cudaMalloc(&dsend, bytes));
    CUDA_OK(cudaMalloc(&drecv, bytes));
    bar.arrive_and_wait();  // no thread may allocate or synchronise while another captures (global mode)
    cudaGraph_t graph;
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    weftResult_t r = weftAllReduce(dsend, drecv, count, weftBfloat16, weftSum, comm, s);
    CUDA_OK(cudaStreamEndCapture(s, &graph));
    CHECK(r == weftSuccess, "captured all-reduce: %s", weftGetLastError(comm));
    // Every thread has ended its capture before any instantiates: instantiating while another thread
    // captures in global mode is refused and invalidates that capture (seen on an H200).
    bar.arrive_and_wait();
    cudaGraphExec_t exec;
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    bar.arrive_and_wait();
    std::vector<uint16_t> in(count), got(count);
    int bad = 0, badReplays = 0;
    bool reported = false;
    for (int it = 0; it < 100; ++it) {
      // Input: small integers (exact in bf16 and in their sum): rank + it + i % 17.
      for (size_t i = 0; i < count; ++i) {
        const float v = static_cast<float>(rank + it + static_cast<int>(i % 17));
        uint32_t u;
        std::memcpy(&u, &v, 4);
        in[i] = static_cast<uint16_t>(u >> 16);
      }
      CUDA_OK(cudaMemcpyAsync(dsend, in.data(), bytes, cudaMemcpyHostToDevice, s));
      CUDA_OK(cudaGraphLaunch(exec, s));
      // Drained first: a pageable copy queued behind a kernel that waits for the peer thread holds
      // the driver's staging buffer the peer's own copy needs (a hang until the deadline).
      CUDA_OK(cudaStreamSynchronize(s));
      CUDA_OK(cudaMemcpyAsync(got.data(), drecv, bytes, cudaMemcpyDeviceToHost, s));
      CUDA_OK(cudaStreamSynchronize(s));
      bool replayBad = false;
      for (size_t i = 0; i < count; ++i) {
        const float want = static_cast<float>(0 + 1 + 2 * (it + static_cast<int>(i % 17)));
        uint32_t u = static_cast<uint32_t>(got[i]) << 16;
        float v;
        std::memcpy(&v, &u, 4);
        if (v != want) {
          if (bad < 3) CHECK(v == want, "replay %d rank %d element %zu: %g, want %g", it, rank, i, v, want);
          bad++;
          replayBad = true;
        }
      }
      badReplays += replayBad;
      weftResult_t async = weftSuccess;
      WEFT_OK(weftCommGetAsyncError(comm, &async));
      if (async != weftSuccess && !reported) {
        reported = true;
        CHECK(async == weftSuccess, "rank %d after replay %d: async error %d: %s", rank, it, static_cast<int>(async),
              weftGetLastError(comm));
      }
    }
    CHECK(badReplays == 0, "rank %d: %d of 100 replays wrong", rank, badReplays);
    bar.arrive_and_wait();
    CUDA_OK(cudaGraphExecDestroy(exec));
    CUDA_OK(cudaGraphDestroy(graph));
    CUDA_OK(cudaFree(dsend));
    CUDA_OK(cudaFree(drecv));
    if (rank == 0) std::printf("graph: 100 replays of a captured 16 KiB bf16 all-reduce checked\n");
  });
}

// Mixed kinds are refused; host buffers still run (synchronously) in a CUDA process; NULL stream.
void testKindsAndNullStream() {
  gpu::runRanks(2, [&](int rank, weftComm_t comm, cudaStream_t s, gpu::ThreadBarrier& bar) {
    float* d;
    CUDA_OK(cudaMalloc(&d, 1024 * sizeof(float)));
    bar.arrive_and_wait();
    std::vector<float> h(1024, static_cast<float>(rank + 1));
    weftResult_t r = weftAllReduce(h.data(), d, 1024, weftFloat32, weftSum, comm, s);
    CHECK(r == weftInvalidArgument, "host send + device recv gave %d, want weftInvalidArgument", static_cast<int>(r));
    r = weftAllReduce(d, h.data(), 1024, weftFloat32, weftSum, comm, s);
    CHECK(r == weftInvalidArgument, "device send + host recv gave %d", static_cast<int>(r));
    // Host buffers on the same communicator.
    std::vector<float> out(1024, 0);
    r = weftAllReduce(h.data(), out.data(), 1024, weftFloat32, weftSum, comm, s);
    CHECK(r == weftSuccess && out[0] == 3.0f && out[1023] == 3.0f, "host all-reduce in a CUDA process: %d %g", static_cast<int>(r), out[0]);
    // The ranks share GPU 0 in this process: the NULL (legacy default) stream and blocking streams
    // are refused (they would serialise the two ranks' kernels: a hang), with the remedy named.
    r = weftAllReduce(d, d, 1024, weftFloat32, weftSum, comm, nullptr);
    CHECK(r == weftInvalidUsage && std::strstr(weftGetLastError(comm), "cudaStreamNonBlocking") != nullptr,
          "NULL stream with ranks sharing a GPU gave %d: %s", static_cast<int>(r), weftGetLastError(comm));
    cudaStream_t blocking;
    CUDA_OK(cudaStreamCreate(&blocking));
    r = weftAllReduce(d, d, 1024, weftFloat32, weftSum, comm, reinterpret_cast<weftStream_t>(blocking));
    CHECK(r == weftInvalidUsage && std::strstr(weftGetLastError(comm), "cudaStreamNonBlocking") != nullptr,
          "a blocking stream with ranks sharing a GPU gave %d: %s", static_cast<int>(r), weftGetLastError(comm));
    CUDA_OK(cudaStreamDestroy(blocking));
    // Point-to-point and all-to-all: mixed kinds and the NULL stream are refused (nothing is
    // launched, so the pair's sequences stay in step); then one exchange on device buffers.
    r = weftAlltoAll(h.data(), d, 16, weftFloat32, comm, s);
    CHECK(r == weftInvalidArgument, "all-to-all host send + device recv gave %d", static_cast<int>(r));
    r = weftSend(d, 16, weftFloat32, 1 - rank, comm, nullptr);
    CHECK(r == weftInvalidUsage && std::strstr(weftGetLastError(comm), "cudaStreamNonBlocking") != nullptr,
          "a device send on the NULL stream with ranks sharing a GPU gave %d: %s", static_cast<int>(r), weftGetLastError(comm));
    std::vector<float> mine(16, static_cast<float>(10 + rank)), got(16, 0.0f);
    CUDA_OK(cudaMemcpy(d, mine.data(), 16 * sizeof(float), cudaMemcpyHostToDevice));
    bar.arrive_and_wait();  // no cudaMemcpy (device-wide sync) while the peer's kernel runs
    CHECK(weftGroupStart() == weftSuccess, "group start");
    weftResult_t r1 = weftSend(d, 16, weftFloat32, 1 - rank, comm, s);
    weftResult_t r2 = weftRecv(d + 16, 16, weftFloat32, 1 - rank, comm, s);
    r = weftGroupEnd();
    CHECK(r1 == weftSuccess && r2 == weftSuccess && r == weftSuccess, "device send/recv pair: %s", weftGetLastError(comm));
    CUDA_OK(cudaMemcpyAsync(got.data(), d + 16, 16 * sizeof(float), cudaMemcpyDeviceToHost, s));
    CUDA_OK(cudaStreamSynchronize(s));
    CHECK(got[0] == static_cast<float>(11 - rank) && got[15] == static_cast<float>(11 - rank), "device send/recv pair got %g",
          got[0]);
    bar.arrive_and_wait();
    CUDA_OK(cudaFree(d));
  });
  std::printf("kinds: mixed host/device refused, host path checked, NULL and blocking streams refused, a device send/recv pair checked\n");
}

// Calls of one communicator on two streams, never synchronised in between: the communicator
// orders them (each waits for the previous call's event), so every result is right. Then a call
// followed at once by weftCommDestroy: destroy lets it finish (it raises the abort word only after).
void testStreamsAndDestroy() {
  const int n = 2, calls = 16;
  gpu::runRanks(
      n,
      [&](int rank, weftComm_t comm, cudaStream_t s, gpu::ThreadBarrier& bar) {
        cudaStream_t s2;
        CUDA_OK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
        std::vector<float*> bufs(calls);
        std::vector<size_t> counts(calls);
        for (int i = 0; i < calls; ++i) {
          counts[i] = i % 3 == 0 ? (3u << 20) + static_cast<size_t>(i) : 1000u + static_cast<size_t>(i) * 77u;  // multi-round and small
          CUDA_OK(cudaMalloc(&bufs[i], counts[i] * sizeof(float)));
          std::vector<float> h(counts[i], static_cast<float>(rank + 1 + i));
          CUDA_OK(cudaMemcpy(bufs[i], h.data(), counts[i] * sizeof(float), cudaMemcpyHostToDevice));
        }
        bar.arrive_and_wait();
        for (int i = 0; i < calls; ++i) {
          weftResult_t r = weftAllReduce(bufs[i], bufs[i], counts[i], weftFloat32, weftSum, comm,
                                         reinterpret_cast<weftStream_t>(i % 2 ? s2 : s));
          CHECK(r == weftSuccess, "call %d: %s", i, weftGetLastError(comm));
        }
        CUDA_OK(cudaStreamSynchronize(s));
        CUDA_OK(cudaStreamSynchronize(s2));
        for (int i = 0; i < calls; ++i) {
          std::vector<float> h(counts[i]);
          CUDA_OK(cudaMemcpy(h.data(), bufs[i], counts[i] * sizeof(float), cudaMemcpyDeviceToHost));
          const float want = static_cast<float>(1 + i + 2 + i);
          size_t bad = 0;
          for (float v : h) bad += v != want;
          CHECK(bad == 0, "rank %d call %d on stream %d: %zu of %zu wrong (want %g)", rank, i, i % 2, bad, counts[i], want);
        }
        weftResult_t async = weftSuccess;
        weftCommGetAsyncError(comm, &async);
        CHECK(async == weftSuccess, "async error after the two-stream calls: %d", static_cast<int>(async));
        // Destroy right after launching: the call completes.
        std::vector<float> h(counts[0], static_cast<float>(rank + 1));
        CUDA_OK(cudaMemcpy(bufs[0], h.data(), counts[0] * sizeof(float), cudaMemcpyHostToDevice));
        bar.arrive_and_wait();
        CHECK(weftAllReduce(bufs[0], bufs[0], counts[0], weftFloat32, weftSum, comm, s) == weftSuccess, "last call: %s",
              weftGetLastError(comm));
        CHECK(weftCommDestroy(comm) == weftSuccess, "destroy");
        CUDA_OK(cudaStreamSynchronize(s));
        CUDA_OK(cudaMemcpy(h.data(), bufs[0], counts[0] * sizeof(float), cudaMemcpyDeviceToHost));
        size_t bad = 0;
        for (float v : h) bad += v != 3.0f;
        CHECK(bad == 0, "rank %d: the call queued before destroy left %zu of %zu wrong", rank, bad, counts[0]);
        for (float* b : bufs) CUDA_OK(cudaFree(b));
        CUDA_OK(cudaStreamDestroy(s2));
      },
      nullptr, /*destroy=*/false);
  std::printf("streams: 16 calls alternating two streams ordered; a call queued before destroy completed\n");
}

// A kernel waits on rank 1, which never calls: weftCommAbort (another thread) ends it; with a
// deadline instead, the kernel gives up by itself and the communicator reports weftTimeout.
// mode 0: weftCommAbort on the waiting rank; 1: the deadline; 2: weftCommAbort on the rank that never
// arrives (the waiting kernel polls that rank's abort word too).
void testAbortAndDeadline() {
  for (int mode = 0; mode < 3; ++mode) {
    weftUniqueId id;
    WEFT_OK(weftGetUniqueId(&id));
    weftComm_t comms[2];
    weftConfig_t cfg = WEFT_CONFIG_INITIALIZER;
    cfg.timeoutMs = mode == 1 ? 300 : 0;
    std::vector<std::thread> init;
    for (int r = 0; r < 2; ++r)
      init.emplace_back([&, r] {
        CUDA_OK(cudaSetDevice(0));
        WEFT_OK(weftCommInitRankConfig(&comms[r], 2, id, r, &cfg));
      });
    for (auto& t : init) t.join();
    cudaStream_t s;
    CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    float* d;
    CUDA_OK(cudaMalloc(&d, 4096 * sizeof(float)));
    CHECK(weftAllReduce(d, d, 4096, weftFloat32, weftSum, comms[0], s) == weftSuccess, "launch: %s",
          weftGetLastError(comms[0]));
    std::this_thread::sleep_for(std::chrono::milliseconds(mode == 1 ? 50 : 500));
    if (mode == 2) {
      CHECK(cudaStreamQuery(s) == cudaErrorNotReady, "the kernel should still wait for rank 1 after 500 ms");
      const auto t0 = Clock::now();
      std::thread aborter([&] { WEFT_OK(weftCommAbort(comms[1])); });
      CUDA_OK(cudaStreamSynchronize(s));
      const double ms = msSince(t0);
      aborter.join();
      weftResult_t async = weftSuccess;
      WEFT_OK(weftCommGetAsyncError(comms[0], &async));
      const std::string why = weftGetLastError(comms[0]);
      CHECK(async == weftRemoteError, "async error %d, want weftRemoteError", static_cast<int>(async));
      CHECK(why.find("rank 1") != std::string::npos, "the error should name rank 1: %s", why.c_str());
      CHECK(ms < 2000, "the peer's abort ended the kernel after %.1f ms", ms);
      std::printf("peer abort: a kernel waiting on rank 1 ended %.2f ms after weftCommAbort(rank 1): %s\n", ms, why.c_str());
      WEFT_OK(weftCommDestroy(comms[0]));
    } else if (mode == 0) {
      CHECK(cudaStreamQuery(s) == cudaErrorNotReady, "the kernel should still wait for rank 1 after 500 ms");
      const auto t0 = Clock::now();
      std::thread aborter([&] { WEFT_OK(weftCommAbort(comms[0])); });
      aborter.join();
      CUDA_OK(cudaStreamSynchronize(s));
      const double ms = msSince(t0);
      CHECK(ms < 2000, "abort took %.1f ms", ms);
      std::printf("abort: a kernel waiting on a rank that never arrives ended %.2f ms after weftCommAbort\n", ms);
    } else {
      const auto t0 = Clock::now();
      CUDA_OK(cudaStreamSynchronize(s));
      const double ms = msSince(t0) + 50;
      weftResult_t async = weftSuccess;
      WEFT_OK(weftCommGetAsyncError(comms[0], &async));
      CHECK(async == weftTimeout, "async error %d, want weftTimeout", static_cast<int>(async));
      const std::string why = weftGetLastError(comms[0]);
      CHECK(why.find("rank 1") != std::string::npos, "the error should name rank 1: %s", why.c_str());
      CHECK(ms < 3000, "the deadline (300 ms) ended the kernel after %.1f ms", ms);
      const weftResult_t again = weftAllReduce(d, d, 4096, weftFloat32, weftSum, comms[0], s);
      CHECK(again == weftTimeout, "a call after the timeout gave %d", static_cast<int>(again));
      std::printf("deadline: kernel gave up after about %.0f ms (timeout 300 ms): %s\n", ms, why.c_str());
      WEFT_OK(weftCommDestroy(comms[0]));
    }
    if (mode != 2) WEFT_OK(weftCommDestroy(comms[1]));
    CUDA_OK(cudaFree(d));
    CUDA_OK(cudaStreamDestroy(s));
  }
}

}  // namespace

// Usage: weft-device-test [part...]; parts: results graph kinds abort streams (default: all).
int main(int argc, char** argv) {
  if (int skip = gpu::skipWithoutGpu("weft-device-test")) return skip;
  auto want = [&](const char* part) {
    if (argc < 2) return true;
    for (int i = 1; i < argc; ++i)
      if (std::strcmp(argv[i], part) == 0) return true;
    return false;
  };
  if (want("results")) {
    // Small staging so that the larger cases run several rounds.
    setenv("WEFT_CUDA_STAGE_BYTES", "65536", 1);
    testResults(2);
    testResults(3);
    unsetenv("WEFT_CUDA_STAGE_BYTES");
    testResults(2);
  }
  if (want("graph")) testGraphReplays();
  if (want("kinds")) testKindsAndNullStream();
  if (want("abort")) testAbortAndDeadline();
  if (want("streams")) testStreamsAndDestroy();
  if (gFailures.load() != 0) {
    std::printf("weft-device-test: %d FAILED checks\n", gFailures.load());
    return 1;
  }
  std::printf("weft-device-test: all checks passed\n");
  return 0;
}
