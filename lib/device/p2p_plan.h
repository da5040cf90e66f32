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

// The device operations one thread posted in a group (outermost weftGroupStart/End), so that every
// rank launches a communicator's kernels in that communicator's posting order whatever it grouped:
//  - a communicator's device collectives are launched when posted until the group has a device
//    send/receive on that communicator; from then on they are kept (addCollective) and launched at
//    weftGroupEnd in posting order with the sends and receives, consecutive sends/receives fused
//    into one point-to-point kernel. So {all-to-all, all-reduce} grouped on one rank runs in the
//    order of the same calls ungrouped on another (launching the collective at once would run it
//    ahead of the all-to-all kept for weftGroupEnd: a deadlock);
//  - device sends/receives on two communicators in one group are refused (weftInvalidUsage): each
//    communicator is one or more kernels on a stream, and two ranks could queue the two
//    communicators' kernels in opposite orders, each waiting behind the other's.
// Plain data: the caller keeps the collectives (`index` names them) and launches.
class DeviceGroup {
 public:
  struct Launch {
    const void* comm = nullptr;
    bool p2p = false;
    std::vector<P2pCall> calls;  // p2p: the fused sends and receives, in posting order
    size_t index = 0;            // a collective: the caller's index
  };
  // Whether a device collective on comm posted now must be kept for weftGroupEnd.
  bool keepsCollectives(const void* comm) const;
  void addP2p(const void* comm, const P2pCall& call);
  void addCollective(const void* comm, size_t index);
  bool empty() const { return items_.empty(); }
  // The launches, communicator by communicator (in order of first posting), each in posting order.
  // Refused (nothing to launch) when sends/receives span several communicators.
  Status launches(std::vector<Launch>* out) const;

 private:
  struct Item {
    const void* comm;
    bool p2p;
    P2pCall call;
    size_t index;
  };
  std::vector<Item> items_;
};

}  // namespace weft::device
