// The communicator: bootstrap, transports, lazily created channels, and the host-path executor that
// runs a Plan's schedule on the calling thread with one non-blocking progress loop.
#pragma once

#include <atomic>
#include <map>
#include <tuple>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "collectives/schedule.h"
#include "lib/bootstrap/bootstrap.h"
#include "lib/bootstrap/unique_id.h"
#include "lib/core/status.h"
#include "lib/core/types.h"
#include "lib/engine/channel.h"
#include "lib/engine/direct.h"
#include "lib/engine/transport_select.h"
#include "lib/plan/cost_model.h"
#include "lib/plan/tuner.h"
#include "transports/transport.h"

namespace weft::engine {

// One operation as the API hands it over. count is NCCL's: per-rank elements (all-gather's
// sendcount, reduce-scatter's recvcount, all-to-all's per-peer count).
struct OpDesc {
  CollType coll = CollType::kAllReduce;
  const void* sendbuff = nullptr;
  void* recvbuff = nullptr;
  size_t count = 0;
  DataType dtype = DataType::kFloat32;
  RedOp op = RedOp::kSum;
  int root = -1;  // broadcast/reduce root; send/recv peer
  void* stream = nullptr;  // device buffers: the cudaStream_t (host buffers ignore it)
};

struct EngineConfig {
  uint64_t initTimeoutMs = 0;
  uint64_t timeoutMs = 0;  // without progress; 0 = none
  uint64_t spinUs = 0;
  size_t buffSize = 0;
  int nslots = 0;
  plan::TunerConfig tuner;
  std::vector<std::string> transports;  // allowed; empty = all
  bool direct = true;       // WEFT_DIRECT: direct all-reduces through a shared region (one host)
  size_t directBytes = 0;   // WEFT_DIRECT_BYTES: input bytes per rank and round
  size_t directStreamBytes = 0;  // WEFT_DIRECT_STREAM_BYTES (0 = from the cache size)
};
// Per-communicator overrides of the environment (weftConfig_t); negative = not set.
struct CommOptions {
  int64_t initTimeoutMs = -1;
  int64_t timeoutMs = -1;
  int64_t buffSize = -1;
  std::string name;
};

// "all-reduce #3 (count 10, float32, sum, ring)": an operation as error messages name it.
std::string describeOp(const OpHeader& h);

Status loadEngineConfig(const CommOptions& opts, EngineConfig* out);

class Communicator {
 public:
  static Status create(const bootstrap::UniqueId& id, int nranks, int rank, const CommOptions& opts,
                       std::unique_ptr<Communicator>* out, const std::atomic<bool>* initInterrupt = nullptr);
  // Collective: ranks with the same color form a new communicator ordered by (key, rank);
  // color < 0 gives *out == nullptr. opts == nullptr inherits this communicator's options.
  Status split(int color, int key, const CommOptions* opts, std::unique_ptr<Communicator>* out);
  ~Communicator();

  int rank() const { return rank_; }
  int nranks() const { return nranks_; }

  // Host-memory operation on the calling thread; returns when the result is in place.
  Status run(const OpDesc& op);
  // A group (weftGroupStart/End): collectives run in their order; sends and receives progress
  // concurrently (one lane per peer and direction), so they complete in any posting order.
  Status runGroup(const std::vector<OpDesc>& ops);

  // Any thread: make a blocked call return and tell the peers. Idempotent.
  void requestAbort();
  bool aborted() const { return abort_.load(); }
  // The sticky error (success while the communicator is healthy).
  Status asyncError() const;
  size_t stagingBytes() const;
  // The plan this rank computed at init (identical on every rank): ring orders per ring channel and
  // this rank's links per tree channel (lib/plan, from the all-gathered node descriptions).
  const std::vector<std::vector<int>>& ringOrders() const { return rings_; }
  const std::vector<coll::TreeNeighbors>& treeLinks() const { return trees_; }

  // Calls in flight (weftCommAbort waits for them to leave before freeing).
  std::atomic<int> activeCalls{0};

  // For lib/device (device buffers, set up by the API layer right after create): the bootstrap and
  // the settings.
  bootstrap::Bootstrap& bootstrapRef() { return *bootstrap_; }
  const EngineConfig& config() const { return cfg_; }

 private:
  Communicator() = default;
  struct Part;
  struct Lane;
  Status plan(const OpDesc& op, Part* part);
  Status buildPlan();  // at init: all-gather node descriptions, build rings, trees and the cost model
  Status runLanes(std::vector<Lane>& lanes);
  Status connectPeers(const std::vector<coll::PeerChannel>& sendPeers, const std::vector<coll::PeerChannel>& recvPeers);
  Status fail(const Status& s);  // record the sticky error, tell the peers, return it
  Status checkInterrupt() const;
  Status rootCause(const Status& local) const;
  // Direct all-reduces (lib/engine/direct.cc): one host, the shared region.
  Status setupDirect();
  Status runDirect(const OpDesc& op, plan::Algo algo);
  Status directWait(int peer, bool done, uint32_t round, const DirectDesc& mine);
  Status directMismatch(int peer, const DirectDesc& mine, const DirectDesc& theirs) const;
  Status directFailed(const Status& s, const OpDesc& op, const DirectDesc& mine);
  void logDirect(const OpDesc& op, plan::Algo algo);

  friend class Executor;
  int rank_ = 0;
  int nranks_ = 0;
  EngineConfig cfg_;
  CommOptions opts_;
  uint64_t splitSeq_ = 0;
  std::atomic<bool> abort_{false};
  std::unique_ptr<bootstrap::Bootstrap> bootstrap_;
  TransportChoice transport_;  // the network transport, for every peer
  TransportChoice shm_;        // same-host peers, when available
  const TransportChoice* transportFor(int peer) const;
  std::map<coll::PeerChannel, std::unique_ptr<SendChannel>> send_;
  std::map<coll::PeerChannel, std::unique_ptr<RecvChannel>> recv_;
  std::vector<std::vector<int>> rings_;     // per ring channel: the ranks in ring order
  std::vector<coll::TreeNeighbors> trees_;  // per tree channel: this rank's parent and children
  plan::CostModel model_;
  uint64_t pureSpinNs_ = 3000;  // busy-wait before yielding; 0 when this host's ranks outnumber its cores
  std::map<std::tuple<int, int, size_t>, std::shared_ptr<const coll::Schedule>> allReduceSchedules_;  // (algo, channels, count)
  uint32_t seq_ = 0;                   // collectives
  std::map<int, uint32_t> sendSeq_;    // point-to-point, per peer
  std::map<int, uint32_t> recvSeq_;
  std::vector<char> scratch_;          // in-place all-to-all input copy
  mutable std::mutex errMu_;
  Status sticky_;
  std::atomic<bool> failed_{false};
  size_t slotBytes_ = 0;
  std::unique_ptr<DirectRegion> direct_;  // all ranks on this host, 2-9 ranks, WEFT_DIRECT=1
  uint32_t round_ = 0;                    // direct rounds run (the same on every rank)
  size_t streamBytes_ = SIZE_MAX;         // direct outputs above this use streaming stores
  uint64_t directLogged_[4] = {};         // (algorithm, size bucket) already logged at INFO
  std::set<int> loggedPlans_;  // (algorithm, size bucket) pairs already logged at INFO
};

}  // namespace weft::engine
