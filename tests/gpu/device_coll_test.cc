// Device-buffer collectives beyond the thread-rank all-reduce, through the public API, with ranks as
// threads of this process (GPU 0) or as processes (fork + exec of this binary; CUDA IPC; under MPS
// when device-check.sh started it): every collective (all-reduce one-shot and two-shot, all-gather,
// reduce-scatter, broadcast, reduce) against tests/support's reference, odd sizes, in place, several
// staging rounds; device collectives inside weftGroupStart/End; device send/recv (a ring in a group,
// ungrouped, to itself) and all-to-all in and out of place, and their refusals; registration (device
// buffers, a window, and stream-ordered-allocator memory CUDA IPC cannot export); a CUDA graph of
// several collectives, and one of a send/recv ring and an in-place all-to-all, each replayed 100
// times; and, as processes, a kernel waiting on a rank that was killed
// ending at its deadline. Prints "SKIP" and exits 77 without a GPU.
//
// Usage: weft-device-coll-test threads|procs [nranks] [part...]; parts: coll twoshot group register
// graph p2p kill (kill: procs only). Internal: --child RANK NRANKS IDHEX PARTS... (a process rank).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "support/reference.h"
#include "tests/gpu/gpu_util.h"

namespace {

std::atomic<int> gFailures{0};
std::mutex gPrintMu;

#define CHECK(cond, ...)                                                         \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::lock_guard<std::mutex> g_(gPrintMu);                                  \
      std::printf("FAIL %s:%d: rank %d: %s: ", __FILE__, __LINE__, rank, #cond); \
      std::printf(__VA_ARGS__);                                                  \
      std::printf("\n");                                                         \
      std::fflush(stdout);                                                       \
      gFailures++;                                                               \
    }                                                                            \
  } while (0)

using Bytes = std::vector<char>;
using weft::test::fillExpected;
using weft::test::fillInput;
using weft::test::firstMismatch;
using weft::test::typeBytes;
using weft::test::typeLabel;

// Every rank's view of the run.
struct Ctx {
  int rank, n;
  weftComm_t comm;
  cudaStream_t s;
  std::vector<std::string> parts;
  bool want(const char* p) const {
    for (auto& x : parts)
      if (x == p) return true;
    return false;
  }
};

// Device scratch allocated once per rank (cudaMalloc synchronises the device: with ranks as
// threads a peer's kernel may be waiting for this rank meanwhile).
struct Dev {
  char* a = nullptr;
  char* b = nullptr;
  size_t bytes = 0;
};

void toDev(const Ctx& c, char* d, const Bytes& h, size_t bytes) {
  CUDA_OK(cudaStreamSynchronize(c.s));  // (see fromDev)
  if (bytes) CUDA_OK(cudaMemcpyAsync(d, h.data(), bytes, cudaMemcpyHostToDevice, c.s));
}
// Copies between pageable host memory and the device go through the driver's staging buffer, which
// the process's threads share: a copy queued behind a kernel that waits for a peer thread's next
// launch holds it while that peer's own copy waits for it (a hang until the kernel's deadline, seen
// on an H200 with ranks as threads). So the stream is drained before every copy.
Bytes fromDev(const Ctx& c, const char* d, size_t bytes) {
  Bytes h(bytes + 1);
  CUDA_OK(cudaStreamSynchronize(c.s));
  if (bytes) CUDA_OK(cudaMemcpyAsync(h.data(), d, bytes, cudaMemcpyDeviceToHost, c.s));
  CUDA_OK(cudaStreamSynchronize(c.s));
  return h;
}

void expectSame(const Ctx& c, const std::string& what, weftResult_t r, const Bytes& got, const char* want,
                weftDataType_t t, size_t count) {
  const int rank = c.rank;
  CHECK(r == weftSuccess, "%s: %s", what.c_str(), weftGetLastError(c.comm));
  size_t nwrong = 0;
  const long long bad = firstMismatch(t, got.data(), want, count, &nwrong);
  CHECK(bad < 0, "%s: %zu wrong, first at %lld", what.c_str(), nwrong, bad);
}

// All five collectives on device buffers; one type per op class keeps it within a few minutes.
void testCollectives(const Ctx& c, const Dev& d, const char* tag) {
  const int n = c.n, me = c.rank;
  const size_t sizes[] = {1, 7, 1000, 4099, 70001, 300007};
  const weftDataType_t types[] = {weftFloat32, weftBfloat16, weftInt8, weftFloat64, weftFloat16, weftUint64};
  int cases = 0;
  for (weftDataType_t t : types)
    for (size_t count : sizes)
      for (int inPlace = 0; inPlace < 2; ++inPlace) {
        const size_t es = typeBytes(t), bytes = count * es, total = count * static_cast<size_t>(n);
        for (int oi = 0; oi < weftNumOps; ++oi) {
          const auto op = static_cast<weftRedOp_t>(oi);
          const std::string lab = std::string(tag) + " " + typeLabel(t) + " " + weft::test::opLabel(op) + " count " +
                                  std::to_string(count) + (inPlace ? " in place" : "");
          // All-reduce.
          {
            Bytes in(bytes + 1), want(bytes + 1);
            fillInput(t, op, me, n, in.data(), count);
            fillExpected(t, op, n, want.data(), count);
            toDev(c, d.a, in, bytes);
            char* recv = inPlace ? d.a : d.b;
            weftResult_t r = weftAllReduce(d.a, recv, count, t, op, c.comm, c.s);
            expectSame(c, "all-reduce " + lab, r, fromDev(c, recv, bytes), want.data(), t, count);
          }
          // Reduce-scatter.
          {
            Bytes in(total * es + 1), want(total * es + 1);
            fillInput(t, op, me, n, in.data(), total);
            fillExpected(t, op, n, want.data(), total);
            toDev(c, d.a, in, total * es);
            char* recv = inPlace ? d.a + static_cast<size_t>(me) * bytes : d.b;
            weftResult_t r = weftReduceScatter(d.a, recv, count, t, op, c.comm, c.s);
            expectSame(c, "reduce-scatter " + lab, r, fromDev(c, recv, bytes), want.data() + static_cast<size_t>(me) * bytes, t,
                       count);
          }
          // Reduce to the last rank.
          {
            const int root = n - 1;
            Bytes in(bytes + 1), want(bytes + 1);
            fillInput(t, op, me, n, in.data(), count);
            fillExpected(t, op, n, want.data(), count);
            toDev(c, d.a, in, bytes);
            char* recv = me == root ? (inPlace ? d.a : d.b) : nullptr;
            weftResult_t r = weftReduce(d.a, recv, count, t, op, root, c.comm, c.s);
            if (me == root) {
              expectSame(c, "reduce " + lab, r, fromDev(c, recv, bytes), want.data(), t, count);
            } else {
              const int rank = me;
              CHECK(r == weftSuccess, "reduce on a non-root %s: %s", lab.c_str(), weftGetLastError(c.comm));
              CUDA_OK(cudaStreamSynchronize(c.s));
            }
          }
          cases += 3;
        }
        const std::string lab = std::string(tag) + " " + typeLabel(t) + " count " + std::to_string(count) + (inPlace ? " in place" : "");
        // Broadcast from rank 0 and from the last rank.
        for (int root : {0, n - 1}) {
          Bytes want(bytes + 1);
          fillInput(t, weftSum, root, n, want.data(), count);
          Bytes in(bytes + 1);
          fillInput(t, weftSum, me, n, in.data(), count);
          toDev(c, d.a, in, bytes);
          weftResult_t r = inPlace ? weftBcast(d.a, count, t, root, c.comm, c.s)
                                   : weftBroadcast(me == root ? d.a : nullptr, d.b, count, t, root, c.comm, c.s);
          expectSame(c, "broadcast root " + std::to_string(root) + " " + lab, r, fromDev(c, inPlace ? d.a : d.b, bytes),
                     want.data(), t, count);
          cases++;
        }
        // All-gather.
        {
          Bytes in(bytes + 1), want(total * es + 1);
          fillInput(t, weftSum, me, n, in.data(), count);
          for (int p = 0; p < n; ++p) fillInput(t, weftSum, p, n, want.data() + static_cast<size_t>(p) * bytes, count);
          char* send = inPlace ? d.b + static_cast<size_t>(me) * bytes : d.a;
          toDev(c, send, in, bytes);
          weftResult_t r = weftAllGather(send, d.b, count, t, c.comm, c.s);
          expectSame(c, "all-gather " + lab, r, fromDev(c, d.b, total * es), want.data(), t, total);
          cases++;
        }
      }
  if (c.rank == 0) std::printf("%s: %d ranks, %d collective cases checked\n", tag, c.n, cases);
}

// Device collectives posted inside a group run in posting order on their streams; the group's
// device send and receive (a ring) run as one kernel at weftGroupEnd, after them on the stream.
void testGroup(const Ctx& c, const Dev& d) {
  const int rank = c.rank, n = c.n;
  const size_t count = 4099;
  Bytes in(count * 4 + 1), want(count * 4 + 1), wantRing(count * 4 + 1);
  fillInput(weftFloat32, weftSum, rank, n, in.data(), count);
  fillExpected(weftFloat32, weftSum, n, want.data(), count);
  fillInput(weftFloat32, weftSum, (rank + n - 1) % n, n, wantRing.data(), count);
  toDev(c, d.a, in, count * 4);
  char* ring = d.b + 65536;
  CHECK(weftGroupStart() == weftSuccess, "group start");
  weftResult_t r1 = weftAllReduce(d.a, d.b, count, weftFloat32, weftSum, c.comm, c.s);
  weftResult_t r2 = weftBroadcast(d.b, d.b, count, weftFloat32, 0, c.comm, c.s);  // the sum, from rank 0
  weftResult_t r3 = weftSend(d.a, count, weftFloat32, (rank + 1) % n, c.comm, c.s);
  weftResult_t r4 = weftRecv(ring, count, weftFloat32, (rank + n - 1) % n, c.comm, c.s);
  weftResult_t re = weftGroupEnd();
  CHECK(r1 == weftSuccess && r2 == weftSuccess && r3 == weftSuccess && r4 == weftSuccess && re == weftSuccess,
        "grouped device collectives and send/recv: %d %d %d %d %d: %s", static_cast<int>(r1), static_cast<int>(r2),
        static_cast<int>(r3), static_cast<int>(r4), static_cast<int>(re), weftGetLastError(c.comm));
  expectSame(c, "group all-reduce then broadcast", weftSuccess, fromDev(c, d.b, count * 4), want.data(), weftFloat32, count);
  expectSame(c, "group send/recv ring", weftSuccess, fromDev(c, ring, count * 4), wantRing.data(), weftFloat32, count);
  if (rank == 0) std::printf("group: all-reduce + broadcast + send/recv ring in one group checked\n");
}

// Send/recv (a ring in one group, a pair exchange, self) and all-to-all in and out of place, odd
// sizes, several staging rounds, against tests/support's inputs; the refusals (two streams in one
// group, host and device buffers mixed in one group).
void testP2p(const Ctx& c, const Dev& d) {
  const int rank = c.rank, n = c.n, next = (rank + 1) % n, prev = (rank + n - 1) % n;
  const size_t sizes[] = {1, 7, 1000, 4099, 70001, 300007};
  const weftDataType_t types[] = {weftFloat32, weftBfloat16, weftInt8, weftUint64};
  int cases = 0;
  for (weftDataType_t t : types)
    for (size_t count : sizes) {
      const size_t es = typeBytes(t), bytes = count * es;
      const std::string lab = std::string(typeLabel(t)) + " count " + std::to_string(count);
      // Ring: send to next, receive from prev, one group.
      {
        Bytes in(bytes + 1), want(bytes + 1);
        fillInput(t, weftSum, rank, n, in.data(), count);
        fillInput(t, weftSum, prev, n, want.data(), count);
        toDev(c, d.a, in, bytes);
        CHECK(weftGroupStart() == weftSuccess, "group start");
        weftResult_t r1 = weftSend(d.a, count, t, next, c.comm, c.s);
        weftResult_t r2 = weftRecv(d.b, count, t, prev, c.comm, c.s);
        weftResult_t r = weftGroupEnd();
        CHECK(r1 == weftSuccess && r2 == weftSuccess, "ring posts %s: %s", lab.c_str(), weftGetLastError(c.comm));
        expectSame(c, "ring " + lab, r, fromDev(c, d.b, bytes), want.data(), t, count);
        cases++;
      }
      // All-to-all out of place and in place (count per peer; smaller sizes keep n * count in the buffers).
      if (count <= 70001) {
        const size_t total = count * static_cast<size_t>(n);
        for (int inPlace = 0; inPlace < 2; ++inPlace) {
          Bytes in(total * es + 1), want(total * es + 1), other(total * es + 1);
          fillInput(t, weftSum, rank, n, in.data(), total);
          for (int p = 0; p < n; ++p) {
            fillInput(t, weftSum, p, n, other.data(), total);  // rank p's send buffer; block `rank` comes here
            std::memcpy(want.data() + static_cast<size_t>(p) * bytes, other.data() + static_cast<size_t>(rank) * bytes, bytes);
          }
          toDev(c, d.a, in, total * es);
          char* recv = inPlace ? d.a : d.b;
          weftResult_t r = weftAlltoAll(d.a, recv, count, t, c.comm, c.s);
          expectSame(c, std::string("all-to-all ") + (inPlace ? "in place " : "") + lab, r, fromDev(c, recv, total * es),
                     want.data(), t, total);
          cases++;
        }
      }
    }
  // Ungrouped: rank 0 sends to the last rank, which receives (two launches, matched by order);
  // a send to itself with its receive in one group.
  {
    const size_t count = 123457;
    Bytes in(count * 2 + 1), want(count * 2 + 1);
    fillInput(weftFloat16, weftSum, 0, n, want.data(), count);
    if (rank == 0) {
      toDev(c, d.a, want, count * 2);
      CHECK(weftSend(d.a, count, weftFloat16, n - 1, c.comm, c.s) == weftSuccess, "send: %s", weftGetLastError(c.comm));
    } else if (rank == n - 1) {
      weftResult_t r = weftRecv(d.b, count, weftFloat16, 0, c.comm, c.s);
      expectSame(c, "ungrouped send/recv", r, fromDev(c, d.b, count * 2), want.data(), weftFloat16, count);
    }
    fillInput(weftFloat16, weftSum, rank, n, in.data(), count);
    toDev(c, d.a, in, count * 2);
    CHECK(weftGroupStart() == weftSuccess, "group start");
    weftSend(d.a, count, weftFloat16, rank, c.comm, c.s);
    weftRecv(d.b, count, weftFloat16, rank, c.comm, c.s);
    weftResult_t r = weftGroupEnd();
    expectSame(c, "send/recv to itself", r, fromDev(c, d.b, count * 2), in.data(), weftFloat16, count);
    cases += 2;
  }
  // A group on one rank, separate calls on the other, several staging rounds each way (the default
  // WEFT_CUDA_P2P_BYTES is 512 KiB): the group's send and receive progress independently, so
  // rank 1 may receive before it sends, or send before it receives.
  if (rank <= 1) {
    const size_t c0 = 500000, c1 = 300007;  // rank 0 -> 1: float32 (4 rounds); 1 -> 0: uint64 (5 rounds)
    Bytes from0(c0 * 4 + 1), from1(c1 * 8 + 1);
    fillInput(weftFloat32, weftSum, 0, n, from0.data(), c0);
    fillInput(weftUint64, weftSum, 1, n, from1.data(), c1);
    for (int order = 0; order < 2; ++order) {
      const std::string lab = std::string("group {send, recv} vs ") + (order == 0 ? "recv then send" : "send then recv");
      if (rank == 0) {
        toDev(c, d.a, from0, c0 * 4);
        CHECK(weftGroupStart() == weftSuccess, "group start");
        weftSend(d.a, c0, weftFloat32, 1, c.comm, c.s);
        weftRecv(d.b, c1, weftUint64, 1, c.comm, c.s);
        weftResult_t r = weftGroupEnd();
        expectSame(c, lab, r, fromDev(c, d.b, c1 * 8), from1.data(), weftUint64, c1);
      } else {
        toDev(c, d.a, from1, c1 * 8);
        weftResult_t r1, r2;
        if (order == 0) {
          r1 = weftRecv(d.b, c0, weftFloat32, 0, c.comm, c.s);
          r2 = weftSend(d.a, c1, weftUint64, 0, c.comm, c.s);
        } else {
          r2 = weftSend(d.a, c1, weftUint64, 0, c.comm, c.s);
          r1 = weftRecv(d.b, c0, weftFloat32, 0, c.comm, c.s);
        }
        expectSame(c, lab, r1 != weftSuccess ? r1 : r2, fromDev(c, d.b, c0 * 4), from0.data(), weftFloat32, c0);
      }
      cases++;
    }
  }
  // {all-to-all, all-reduce} in one group on even ranks, the same two calls ungrouped on odd ranks:
  // the group keeps the all-reduce behind the all-to-all (posting order), as the odd ranks run them.
  {
    const size_t count = 70001, total = count * static_cast<size_t>(n);
    Bytes in(total * 4 + 1), want(total * 4 + 1), other(total * 4 + 1), arIn(count * 4 + 1), arWant(count * 4 + 1);
    fillInput(weftInt32, weftSum, rank, n, in.data(), total);
    for (int p = 0; p < n; ++p) {
      fillInput(weftInt32, weftSum, p, n, other.data(), total);
      std::memcpy(want.data() + static_cast<size_t>(p) * count * 4, other.data() + static_cast<size_t>(rank) * count * 4, count * 4);
    }
    fillInput(weftInt32, weftSum, rank, n, arIn.data(), count);
    fillExpected(weftInt32, weftSum, n, arWant.data(), count);
    toDev(c, d.a, in, total * 4);
    char* ar = d.a + total * 4 + 256 - (total * 4) % 256;  // after the all-to-all's input (d.a is 300007 * 8 * n)
    toDev(c, ar, arIn, count * 4);
    weftResult_t r1, r2, r = weftSuccess;
    if (rank % 2 == 0) {
      CHECK(weftGroupStart() == weftSuccess, "group start");
      r1 = weftAlltoAll(d.a, d.b, count, weftInt32, c.comm, c.s);
      r2 = weftAllReduce(ar, ar, count, weftInt32, weftSum, c.comm, c.s);
      r = weftGroupEnd();
    } else {
      r1 = weftAlltoAll(d.a, d.b, count, weftInt32, c.comm, c.s);
      r2 = weftAllReduce(ar, ar, count, weftInt32, weftSum, c.comm, c.s);
    }
    const weftResult_t rr = r1 != weftSuccess ? r1 : r2 != weftSuccess ? r2 : r;
    expectSame(c, "group {all-to-all, all-reduce} vs ungrouped: all-to-all", rr, fromDev(c, d.b, total * 4), want.data(), weftInt32, total);
    expectSame(c, "group {all-to-all, all-reduce} vs ungrouped: all-reduce", rr, fromDev(c, ar, count * 4), arWant.data(), weftInt32, count);
    cases += 2;
  }
  // Refusals, on every rank alike (nothing is launched): two streams in one group; host and device
  // buffers of one communicator in one group.
  {
    cudaStream_t s2;
    CUDA_OK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
    CHECK(weftGroupStart() == weftSuccess, "group start");
    weftSend(d.a, 16, weftFloat32, next, c.comm, c.s);
    weftRecv(d.b, 16, weftFloat32, prev, c.comm, s2);
    weftResult_t r = weftGroupEnd();
    CHECK(r == weftInvalidUsage && std::string(weftGetLastError(c.comm)).find("one stream") != std::string::npos,
          "two streams in one group gave %d: %s", static_cast<int>(r), weftGetLastError(c.comm));
    CUDA_OK(cudaStreamDestroy(s2));
    std::vector<float> hs(16, 1.0f), hr(16, 0.0f);
    CHECK(weftGroupStart() == weftSuccess, "group start");
    weftSend(d.a, 16, weftFloat32, next, c.comm, c.s);
    weftRecv(hr.data(), 16, weftFloat32, prev, c.comm, c.s);
    r = weftGroupEnd();
    CHECK(r == weftInvalidUsage && std::string(weftGetLastError(c.comm)).find("mixes") != std::string::npos,
          "host and device buffers in one group gave %d: %s", static_cast<int>(r), weftGetLastError(c.comm));
    weftResult_t async = weftSuccess;
    WEFT_OK(weftCommGetAsyncError(c.comm, &async));
    CHECK(async == weftSuccess, "a refused group must leave no error behind: %s", weftGetLastError(c.comm));
  }
  if (rank == 0) std::printf("p2p: %d ranks, %d send/recv and all-to-all cases checked, refusals checked\n", n, cases);
}

// Registration: device buffers (local), a window (collective), stream-ordered-allocator memory
// (not legacy-IPC exportable: staged) giving correct results.
void testRegister(const Ctx& c, const Dev& d) {
  const int rank = c.rank, n = c.n;
  void* h = nullptr;
  CHECK(weftCommRegister(c.comm, d.a, 1 << 20, &h) == weftSuccess && h != nullptr, "register device: %s", weftGetLastError(c.comm));
  void* h2 = nullptr;
  CHECK(weftCommRegister(c.comm, d.a, d.bytes * 4, &h2) == weftInvalidArgument, "a range past the allocation must be refused");
  weftWindow_t w = nullptr;
  CHECK(weftCommWindowRegister(c.comm, d.b, d.bytes * 4, &w, WEFT_WIN_DEFAULT) == weftInvalidArgument && w == nullptr,
        "a window past its allocation must be refused (before any exchange)");
  CHECK(weftCommWindowRegister(c.comm, d.b, 1 << 20, &w, WEFT_WIN_DEFAULT) == weftSuccess && w != nullptr, "window: %s",
        weftGetLastError(c.comm));
  char* pool = nullptr;
  CUDA_OK(cudaMallocAsync(reinterpret_cast<void**>(&pool), 1 << 20, c.s));
  CUDA_OK(cudaStreamSynchronize(c.s));
  void* hp = nullptr;
  CHECK(weftCommRegister(c.comm, pool, 1 << 20, &hp) == weftSuccess, "register stream-ordered memory: %s", weftGetLastError(c.comm));
  const size_t count = 70001;
  Bytes in(count * 2 + 1), want(count * 2 + 1);
  fillInput(weftBfloat16, weftSum, rank, n, in.data(), count);
  fillExpected(weftBfloat16, weftSum, n, want.data(), count);
  toDev(c, pool, in, count * 2);
  weftResult_t r = weftAllReduce(pool, d.b, count, weftBfloat16, weftSum, c.comm, c.s);
  expectSame(c, "all-reduce from stream-ordered memory into a window", r, fromDev(c, d.b, count * 2), want.data(), weftBfloat16, count);
  CHECK(weftCommDeregister(c.comm, hp) == weftSuccess, "deregister");
  CHECK(weftCommWindowDeregister(c.comm, w) == weftSuccess, "window deregister");
  CHECK(weftCommDeregister(c.comm, h) == weftSuccess, "deregister");
  CUDA_OK(cudaFreeAsync(pool, c.s));
  CUDA_OK(cudaStreamSynchronize(c.s));
  if (rank == 0) std::printf("register: device, window, stream-ordered memory checked\n");
}

// All-gather + reduce-scatter + two-shot all-reduce captured in one graph, replayed 100 times.
void testGraph(const Ctx& c, const Dev& d) {
  const int rank = c.rank, n = c.n;
  const size_t count = 8192;
  // Integers: every order exact.
  CHECK(weftBarrier(c.comm, nullptr) == weftSuccess, "barrier");  // nobody allocates while another captures
  cudaGraph_t graph;
  CUDA_OK(cudaStreamBeginCapture(c.s, cudaStreamCaptureModeGlobal));
  weftResult_t r1 = weftAllGather(d.a, d.b, count, weftInt32, c.comm, c.s);
  weftResult_t r2 = weftReduceScatter(d.b, d.a + count * 4, count, weftInt32, weftSum, c.comm, c.s);
  weftResult_t r3 = weftAllReduce(d.a, d.a, 4 * count, weftInt32, weftSum, c.comm, c.s);  // two-shot when forced
  CUDA_OK(cudaStreamEndCapture(c.s, &graph));
  CHECK(r1 == weftSuccess && r2 == weftSuccess && r3 == weftSuccess, "capture: %s", weftGetLastError(c.comm));
  // Every rank has ended its capture before any instantiates (instantiating while another thread
  // of the process captures in global mode invalidates that capture).
  CHECK(weftBarrier(c.comm, nullptr) == weftSuccess, "barrier");
  cudaGraphExec_t exec;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  CHECK(weftBarrier(c.comm, nullptr) == weftSuccess, "barrier");
  std::vector<int32_t> in(4 * count, 0), got(4 * count);
  int badReplays = 0;
  for (int it = 0; it < 100; ++it) {
    for (size_t i = 0; i < count; ++i) in[i] = rank * 1000 + it + static_cast<int32_t>(i % 13);
    for (size_t i = count; i < 4 * count; ++i) in[i] = 0;
    CUDA_OK(cudaMemcpyAsync(d.a, in.data(), in.size() * 4, cudaMemcpyHostToDevice, c.s));
    CUDA_OK(cudaGraphLaunch(exec, c.s));
    CUDA_OK(cudaStreamSynchronize(c.s));  // no pageable copy queued behind a waiting kernel (fromDev)
    CUDA_OK(cudaMemcpyAsync(got.data(), d.a, got.size() * 4, cudaMemcpyDeviceToHost, c.s));
    CUDA_OK(cudaStreamSynchronize(c.s));
    // After all-gather, b = [in_0 .. in_{n-1}] (count each); reduce-scatter gives rank r the sum
    // over ranks of block r = n * in_r; the all-reduce then sums a = [in_r, n*in_r, 0, 0] over ranks.
    bool bad = false;
    for (size_t i = 0; i < count && !bad; ++i) {
      int64_t s0 = 0, s1 = 0;
      for (int p = 0; p < n; ++p) {
        const int64_t v = p * 1000 + it + static_cast<int64_t>(i % 13);
        s0 += v;
        s1 += static_cast<int64_t>(n) * v;
      }
      bad = got[i] != s0 || got[count + i] != s1 || got[2 * count + i] != 0;
    }
    badReplays += bad;
    weftResult_t async = weftSuccess;
    WEFT_OK(weftCommGetAsyncError(c.comm, &async));
    CHECK(async == weftSuccess, "replay %d: async %d: %s", it, static_cast<int>(async), weftGetLastError(c.comm));
    if (async != weftSuccess) break;
  }
  CHECK(badReplays == 0, "%d of 100 replays wrong", badReplays);
  CHECK(weftBarrier(c.comm, nullptr) == weftSuccess, "barrier");
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
  if (rank == 0) std::printf("graph: 100 replays of all-gather + reduce-scatter + all-reduce checked\n");
}

// A ring send/recv group and an in-place all-to-all captured in one graph, replayed 100 times.
void testGraphP2p(const Ctx& c, const Dev& d) {
  const int rank = c.rank, n = c.n, next = (rank + 1) % n, prev = (rank + n - 1) % n;
  const size_t count = 300007;  // 1.2 MB: three rounds of WEFT_CUDA_P2P_BYTES (512 KiB)
  const size_t per = 4099;     // all-to-all elements per peer
  char* a2a = d.b + count * 4 + 4096;
  CHECK(weftBarrier(c.comm, nullptr) == weftSuccess, "barrier");
  cudaGraph_t graph;
  CUDA_OK(cudaStreamBeginCapture(c.s, cudaStreamCaptureModeGlobal));
  CHECK(weftGroupStart() == weftSuccess, "group start");
  weftResult_t r1 = weftSend(d.a, count, weftInt32, next, c.comm, c.s);
  weftResult_t r2 = weftRecv(d.b, count, weftInt32, prev, c.comm, c.s);
  weftResult_t r3 = weftGroupEnd();
  weftResult_t r4 = weftAlltoAll(a2a, a2a, per, weftInt32, c.comm, c.s);
  CUDA_OK(cudaStreamEndCapture(c.s, &graph));
  CHECK(r1 == weftSuccess && r2 == weftSuccess && r3 == weftSuccess && r4 == weftSuccess, "capture: %s", weftGetLastError(c.comm));
  CHECK(weftBarrier(c.comm, nullptr) == weftSuccess, "barrier");
  cudaGraphExec_t exec;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  CHECK(weftBarrier(c.comm, nullptr) == weftSuccess, "barrier");
  std::vector<int32_t> in(count), got(count), ain(per * static_cast<size_t>(n)), agot(per * static_cast<size_t>(n));
  int badReplays = 0;
  for (int it = 0; it < 100; ++it) {
    for (size_t i = 0; i < count; ++i) in[i] = rank * 100000 + it * 7 + static_cast<int32_t>(i % 1009);
    for (size_t i = 0; i < ain.size(); ++i) ain[i] = rank * 1000000 + it * 1000 + static_cast<int32_t>(i);
    CUDA_OK(cudaMemcpyAsync(d.a, in.data(), count * 4, cudaMemcpyHostToDevice, c.s));
    CUDA_OK(cudaMemcpyAsync(a2a, ain.data(), ain.size() * 4, cudaMemcpyHostToDevice, c.s));
    CUDA_OK(cudaGraphLaunch(exec, c.s));
    CUDA_OK(cudaStreamSynchronize(c.s));  // (see fromDev)
    CUDA_OK(cudaMemcpyAsync(got.data(), d.b, count * 4, cudaMemcpyDeviceToHost, c.s));
    CUDA_OK(cudaMemcpyAsync(agot.data(), a2a, agot.size() * 4, cudaMemcpyDeviceToHost, c.s));
    CUDA_OK(cudaStreamSynchronize(c.s));
    bool bad = false;
    for (size_t i = 0; i < count && !bad; ++i) bad = got[i] != prev * 100000 + it * 7 + static_cast<int32_t>(i % 1009);
    // Block p of the result is block `rank` of rank p's input.
    for (int p = 0; p < n && !bad; ++p)
      for (size_t i = 0; i < per && !bad; ++i)
        bad = agot[static_cast<size_t>(p) * per + i] != p * 1000000 + it * 1000 + static_cast<int32_t>(static_cast<size_t>(rank) * per + i);
    badReplays += bad;
    weftResult_t async = weftSuccess;
    WEFT_OK(weftCommGetAsyncError(c.comm, &async));
    CHECK(async == weftSuccess, "replay %d: async %d: %s", it, static_cast<int>(async), weftGetLastError(c.comm));
    if (async != weftSuccess) break;
  }
  CHECK(badReplays == 0, "%d of 100 p2p replays wrong", badReplays);
  CHECK(weftBarrier(c.comm, nullptr) == weftSuccess, "barrier");
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
  if (rank == 0) std::printf("graph p2p: 100 replays of a send/recv ring + all-to-all in place checked\n");
}

void runBody(const Ctx& c) {
  Dev d;
  d.bytes = 300007 * 8 * static_cast<size_t>(c.n) + 256;
  CUDA_OK(cudaMalloc(&d.a, d.bytes));
  CUDA_OK(cudaMalloc(&d.b, d.bytes));
  if (weftBarrier(c.comm, nullptr) != weftSuccess) std::printf("barrier failed: %s\n", weftGetLastError(c.comm));
  if (c.want("coll")) testCollectives(c, d, "collectives");
  if (c.want("group")) testGroup(c, d);
  if (c.want("register")) testRegister(c, d);
  if (c.want("graph")) testGraph(c, d);
  if (c.want("p2p")) testP2p(c, d);
  if (c.want("graph")) testGraphP2p(c, d);
  CUDA_OK(cudaStreamSynchronize(c.s));
  if (weftBarrier(c.comm, nullptr) != weftSuccess) std::printf("barrier failed: %s\n", weftGetLastError(c.comm));
  CUDA_OK(cudaFree(d.a));
  CUDA_OK(cudaFree(d.b));
}

std::string hexOf(const weftUniqueId& id) {
  static const char* k = "0123456789abcdef";
  std::string s;
  for (char ch : id.internal) {
    s += k[(static_cast<unsigned char>(ch) >> 4) & 15];
    s += k[static_cast<unsigned char>(ch) & 15];
  }
  return s;
}
weftUniqueId idOf(const std::string& hex) {
  weftUniqueId id;
  for (size_t i = 0; i < sizeof id.internal; ++i) id.internal[i] = static_cast<char>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return id;
}

// One process rank. The "kill" part: rank 1 is killed 500 ms after init; rank 0's kernel must end at its
// deadline and name rank 1.
int childMain(int rank, int n, const std::string& idHex, const std::vector<std::string>& parts, const char* tag) {
  CUDA_OK(cudaSetDevice(0));
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  weftConfig_t cfg = WEFT_CONFIG_INITIALIZER;
  const bool kill = std::find(parts.begin(), parts.end(), "kill") != parts.end();
  if (kill) cfg.timeoutMs = 1500;
  weftComm_t comm;
  WEFT_OK(weftCommInitRankConfig(&comm, n, idOf(idHex), rank, &cfg));
  int mps = 0;
  CUDA_OK(cudaDeviceGetAttribute(&mps, cudaDevAttrMpsEnabled, 0));
  if (!mps) {
    // Processes on one GPU without MPS: the device path is refused, naming MPS (device-check.sh
    // starts MPS; plain ctest may not have it).
    float* dv;
    CUDA_OK(cudaMalloc(&dv, 64 * 4));
    const weftResult_t r = weftAllReduce(dv, dv, 64, weftFloat32, weftSum, comm, s);
    const std::string why = weftGetLastError(comm);
    CHECK(r == weftInvalidUsage && why.find("MPS") != std::string::npos,
          "without MPS a device call must be refused naming MPS, gave %d: %s", static_cast<int>(r), why.c_str());
    CUDA_OK(cudaFree(dv));
    WEFT_OK(weftCommDestroy(comm));
    CUDA_OK(cudaStreamDestroy(s));
    if (rank == 0) std::printf("SKIP %s: MPS is not running; the device path was refused as it must be (%s)\n", tag, why.c_str());
    return gFailures.load() != 0 ? 1 : 77;
  }
  Ctx c{rank, n, comm, s, parts};
  if (kill) {
    if (rank == 1) {
      // Dies while rank 0's kernel waits for it.
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      raise(SIGKILL);
    }
    float* dv;
    CUDA_OK(cudaMalloc(&dv, 4096 * 4));
    const auto t0 = std::chrono::steady_clock::now();
    weftResult_t r = weftAllReduce(dv, dv, 4096, weftFloat32, weftSum, comm, s);
    cudaError_t e = cudaStreamSynchronize(s);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    weftResult_t async = weftSuccess;
    weftCommGetAsyncError(comm, &async);
    const std::string why = weftGetLastError(comm);
    std::printf("kill: rank 0's call gave %d, stream %s after %.0f ms, async %d: %s\n", static_cast<int>(r),
                cudaGetErrorString(e), ms, static_cast<int>(async), why.c_str());
    CHECK(e == cudaSuccess, "the stream must complete (the kernel gives up)");
    CHECK(r != weftSuccess || async != weftSuccess, "a dead peer must show as an error");
    CHECK(ms < 10000, "the kernel waited %.0f ms on a dead rank (deadline 1500 ms)", ms);
    weftCommAbort(comm);
  } else {
    runBody(c);
    WEFT_OK(weftCommDestroy(comm));
  }
  CUDA_OK(cudaStreamDestroy(s));
  if (gFailures.load() != 0) {
    std::printf("%s rank %d: %d FAILED checks\n", tag, rank, gFailures.load());
    return 1;
  }
  return 0;
}

int runProcs(const char* self, int n, const std::vector<std::string>& parts) {
  weftUniqueId id;
  WEFT_OK(weftGetUniqueId(&id));  // host only: the parent never touches CUDA before forking
  const std::string hex = hexOf(id);
  std::vector<pid_t> pids;
  for (int r = 0; r < n; ++r) {
    pid_t p = fork();
    if (p == 0) {
      std::vector<std::string> args = {self, "--child", std::to_string(r), std::to_string(n), hex};
      args.insert(args.end(), parts.begin(), parts.end());
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(self, argv.data());
      _exit(127);
    }
    pids.push_back(p);
  }
  int failed = 0, skipped = 0;
  const bool kill = std::find(parts.begin(), parts.end(), "kill") != parts.end();
  for (int r = 0; r < n; ++r) {
    int st = 0;
    waitpid(pids[static_cast<size_t>(r)], &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {  // refused without MPS, as it must be
      skipped++;
      continue;
    }
    const bool expectedDeath = kill && r == 1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
    if (!expectedDeath && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
      std::printf("FAIL process rank %d: %s %d\n", r, WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
      failed++;
    }
  }
  if (skipped != 0 && skipped != n) {
    std::printf("FAIL %d of %d process ranks saw no MPS\n", skipped, n);
    failed++;
  }
  return failed == 0 && skipped == n ? -1 : failed;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "--child" && args.size() >= 4) {
    std::vector<std::string> parts(args.begin() + 4, args.end());
    return childMain(std::stoi(args[1]), std::stoi(args[2]), args[3], parts, "weft-device-coll-test");
  }
  const std::string mode = args.empty() ? "threads" : args[0];
  const int n = args.size() > 1 ? std::stoi(args[1]) : 2;
  std::vector<std::string> parts(args.size() > 2 ? args.begin() + 2 : args.end(), args.end());
  if (parts.empty()) parts = {"coll", "group", "register", "graph", "p2p"};
  if (mode == "procs") {
    // The parent must not initialise CUDA (children are exec'd); probe in a child process.
    pid_t p = fork();
    if (p == 0) {
      const int rc = gpu::skipWithoutGpu("weft-device-coll-test") == 77 ? 77 : 0;
      std::fflush(stdout);
      _exit(rc);
    }
    int st = 0;
    waitpid(p, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77) return 77;
    const int failed = runProcs(argv[0], n, parts);
    if (failed < 0) return 77;  // no MPS: the refusal was checked, the collectives not run
    std::printf("weft-device-coll-test procs %d: %s\n", n, failed ? "FAILED" : "all checks passed");
    return failed ? 1 : 0;
  }
  if (int skip = gpu::skipWithoutGpu("weft-device-coll-test")) return skip;
  gpu::runRanks(n, [&](int rank, weftComm_t comm, cudaStream_t s, gpu::ThreadBarrier&) {
    Ctx c{rank, n, comm, s, parts};
    runBody(c);
  });
  std::printf("weft-device-coll-test threads %d: %s\n", n, gFailures.load() ? "FAILED" : "all checks passed");
  return gFailures.load() ? 1 : 0;
}
