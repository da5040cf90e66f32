#include "lib/bootstrap/root.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "lib/bootstrap/wire.h"
#include "lib/core/config.h"
#include "lib/core/log.h"
#include "lib/core/util.h"
#include "lib/core/version.h"

namespace weft::bootstrap {

namespace {

bool sameSecret(const unsigned char* a, const unsigned char* b) {
  unsigned char d = 0;
  for (size_t i = 0; i < kSecretBytes; ++i) d |= static_cast<unsigned char>(a[i] ^ b[i]);
  return d == 0;
}

void reject(int fd, const std::string& why) {
  (void)writeFrame(fd, FrameType::kReject, why.data(), why.size(), nowNs() + 1000000000ull, nullptr);
}

class Root {
 public:
  Root(int listenFd, const UniqueId& id, uint64_t timeoutMs)
      : listenFd_(listenFd), id_(id), timeoutMs_(timeoutMs) {}

  void run() {
    for (;;) {
      pollfd p{listenFd_, POLLIN, 0};
      int r = poll(&p, 1, 100);
      if (r > 0) {
        int fd = accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
          net::setNoDelay(fd);
          if (onConnection(fd)) break;
        }
      }
      if (firstNs_ && nowNs() > firstNs_ + timeoutMs_ * 1000000ull) {
        timeOut();
        break;
      }
    }
    for (auto& a : arrived_)
      if (a.fd >= 0) close(a.fd);
    close(listenFd_);
  }

 private:
  struct Arrival {
    int fd = -1;
    RankRecord rec{};
  };

  // Returns true when every rank has arrived and got the table.
  bool onConnection(int fd) {
    FrameType type;
    std::vector<char> body;
    Status s = readFrame(fd, &type, &body, nowNs() + 5000000000ull, nullptr, "a rank connecting to the rendezvous");
    if (!s || type != FrameType::kHello || body.size() != sizeof(HelloBody)) {
      WEFT_WARN(BOOT, "rendezvous: refused a connection: %s",
                s ? "the first frame is not a weft hello" : s.message().c_str());
      reject(fd, "malformed hello: this is a weft rendezvous port, and the peer is not a weft rank of the same version");
      close(fd);
      return false;
    }
    HelloBody h;
    std::memcpy(&h, body.data(), sizeof h);
    h.self.hostname[kHostNameBytes - 1] = '\0';
    std::string who = "rank " + std::to_string(h.self.rank) + " (pid " + std::to_string(h.self.pid) +
                      " on " + h.self.hostname + ")";
    std::string why;
    if (!sameSecret(h.secret, id_.secret)) {
      why = who + " presented a unique id whose secret does not match this rendezvous: it belongs to a "
                  "different weftGetUniqueId call (another job or a stale id); give every rank the same id";
    } else if (h.libraryVersion != id_.libraryVersion) {
      why = who + " runs weft version " + std::to_string(h.libraryVersion) + " but the rendezvous runs " +
            std::to_string(id_.libraryVersion) + ": use one weft version on every rank";
    } else if (h.nranks <= 0) {
      why = who + " asked for nranks=" + std::to_string(h.nranks);
    } else if (nranks_ > 0 && h.nranks != nranks_) {
      why = who + " says nranks=" + std::to_string(h.nranks) + " but the ranks before it said " +
            std::to_string(nranks_) + ": every rank must pass the same nranks";
    } else if (h.self.rank < 0 || h.self.rank >= h.nranks) {
      why = who + " is out of range for nranks=" + std::to_string(h.nranks);
    } else if (nranks_ > 0 && arrived_[h.self.rank].fd >= 0) {
      const RankRecord& o = arrived_[h.self.rank].rec;
      why = "rank " + std::to_string(h.self.rank) + " is already taken by pid " + std::to_string(o.pid) +
            " on " + o.hostname + "; pid " + std::to_string(h.self.pid) + " on " + h.self.hostname +
            " asked for it again: every rank number must be used exactly once";
    }
    if (!why.empty()) {
      WEFT_WARN(BOOT, "rendezvous: refused: %s", why.c_str());
      reject(fd, why);
      close(fd);
      return false;
    }
    if (nranks_ < 0) {
      nranks_ = h.nranks;
      arrived_.resize(static_cast<size_t>(nranks_));
      firstNs_ = nowNs();
    }
    arrived_[h.self.rank] = Arrival{fd, h.self};
    ++count_;
    WEFT_INFO(BOOT, "rendezvous: %s arrived (%d of %d)", who.c_str(), count_, nranks_);
    if (count_ < nranks_) return false;
    std::vector<RankRecord> table(static_cast<size_t>(nranks_));
    for (int i = 0; i < nranks_; ++i) table[i] = arrived_[i].rec;
    for (auto& a : arrived_) {
      Status ws = writeFrame(a.fd, FrameType::kTable, table.data(), table.size() * sizeof(RankRecord),
                             nowNs() + 5000000000ull, nullptr);
      if (!ws) WEFT_WARN(BOOT, "rendezvous: could not send the table to rank %d: %s", a.rec.rank, ws.message().c_str());
    }
    return true;
  }

  void timeOut() {
    std::string missing;
    int nmissing = 0;
    for (int i = 0; i < nranks_; ++i) {
      if (arrived_[i].fd >= 0) continue;
      if (nmissing < 16) missing += (missing.empty() ? "" : ",") + std::to_string(i);
      ++nmissing;
    }
    if (nmissing > 16) missing += ",...";
    std::string why = std::to_string(nmissing) + " of " + std::to_string(nranks_) + " ranks never arrived (rank" +
                      (nmissing > 1 ? "s " : " ") + missing + ") within WEFT_INIT_TIMEOUT_MS=" +
                      std::to_string(timeoutMs_) + ": check that they were started with the same unique id " +
                      "and can reach " + id_.root.str();
    WEFT_WARN(BOOT, "rendezvous: %s", why.c_str());
    for (auto& a : arrived_)
      if (a.fd >= 0) reject(a.fd, why);
  }

  int listenFd_;
  UniqueId id_;
  uint64_t timeoutMs_;
  int nranks_ = -1;
  int count_ = 0;
  uint64_t firstNs_ = 0;
  std::vector<Arrival> arrived_;
};

}  // namespace

namespace {
Status launchRoot(int fd, const UniqueId& id, const std::string& where) {
  uint64_t timeoutMs = static_cast<uint64_t>(config::getInt("WEFT_INIT_TIMEOUT_MS"));
  WEFT_INFO(BOOT, "rendezvous root listening on %s", where.c_str());
  try {
    std::thread([fd, idCopy = id, timeoutMs] { Root(fd, idCopy, timeoutMs).run(); }).detach();
  } catch (const std::exception& e) {
    close(fd);
    return systemError(std::string("cannot start the rendezvous thread: ") + e.what());
  }
  return Status::ok();
}
}  // namespace

Status startRoot(UniqueId* id) {
  std::vector<net::Interface> ifs;
  WEFT_TRY(net::chooseInterfaces(&ifs));
  int fd;
  net::SockAddr bound;
  WEFT_TRY(net::listenOn(ifs[0].addr, &fd, &bound));
  id->protocol = kProtocolVersion;
  id->libraryVersion = static_cast<uint32_t>(kLibraryVersion);
  Status s = randomBytes(id->secret, kSecretBytes);
  if (!s) {
    close(fd);
    return s;
  }
  id->root = bound;
  return launchRoot(fd, *id, bound.str() + " (" + ifs[0].name + ")");
}

Status startRootAt(const net::SockAddr& at, const unsigned char secret[kSecretBytes], UniqueId* id) {
  int fd = -1;
  net::SockAddr bound;
  Status s = net::listenOn(at, &fd, &bound);
  if (!s) {
    // Not an address of this host (a name that resolves elsewhere, NAT): listen on the port everywhere.
    net::SockAddr any = at;
    if (any.family() == AF_INET) reinterpret_cast<sockaddr_in*>(&any.ss)->sin_addr.s_addr = htonl(INADDR_ANY);
    else reinterpret_cast<sockaddr_in6*>(&any.ss)->sin6_addr = in6addr_any;
    Status s2 = net::listenOn(any, &fd, &bound);
    if (!s2) return s2.withContext("cannot serve the rendezvous at " + at.str());
  }
  id->protocol = kProtocolVersion;
  id->libraryVersion = static_cast<uint32_t>(kLibraryVersion);
  std::memcpy(id->secret, secret, kSecretBytes);
  id->root = at;
  return launchRoot(fd, *id, bound.str());
}

}  // namespace weft::bootstrap
