// weft-bench --device: the CUDA runtime calls of weft_bench_cuda.h. Compiled with WEFT_BENCH_CUDA=1
// (and linked with CUDA::cudart_static) when CMake found CUDA; otherwise every call says "built
// without CUDA". (WEFT_BENCH_HOSTSIM=1: the test-only host stand-in below.)
#include "weft_bench_cuda.h"

#if WEFT_BENCH_CUDA
#include <cuda_runtime.h>
#elif WEFT_BENCH_HOSTSIM
#include <chrono>
#include <cstdlib>
#include <cstring>
#endif

namespace weftbench::dev {

#if WEFT_BENCH_CUDA

namespace {

cudaStream_t raw(weftStream_t s) { return reinterpret_cast<cudaStream_t>(s); }

std::string fail(const std::string& call, cudaError_t e) {
  cudaGetLastError();  // clear a non-sticky error so that the next call does not report it again
  std::string msg = call + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
  if (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice)
    msg += "; is an NVIDIA GPU and its driver (libcuda.so.1) present and visible (CUDA_VISIBLE_DEVICES)?";
  return msg;
}

#define WB_CUDA(call, what)                              \
  do {                                                   \
    const cudaError_t wbErr_ = (call);                   \
    if (wbErr_ != cudaSuccess) return fail(what, wbErr_); \
  } while (0)

}  // namespace

bool built() { return true; }

std::string deviceCount(int* count) {
  *count = 0;
  WB_CUDA(cudaGetDeviceCount(count), "cudaGetDeviceCount");
  if (*count <= 0) return "cudaGetDeviceCount: no CUDA device";
  return "";
}

std::string setDevice(int device) {
  WB_CUDA(cudaSetDevice(device), "cudaSetDevice(" + std::to_string(device) + ")");
  // Create the context now (the library takes the thread's current device at init).
  WB_CUDA(cudaFree(nullptr), "cudaFree(nullptr) (context creation on device " + std::to_string(device) + ")");
  return "";
}

std::string describe(int device) {
  char bus[32] = "?";
  if (cudaDeviceGetPCIBusId(bus, sizeof bus, device) != cudaSuccess) cudaGetLastError();
  cudaDeviceProp p{};
  std::string name = "?";
  if (cudaGetDeviceProperties(&p, device) == cudaSuccess) {
    name = p.name;
  } else {
    cudaGetLastError();
  }
  for (char& c : bus) c = static_cast<char>(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
  return "device " + std::to_string(device) + " [" + bus + "] " + name;
}

std::string alloc(void** p, size_t bytes) {
  *p = nullptr;
  const size_t n = bytes ? bytes : 1;
  WB_CUDA(cudaMalloc(p, n), "cudaMalloc(" + std::to_string(n) + " bytes)");
  WB_CUDA(cudaMemset(*p, 0, n), "cudaMemset");
  return "";
}

std::string release(void* p) {
  if (p) WB_CUDA(cudaFree(p), "cudaFree");
  return "";
}

std::string streamCreate(weftStream_t* s) {
  cudaStream_t r = nullptr;
  WB_CUDA(cudaStreamCreateWithFlags(&r, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  *s = reinterpret_cast<weftStream_t>(r);
  return "";
}

std::string streamSync(weftStream_t s) {
  WB_CUDA(cudaStreamSynchronize(raw(s)), "cudaStreamSynchronize");
  return "";
}

std::string streamDestroy(weftStream_t s) {
  WB_CUDA(cudaStreamDestroy(raw(s)), "cudaStreamDestroy");
  return "";
}

std::string toDevice(void* dst, const void* src, size_t bytes, weftStream_t s) {
  if (bytes == 0) return "";
  // Drained first: copies from or to pageable memory share the driver's staging buffer among the
  // process's threads, and one queued behind a kernel that waits for a peer thread's next launch
  // would hold it while that peer's copy waits (a hang until the kernel's deadline).
  WB_CUDA(cudaStreamSynchronize(raw(s)), "cudaStreamSynchronize (before a copy to the device)");
  WB_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, raw(s)), "cudaMemcpyAsync (to the device)");
  WB_CUDA(cudaStreamSynchronize(raw(s)), "cudaStreamSynchronize (after a copy to the device)");
  return "";
}

std::string toHost(void* dst, const void* src, size_t bytes, weftStream_t s) {
  if (bytes == 0) return "";
  WB_CUDA(cudaStreamSynchronize(raw(s)), "cudaStreamSynchronize (before a copy to the host)");  // (see toDevice)
  WB_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, raw(s)), "cudaMemcpyAsync (to the host)");
  WB_CUDA(cudaStreamSynchronize(raw(s)), "cudaStreamSynchronize (after a copy to the host)");
  return "";
}

std::string eventCreate(Event* e) {
  cudaEvent_t r = nullptr;
  WB_CUDA(cudaEventCreate(&r), "cudaEventCreate");
  *e = reinterpret_cast<Event>(r);
  return "";
}

std::string eventRecord(Event e, weftStream_t s) {
  WB_CUDA(cudaEventRecord(reinterpret_cast<cudaEvent_t>(e), raw(s)), "cudaEventRecord");
  return "";
}

std::string elapsedMs(Event a, Event b, float* ms) {
  WB_CUDA(cudaEventSynchronize(reinterpret_cast<cudaEvent_t>(b)), "cudaEventSynchronize");
  WB_CUDA(cudaEventElapsedTime(ms, reinterpret_cast<cudaEvent_t>(a), reinterpret_cast<cudaEvent_t>(b)),
          "cudaEventElapsedTime");
  return "";
}

std::string eventDestroy(Event e) {
  WB_CUDA(cudaEventDestroy(reinterpret_cast<cudaEvent_t>(e)), "cudaEventDestroy");
  return "";
}

std::string captureBegin(weftStream_t s) {
  WB_CUDA(cudaStreamBeginCapture(raw(s), cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture");
  return "";
}

std::string captureEnd(weftStream_t s, Captured* c) {
  cudaGraph_t g = nullptr;
  WB_CUDA(cudaStreamEndCapture(raw(s), &g), "cudaStreamEndCapture");
  *c = reinterpret_cast<Captured>(g);
  return "";
}

std::string instantiate(Captured c, Graph* g) {
  cudaGraphExec_t e = nullptr;
  const cudaError_t err = cudaGraphInstantiate(&e, reinterpret_cast<cudaGraph_t>(c), 0);
  cudaGraphDestroy(reinterpret_cast<cudaGraph_t>(c));
  if (err != cudaSuccess) return fail("cudaGraphInstantiate", err);
  *g = reinterpret_cast<Graph>(e);
  return "";
}

std::string graphUpload(Graph g, weftStream_t s) {
  WB_CUDA(cudaGraphUpload(reinterpret_cast<cudaGraphExec_t>(g), raw(s)), "cudaGraphUpload");
  return "";
}

std::string graphLaunch(Graph g, weftStream_t s) {
  WB_CUDA(cudaGraphLaunch(reinterpret_cast<cudaGraphExec_t>(g), raw(s)), "cudaGraphLaunch");
  return "";
}

std::string graphDestroy(Graph g) {
  if (g) WB_CUDA(cudaGraphExecDestroy(reinterpret_cast<cudaGraphExec_t>(g)), "cudaGraphExecDestroy");
  return "";
}

#elif WEFT_BENCH_HOSTSIM

// A test-only stand-in (weft-bench-hostsim, tests/bench): host memory plays the GPU's so that the
// --device bookkeeping of weft_bench.cc runs where no GPU is (GPU choice over 2 pretend GPUs, the
// copies of the check, event timing, the thread ranks' barriers around capture and destruction).
// The library sees host memory, so its calls run synchronously and nothing of CUDA or of the
// library's device path is exercised. A "capture" lets the calls run at once and a "graph launch"
// does nothing: run it with -G only with -c 0 (its checked replays would do nothing).

namespace {
struct SimEvent {
  std::chrono::steady_clock::time_point at;
};
}  // namespace

bool built() { return true; }
std::string deviceCount(int* count) { *count = 2; return ""; }
std::string setDevice(int) { return ""; }
std::string describe(int device) {
  return "device " + std::to_string(device) + " [sim] host memory standing in for a GPU (weft-bench-hostsim)";
}
std::string alloc(void** p, size_t bytes) {
  const size_t n = (bytes + 4095) / 4096 * 4096 + 4096;
  *p = std::aligned_alloc(4096, n);
  if (!*p) return "aligned_alloc failed";
  std::memset(*p, 0, n);
  return "";
}
std::string release(void* p) { std::free(p); return ""; }
std::string streamCreate(weftStream_t* s) { *s = reinterpret_cast<weftStream_t>(new char); return ""; }
std::string streamSync(weftStream_t) { return ""; }
std::string streamDestroy(weftStream_t s) { delete reinterpret_cast<char*>(s); return ""; }
std::string toDevice(void* dst, const void* src, size_t bytes, weftStream_t) { std::memcpy(dst, src, bytes); return ""; }
std::string toHost(void* dst, const void* src, size_t bytes, weftStream_t) { std::memcpy(dst, src, bytes); return ""; }
std::string eventCreate(Event* e) { *e = reinterpret_cast<Event>(new SimEvent); return ""; }
std::string eventRecord(Event e, weftStream_t) {
  reinterpret_cast<SimEvent*>(e)->at = std::chrono::steady_clock::now();
  return "";
}
std::string elapsedMs(Event a, Event b, float* ms) {
  *ms = std::chrono::duration<float, std::milli>(reinterpret_cast<SimEvent*>(b)->at - reinterpret_cast<SimEvent*>(a)->at).count();
  return "";
}
std::string eventDestroy(Event e) { delete reinterpret_cast<SimEvent*>(e); return ""; }
std::string captureBegin(weftStream_t) { return ""; }
std::string captureEnd(weftStream_t, Captured* c) { *c = reinterpret_cast<Captured>(new char); return ""; }
std::string instantiate(Captured c, Graph* g) { *g = reinterpret_cast<Graph>(c); return ""; }
std::string graphUpload(Graph, weftStream_t) { return ""; }
std::string graphLaunch(Graph, weftStream_t) { return ""; }
std::string graphDestroy(Graph g) { delete reinterpret_cast<char*>(g); return ""; }

#else  // built without CUDA

namespace {
const char* const kNoCuda =
    "this weft-bench was built without CUDA (CMake found no CUDA compiler, or -DWEFT_CUDA=OFF): "
    "device buffers need a build with CUDA";
}

bool built() { return false; }
std::string deviceCount(int* count) { *count = 0; return kNoCuda; }
std::string setDevice(int) { return kNoCuda; }
std::string describe(int) { return "device -1 [cpu] host memory (no GPU)"; }
std::string alloc(void** p, size_t) { *p = nullptr; return kNoCuda; }
std::string release(void*) { return kNoCuda; }
std::string streamCreate(weftStream_t* s) { *s = nullptr; return kNoCuda; }
std::string streamSync(weftStream_t) { return kNoCuda; }
std::string streamDestroy(weftStream_t) { return kNoCuda; }
std::string toDevice(void*, const void*, size_t, weftStream_t) { return kNoCuda; }
std::string toHost(void*, const void*, size_t, weftStream_t) { return kNoCuda; }
std::string eventCreate(Event* e) { *e = nullptr; return kNoCuda; }
std::string eventRecord(Event, weftStream_t) { return kNoCuda; }
std::string elapsedMs(Event, Event, float* ms) { *ms = 0; return kNoCuda; }
std::string eventDestroy(Event) { return kNoCuda; }
std::string captureBegin(weftStream_t) { return kNoCuda; }
std::string captureEnd(weftStream_t, Captured* c) { *c = nullptr; return kNoCuda; }
std::string instantiate(Captured, Graph* g) { *g = nullptr; return kNoCuda; }
std::string graphUpload(Graph, weftStream_t) { return kNoCuda; }
std::string graphLaunch(Graph, weftStream_t) { return kNoCuda; }
std::string graphDestroy(Graph) { return kNoCuda; }

#endif

}  // namespace weftbench::dev
