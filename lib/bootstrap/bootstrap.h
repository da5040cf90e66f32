// Rank-side bootstrap: joins the rendezvous, then keeps a small TCP service for out-of-band
// messages between ranks (tagged mailbox, all-gather, barrier) and for failure propagation: a rank
// that detects a failure tells every other rank, and a peer whose bootstrap connection drops
// without a goodbye is reported as dead.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "lib/bootstrap/unique_id.h"
#include "lib/core/net.h"
#include "lib/core/status.h"

namespace weft::bootstrap {

struct PeerInfo {
  net::SockAddr addr;
  uint64_t hostId = 0;
  int pid = 0;
  std::string hostname;
};

class Bootstrap {
 public:
  // Joins the rendezvous named by id. abort (may be null) stops every wait when it becomes true.
  // initTimeoutMs bounds the rendezvous and later connection attempts (WEFT_INIT_TIMEOUT_MS or a
  // config's override).
  // initInterrupt (may be null) also stops the rendezvous (a split whose parent failed).
  static Status create(const UniqueId& id, int nranks, int rank, const std::atomic<bool>* abort,
                       uint64_t initTimeoutMs, std::unique_ptr<Bootstrap>* out,
                       const std::atomic<bool>* initInterrupt = nullptr);
  ~Bootstrap();
  Bootstrap(const Bootstrap&) = delete;
  Bootstrap& operator=(const Bootstrap&) = delete;

  int rank() const { return rank_; }
  int nranks() const { return nranks_; }
  const PeerInfo& peer(int r) const { return peers_[static_cast<size_t>(r)]; }
  // "rank 3 (pid 1234 on host-a)"
  std::string describe(int r) const;

  // Tagged point-to-point messages (ordered per peer and tag).
  Status send(int peer, uint64_t tag, const void* data, size_t len);
  Status recv(int peer, uint64_t tag, std::vector<char>* out, uint64_t deadlineNs);

  // data holds nranks blocks of `bytes`; this rank's block must be filled in.
  Status allGather(void* data, size_t bytes, uint64_t deadlineNs);
  Status barrier(uint64_t deadlineNs);

  // Tell every other rank (in the background, bounded) that the communicator failed.
  void broadcastError(Code code, const std::string& reason);

  // An error reported by a peer, or a peer found dead; first one wins.
  bool hasError() const { return errCode_.load(std::memory_order_acquire) != 0; }
  Status error() const;
  void recordError(Code code, const std::string& reason);
  // The peer said goodbye (destroyed its communicator).
  bool departed(int peer);

  // Called on the service thread when a peer is found dead (its rank) or reports a failure (-1):
  // e.g. the device path sets the GPU abort words so that no kernel waits on a dead rank. One hook;
  // an empty function clears it. The hook must not call back into the bootstrap.
  void setFailureHook(std::function<void(int)> hook);

 private:
  void runFailureHook(int rank);
  Bootstrap() = default;
  void serve();
  void handleReadable(size_t index);
  Status connection(int peer, int* fd, std::mutex** mu);

  struct Incoming {
    int fd = -1;
    int rank = -1;
    bool bye = false;
  };
  struct Outgoing {
    int fd = -1;
    std::mutex mu;
  };

  int rank_ = 0;
  int nranks_ = 0;
  unsigned char secret_[kSecretBytes] = {};
  std::vector<PeerInfo> peers_;
  const std::atomic<bool>* abort_ = nullptr;
  int listenFd_ = -1;
  int wakeFd_[2] = {-1, -1};
  std::thread service_;
  std::atomic<bool> stopping_{false};
  std::vector<Incoming> incoming_;  // service thread only

  std::mutex outMu_;
  std::map<int, std::unique_ptr<Outgoing>> outgoing_;

  std::mutex boxMu_;
  std::condition_variable boxCv_;
  std::map<std::pair<int, uint64_t>, std::deque<std::vector<char>>> mailbox_;
  std::vector<bool> departed_;  // said goodbye (destroyed its communicator); under boxMu_
  std::mutex hookMu_;
  std::function<void(int)> failureHook_;

  std::atomic<int> errCode_{0};
  mutable std::mutex errMu_;
  std::string errReason_;

  std::mutex bgMu_;
  std::vector<std::thread> background_;
  uint64_t gatherSeq_ = 0;
  uint64_t initTimeoutMs_ = 0;
};

}  // namespace weft::bootstrap
