// The InfiniBand/RoCE verbs transport (a messaging transport, transports/transport.h).
//
// Connection: the listen handle carries the address of a small TCP side channel; connect/accept
// exchange and validate QPNs, LID/GID, MTU, the sender's clear-to-send FIFO address and rkey on it,
// bring WEFT_IB_QPS_PER_CONNECTION RC QPs to RTS and keep the socket open to learn of a dead peer.
// Data: receiver-driven. irecv RDMA-writes (inline, WRITE_WITH_IMM) a clear-to-send entry -- address,
// rkey, size, tag, sequence -- into the sender's FIFO; the sender RDMA-writes the message there
// (striped over the QPs from 64 KiB) and completes with WRITE_WITH_IMM. User memory that was not
// registered with regMr goes through registered, cached staging buffers: the transport never
// registers a user buffer on its own.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "transports/transport.h"

namespace weft::transport {

// One RDMA port to use, as the discovery layer chose it (plain data).
struct IbPortSpec {
  std::string device;  // verbs device name, "mlx5_0"
  int port = 1;        // 1-based
  int gidIndex = -1;   // -1: no GRH (InfiniBand); RoCE needs one
};

// ports empty: the library is loaded and its devices listed, and the result is an error saying what
// was found (so that "no device" reads the same everywhere). Errors are sentences; the engine falls
// back to another transport unless WEFT_REQUIRE names rdma.
std::unique_ptr<MessagingTransport> createIbTransport(const std::vector<IbPortSpec>& ports, Status* status);

// Cheap check before discovery: load WEFT_IBVERBS_LIB and list its devices; an error (the sentence
// the engine logs) when the library is missing or lists none (the real library's NULL list with
// ENOSYS on kernels without InfiniBand included).
Status ibProbeDevices(std::vector<std::string>* names);

// Fork safety (lib/engine/fork_safety.cc): hold / release the transport's process-wide locks (the
// verbs loader, the registration history) across fork(). Per-connection state is not for a child.
void ibForkLock();
void ibForkUnlock();

// For tests: every (address, length) this process ever registered through the ib transport.
std::vector<std::pair<const void*, size_t>> ibRegistrationHistory();

}  // namespace weft::transport
