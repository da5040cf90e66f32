// The verbs transport over softverbs (ctest sets WEFT_IBVERBS_LIB to softverbs and the RoCE fixture):
// ordered messages of every size striped over QPs, receives larger than the message, tag and size
// errors, a peer that dies, a malformed handshake, user buffers never registered, no device.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "lib/core/net.h"
#include "lib/engine/transport_select.h"
#include "transports/ib/ib_transport.h"

namespace weft::transport {
namespace {

uint64_t nowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

std::vector<IbPortSpec> roce() { return {{"svroce0", 1, 3}}; }

std::unique_ptr<MessagingTransport> make() {
  Status s;
  auto t = createIbTransport(roce(), &s);
  EXPECT_TRUE(s.isOk()) << s.message();
  return t;
}

// Spin-then-wait on the transport's descriptors until done or an error or the deadline.
Status waitDone(MessagingTransport* t, Request* r, SendComm* sc, RecvComm* rc, size_t* size, int timeoutMs = 20000) {
  uint64_t end = nowMs() + static_cast<uint64_t>(timeoutMs);
  int spins = 0;
  for (;;) {
    bool done = false;
    Status s = t->test(r, &done, size);
    if (!s) return s;
    if (done) return Status::ok();
    if (nowMs() > end) return timeoutError("request did not complete");
    if (++spins < 4) continue;
    std::vector<pollfd> fds;
    if (sc) t->pollDescriptors(sc, &fds);
    if (rc) t->pollDescriptors(rc, &fds);
    poll(fds.data(), fds.size(), 10);
  }
}

struct Pair {
  MessagingTransport* t;
  ListenComm* l = nullptr;
  SendComm* s = nullptr;
  RecvComm* r = nullptr;
  explicit Pair(MessagingTransport* tr) : t(tr) {
    Handle h;
    EXPECT_TRUE(t->listen(0, &h, &l).isOk());
    uint64_t end = nowMs() + 10000;
    while ((!s || !r) && nowMs() < end) {
      if (!s) {
        Status st = t->connect(0, &h, &s);
        EXPECT_TRUE(st.isOk()) << st.message();
        if (!st) break;
      }
      if (!r) {
        Status st = t->accept(l, &r);
        EXPECT_TRUE(st.isOk()) << st.message();
        if (!st) break;
      }
    }
    EXPECT_TRUE(s && r);
  }
  ~Pair() {
    if (s) (void)t->closeSend(s);
    if (r) (void)t->closeRecv(r);
    if (l) (void)t->closeListen(l);
  }
};

void fill(std::vector<unsigned char>* v, unsigned seed) {
  for (size_t i = 0; i < v->size(); ++i) (*v)[i] = static_cast<unsigned char>((i * 131 + seed * 7 + (i >> 9)) & 0xff);
}

// Many messages in flight, each size in turn, checked for order, size and content.
void runSizes(bool registered, int qps) {
  setenv("WEFT_IB_QPS_PER_CONNECTION", std::to_string(qps).c_str(), 1);
  auto t = make();
  unsetenv("WEFT_IB_QPS_PER_CONNECTION");
  ASSERT_TRUE(t);
  Pair p(t.get());
  ASSERT_TRUE(p.s && p.r);
  const std::vector<size_t> sizes = {0, 1, 7, 63, 64, 65, 511, 4095, 4096, 65535, 65536, 65537, 300001, (1u << 20) + 13, (8u << 20) + 3};
  const int kWindow = 5;
  std::vector<std::vector<unsigned char>> src(sizes.size()), dst(sizes.size());
  std::vector<void*> smh(sizes.size()), rmh(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    src[i].resize(sizes[i] + 1);
    dst[i].assign(sizes[i] + 64, 0xee);
    fill(&src[i], static_cast<unsigned>(i));
    if (registered) {
      ASSERT_TRUE(t->regMr(p.s, src[i].data(), src[i].size(), &smh[i]).isOk());
      ASSERT_TRUE(t->regMr(p.r, dst[i].data(), dst[i].size(), &rmh[i]).isOk());
    }
  }
  // Post in windows: receives (larger than the message) then sends, so several are in flight.
  for (size_t base = 0; base < sizes.size(); base += kWindow) {
    std::vector<Request*> rr, sr;
    size_t end = std::min(sizes.size(), base + kWindow);
    for (size_t i = base; i < end; ++i) {
      Request* q = nullptr;
      ASSERT_TRUE(t->irecv(p.r, dst[i].data(), sizes[i] + 64, static_cast<uint32_t>(i), rmh[i], &q).isOk());
      ASSERT_TRUE(q);
      rr.push_back(q);
    }
    for (size_t i = base; i < end; ++i) {
      Request* q = nullptr;
      ASSERT_TRUE(t->isend(p.s, src[i].data(), sizes[i], static_cast<uint32_t>(i), smh[i], &q).isOk());
      ASSERT_TRUE(q);
      sr.push_back(q);
    }
    for (size_t k = 0; k < rr.size(); ++k) {
      size_t i = base + k, got = 0, sent = 0;
      Status s = waitDone(t.get(), rr[k], p.s, p.r, &got);
      ASSERT_TRUE(s.isOk()) << s.message();
      s = waitDone(t.get(), sr[k], p.s, p.r, &sent);
      ASSERT_TRUE(s.isOk()) << s.message();
      EXPECT_EQ(got, sizes[i]);
      EXPECT_EQ(sent, sizes[i]);
      EXPECT_EQ(0, std::memcmp(dst[i].data(), src[i].data(), sizes[i])) << "size " << sizes[i];
      EXPECT_EQ(dst[i][sizes[i]], 0xee) << "wrote past the message, size " << sizes[i];
    }
  }
  for (size_t i = 0; i < sizes.size(); ++i)
    if (registered) {
      EXPECT_TRUE(t->deregMr(p.s, smh[i]).isOk());
      EXPECT_TRUE(t->deregMr(p.r, rmh[i]).isOk());
    }
}

TEST(IbTransport, EverySizeRegisteredOneQp) { runSizes(true, 1); }
TEST(IbTransport, EverySizeRegisteredFourQps) { runSizes(true, 4); }
TEST(IbTransport, EverySizeUnregisteredThreeQps) { runSizes(false, 3); }

TEST(IbTransport, ManySmallMessagesInOrderBeyondTheFifoDepth) {
  auto t = make();
  ASSERT_TRUE(t);
  Pair p(t.get());
  ASSERT_TRUE(p.s && p.r);
  const int kN = 500;
  std::vector<uint32_t> out(kN), in(kN, 0);
  std::vector<Request*> sr, rr;
  int sent = 0, recvd = 0, sendPosted = 0, recvPosted = 0;
  uint64_t end = nowMs() + 20000;
  std::vector<Request*> sq, rq;
  while ((sent < kN || recvd < kN) && nowMs() < end) {
    while (recvPosted < kN) {
      Request* q = nullptr;
      ASSERT_TRUE(t->irecv(p.r, &in[static_cast<size_t>(recvPosted)], 4, 9, nullptr, &q).isOk());
      if (!q) break;  // no room: the FIFO is full
      rq.push_back(q);
      ++recvPosted;
    }
    while (sendPosted < kN) {
      out[static_cast<size_t>(sendPosted)] = static_cast<uint32_t>(sendPosted * 2654435761u);
      Request* q = nullptr;
      ASSERT_TRUE(t->isend(p.s, &out[static_cast<size_t>(sendPosted)], 4, 9, nullptr, &q).isOk());
      if (!q) break;
      sq.push_back(q);
      ++sendPosted;
    }
    while (recvd < recvPosted) {
      bool done = false;
      size_t n = 0;
      ASSERT_TRUE(t->test(rq[static_cast<size_t>(recvd)], &done, &n).isOk());
      if (!done) break;
      ASSERT_EQ(n, 4u);
      ++recvd;
    }
    while (sent < sendPosted) {
      bool done = false;
      size_t n = 0;
      ASSERT_TRUE(t->test(sq[static_cast<size_t>(sent)], &done, &n).isOk());
      if (!done) break;
      ++sent;
    }
  }
  ASSERT_EQ(recvd, kN);
  for (int i = 0; i < kN; ++i) ASSERT_EQ(in[static_cast<size_t>(i)], static_cast<uint32_t>(i * 2654435761u)) << i;
}

TEST(IbTransport, UserBuffersAreNeverRegistered) {
  auto t = make();
  ASSERT_TRUE(t);
  Pair p(t.get());
  ASSERT_TRUE(p.s && p.r);
  std::vector<unsigned char> src(3 << 20), dst(3 << 20);
  fill(&src, 3);
  size_t before = ibRegistrationHistory().size();  // earlier tests' (freed) memory may be reused
  for (size_t size : {size_t{5}, size_t{4000}, size_t{70000}, src.size()}) {
    Request *rq = nullptr, *sq = nullptr;
    ASSERT_TRUE(t->irecv(p.r, dst.data(), dst.size(), 1, nullptr, &rq).isOk());
    ASSERT_TRUE(t->isend(p.s, src.data(), size, 1, nullptr, &sq).isOk());
    size_t n = 0;
    ASSERT_TRUE(waitDone(t.get(), rq, p.s, p.r, &n).isOk());
    ASSERT_TRUE(waitDone(t.get(), sq, p.s, p.r, &n).isOk());
    ASSERT_EQ(0, std::memcmp(dst.data(), src.data(), size));
  }
  auto overlaps = [](const void* a, size_t an, const void* b, size_t bn) {
    auto x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
    return x < y + bn && y < x + an;
  };
  auto all = ibRegistrationHistory();
  std::vector<std::pair<const void*, size_t>> history(all.begin() + static_cast<long>(before), all.end());
  EXPECT_FALSE(history.empty());  // staging and FIFOs were registered
  for (auto& [addr, len] : history) {
    EXPECT_FALSE(overlaps(addr, len, src.data(), src.size())) << "the send buffer was registered";
    EXPECT_FALSE(overlaps(addr, len, dst.data(), dst.size())) << "the receive buffer was registered";
  }
}

TEST(IbTransport, TagMismatchIsAnError) {
  auto t = make();
  ASSERT_TRUE(t);
  Pair p(t.get());
  ASSERT_TRUE(p.s && p.r);
  char a[16] = "hello", b[16];
  Request *rq = nullptr, *sq = nullptr;
  ASSERT_TRUE(t->irecv(p.r, b, sizeof b, 7, nullptr, &rq).isOk());
  ASSERT_TRUE(t->isend(p.s, a, 6, 8, nullptr, &sq).isOk());
  size_t n;
  Status s = waitDone(t.get(), sq, p.s, p.r, &n, 5000);
  ASSERT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("tag 8"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("tag 7"), std::string::npos) << s.message();
}

TEST(IbTransport, MessageLargerThanTheReceiveIsAnError) {
  auto t = make();
  ASSERT_TRUE(t);
  Pair p(t.get());
  ASSERT_TRUE(p.s && p.r);
  std::vector<char> a(1000), b(100);
  Request *rq = nullptr, *sq = nullptr;
  ASSERT_TRUE(t->irecv(p.r, b.data(), b.size(), 0, nullptr, &rq).isOk());
  ASSERT_TRUE(t->isend(p.s, a.data(), a.size(), 0, nullptr, &sq).isOk());
  size_t n;
  Status s = waitDone(t.get(), sq, p.s, p.r, &n, 5000);
  ASSERT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("does not fit"), std::string::npos) << s.message();
}

// A child process connects and dies: the receiver's pending receive fails in bounded time.
TEST(IbTransport, PeerThatDiesFailsTheReceiveInBoundedTime) {
  auto t = make();
  ASSERT_TRUE(t);
  Handle h;
  ListenComm* l = nullptr;
  ASSERT_TRUE(t->listen(0, &h, &l).isOk());
  pid_t pid = fork();
  if (pid == 0) {
    Status s;
    auto ct = createIbTransport(roce(), &s);
    if (!ct) _exit(2);
    SendComm* sc = nullptr;
    uint64_t end = nowMs() + 10000;
    while (!sc && nowMs() < end)
      if (!ct->connect(0, &h, &sc)) _exit(3);
    if (!sc) _exit(4);
    usleep(200 * 1000);
    _exit(0);  // dies without sending or closing anything
  }
  RecvComm* rc = nullptr;
  uint64_t end = nowMs() + 10000;
  while (!rc && nowMs() < end) ASSERT_TRUE(t->accept(l, &rc).isOk());
  ASSERT_TRUE(rc);
  char buf[64];
  Request* q = nullptr;
  ASSERT_TRUE(t->irecv(rc, buf, sizeof buf, 0, nullptr, &q).isOk());
  uint64_t start = nowMs();
  size_t n;
  Status s = waitDone(t.get(), q, nullptr, rc, &n, 15000);
  int st = 0;
  waitpid(pid, &st, 0);
  EXPECT_EQ(WEXITSTATUS(st), 0);
  ASSERT_FALSE(s.isOk());
  EXPECT_NE(s.code(), Code::kTimeout) << s.message();
  EXPECT_LT(nowMs() - start, 5000u);
  EXPECT_NE(s.message().find("peer"), std::string::npos) << s.message();
  (void)t->closeRecv(rc);
  (void)t->closeListen(l);
}

// The receiver dies while the sender waits for its clear-to-send.
TEST(IbTransport, ReceiverThatDiesFailsTheSendInBoundedTime) {
  auto t = make();
  ASSERT_TRUE(t);
  int pipefd[2];
  ASSERT_EQ(0, pipe(pipefd));
  pid_t pid = fork();
  if (pid == 0) {
    Status s;
    auto ct = createIbTransport(roce(), &s);
    if (!ct) _exit(2);
    Handle h;
    ListenComm* l = nullptr;
    if (!ct->listen(0, &h, &l)) _exit(3);
    if (write(pipefd[1], &h, sizeof h) != static_cast<ssize_t>(sizeof h)) _exit(4);
    RecvComm* rc = nullptr;
    uint64_t end = nowMs() + 10000;
    while (!rc && nowMs() < end)
      if (!ct->accept(l, &rc)) _exit(5);
    usleep(200 * 1000);
    _exit(0);
  }
  Handle h;
  ASSERT_EQ(read(pipefd[0], &h, sizeof h), static_cast<ssize_t>(sizeof h));
  SendComm* sc = nullptr;
  uint64_t end = nowMs() + 10000;
  while (!sc && nowMs() < end) ASSERT_TRUE(t->connect(0, &h, &sc).isOk());
  ASSERT_TRUE(sc);
  char buf[64] = {};
  Request* q = nullptr;
  ASSERT_TRUE(t->isend(sc, buf, sizeof buf, 0, nullptr, &q).isOk());
  uint64_t start = nowMs();
  size_t n;
  Status s = waitDone(t.get(), q, sc, nullptr, &n, 15000);
  int st = 0;
  waitpid(pid, &st, 0);
  ASSERT_FALSE(s.isOk());
  EXPECT_NE(s.code(), Code::kTimeout) << s.message();
  EXPECT_LT(nowMs() - start, 5000u);
  (void)t->closeSend(sc);
  close(pipefd[0]);
  close(pipefd[1]);
}

// Junk and a foreign hello on the side channel are refused; a real connection still gets through.
TEST(IbTransport, MalformedHandshakeIsRefused) {
  auto t = make();
  ASSERT_TRUE(t);
  Handle h;
  ListenComm* l = nullptr;
  ASSERT_TRUE(t->listen(0, &h, &l).isOk());
  net::SockAddr addr;
  ASSERT_TRUE(net::SockAddr::fromWire(h.bytes + 8, &addr).isOk());  // layout: magic, pad, address
  std::vector<int> junkFds;
  for (int k = 0; k < 2; ++k) {
    int fd = -1;
    ASSERT_TRUE(net::connectTo(addr, 0, nullptr, &fd).isOk());
    std::vector<unsigned char> junk(400, static_cast<unsigned char>(0x41 + k));
    if (k == 1) {  // right magic and version, wrong listener
      uint32_t m[2] = {0x4c454849, 1};
      std::memcpy(junk.data(), m, sizeof m);
    }
    ASSERT_EQ(send(fd, junk.data(), junk.size(), MSG_NOSIGNAL), static_cast<ssize_t>(junk.size()));
    junkFds.push_back(fd);
  }
  RecvComm* rc = nullptr;
  for (int i = 0; i < 200 && !rc; ++i) {
    ASSERT_TRUE(t->accept(l, &rc).isOk());
    usleep(1000);
  }
  EXPECT_EQ(rc, nullptr);
  // The refused connections are closed by the listener.
  for (int fd : junkFds) {
    char c;
    pollfd pf{fd, POLLIN, 0};
    ASSERT_EQ(poll(&pf, 1, 5000), 1);
    ssize_t n = recv(fd, &c, 1, 0);
    EXPECT_TRUE(n == 0 || (n < 0 && errno == ECONNRESET)) << n;
    close(fd);
  }
  SendComm* sc = nullptr;
  uint64_t end = nowMs() + 10000;
  while ((!sc || !rc) && nowMs() < end) {
    if (!sc) {
      ASSERT_TRUE(t->connect(0, &h, &sc).isOk());
    }
    if (!rc) {
      ASSERT_TRUE(t->accept(l, &rc).isOk());
    }
  }
  ASSERT_TRUE(sc && rc);
  // A handle that is not an ib handle is refused by connect.
  Handle bad;
  std::memset(bad.bytes, 0x5a, sizeof bad.bytes);
  SendComm* sc2 = nullptr;
  Status s = t->connect(0, &bad, &sc2);
  EXPECT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("malformed"), std::string::npos) << s.message();
  (void)t->closeSend(sc);
  (void)t->closeRecv(rc);
  (void)t->closeListen(l);
}

TEST(IbTransport, NoDeviceIsAClearError) {
  std::string empty = ::testing::TempDir() + "/ib-no-device";
  (void)system(("mkdir -p " + empty).c_str());
  std::string old = getenv("SOFTVERBS_SYSFS_ROOT");
  setenv("SOFTVERBS_SYSFS_ROOT", empty.c_str(), 1);
  Status s;
  auto t = createIbTransport(roce(), &s);
  EXPECT_FALSE(t);
  EXPECT_NE(s.message().find("no RDMA device"), std::string::npos) << s.message();
  setenv("SOFTVERBS_SYSFS_ROOT", old.c_str(), 1);

  // A library that is not there.
  std::string lib = getenv("WEFT_IBVERBS_LIB");
  setenv("WEFT_IBVERBS_LIB", "/nonexistent/libibverbs.so.1", 1);
  t = createIbTransport(roce(), &s);
  EXPECT_FALSE(t);
  EXPECT_NE(s.message().find("cannot load"), std::string::npos) << s.message();
  // The real library on a kernel without InfiniBand: NULL device list (ENOSYS) or no device.
  setenv("WEFT_IBVERBS_LIB", "libibverbs.so.1", 1);
  t = createIbTransport(roce(), &s);
  if (!t) {
    EXPECT_FALSE(s.message().empty());
  }
  t.reset();
  setenv("WEFT_IBVERBS_LIB", lib.c_str(), 1);
}

TEST(IbTransport, OnlyLinkLocalGidsNameTheFix) {
  Status s;
  auto t = createIbTransport({{"svroce0", 1, -1}}, &s);
  EXPECT_FALSE(t);
  EXPECT_NE(s.message().find("WEFT_IB_GID_INDEX"), std::string::npos) << s.message();
}

// The engine: ib when allowed (WEFT_TRANSPORTS=ib); without a device it falls back to socket, unless
// WEFT_REQUIRE=rdma.
TEST(IbTransport, EngineFallsBackWithoutDeviceAndRequireMakesItAnError) {
  std::string empty = ::testing::TempDir() + "/ib-no-device2";
  (void)system(("mkdir -p " + empty).c_str());
  std::string oldSv = getenv("SOFTVERBS_SYSFS_ROOT"), oldW = getenv("WEFT_SYSFS_ROOT");
  {
    engine::TransportChoice c;
    Status s = engine::selectTransport({"ib"}, 0, &c);
    ASSERT_TRUE(s.isOk()) << s.message();
    EXPECT_EQ(c.name, "ib");  // the RoCE fixture has a usable port
  }
  setenv("WEFT_REQUIRE", "rdma", 1);
  {
    engine::TransportChoice c;
    Status s = engine::selectTransport({}, 0, &c);
    ASSERT_TRUE(s.isOk()) << s.message();
    EXPECT_EQ(c.name, "ib");
  }
  unsetenv("WEFT_REQUIRE");
  setenv("SOFTVERBS_SYSFS_ROOT", empty.c_str(), 1);
  setenv("WEFT_SYSFS_ROOT", empty.c_str(), 1);
  {
    engine::TransportChoice c;
    ASSERT_TRUE(engine::selectTransport({"ib", "socket"}, 0, &c).isOk());
    EXPECT_EQ(c.name, "socket");
  }
  setenv("WEFT_REQUIRE", "rdma", 1);
  {
    engine::TransportChoice c;
    Status s = engine::selectTransport({}, 0, &c);
    EXPECT_FALSE(s.isOk());
    EXPECT_NE(s.message().find("WEFT_REQUIRE=rdma"), std::string::npos) << s.message();
  }
  unsetenv("WEFT_REQUIRE");
  setenv("SOFTVERBS_SYSFS_ROOT", oldSv.c_str(), 1);
  setenv("WEFT_SYSFS_ROOT", oldW.c_str(), 1);
}

// Not run by default (ctest): one-process numbers for the report, ib over softverbs beside socket.
//   ib_transport_test --gtest_also_run_disabled_tests --gtest_filter=*DISABLED_Measure*
TEST(IbTransport, DISABLED_MeasureLatencyAndBandwidth) {
  for (const char* name : {"ib", "socket"}) {
    Status st;
    std::unique_ptr<MessagingTransport> t = std::string(name) == "ib" ? createIbTransport(roce(), &st) : createSocketTransport(&st);
    ASSERT_TRUE(t) << st.message();
    Pair p(t.get());
    ASSERT_TRUE(p.s && p.r);
    for (size_t size : {size_t{8}, size_t{65536}, size_t{4} << 20}) {
      std::vector<char> a(size, 1), b(size);
      void *am = nullptr, *bm = nullptr;
      ASSERT_TRUE(t->regMr(p.s, a.data(), size, &am).isOk());
      ASSERT_TRUE(t->regMr(p.r, b.data(), size, &bm).isOk());
      int iters = size <= 65536 ? 2000 : 100;
      timespec t0, t1;
      clock_gettime(CLOCK_MONOTONIC, &t0);
      for (int i = 0; i < iters; ++i) {
        Request *rq = nullptr, *sq = nullptr;
        ASSERT_TRUE(t->irecv(p.r, b.data(), size, 0, bm, &rq).isOk());
        ASSERT_TRUE(t->isend(p.s, a.data(), size, 0, am, &sq).isOk());
        size_t n;
        ASSERT_TRUE(waitDone(t.get(), rq, p.s, p.r, &n).isOk());
        ASSERT_TRUE(waitDone(t.get(), sq, p.s, p.r, &n).isOk());
      }
      clock_gettime(CLOCK_MONOTONIC, &t1);
      double sec = static_cast<double>(t1.tv_sec - t0.tv_sec) + static_cast<double>(t1.tv_nsec - t0.tv_nsec) * 1e-9;
      printf("%-6s %9zu B: %8.2f us per message, %8.1f MB/s\n", name, size, sec / iters * 1e6,
             static_cast<double>(size) * iters / sec / 1e6);
      (void)t->deregMr(p.s, am);
      (void)t->deregMr(p.r, bm);
    }
  }
}

}  // namespace
}  // namespace weft::transport
