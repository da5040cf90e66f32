// CUDA IPC for ranks that are processes on one node (same GPU under MPS, or GPUs with peer access):
// device allocations exported with cudaIpcGetMemHandle and opened once per process
// (cudaIpcOpenMemHandle, process-wide and reference-counted: a handle may be opened only once per
// process, and several ranks of one process may need the same peer), and host-mapped words shared
// between processes (a POSIX shared-memory segment registered with cudaHostRegister as mapped
// memory, so kernels and host threads of every process see the same abort words). Everything here
// runs at communicator init or destroy, never during a call (a captured graph stays valid).
// Built only with CUDA (lib/device/CMakeLists.txt). Functions return "" on success, else why not.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace weft::cuda_ipc {

inline constexpr size_t kHandleBytes = 64;  // sizeof(cudaIpcMemHandle_t)
struct Handle {
  char bytes[kHandleBytes];
};

// Exports the allocation that starts at devPtr (a cudaMalloc base).
std::string exportHandle(void* devPtr, Handle* out);
// Opens a peer process's handle (once per process; later opens of the same handle share it).
// `owner` identifies the exporter (host id ^ pid): handles of different processes never collide.
std::string openHandle(const Handle& h, uint64_t owner, void** out);
// Drops one reference; the mapping is closed with the last.
void closeHandle(void* mapped);

// A shared host segment of `bytes` under `name` ("/weft-..."), created (create = true) or opened,
// mapped once per process and registered as CUDA mapped memory: *host and *dev address the same
// bytes. Mappings in use are never unmapped (kernels of this process or a peer's abort may still touch
// them after a communicator is gone; 4 KiB each).
std::string sharedSegment(const std::string& name, bool create, size_t bytes, void** host, void** dev);
// Removes the name (every process has mapped it by then).
void unlinkSegment(const std::string& name);
// Unregisters and unmaps this process's mapping of `name`: only where no kernel can touch it (the
// device path was refused, or every rank turned out to be a thread of the creating process).
void dropSegment(const std::string& name);

}  // namespace weft::cuda_ipc
