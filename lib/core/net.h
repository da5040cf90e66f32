// TCP/IP helpers shared by the bootstrap and the socket transport: addresses, interface choice
// (WEFT_SOCKET_IFNAME / WEFT_SOCKET_FAMILY), listen/connect, and whole-buffer I/O with deadlines that
// also stop on an abort flag.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "lib/core/status.h"

namespace weft::net {

struct SockAddr {
  sockaddr_storage ss{};
  socklen_t len = 0;

  int family() const { return ss.ss_family; }
  uint16_t port() const;
  void setPort(uint16_t port);
  std::string str() const;  // "10.0.0.1:4242" or "[fe80::1%eth0]:4242"

  // Fixed 28-byte wire form (family, port, 16 address bytes, scope id), for ids and handles.
  static constexpr size_t kWireBytes = 28;
  void toWire(unsigned char* out) const;
  static Status fromWire(const unsigned char* in, SockAddr* out);
};

struct Interface {
  std::string name;
  SockAddr addr;  // port 0
};

// The interface(s) chosen by WEFT_SOCKET_IFNAME / WEFT_SOCKET_FAMILY (NCCL's syntax: "eth,ib"
// prefixes, "^docker" excludes, "=eth0" exact). Default: the first up, non-loopback interface with
// an address (docker/virbr bridges skipped), else loopback. Never empty on success.
Status chooseInterfaces(std::vector<Interface>* out);

// A listening TCP socket bound to addr (port 0 = any); the actual address in *bound.
Status listenOn(const SockAddr& addr, int* fd, SockAddr* bound);

// Connect (blocking, retrying ECONNREFUSED/ETIMEDOUT until the deadline).
Status connectTo(const SockAddr& addr, uint64_t deadlineNs, const std::atomic<bool>* abort, int* fd);

Status setNonBlocking(int fd, bool on);
void setNoDelay(int fd);

// Whole-buffer I/O on a (possibly non-blocking) socket: waits with poll() in short slices, gives up
// at the deadline (deadlineNs = 0: none) or when *abort becomes true. EOF on recv is an error whose
// message says the peer closed the connection.
Status sendAll(int fd, const void* buf, size_t len, uint64_t deadlineNs, const std::atomic<bool>* abort);
Status recvAll(int fd, void* buf, size_t len, uint64_t deadlineNs, const std::atomic<bool>* abort);

// One message with file descriptors attached (SCM_RIGHTS over an AF_UNIX socket): the shm
// transport's rings and the direct region's memfd. Both return sendmsg's / recvmsg's result (-1 with
// errno). recvWithFds keeps at most maxFds of the descriptors that came (close-on-exec) in fds and
// closes any beyond them; *nfds says how many it kept.
inline constexpr size_t kMaxPassedFds = 4;
ssize_t sendWithFds(int sock, const void* data, size_t len, const int* fds, size_t nfds, int flags);
ssize_t recvWithFds(int sock, void* data, size_t len, int* fds, size_t maxFds, size_t* nfds, int flags);

}  // namespace weft::net
