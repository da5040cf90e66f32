// Algorithms as step schedules. An algorithm is written once, as a list of phases of steps over
// peer channels, and knows nothing of transports: the engine's executor runs a schedule over
// whatever channels connect this rank to the named peers.
//
// A schedule runs phase by phase; inside a phase it runs chunk-major -- for chunk position c, every
// step of the phase on its c-th chunk, in order -- which is what pipelines a ring: a rank sends
// chunk c of one segment while its neighbour is still reducing chunk c-1 of another.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace weft::coll {

// One primitive on a range of elements. Everything a primitive can do is a combination of:
// receive from up to two peers, reduce with the local input, apply the avg divide, write the user
// output, send to up to two peers. Named after NCCL's primitives:
//   send               useInput,                 send
//   recvReduceSend     useInput, recv,           send
//   recvReduceCopySend useInput, recv, output,   send
//   recvCopySend                 recv, output,   send
//   recv                         recv, output
struct Step {
  int recvPeers[2] = {-1, -1};
  int nrecv = 0;
  int sendPeers[2] = {-1, -1};
  int nsend = 0;
  bool useInput = false;    // reduce with sendbuff[offset ...]
  bool writeOutput = false;  // store the result in recvbuff[offset ...]
  bool finalize = false;     // this step completes the reduction: apply the avg divide here
  size_t offset = 0;         // element range in the user buffers
  size_t count = 0;
};

struct Phase {
  std::vector<Step> steps;
};

struct Schedule {
  std::vector<Phase> phases;
};

// Ring all-reduce (reduce-scatter then all-gather) on the ring order given (ring[i] = rank at
// position i); count elements. Every rank's result is the owner's sum of the segment, so all ranks
// are bitwise identical.
Schedule ringAllReduce(const std::vector<int>& ring, int rank, size_t count);

// Binary-tree all-reduce: reduce up to the root (heap order over `order`), then broadcast down.
Schedule treeAllReduce(const std::vector<int>& order, int rank, size_t count);

// Every peer a schedule sends to / receives from (for connection setup before it runs).
void schedulePeers(const Schedule& s, std::vector<int>* sendPeers, std::vector<int>* recvPeers);

}  // namespace weft::coll
