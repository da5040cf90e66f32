// The socket transport on its own, in one process: connect/accept, ordered messages of every size
// (striped and not), posted receives larger than the message, and the errors a broken or foreign
// peer must produce.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "lib/core/util.h"
#include "transports/transport.h"

namespace weft::transport {
namespace {

struct Pair {
  std::unique_ptr<MessagingTransport> t;
  SendComm* send = nullptr;
  RecvComm* recv = nullptr;
};

Pair connectPair(const char* nsocks) {
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  setenv("WEFT_SOCKET_NSOCKS", nsocks, 1);
  Pair p;
  Status s;
  p.t = createSocketTransport(&s);
  EXPECT_TRUE(s.isOk()) << s.message();
  Handle h;
  ListenComm* l = nullptr;
  EXPECT_TRUE(p.t->listen(0, &h, &l).isOk());
  uint64_t deadline = nowNs() + 5000000000ull;
  while ((!p.send || !p.recv) && nowNs() < deadline) {
    if (!p.send) {
      EXPECT_TRUE(p.t->connect(0, &h, &p.send).isOk());
    }
    if (!p.recv) {
      EXPECT_TRUE(p.t->accept(l, &p.recv).isOk());
    }
  }
  EXPECT_TRUE(p.send && p.recv);
  EXPECT_TRUE(p.t->closeListen(l).isOk());
  unsetenv("WEFT_SOCKET_NSOCKS");
  return p;
}

// Drives requests until all are done; returns false on timeout.
bool waitAll(MessagingTransport* t, std::vector<Request*>& reqs, std::vector<size_t>* sizes, Status* err) {
  uint64_t deadline = nowNs() + 10000000000ull;
  std::vector<bool> done(reqs.size(), false);
  size_t left = reqs.size();
  while (left && nowNs() < deadline) {
    for (size_t i = 0; i < reqs.size(); ++i) {
      if (done[i]) continue;
      bool d = false;
      size_t sz = 0;
      Status s = t->test(reqs[i], &d, &sz);
      if (!s) {
        *err = s;
        return false;
      }
      if (d) {
        done[i] = true;
        --left;
        if (sizes) (*sizes)[i] = sz;
      }
    }
  }
  return left == 0;
}

class SocketTransport : public ::testing::TestWithParam<const char*> {};

TEST_P(SocketTransport, OrderedMessagesOfEverySize) {
  Pair p = connectPair(GetParam());
  std::vector<size_t> sizes = {0, 1, 15, 16, 4095, 65535, 65536, 65537, 1 << 20, (1 << 22) + 3};
  std::vector<std::vector<char>> out(sizes.size()), in(sizes.size());
  std::vector<Request*> sends, recvs;
  for (size_t k = 0; k < sizes.size(); ++k) {
    out[k].resize(sizes[k]);
    for (size_t i = 0; i < sizes[k]; ++i) out[k][i] = static_cast<char>((i * 131 + k * 7) & 0xff);
    in[k].assign(sizes[k] + 100, 0);  // posted larger than the message
    Request* r = nullptr;
    ASSERT_TRUE(p.t->irecv(p.recv, in[k].data(), in[k].size(), 7, nullptr, &r).isOk());
    ASSERT_NE(r, nullptr);
    recvs.push_back(r);
  }
  for (size_t k = 0; k < sizes.size(); ++k) {
    Request* r = nullptr;
    ASSERT_TRUE(p.t->isend(p.send, out[k].data(), sizes[k], 7, nullptr, &r).isOk());
    ASSERT_NE(r, nullptr);
    sends.push_back(r);
  }
  std::vector<Request*> all = sends;
  all.insert(all.end(), recvs.begin(), recvs.end());
  std::vector<size_t> got(all.size());
  Status err;
  ASSERT_TRUE(waitAll(p.t.get(), all, &got, &err)) << err.message();
  for (size_t k = 0; k < sizes.size(); ++k) {
    EXPECT_EQ(got[sizes.size() + k], sizes[k]);
    if (sizes[k]) {
      EXPECT_EQ(0, std::memcmp(in[k].data(), out[k].data(), sizes[k])) << "message " << k;
    }
  }
  EXPECT_TRUE(p.t->closeSend(p.send).isOk());
  EXPECT_TRUE(p.t->closeRecv(p.recv).isOk());
}

INSTANTIATE_TEST_SUITE_P(Sockets, SocketTransport, ::testing::Values("1", "2", "4"));

TEST(SocketTransportErrors, OversizedMessageAndTagMismatchAreErrors) {
  for (int variant = 0; variant < 2; ++variant) {
    Pair p = connectPair("2");
    std::vector<char> buf(1000), small(10);
    Request *rs = nullptr, *rr = nullptr;
    ASSERT_TRUE(p.t->irecv(p.recv, small.data(), small.size(), variant == 0 ? 1 : 2, nullptr, &rr).isOk());
    ASSERT_TRUE(p.t->isend(p.send, buf.data(), variant == 0 ? buf.size() : 5, 1, nullptr, &rs).isOk());
    std::vector<Request*> reqs = {rr};
    Status err;
    EXPECT_FALSE(waitAll(p.t.get(), reqs, nullptr, &err));
    EXPECT_FALSE(err.isOk());
    EXPECT_NE(err.message().find(variant == 0 ? "does not fit" : "tag"), std::string::npos) << err.message();
    EXPECT_TRUE(p.t->closeSend(p.send).isOk());
    EXPECT_TRUE(p.t->closeRecv(p.recv).isOk());
  }
}

TEST(SocketTransportErrors, PeerCloseFailsPendingReceivesButNotArrivedOnes) {
  Pair p = connectPair("2");
  std::vector<char> a(100, 'x'), b(200), c(200);
  Request *rs = nullptr, *r1 = nullptr, *r2 = nullptr;
  ASSERT_TRUE(p.t->irecv(p.recv, b.data(), b.size(), 0, nullptr, &r1).isOk());
  ASSERT_TRUE(p.t->irecv(p.recv, c.data(), c.size(), 0, nullptr, &r2).isOk());
  ASSERT_TRUE(p.t->isend(p.send, a.data(), a.size(), 0, nullptr, &rs).isOk());
  std::vector<Request*> s = {rs};
  Status err;
  ASSERT_TRUE(waitAll(p.t.get(), s, nullptr, &err));
  EXPECT_TRUE(p.t->closeSend(p.send).isOk());  // the peer goes away after one message
  std::vector<Request*> first = {r1};
  ASSERT_TRUE(waitAll(p.t.get(), first, nullptr, &err)) << err.message();
  EXPECT_EQ(0, std::memcmp(b.data(), a.data(), a.size()));
  std::vector<Request*> second = {r2};
  EXPECT_FALSE(waitAll(p.t.get(), second, nullptr, &err));
  EXPECT_NE(err.message().find("closed by the peer"), std::string::npos) << err.message();
  EXPECT_TRUE(p.t->closeRecv(p.recv).isOk());
}

TEST(SocketTransportErrors, ForeignHandleIsRefused) {
  Pair p = connectPair("1");
  Handle h;  // all zero: not a socket-transport handle
  SendComm* s = nullptr;
  Status st = p.t->connect(0, &h, &s);
  EXPECT_FALSE(st.isOk());
  EXPECT_NE(st.message().find("handle"), std::string::npos);
  EXPECT_TRUE(p.t->closeSend(p.send).isOk());
  EXPECT_TRUE(p.t->closeRecv(p.recv).isOk());
}

TEST(SocketTransportConfig, NsocksOutOfRangeIsAnError) {
  setenv("WEFT_SOCKET_NSOCKS", "99", 1);
  Status s;
  auto t = createSocketTransport(&s);
  EXPECT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("WEFT_SOCKET_NSOCKS"), std::string::npos);
  unsetenv("WEFT_SOCKET_NSOCKS");
}

}  // namespace
}  // namespace weft::transport
