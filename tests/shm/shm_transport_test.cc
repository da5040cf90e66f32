// The shared-memory transport on its own: in one process and across two forked processes.
// Ordered messages of every size (0, 1, odd, around slot and ring boundaries, several MiB), posted
// receives larger than the message, tag and oversize errors, malformed handles, many messages in
// flight, idle waits through pollDescriptors() (a lost wake-up fails the test), a killed peer failing
// the pending requests within a second and leaving nothing in /dev/shm, and a throughput print
// against the socket transport.
#include "transports/shm/shm_transport.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "lib/core/util.h"

namespace weft::transport {
namespace {

using shm::kSlotCount;
using shm::kSlotPayloadBytes;

constexpr size_t kRingPayload = kSlotCount * kSlotPayloadBytes;

struct Pair {
  std::unique_ptr<MessagingTransport> t;
  SendComm* send = nullptr;
  RecvComm* recv = nullptr;
};

std::unique_ptr<MessagingTransport> makeShm() {
  Status s;
  auto t = createShmTransport(&s);
  EXPECT_TRUE(s.isOk()) << s.message();
  return t;
}

Pair connectPair() {
  Pair p;
  p.t = makeShm();
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
  return p;
}

// Drives requests until all are done. With pollComms, an idle round waits in poll() on the
// descriptors the transport hands out, the way the engine does; a poll() that times out while the
// peer is working means a lost wake-up and fails.
bool waitAll(MessagingTransport* t, std::vector<Request*>& reqs, std::vector<size_t>* sizes, Status* err,
             SendComm* pollSend = nullptr, RecvComm* pollRecv = nullptr, uint64_t timeoutNs = 20000000000ull) {
  uint64_t deadline = nowNs() + timeoutNs;
  std::vector<bool> done(reqs.size(), false);
  size_t left = reqs.size();
  std::vector<pollfd> fds;
  while (left && nowNs() < deadline) {
    bool progressed = false;
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
        progressed = true;
        --left;
        if (sizes) (*sizes)[i] = sz;
      }
    }
    if (!left || progressed) continue;
    if (!pollSend && !pollRecv) {
      sched_yield();  // a spinning waiter must let its peer run (2 cores, several processes)
      continue;
    }
    fds.clear();
    if (pollSend) t->pollDescriptors(pollSend, &fds);
    if (pollRecv) t->pollDescriptors(pollRecv, &fds);
    if (fds.empty()) continue;
    int n = poll(fds.data(), fds.size(), 5000);
    if (n == 0) {
      *err = timeoutError("poll() slept 5 s with requests pending: lost wake-up");
      return false;
    }
  }
  if (left) *err = timeoutError("requests did not complete in time");
  return left == 0;
}

std::vector<char> pattern(size_t n, size_t k) {
  std::vector<char> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<char>((i * 131 + k * 7 + (i >> 12)) & 0xff);
  return v;
}

std::vector<size_t> everySize() {
  return {0,
          1,
          15,
          63,
          64,
          65,
          4095,
          kSlotPayloadBytes - 1,
          kSlotPayloadBytes,
          kSlotPayloadBytes + 1,
          2 * kSlotPayloadBytes,
          2 * kSlotPayloadBytes + 7,
          kRingPayload - 1,
          kRingPayload,
          kRingPayload + 1,
          1 << 20,
          (6u << 20) + 3};
}

// Sends every size, in order, with tag = index.
Status sendAll(MessagingTransport* t, SendComm* s, const std::vector<size_t>& sizes, bool usePoll) {
  std::vector<std::vector<char>> out(sizes.size());
  std::vector<Request*> reqs;
  for (size_t k = 0; k < sizes.size(); ++k) {
    out[k] = pattern(sizes[k], k);
    Request* r = nullptr;
    WEFT_TRY(t->isend(s, out[k].data(), sizes[k], static_cast<uint32_t>(k), nullptr, &r));
    if (!r) return internalError("isend refused a request");
    reqs.push_back(r);
  }
  Status err;
  if (!waitAll(t, reqs, nullptr, &err, usePoll ? s : nullptr, nullptr)) return err;
  return Status::ok();
}

// Receives every size into buffers 100 bytes larger and checks size and content.
Status recvAll(MessagingTransport* t, RecvComm* rc, const std::vector<size_t>& sizes, bool usePoll) {
  std::vector<std::vector<char>> in(sizes.size());
  std::vector<Request*> reqs;
  for (size_t k = 0; k < sizes.size(); ++k) {
    in[k].assign(sizes[k] + 100, 0);
    Request* r = nullptr;
    WEFT_TRY(t->irecv(rc, in[k].data(), in[k].size(), static_cast<uint32_t>(k), nullptr, &r));
    if (!r) return internalError("irecv refused a request");
    reqs.push_back(r);
  }
  std::vector<size_t> got(sizes.size());
  Status err;
  if (!waitAll(t, reqs, &got, &err, nullptr, usePoll ? rc : nullptr)) return err;
  for (size_t k = 0; k < sizes.size(); ++k) {
    if (got[k] != sizes[k]) return internalError("message " + std::to_string(k) + " has the wrong size");
    if (in[k] != [&] {
          auto v = pattern(sizes[k], k);
          v.resize(sizes[k] + 100, 0);
          return v;
        }())
      return internalError("message " + std::to_string(k) + " has the wrong content");
  }
  return Status::ok();
}

// --- one process ---

TEST(ShmTransport, OrderedMessagesOfEverySizeInOneProcess) {
  Pair p = connectPair();
  std::vector<size_t> sizes = everySize();
  std::vector<std::vector<char>> out(sizes.size()), in(sizes.size());
  std::vector<Request*> sends, recvs;
  for (size_t k = 0; k < sizes.size(); ++k) {
    out[k] = pattern(sizes[k], k);
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
    EXPECT_TRUE(std::equal(out[k].begin(), out[k].end(), in[k].begin())) << "message " << k;
    for (size_t i = sizes[k]; i < in[k].size(); ++i) ASSERT_EQ(in[k][i], 0) << "wrote past message " << k;
  }
  EXPECT_TRUE(p.t->closeSend(p.send).isOk());
  EXPECT_TRUE(p.t->closeRecv(p.recv).isOk());
}

TEST(ShmTransport, ManyMessagesInFlightAndRequestLimit) {
  Pair p = connectPair();
  // Fill the request pool: isend then returns no request ("try again"), never an error.
  std::vector<std::vector<char>> out;
  std::vector<Request*> sends;
  for (int k = 0;; ++k) {
    out.push_back(pattern(static_cast<size_t>(k * 37 % 3000), static_cast<size_t>(k)));
    Request* r = nullptr;
    ASSERT_TRUE(p.t->isend(p.send, out.back().data(), out.back().size(), static_cast<uint32_t>(k), nullptr, &r).isOk());
    if (!r) break;
    sends.push_back(r);
    ASSERT_LT(k, 10000);
  }
  out.pop_back();
  ASSERT_GE(sends.size(), 64u);
  // Receive them all, posting every receive at once.
  std::vector<std::vector<char>> in(sends.size());
  std::vector<Request*> recvs;
  for (size_t k = 0; k < sends.size(); ++k) {
    in[k].assign(3000, 0);
    Request* r = nullptr;
    ASSERT_TRUE(p.t->irecv(p.recv, in[k].data(), in[k].size(), static_cast<uint32_t>(k), nullptr, &r).isOk());
    ASSERT_NE(r, nullptr);
    recvs.push_back(r);
  }
  std::vector<Request*> all = recvs;
  all.insert(all.end(), sends.begin(), sends.end());
  std::vector<size_t> got(all.size());
  Status err;
  ASSERT_TRUE(waitAll(p.t.get(), all, &got, &err)) << err.message();
  for (size_t k = 0; k < recvs.size(); ++k) {
    ASSERT_EQ(got[k], out[k].size());
    ASSERT_TRUE(std::equal(out[k].begin(), out[k].end(), in[k].begin())) << k;
  }
  // And a long stream through a window of 32 in flight.
  std::vector<char> buf(1000), rbuf(1000);
  for (int round = 0; round < 200; ++round) {
    std::vector<Request*> w;
    for (int i = 0; i < 16; ++i) {
      Request *s = nullptr, *r = nullptr;
      ASSERT_TRUE(p.t->isend(p.send, buf.data(), static_cast<size_t>(i * 60), 3, nullptr, &s).isOk());
      ASSERT_TRUE(p.t->irecv(p.recv, rbuf.data(), rbuf.size(), 3, nullptr, &r).isOk());
      ASSERT_TRUE(s && r);
      w.push_back(s);
      w.push_back(r);
    }
    ASSERT_TRUE(waitAll(p.t.get(), w, nullptr, &err)) << err.message();
  }
  EXPECT_TRUE(p.t->closeSend(p.send).isOk());
  EXPECT_TRUE(p.t->closeRecv(p.recv).isOk());
}

TEST(ShmTransportErrors, OversizedMessageAndTagMismatchAreErrors) {
  for (int variant = 0; variant < 2; ++variant) {
    Pair p = connectPair();
    std::vector<char> buf(1000), small(10);
    Request *rs = nullptr, *rr = nullptr;
    ASSERT_TRUE(p.t->irecv(p.recv, small.data(), small.size(), variant == 0 ? 1 : 2, nullptr, &rr).isOk());
    ASSERT_TRUE(p.t->isend(p.send, buf.data(), variant == 0 ? buf.size() : 5, 1, nullptr, &rs).isOk());
    std::vector<Request*> reqs = {rr};
    Status err;
    EXPECT_FALSE(waitAll(p.t.get(), reqs, nullptr, &err));
    EXPECT_FALSE(err.isOk());
    EXPECT_NE(err.message().find(variant == 0 ? "does not fit" : "tag"), std::string::npos) << err.message();
    EXPECT_EQ(std::string(small.begin(), small.end()), std::string(10, '\0'));  // nothing written
    (void)!p.t->closeSend(p.send);
    (void)!p.t->closeRecv(p.recv);
  }
}

TEST(ShmTransportErrors, PeerCloseFailsPendingReceivesButNotArrivedOnes) {
  Pair p = connectPair();
  std::vector<char> a(100, 'x'), big(3 * kSlotPayloadBytes, 'y'), b(200), c(big.size()), d(200);
  Request *rs = nullptr, *rs2 = nullptr, *r1 = nullptr, *r2 = nullptr, *r3 = nullptr;
  ASSERT_TRUE(p.t->irecv(p.recv, b.data(), b.size(), 0, nullptr, &r1).isOk());
  ASSERT_TRUE(p.t->irecv(p.recv, c.data(), c.size(), 0, nullptr, &r2).isOk());
  ASSERT_TRUE(p.t->irecv(p.recv, d.data(), d.size(), 0, nullptr, &r3).isOk());
  ASSERT_TRUE(p.t->isend(p.send, a.data(), a.size(), 0, nullptr, &rs).isOk());
  ASSERT_TRUE(p.t->isend(p.send, big.data(), big.size(), 0, nullptr, &rs2).isOk());
  std::vector<Request*> s = {rs, rs2};
  Status err;
  ASSERT_TRUE(waitAll(p.t.get(), s, nullptr, &err)) << err.message();  // both in the ring
  (void)!p.t->closeSend(p.send);  // the peer goes away after two messages
  std::vector<Request*> first = {r1, r2};
  ASSERT_TRUE(waitAll(p.t.get(), first, nullptr, &err)) << err.message();
  EXPECT_EQ(0, std::memcmp(b.data(), a.data(), a.size()));
  EXPECT_EQ(c, big);
  std::vector<Request*> third = {r3};
  uint64_t t0 = nowNs();
  EXPECT_FALSE(waitAll(p.t.get(), third, nullptr, &err));
  EXPECT_LT(nowNs() - t0, 1000000000ull);
  EXPECT_NE(err.message().find("closed the shared-memory connection during receive"), std::string::npos)
      << err.message();
  (void)!p.t->closeRecv(p.recv);
}

TEST(ShmTransportErrors, MalformedHandlesAreRefused) {
  auto t = makeShm();
  SendComm* s = nullptr;
  Handle zero;  // all zero: not a shared-memory handle
  Status st = t->connect(0, &zero, &s);
  EXPECT_FALSE(st.isOk());
  EXPECT_NE(st.message().find("handle"), std::string::npos) << st.message();

  ListenComm* l = nullptr;
  Handle good;
  ASSERT_TRUE(t->listen(0, &good, &l).isOk());
  Handle bad = good;
  bad.bytes[6] = 0xff;  // name length
  bad.bytes[7] = 0xff;
  st = t->connect(0, &bad, &s);
  EXPECT_FALSE(st.isOk());
  EXPECT_NE(st.message().find("handle"), std::string::npos) << st.message();
  bad = good;
  bad.bytes[16] = '\n';  // an unprintable socket name
  EXPECT_FALSE(t->connect(0, &bad, &s).isOk());
  bad = good;
  bad.bytes[4] = 99;  // version
  st = t->connect(0, &bad, &s);
  EXPECT_FALSE(st.isOk());
  EXPECT_NE(st.message().find("version"), std::string::npos) << st.message();

  // A well-formed handle with the wrong cookie: connect() completes (it does not wait for accept),
  // the listener refuses, and the first send that needs the peer fails saying so.
  bad = good;
  bad.bytes[8] ^= 0x5a;
  RecvComm* r = nullptr;
  uint64_t deadline = nowNs() + 5000000000ull;
  while (!s && nowNs() < deadline) ASSERT_TRUE(t->connect(0, &bad, &s).isOk());
  ASSERT_NE(s, nullptr);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(t->accept(l, &r).isOk());
    ASSERT_EQ(r, nullptr);
  }
  std::vector<char> big(kRingPayload + 1);
  Request* q = nullptr;
  ASSERT_TRUE(t->isend(s, big.data(), big.size(), 0, nullptr, &q).isOk());
  std::vector<Request*> one = {q};
  Status err;
  EXPECT_FALSE(waitAll(t.get(), one, nullptr, &err, nullptr, nullptr, 5000000000ull));
  EXPECT_NE(err.message().find("refused"), std::string::npos) << err.message();
  (void)!t->closeSend(s);
  s = nullptr;

  // A listener that is gone.
  ASSERT_TRUE(t->closeListen(l).isOk());
  st = t->connect(0, &good, &s);
  EXPECT_FALSE(st.isOk());
  EXPECT_NE(st.message().find("no shared-memory listener"), std::string::npos) << st.message();
  EXPECT_FALSE(t->connect(1, &good, &s).isOk());
}

// --- two processes ---

std::set<std::string> devShmEntries() {
  std::set<std::string> out;
  if (DIR* d = opendir("/dev/shm")) {
    while (dirent* e = readdir(d))
      if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) out.insert(e->d_name);
    closedir(d);
  }
  return out;
}

// Runs fn in a child; the parent gets the child's pid. fn returns an exit code.
pid_t forkChild(const std::function<int()>& fn) {
  fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    int rc = 99;
    try {
      rc = fn();
    } catch (...) {
    }
    _exit(rc);
  }
  return pid;
}

int waitChild(pid_t pid) {
  int st = 0;
  if (waitpid(pid, &st, 0) != pid) return -1;
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return WEXITSTATUS(st);
}

// The child connects (it sends), the parent accepts (it receives): handle through memory copied
// at fork. For the child to receive, it listens and writes its handle to a pipe.
struct CrossPair {
  std::unique_ptr<MessagingTransport> t;
  pid_t child = -1;
};

template <class T>
T* connectOrAccept(MessagingTransport* t, Handle* h, ListenComm* l) {
  T* out = nullptr;
  uint64_t deadline = nowNs() + 10000000000ull;
  while (!out && nowNs() < deadline) {
    Status s;
    if constexpr (std::is_same_v<T, SendComm>) {
      s = t->connect(0, h, &out);
    } else {
      s = t->accept(l, &out);
    }
    if (!s) {
      fprintf(stderr, "connect/accept: %s\n", s.message().c_str());
      return nullptr;
    }
    if (!out) usleep(100);
  }
  return out;
}

// Parent receives from a child that sends (childSends) or sends to a child that receives.
// childBody gets the child's comm; parentBody the parent's.
void crossProcess(bool childSends, const std::function<int(MessagingTransport*, SendComm*, RecvComm*)>& childBody,
                  const std::function<void(MessagingTransport*, SendComm*, RecvComm*, pid_t)>& parentBody) {
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  auto t = makeShm();
  Handle h;
  ListenComm* l = nullptr;
  if (childSends) {
    ASSERT_TRUE(t->listen(0, &h, &l).isOk());
  }
  pid_t child = forkChild([&]() -> int {
    close(pipefd[0]);
    Status s;
    auto ct = createShmTransport(&s);
    if (!s) return 2;
    if (childSends) {
      SendComm* sc = connectOrAccept<SendComm>(ct.get(), &h, nullptr);
      if (!sc) return 3;
      int rc = childBody(ct.get(), sc, nullptr);
      (void)!ct->closeSend(sc);
      return rc;
    }
    Handle ch;
    ListenComm* cl = nullptr;
    if (!ct->listen(0, &ch, &cl)) return 4;
    if (write(pipefd[1], ch.bytes, kHandleBytes) != static_cast<ssize_t>(kHandleBytes)) return 5;
    RecvComm* rc = connectOrAccept<RecvComm>(ct.get(), nullptr, cl);
    if (!rc) return 6;
    (void)!ct->closeListen(cl);
    int code = childBody(ct.get(), nullptr, rc);
    (void)!ct->closeRecv(rc);
    return code;
  });
  ASSERT_GT(child, 0);
  close(pipefd[1]);
  SendComm* sc = nullptr;
  RecvComm* rc = nullptr;
  if (childSends) {
    rc = connectOrAccept<RecvComm>(t.get(), nullptr, l);
    (void)!t->closeListen(l);
  } else {
    ASSERT_EQ(read(pipefd[0], h.bytes, kHandleBytes), static_cast<ssize_t>(kHandleBytes));
    sc = connectOrAccept<SendComm>(t.get(), &h, nullptr);
  }
  close(pipefd[0]);
  if (!sc && !rc) {
    kill(child, SIGKILL);
    waitChild(child);
    FAIL() << "no connection to the child";
  }
  parentBody(t.get(), sc, rc, child);
  if (sc) (void)!t->closeSend(sc);
  if (rc) (void)!t->closeRecv(rc);
}

TEST(ShmTransportProcesses, OrderedMessagesOfEverySizeWithIdleWaits) {
  std::vector<size_t> sizes = everySize();
  for (bool childSends : {true, false}) {
    for (bool usePoll : {false, true}) {
      SCOPED_TRACE(std::string(childSends ? "child sends" : "parent sends") + (usePoll ? ", poll" : ", spin"));
      uint64_t t0 = nowNs();
      crossProcess(
          childSends,
          [&](MessagingTransport* t, SendComm* s, RecvComm* r) {
            Status st = s ? sendAll(t, s, sizes, usePoll) : recvAll(t, r, sizes, usePoll);
            if (!st) fprintf(stderr, "child: %s\n", st.message().c_str());
            return st.isOk() ? 0 : 1;
          },
          [&](MessagingTransport* t, SendComm* s, RecvComm* r, pid_t child) {
            Status st = s ? sendAll(t, s, sizes, usePoll) : recvAll(t, r, sizes, usePoll);
            EXPECT_TRUE(st.isOk()) << st.message();
            EXPECT_EQ(waitChild(child), 0);
          });
      printf("[ shm      ] %s, %s waits: %.0f ms\n", childSends ? "child sends" : "parent sends",
             usePoll ? "poll" : "spinning", static_cast<double>(nowNs() - t0) / 1e6);
    }
  }
}

// The child streams (or drains) 1 MiB messages until killed; the parent's pending request must
// fail within a second, saying the peer process exited, and /dev/shm gains nothing.
void killedPeer(bool childSends) {
  std::set<std::string> before = devShmEntries();
  crossProcess(
      childSends,
      [&](MessagingTransport* t, SendComm* s, RecvComm* r) {
        std::vector<char> buf(1 << 20, 'z');
        for (;;) {
          Request* q = nullptr;
          Status st = s ? t->isend(s, buf.data(), buf.size(), 5, nullptr, &q)
                        : t->irecv(r, buf.data(), buf.size(), 5, nullptr, &q);
          if (!st || !q) return 1;
          std::vector<Request*> one = {q};
          if (!waitAll(t, one, nullptr, &st, s, r, 60000000000ull)) return 1;
        }
      },
      [&](MessagingTransport* t, SendComm* s, RecvComm* r, pid_t child) {
        std::vector<char> buf(1 << 20, 'p');
        // A few messages go through first: the transfer is under way when the child dies.
        for (int i = 0; i < 8; ++i) {
          Request* q = nullptr;
          ASSERT_TRUE((s ? t->isend(s, buf.data(), buf.size(), 5, nullptr, &q)
                         : t->irecv(r, buf.data(), buf.size(), 5, nullptr, &q)).isOk());
          ASSERT_NE(q, nullptr);
          std::vector<Request*> one = {q};
          Status err;
          ASSERT_TRUE(waitAll(t, one, nullptr, &err, s, r)) << err.message();
        }
        ASSERT_EQ(kill(child, SIGKILL), 0);
        uint64_t t0 = nowNs();
        // Keep posting (a sender first fills the ring) until a request fails; idle waits in poll().
        Status err;
        for (int i = 0; i < 100 && err.isOk(); ++i) {
          Request* q = nullptr;
          ASSERT_TRUE((s ? t->isend(s, buf.data(), buf.size(), 5, nullptr, &q)
                         : t->irecv(r, buf.data(), buf.size(), 5, nullptr, &q)).isOk());
          ASSERT_NE(q, nullptr);
          std::vector<Request*> one = {q};
          if (waitAll(t, one, nullptr, &err, s, r, 3000000000ull)) err = Status::ok();
        }
        double ms = static_cast<double>(nowNs() - t0) / 1e6;
        EXPECT_FALSE(err.isOk());
        EXPECT_EQ(err.code(), Code::kRemote) << err.message();
        EXPECT_NE(err.message().find("the peer process on this host"), std::string::npos) << err.message();
        EXPECT_NE(err.message().find(s ? "exited or was killed during send" : "exited or was killed during receive"),
                  std::string::npos)
            << err.message();
        EXPECT_LT(ms, 1000.0);
        printf("[ shm      ] killed %s detected after %.1f ms: %s\n", childSends ? "sender" : "receiver", ms,
               err.message().c_str());
        EXPECT_EQ(waitChild(child), 128 + SIGKILL);
      });
  std::set<std::string> after = devShmEntries();
  for (const auto& e : after)
    if (!before.count(e)) {
      // Other programs on this machine may create /dev/shm files meanwhile; ours would be named weft.
      EXPECT_EQ(e.find("weft"), std::string::npos) << "/dev/shm/" << e << " appeared";
      printf("[ shm      ] note: /dev/shm/%s appeared during the test (not created by weft)\n", e.c_str());
    }
}

TEST(ShmTransportProcesses, KilledSenderFailsReceiveWithinASecondAndLeavesNothing) { killedPeer(true); }
TEST(ShmTransportProcesses, KilledReceiverFailsSendWithinASecondAndLeavesNothing) { killedPeer(false); }

// The ring is a memfd mapping, never a /dev/shm file.
TEST(ShmTransport, RingIsAnAnonymousMemfd) {
  Pair p = connectPair();
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int memfds = 0;
  while (std::getline(maps, line)) {
    if (line.find("/memfd:weft-shm") != std::string::npos) ++memfds;
    EXPECT_EQ(line.find("/dev/shm/"), std::string::npos) << line;
  }
  EXPECT_EQ(memfds, 2);  // the sender's and the receiver's mapping
  (void)!p.t->closeSend(p.send);
  (void)!p.t->closeRecv(p.recv);
}

// GB/s for 4 MiB messages from a child to the parent, shm and then socket (over lo), printed only.
double streamGBps(MessagingTransport* t, SendComm* s, RecvComm* r, int count) {
  std::vector<char> buf(4 << 20, 'q');
  uint64_t t0 = nowNs();
  Status err;
  std::vector<Request*> window;
  for (int i = 0; i < count; ++i) {
    Request* q = nullptr;
    Status st = s ? t->isend(s, buf.data(), buf.size(), 1, nullptr, &q) : t->irecv(r, buf.data(), buf.size(), 1, nullptr, &q);
    if (!st || !q) return -1;
    window.push_back(q);
    if (window.size() == 4 || i == count - 1) {
      if (!waitAll(t, window, nullptr, &err, s, r)) return -1;
      window.clear();
    }
  }
  return static_cast<double>(buf.size()) * count / static_cast<double>(nowNs() - t0);
}

TEST(ShmTransportProcesses, ThroughputPrint) {
  constexpr int kCount = 64;  // 256 MiB
  double shmRate = 0;
  crossProcess(
      true, [&](MessagingTransport* t, SendComm* s, RecvComm*) { return streamGBps(t, s, nullptr, kCount) > 0 ? 0 : 1; },
      [&](MessagingTransport* t, SendComm*, RecvComm* r, pid_t child) {
        shmRate = streamGBps(t, nullptr, r, kCount);
        EXPECT_GT(shmRate, 0);
        EXPECT_EQ(waitChild(child), 0);
      });
  // The socket transport in the same run, same pattern.
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  Status s;
  auto sock = createSocketTransport(&s);
  ASSERT_TRUE(s.isOk()) << s.message();
  Handle h;
  ListenComm* l = nullptr;
  ASSERT_TRUE(sock->listen(0, &h, &l).isOk());
  pid_t child = forkChild([&]() -> int {
    Status cs;
    auto ct = createSocketTransport(&cs);
    if (!cs) return 2;
    SendComm* sc = connectOrAccept<SendComm>(ct.get(), &h, nullptr);
    if (!sc) return 3;
    int rc = streamGBps(ct.get(), sc, nullptr, kCount) > 0 ? 0 : 1;
    (void)!ct->closeSend(sc);
    return rc;
  });
  RecvComm* rc = connectOrAccept<RecvComm>(sock.get(), nullptr, l);
  ASSERT_NE(rc, nullptr);
  (void)!sock->closeListen(l);
  double sockRate = streamGBps(sock.get(), nullptr, rc, kCount);
  EXPECT_GT(sockRate, 0);
  EXPECT_EQ(waitChild(child), 0);
  (void)!sock->closeRecv(rc);
  printf("[ shm      ] 4 MiB messages, child -> parent, %d x: shm %.2f GB/s, socket (lo) %.2f GB/s\n", kCount,
         shmRate, sockRate);
}

// Round-trip latency of 8-byte messages between two processes (a connection each way), waiting by
// spinning with sched_yield() like the engine's first phase. Printed only.
TEST(ShmTransportProcesses, LatencyPrint) {
  constexpr int kIters = 2000;
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  auto t = makeShm();
  Handle h;
  ListenComm* l = nullptr;
  ASSERT_TRUE(t->listen(0, &h, &l).isOk());
  auto pingPong = [](MessagingTransport* tr, SendComm* s, RecvComm* r, bool first, int iters) -> bool {
    uint64_t out = 0, in = 0;
    for (int i = 0; i < iters; ++i) {
      for (int step = 0; step < 2; ++step) {
        bool sending = (step == 0) == first;
        Request* q = nullptr;
        Status st = sending ? tr->isend(s, &out, sizeof out, 9, nullptr, &q) : tr->irecv(r, &in, sizeof in, 9, nullptr, &q);
        if (!st || !q) return false;
        std::vector<Request*> one = {q};
        if (!waitAll(tr, one, nullptr, &st)) return false;
        if (!sending) out = in + 1;
      }
    }
    return true;
  };
  pid_t child = forkChild([&]() -> int {
    close(pipefd[0]);
    Status s;
    auto ct = createShmTransport(&s);
    Handle back;
    ListenComm* cl = nullptr;
    if (!ct->listen(0, &back, &cl)) return 2;
    if (write(pipefd[1], back.bytes, kHandleBytes) != static_cast<ssize_t>(kHandleBytes)) return 3;
    SendComm* sc = connectOrAccept<SendComm>(ct.get(), &h, nullptr);
    RecvComm* rc = connectOrAccept<RecvComm>(ct.get(), nullptr, cl);
    if (!sc || !rc) return 4;
    return pingPong(ct.get(), sc, rc, false, kIters + 100) ? 0 : 1;
  });
  close(pipefd[1]);
  Handle back;
  ASSERT_EQ(read(pipefd[0], back.bytes, kHandleBytes), static_cast<ssize_t>(kHandleBytes));
  close(pipefd[0]);
  SendComm* sc = connectOrAccept<SendComm>(t.get(), &back, nullptr);
  RecvComm* rc = connectOrAccept<RecvComm>(t.get(), nullptr, l);
  ASSERT_TRUE(sc && rc);
  (void)!t->closeListen(l);
  ASSERT_TRUE(pingPong(t.get(), sc, rc, true, 100));  // warm-up
  uint64_t t0 = nowNs();
  ASSERT_TRUE(pingPong(t.get(), sc, rc, true, kIters));
  double us = static_cast<double>(nowNs() - t0) / 1e3 / kIters;
  EXPECT_EQ(waitChild(child), 0);
  (void)!t->closeSend(sc);
  (void)!t->closeRecv(rc);
  printf("[ shm      ] 8-byte ping-pong between two processes: %.2f us round trip (%.2f us one way)\n", us, us / 2);
}

}  // namespace
}  // namespace weft::transport
