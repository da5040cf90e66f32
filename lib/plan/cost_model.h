// The cost model: latency alpha + bytes / beta per hop, with constants per transport (socket, shm,
// ib) and bandwidth per link from the discovered port speeds, applied to the built rings and trees.
// Predicts all-reduce time, algbw and busbw (nccl-tests' definitions) per size and algorithm, and
// picks the fastest of the registered algorithms. Pure and deterministic: the same graph, plan,
// constants and transports give the same numbers and the same choice on every rank.
#pragma once

#include <cstddef>
#include <vector>

#include "lib/core/types.h"
#include "lib/plan/ring_builder.h"
#include "lib/plan/system_graph.h"
#include "lib/plan/tree_builder.h"
#include "lib/plan/tuner.h"

namespace weft::plan {

struct TransportConstants {
  double alphaUs = 0;      // latency per hop (one message through the engine), microseconds
  double efficiency = 1;   // share of the link rate a channel reaches (ib: of the port speed)
  double fallbackGBps = 0; // bandwidth of one hop when no link rate is known (socket, shm: measured)
};

// ib: not measurable here (no RDMA hardware); the numbers reproduce NCCL's reach on NDR, 0.93 x 50
// GB/s = 46.5 GB/s per 400 Gb/s port, with a 3 us hop. GPU ranks inside a node assume an NVLink-class
// fabric (~360 GB/s busbw), since discovery does not see NVLink.
//
// socket and shm: calibrated on the development machine (Debian 12 VM, 2 cores shared with other
// builds, loopback), host buffers through the engine, smallest time of 3 runs of
//   WEFT_SOCKET_IFNAME=lo WEFT_ALGO=ring weft-bench all_reduce --ranks 2 -b 8 -e 64M -f 4 -w 3 -n 20
// (and WEFT_TRANSPORTS=shm,socket for shm). On 2 ranks the ring is 2 hops of s/2 each way:
//   socket: 8 B..32 KiB in 59-66 us  -> alpha = (60 - baseUs) / 2 ~ 27 us; 8 MiB in 14.8 ms and
//           32 MiB in 56 ms          -> beta ~ 0.6 GB/s per hop;
//   shm:    8 B..8 KiB in 17-20 us   -> alpha ~ 6 us; 8 MiB in 6.8 ms, 32 MiB in 13.6 ms -> ~2 GB/s.
// hostTreeBytes from 4 ranks on the same host, WEFT_ALGO=ring against WEFT_ALGO=tree: the tree's
// time per byte (2 MiB: 11.8 ms, 32 MiB: 176 ms) is ~1.5x the ring's (2 MiB: 8.0 ms) whose per-rank
// traffic is 1.5 s, so a host binary tree costs ~2.25 s / beta; the measured crossover lies between
// 32 KiB (tree 173 us, ring 494 us) and 128 KiB (tree 3.3 ms, ring 1.1 ms), as the model's (~43 KiB).
struct CostConstants {
  TransportConstants ib{3.0, 0.93, 12.0};
  TransportConstants socket{27.0, 1.0, 0.6};
  TransportConstants shm{6.0, 1.0, 2.0};
  double baseUs = 5.0;          // per collective (call, plan, bookkeeping)
  double gpuIntraAlphaUs = 0.8; // per hop inside a node, GPU ranks
  double gpuIntraGBps = 360.0;  // per rank, GPUs inside a node
  double treeEfficiency = 0.85; // tree pipelines reach less of the link than rings
  double hostTreeBytes = 2.25;  // host ranks' binary tree: bytes per rank / s, efficiency included
  // Channels: an operation uses ceil(bytes / bytesPerChannel) of the plan's channels (at least one,
  // at most all), so small operations send few messages and large ones use every rail.
  size_t bytesPerChannel = 64 * 1024;
};

// The transports the running engine uses, when they differ from what the graph suggests.
struct ModelTransports {
  bool interFromGraph = true;              // ib when every node has rails, sockets otherwise
  Transport inter = Transport::kSocket;    // used when !interFromGraph
  Transport hostIntra = Transport::kSocket;// host ranks of one node (socket or shm)
};

struct AlgoCost {
  double timeUs = 0;
  double algbwGBps = 0;
  double busbwGBps = 0;
};

// Every algorithm the tuner chooses among, in order of preference on a tie. Registering another
// (the intra-node one-shot and two-shot all-reduce, when the shm transport provides them): add it
// to Algo (tuner.h), here, to CostModel::applies and CostModel::predict, and give the engine its
// schedule (Communicator::plan).
inline constexpr Algo kRegisteredAlgos[] = {Algo::kRing, Algo::kTree};

class CostModel {
 public:
  CostModel() = default;
  CostModel(const SystemGraph& graph, const RingSet& rings, const TreeSet& trees, const CostConstants& k = {},
            const ModelTransports& t = {});

  // Whether the engine has this algorithm for this collective on this fabric.
  bool applies(Algo algo, CollType coll) const;
  AlgoCost predict(Algo algo, CollType coll, size_t bytes) const;
  // The fastest registered algorithm for this collective and size (ties go to the earlier one).
  Algo choose(CollType coll, size_t bytes) const;
  // How many of the algorithm's channels an operation of this size uses.
  int channels(Algo algo, size_t bytes) const;

  double interGBps() const { return interGBps_; }  // all rails a ring channel set uses, together
  double intraGBps() const { return intraGBps_; }
  Transport interTransport() const { return transport_; }
  Transport intraTransport() const { return intraTransport_; }
  int ringChannels() const { return ringChannels_; }
  int treeChannels() const { return treeChannels_; }
  const CostConstants& constants() const { return k_; }

  int nRanks() const { return nRanks_; }

 private:
  double interBw(int nch, bool tree) const;
  CostConstants k_;
  Transport transport_ = Transport::kSocket, intraTransport_ = Transport::kSocket;
  int nRanks_ = 1, nNodes_ = 1, ppn_ = 1, treeDepth_ = 1, intraDepth_ = 1, nRails_ = 0;
  int ringChannels_ = 1, treeChannels_ = 2;
  int treeMaxDegree_ = 0;  // max over nodes of (tree 0 + tree 1) inter-node links
  IntraShape intraShape_ = IntraShape::kChain;
  double interAlphaUs_ = 0, interGBps_ = 0, intraAlphaUs_ = 0, intraGBps_ = 0;
  std::vector<double> railGBps_;  // per rail, for the channels' share
};

// The tuner (the engine's only one): WEFT_ALGO (cfg.forced) wins, otherwise the model's choice; the
// channel count is CostModel::channels for the chosen algorithm. Pure: same inputs, same plan on
// every rank.
Plan choosePlanFromModel(const TunerConfig& cfg, const CostModel& model, CollType coll, size_t bytes);

}  // namespace weft::plan
