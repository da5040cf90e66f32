// weft-bench --device: the few CUDA runtime calls the benchmark makes, behind an interface that
// needs no CUDA header, so weft_bench.cc builds the same with or without CUDA.
//
// weft_bench_cuda.cc implements it: with WEFT_BENCH_CUDA=1 over the CUDA runtime (weft-bench then
// links CUDA::cudart_static; libweft keeps its own copy and neither needs libcudart at run time),
// else every call fails with "built without CUDA". No function here is called unless --device is
// given, so a host-only run never loads the CUDA driver.
//
// Every function returns an empty string on success, else one sentence naming the failed CUDA call
// and CUDA's error (the caller adds the rank).
#pragma once

#include <weft/weft.h>

#include <cstddef>
#include <string>

namespace weftbench::dev {

// Whether this weft-bench was built with CUDA.
bool built();

// The number of usable CUDA devices in *count; an error (no driver, no device) otherwise.
std::string deviceCount(int* count);
// Makes `device` the calling thread's current device.
std::string setDevice(int device);
// "device <d> [<pci bus id>] <name>" for the rank lines of the table.
std::string describe(int device);

std::string alloc(void** p, size_t bytes);  // cudaMalloc, then zeroed
std::string release(void* p);               // cudaFree (nullptr: nothing)

// A non-blocking stream (ranks sharing a GPU in one process must not use blocking streams).
std::string streamCreate(weftStream_t* s);
std::string streamSync(weftStream_t s);
std::string streamDestroy(weftStream_t s);

// Stream-ordered copies that return when the copy is complete (the stream synchronised).
std::string toDevice(void* dst, const void* src, size_t bytes, weftStream_t s);
std::string toHost(void* dst, const void* src, size_t bytes, weftStream_t s);

// Timing events (cudaEvent_t, with timing).
typedef struct EventOpaque* Event;
std::string eventCreate(Event* e);
std::string eventRecord(Event e, weftStream_t s);
// Waits for `b`, then the milliseconds between `a` and `b`.
std::string elapsedMs(Event a, Event b, float* ms);
std::string eventDestroy(Event e);

// Graphs: capture the calls made on `s` between captureBegin and captureEnd (global mode, as an
// application captures its decode step) into an executable graph, launch it on `s`.
// Ranks as threads of one process: no thread may instantiate while another still captures (a
// capture in global mode forbids other threads' unsafe calls), so ending a capture and
// instantiating are two steps the caller separates with a barrier.
typedef struct CapturedOpaque* Captured;  // a cudaGraph_t
typedef struct GraphOpaque* Graph;        // a cudaGraphExec_t
std::string captureBegin(weftStream_t s);
std::string captureEnd(weftStream_t s, Captured* c);
std::string instantiate(Captured c, Graph* g);  // and destroys the captured graph
std::string graphUpload(Graph g, weftStream_t s);
std::string graphLaunch(Graph g, weftStream_t s);
std::string graphDestroy(Graph g);

}  // namespace weftbench::dev
