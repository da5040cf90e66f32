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
// A step receives from and sends to at most kMaxStepPeers peers (the one-shot and two-shot
// all-reduces exchange with every peer in one step). Operands are reduced left to right in the
// order: received messages in recvPeers order, with the local input inserted at position inputPos
// (0 = first); so a step can reduce in rank order, which makes the result bitwise reproducible.
inline constexpr int kMaxStepPeers = 8;

struct Step {
  int recvPeers[kMaxStepPeers] = {-1, -1, -1, -1, -1, -1, -1, -1};
  int nrecv = 0;
  int sendPeers[kMaxStepPeers] = {-1, -1, -1, -1, -1, -1, -1, -1};
  int nsend = 0;
  int inputPos = 0;          // where the local input goes among the operands (<= nrecv)
  bool useInput = false;     // reduce with sendbuff[inOffset ...]
  bool inputIsOutput = false;  // useInput reads recvbuff[outOffset ...] instead (a result computed earlier)
  bool writeOutput = false;  // store the result in recvbuff[outOffset ...]
  bool finalize = false;     // this step completes the reduction: apply the avg divide here
  size_t inOffset = 0;       // element offsets in the user buffers
  size_t outOffset = 0;
  size_t count = 0;
  int channel = 0;           // which channel to each peer: kCollChannel or kP2pChannel
};

inline constexpr int kCollChannel = 0;
inline constexpr int kP2pChannel = 1;
// The engine channel of a collective's k-th plan channel (ring or tree channel k): 0, then 2, 3, ...
inline int collChannel(int k) { return k == 0 ? kCollChannel : k + 1; }

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
// offset: the elements [offset, offset + count) of the buffers; channel: the engine channel.
Schedule ringAllReduce(const std::vector<int>& ring, int rank, size_t count, size_t offset = 0,
                       int channel = kCollChannel);

// A rank's place in one tree: its parent (-1 at the root) and children.
struct TreeNeighbors {
  int up = -1;
  std::vector<int> down;  // at most kMaxStepPeers
};
// Tree all-reduce on elements [offset, offset + count): phase 1 reduces up to the root (which
// stores the result), phase 2 broadcasts it down (the root sends from its output). Keeping the
// root's broadcast out of phase 1 is what lets two trees' schedules merge phase by phase without
// deadlock under bounded slots: in a phase every message flows the same way in both trees.
Schedule treeAllReduce(const TreeNeighbors& t, size_t count, size_t offset = 0, int channel = kCollChannel);
// The same over a binary heap on `order` (order[0] the root; children of i are 2i+1, 2i+2).
Schedule treeAllReduce(const std::vector<int>& order, int rank, size_t count);

// Several schedules run as one: phase p of the result holds phase p of each, in the given order.
// Inside a phase the executor runs chunk-major over all their steps, so channels that carry
// separate slices (one per ring or tree channel) progress together.
Schedule mergeSchedules(std::vector<Schedule> parts);
// Slice k of `count` elements split into n slices (sizes differ by at most one).
void sliceOf(size_t count, int n, int k, size_t* offset, size_t* len);
// One-shot all-reduce (intra-node, small messages): every rank sends its whole input to every peer
// and reduces all n inputs itself, in rank order 0..n-1, so every rank computes the same bits. One
// message latency; (n-1) x count elements sent per rank. nranks <= kMaxStepPeers + 1.
Schedule oneShotAllReduce(int nranks, int rank, size_t count);

// Two-shot all-reduce (intra-node, medium and large): reduce-scatter then all-gather, each with
// every peer directly: rank r receives slice r of every peer's input, reduces the n slices in rank
// order, and sends the result to every peer. Two message latencies; 2 (n-1)/n x count elements sent
// per rank, as the ring. nranks <= kMaxStepPeers + 1.
Schedule twoShotAllReduce(int nranks, int rank, size_t count);

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
