// Point-to-point on device buffers: turning the sends and receives a rank posted (one ungrouped
// call, or every device send/receive of a communicator in one weftGroupStart/End) into the one
// launch of protocol.h's runP2p. Plain C++ (no CUDA): the library and the CPU protocol test
// (tests/gpu/device_protocol_test.cc) use the same planner.
#pragma once

#include <cstddef>
#include <vector>

#include "lib/core/status.h"
#include "lib/device/protocol.h"

namespace weft::device {

// One posted operation: a send of [buf, buf + bytes) to peer, or a receive into it from peer.
struct P2pCall {
  bool recv = false;
  void* buf = nullptr;
  size_t bytes = 0;
  int peer = 0;
  void* stream = nullptr;
};

// The sends and receives of weftAllToAll (count elements of es bytes per peer), appended in the
// order NCCL posts them: for every peer p, send block p, receive into block p.
void appendAllToAll(int rank, int nranks, const void* send, void* recv, size_t bytes, void* stream,
                    std::vector<P2pCall>* calls);

// Checks the operations of one launch and builds its descriptor and grid. Refused with
// weftInvalidUsage (a sentence): more than kMaxP2pOps operations, more than one stream, a send to
// this rank without a matching receive from it in the same launch (or of another size), a send
// buffer overlapping a receive buffer other than in the in-place forms protocol.h allows (same
// peer, same position among that pair's sends and receives, the same buffer and size, and the same
// rounds before it; or a send to itself into the same buffer), more lanes (peers and directions
// used) than the grid bound holds at one block each (the lanes wait on each other's peers, so
// they must all be resident). Zero-byte operations are dropped. A receive in place is marked
// afterSend (protocol.h: its rounds wait for this rank's own send of the same rounds).
// maxBlocks: the communicator's grid bound; p2pBytes: staging bytes per half (rounds).
Status planP2p(int rank, int nranks, int maxBlocks, uint64_t p2pBytes, const std::vector<P2pCall>& calls,
               P2pDesc* desc, int* nblocks);

}  // namespace weft::device
