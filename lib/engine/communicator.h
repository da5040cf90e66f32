// The communicator: bootstrap, transports, lazily created channels, and the host-path executor that
// runs a Plan's schedule on the calling thread with one non-blocking progress loop.
#pragma once

#include <atomic>
#include <map>
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
#include "lib/plan/tuner.h"
#include "transports/transport.h"

namespace weft::engine {

struct OpDesc {
  CollType coll = CollType::kAllReduce;
  const void* sendbuff = nullptr;
  void* recvbuff = nullptr;
  size_t count = 0;
  DataType dtype = DataType::kFloat32;
  RedOp op = RedOp::kSum;
  int root = -1;
};

struct EngineConfig {
  uint64_t timeoutMs = 0;  // without progress; 0 = none
  uint64_t spinUs = 0;
  size_t buffSize = 0;
  int nslots = 0;
  plan::TunerConfig tuner;
  std::vector<std::string> transports;  // allowed; empty = all
};
Status loadEngineConfig(EngineConfig* out);

class Communicator {
 public:
  static Status create(const bootstrap::UniqueId& id, int nranks, int rank, std::unique_ptr<Communicator>* out);
  ~Communicator();

  int rank() const { return rank_; }
  int nranks() const { return nranks_; }

  // Host-memory operation on the calling thread; returns when the result is in place.
  Status run(const OpDesc& op);

  // Any thread: make a blocked call return and tell the peers. Idempotent.
  void requestAbort();
  bool aborted() const { return abort_.load(); }
  // The sticky error (success while the communicator is healthy).
  Status asyncError() const;
  size_t stagingBytes() const;

  // Calls in flight (weftCommAbort waits for them to leave before freeing).
  std::atomic<int> activeCalls{0};

 private:
  Communicator() = default;
  Status connectPeers(const std::vector<int>& sendPeers, const std::vector<int>& recvPeers);
  Status fail(const Status& s);  // record the sticky error, tell the peers, return it
  Status checkInterrupt() const;
  Status rootCause(const Status& local) const;

  friend class Executor;
  int rank_ = 0;
  int nranks_ = 0;
  EngineConfig cfg_;
  std::atomic<bool> abort_{false};
  std::unique_ptr<bootstrap::Bootstrap> bootstrap_;
  std::unique_ptr<transport::MessagingTransport> transport_;
  std::map<int, std::unique_ptr<SendChannel>> send_;
  std::map<int, std::unique_ptr<RecvChannel>> recv_;
  std::vector<int> ring_;
  uint32_t seq_ = 0;
  mutable std::mutex errMu_;
  Status sticky_;
  std::atomic<bool> failed_{false};
  size_t slotBytes_ = 0;
  std::set<int> loggedPlans_;  // (algorithm, size bucket) pairs already logged at INFO
};

}  // namespace weft::engine
