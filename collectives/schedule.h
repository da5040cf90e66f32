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
  bool useInput = false;     // reduce with sendbuff[inOffset ...]
  bool writeOutput = false;  // store the result in recvbuff[outOffset ...]
  bool finalize = false;     // this step completes the reduction: apply the avg divide here
  size_t inOffset = 0;       // element offsets in the user buffers
  size_t outOffset = 0;
  size_t count = 0;
  int channel = 0;           // which channel to each peer: kCollChannel or kP2pChannel
};

inline constexpr int kCollChannel = 0;
inline constexpr int kP2pChannel = 1;

// A phase runs chunk-major: for chunk position c, every step on its c-th chunk, in order. A
// concurrent phase instead runs each step as its own stream (step k may be ahead of or behind step
// j by any number of chunks): for steps that must not wait on each other, such as a tree's reduce
// (up) and broadcast (down) streams, which would deadlock with bounded buffers in lock-step.
// Concurrent steps must use distinct (peer, direction, channel) pairs and no data of each other's.
struct Phase {
  std::vector<Step> steps;
  bool concurrent = false;
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

// Ring all-gather: every rank's count-element block lands at recvbuff[rank * count].
Schedule ringAllGather(const std::vector<int>& ring, int rank, size_t count);
// Ring reduce-scatter: block r (recvcount elements of sendbuff) reduced over ranks lands on rank r.
Schedule ringReduceScatter(const std::vector<int>& ring, int rank, size_t recvcount);
// Pipelined chain broadcast from root along the ring.
Schedule chainBroadcast(const std::vector<int>& ring, int rank, size_t count, int root);
// Pipelined chain reduce along the ring, ending at root.
Schedule chainReduce(const std::vector<int>& ring, int rank, size_t count, int root);
// Pairwise all-to-all: block j of sendbuff goes to rank j, lands at recvbuff[rank * count] there.
Schedule pairwiseAlltoAll(int nranks, int rank, size_t count);
// Point to point on the p2p channel.
Schedule p2pSend(int peer, size_t count);
Schedule p2pRecv(int peer, size_t count);

// A peer on a channel.
struct PeerChannel {
  int peer;
  int channel;
  bool operator<(const PeerChannel& o) const { return peer != o.peer ? peer < o.peer : channel < o.channel; }
  bool operator==(const PeerChannel& o) const { return peer == o.peer && channel == o.channel; }
};
// Every peer a schedule sends to / receives from (for connection setup before it runs); appends.
void schedulePeers(const Schedule& s, std::vector<PeerChannel>* sendPeers, std::vector<PeerChannel>* recvPeers);

}  // namespace weft::coll
