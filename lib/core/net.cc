#include "lib/core/net.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "lib/core/config.h"
#include "lib/core/log.h"
#include "lib/core/util.h"

namespace weft::net {

uint16_t SockAddr::port() const {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
  if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

void SockAddr::setPort(uint16_t port) {
  if (family() == AF_INET) reinterpret_cast<sockaddr_in*>(&ss)->sin_port = htons(port);
  if (family() == AF_INET6) reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port = htons(port);
}

std::string SockAddr::str() const {
  char buf[INET6_ADDRSTRLEN + 32] = "?";
  if (family() == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(port());
  }
  if (family() == AF_INET6) {
    const auto* s6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &s6->sin6_addr, buf, sizeof buf);
    std::string r = "[" + std::string(buf);
    if (s6->sin6_scope_id) r += "%" + std::to_string(s6->sin6_scope_id);
    return r + "]:" + std::to_string(port());
  }
  return "<no address>";
}

void SockAddr::toWire(unsigned char* out) const {
  std::memset(out, 0, kWireBytes);
  uint16_t fam = static_cast<uint16_t>(family());
  uint16_t p = port();
  std::memcpy(out, &fam, 2);
  std::memcpy(out + 2, &p, 2);
  if (family() == AF_INET) {
    std::memcpy(out + 4, &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, 4);
  } else if (family() == AF_INET6) {
    const auto* s6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    std::memcpy(out + 4, &s6->sin6_addr, 16);
    uint32_t scope = s6->sin6_scope_id;
    std::memcpy(out + 20, &scope, 4);
  }
}

Status SockAddr::fromWire(const unsigned char* in, SockAddr* out) {
  uint16_t fam, p;
  std::memcpy(&fam, in, 2);
  std::memcpy(&p, in + 2, 2);
  *out = SockAddr();
  if (fam == AF_INET) {
    auto* s4 = reinterpret_cast<sockaddr_in*>(&out->ss);
    s4->sin_family = AF_INET;
    std::memcpy(&s4->sin_addr, in + 4, 4);
    out->len = sizeof(sockaddr_in);
  } else if (fam == AF_INET6) {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&out->ss);
    s6->sin6_family = AF_INET6;
    std::memcpy(&s6->sin6_addr, in + 4, 16);
    uint32_t scope;
    std::memcpy(&scope, in + 20, 4);
    s6->sin6_scope_id = scope;
    out->len = sizeof(sockaddr_in6);
  } else {
    return invalidArgument("address family " + std::to_string(fam) + " is neither IPv4 nor IPv6");
  }
  out->setPort(p);
  if (p == 0) return invalidArgument("address " + out->str() + " has port 0");
  return Status::ok();
}

namespace {

struct IfFilter {
  bool exclude = false;
  bool exact = false;
  std::vector<std::string> items;
  bool matches(const std::string& name) const {
    bool hit = false;
    for (auto& it : items) {
      if (exact ? name == it : name.compare(0, it.size(), it) == 0) hit = true;
    }
    return exclude ? !hit : hit;
  }
};

IfFilter parseFilter(std::string spec) {
  IfFilter f;
  if (!spec.empty() && spec[0] == '^') {
    f.exclude = true;
    spec.erase(0, 1);
  }
  if (!spec.empty() && spec[0] == '=') {
    f.exact = true;
    spec.erase(0, 1);
  }
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t c = spec.find(',', pos);
    if (c == std::string::npos) c = spec.size();
    if (c > pos) f.items.push_back(spec.substr(pos, c - pos));
    pos = c + 1;
  }
  return f;
}

}  // namespace

Status chooseInterfaces(std::vector<Interface>* out) {
  out->clear();
  std::string spec = config::getString("WEFT_SOCKET_IFNAME");
  std::string fam = config::getString("WEFT_SOCKET_FAMILY");
  int wantFamily = AF_UNSPEC;
  if (fam == "AF_INET" || fam == "inet" || fam == "4") wantFamily = AF_INET;
  else if (fam == "AF_INET6" || fam == "inet6" || fam == "6") wantFamily = AF_INET6;
  else if (!fam.empty())
    return invalidArgument("WEFT_SOCKET_FAMILY=\"" + fam + "\" is not AF_INET or AF_INET6");

  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return errnoStatus("getifaddrs", errno);
  std::vector<Interface> candidates, loopbacks;
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr || !(i->ifa_flags & IFF_UP)) continue;
    int f = i->ifa_addr->sa_family;
    if (f != AF_INET && f != AF_INET6) continue;
    if (wantFamily != AF_UNSPEC && f != wantFamily) continue;
    if (f == AF_INET6) {
      // Link-local IPv6 needs a scope and is rarely what users mean; skip unless asked by name.
      auto* s6 = reinterpret_cast<sockaddr_in6*>(i->ifa_addr);
      if (IN6_IS_ADDR_LINKLOCAL(&s6->sin6_addr) && spec.empty()) continue;
    }
    Interface itf;
    itf.name = i->ifa_name;
    itf.addr.len = f == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    std::memcpy(&itf.addr.ss, i->ifa_addr, itf.addr.len);
    itf.addr.setPort(0);
    if (!spec.empty()) {
      if (parseFilter(spec).matches(itf.name)) candidates.push_back(itf);
    } else if (i->ifa_flags & IFF_LOOPBACK) {
      loopbacks.push_back(itf);
    } else if (itf.name.rfind("docker", 0) != 0 && itf.name.rfind("virbr", 0) != 0) {
      candidates.push_back(itf);
    }
  }
  freeifaddrs(list);
  // IPv4 first within the same preference.
  std::stable_sort(candidates.begin(), candidates.end(), [](const Interface& a, const Interface& b) {
    return a.addr.family() == AF_INET && b.addr.family() != AF_INET;
  });
  std::stable_sort(loopbacks.begin(), loopbacks.end(), [](const Interface& a, const Interface& b) {
    return a.addr.family() == AF_INET && b.addr.family() != AF_INET;
  });
  if (candidates.empty() && spec.empty()) candidates = loopbacks;
  if (candidates.empty()) {
    return invalidArgument("no network interface matches WEFT_SOCKET_IFNAME=\"" + spec +
                           "\"" + (fam.empty() ? "" : " and WEFT_SOCKET_FAMILY=" + fam) +
                           "; list interfaces with `ip addr` and set WEFT_SOCKET_IFNAME to one that is up");
  }
  *out = candidates;
  return Status::ok();
}

Status listenOn(const SockAddr& addr, int* fd, SockAddr* bound) {
  int s = socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return errnoStatus("socket", errno);
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(s, reinterpret_cast<const sockaddr*>(&addr.ss), addr.len) != 0) {
    int e = errno;
    close(s);
    return errnoStatus("bind to " + addr.str(), e);
  }
  if (listen(s, 1024) != 0) {
    int e = errno;
    close(s);
    return errnoStatus("listen on " + addr.str(), e);
  }
  SockAddr b;
  b.len = sizeof b.ss;
  getsockname(s, reinterpret_cast<sockaddr*>(&b.ss), &b.len);
  *bound = b;
  *fd = s;
  return Status::ok();
}

Status setNonBlocking(int fd, bool on) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return errnoStatus("fcntl(F_GETFL)", errno);
  fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
  if (fcntl(fd, F_SETFL, fl) != 0) return errnoStatus("fcntl(F_SETFL)", errno);
  return Status::ok();
}

void setNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

Status connectTo(const SockAddr& addr, uint64_t deadlineNs, const std::atomic<bool>* abort, int* fd) {
  int delayMs = 1;
  for (;;) {
    int s = socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0) return errnoStatus("socket", errno);
    int r = connect(s, reinterpret_cast<const sockaddr*>(&addr.ss), addr.len);
    int err = r == 0 ? 0 : errno;
    if (err == EINPROGRESS) {
      for (;;) {
        if (abort && abort->load()) {
          close(s);
          return invalidUsage("aborted while connecting to " + addr.str());
        }
        pollfd p{s, POLLOUT, 0};
        int pr = poll(&p, 1, 10);
        if (pr > 0) {
          socklen_t l = sizeof err;
          getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &l);
          break;
        }
        if (pr < 0 && errno != EINTR) {
          err = errno;
          break;
        }
        if (deadlineNs && nowNs() > deadlineNs) {
          err = ETIMEDOUT;
          break;
        }
      }
    }
    if (err == 0) {
      Status st = setNonBlocking(s, false);
      if (!st) {
        close(s);
        return st;
      }
      setNoDelay(s);
      *fd = s;
      return Status::ok();
    }
    close(s);
    bool retry = err == ECONNREFUSED || err == ETIMEDOUT || err == EAGAIN || err == ECONNRESET ||
                 err == EHOSTUNREACH || err == ENETUNREACH;
    if (!retry || (deadlineNs && nowNs() > deadlineNs))
      return errnoStatus("cannot connect to " + addr.str(), err);
    if (abort && abort->load()) return invalidUsage("aborted while connecting to " + addr.str());
    std::this_thread::sleep_for(std::chrono::milliseconds(delayMs));
    delayMs = std::min(delayMs * 2, 100);
  }
}

namespace {
Status waitFd(int fd, short events, uint64_t deadlineNs, const std::atomic<bool>* abort, const char* what) {
  for (;;) {
    if (abort && abort->load()) return invalidUsage(std::string("aborted while waiting to ") + what);
    pollfd p{fd, events, 0};
    int r = poll(&p, 1, 10);
    if (r > 0) return Status::ok();
    if (r < 0 && errno != EINTR) return errnoStatus("poll", errno);
    if (deadlineNs && nowNs() > deadlineNs) return timeoutError(std::string("timed out waiting to ") + what);
  }
}
}  // namespace

Status sendAll(int fd, const void* buf, size_t len, uint64_t deadlineNs, const std::atomic<bool>* abort) {
  const char* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      len -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      WEFT_TRY(waitFd(fd, POLLOUT, deadlineNs, abort, "send"));
      continue;
    }
    return errnoStatus("send", errno);
  }
  return Status::ok();
}

Status recvAll(int fd, void* buf, size_t len, uint64_t deadlineNs, const std::atomic<bool>* abort) {
  char* p = static_cast<char*>(buf);
  while (len > 0) {
    ssize_t n = recv(fd, p, len, MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      len -= static_cast<size_t>(n);
      continue;
    }
    if (n == 0) return remoteError("the peer closed the connection");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      WEFT_TRY(waitFd(fd, POLLIN, deadlineNs, abort, "receive"));
      continue;
    }
    return errnoStatus("recv", errno);
  }
  return Status::ok();
}

ssize_t sendWithFds(int sock, const void* data, size_t len, const int* fds, size_t nfds, int flags) {
  if (nfds == 0 || nfds > kMaxPassedFds) {
    errno = EINVAL;
    return -1;
  }
  iovec iov{const_cast<void*>(data), len};
  alignas(cmsghdr) char buf[CMSG_SPACE(sizeof(int) * kMaxPassedFds)] = {};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = buf;
  m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
  std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  return sendmsg(sock, &m, flags | MSG_NOSIGNAL);
}

ssize_t recvWithFds(int sock, void* data, size_t len, int* fds, size_t maxFds, size_t* nfds, int flags) {
  *nfds = 0;
  iovec iov{data, len};
  // Room for more than the caller keeps, so that surplus descriptors arrive (and are closed) rather
  // than being dropped by the kernel with MSG_CTRUNC.
  alignas(cmsghdr) char buf[CMSG_SPACE(sizeof(int) * 2 * kMaxPassedFds)] = {};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = buf;
  m.msg_controllen = sizeof buf;
  const ssize_t n = recvmsg(sock, &m, flags | MSG_CMSG_CLOEXEC);
  if (n < 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (*nfds < maxFds) fds[(*nfds)++] = fd;
      else close(fd);
    }
  }
  return n;
}

}  // namespace weft::net
