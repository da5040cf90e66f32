// softverbs: every verb and error path, in one process (loopback QPs, QP pairs) and between two
// forked processes. Linked against softverbs' libibverbs.so.1 (RPATH), so the inline data-path
// verbs of <infiniband/verbs.h> go through softverbs' ibv_context ops.
#include <gtest/gtest.h>
#include <infiniband/verbs.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Helpers usable in a parent (gtest) and in a forked child (plain checks, exit code).
#define CK(c)                                                                       \
  do {                                                                              \
    if (!(c)) {                                                                     \
      fprintf(stderr, "child %d: check failed at %s:%d: %s (errno %d)\n", getpid(), \
              __FILE__, __LINE__, #c, errno);                                       \
      _exit(1);                                                                     \
    }                                                                               \
  } while (0)

struct Dev {
  ibv_context* ctx = nullptr;
  ibv_pd* pd = nullptr;
  explicit Dev(const char* name = nullptr) {
    int n = 0;
    ibv_device** list = ibv_get_device_list(&n);
    if (!list) return;
    for (int i = 0; i < n; ++i)
      if (!name || strcmp(ibv_get_device_name(list[i]), name) == 0) {
        ctx = ibv_open_device(list[i]);
        break;
      }
    ibv_free_device_list(list);
    if (ctx) pd = ibv_alloc_pd(ctx);
  }
  ~Dev() {
    if (pd) ibv_dealloc_pd(pd);
    if (ctx) ibv_close_device(ctx);
  }
  ibv_port_attr port() {
    ibv_port_attr a;
    ibv_query_port(ctx, 1, &a);
    return a;
  }
};

struct Buf {
  std::vector<char> mem;
  ibv_mr* mr = nullptr;
  Buf(ibv_pd* pd, size_t n, int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                                         IBV_ACCESS_REMOTE_READ)
      : mem(n, 0) {
    mr = ibv_reg_mr(pd, mem.data(), n, access);
  }
  ~Buf() {
    if (mr) ibv_dereg_mr(mr);
  }
  char* p() { return mem.data(); }
  uint64_t a(size_t off = 0) { return uint64_t(uintptr_t(mem.data() + off)); }
};

struct Endpoint {
  uint32_t qpn;
  uint16_t lid;
  ibv_gid gid;
  uint64_t addr;
  uint32_t rkey;
  uint32_t psn;
};

struct Opts {
  int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
  int timeout = 14, retry = 7, rnrRetry = 7, minRnrTimer = 1;
  int maxRd = 1, maxDestRd = 1;
  bool grh = false;
  int sgidIndex = 0;
};

struct Q {
  ibv_cq* cq = nullptr;
  ibv_qp* qp = nullptr;
  bool ownCq = true;
  Q(Dev& d, uint32_t sendWr = 64, uint32_t recvWr = 64, int cqe = 256, uint32_t inl = 64,
    ibv_cq* shared = nullptr) {
    cq = shared ? shared : ibv_create_cq(d.ctx, cqe, nullptr, nullptr, 0);
    ownCq = !shared;
    ibv_qp_init_attr ia;
    memset(&ia, 0, sizeof ia);
    ia.send_cq = ia.recv_cq = cq;
    ia.cap.max_send_wr = sendWr;
    ia.cap.max_recv_wr = recvWr;
    ia.cap.max_send_sge = ia.cap.max_recv_sge = 4;
    ia.cap.max_inline_data = inl;
    ia.qp_type = IBV_QPT_RC;
    if (cq) qp = ibv_create_qp(d.pd, &ia);
  }
  ~Q() {
    if (qp) ibv_destroy_qp(qp);
    if (cq && ownCq) ibv_destroy_cq(cq);
  }
  Endpoint ep(Dev& d, Buf* b = nullptr, uint32_t psn = 0x123) {
    Endpoint e;
    memset(&e, 0, sizeof e);
    e.qpn = qp->qp_num;
    e.lid = d.port().lid;
    ibv_query_gid(d.ctx, 1, 0, &e.gid);
    if (b) {
      e.addr = b->a();
      e.rkey = b->mr->rkey;
    }
    e.psn = psn;
    return e;
  }
};

int toInit(ibv_qp* qp, int access) {
  ibv_qp_attr a;
  memset(&a, 0, sizeof a);
  a.qp_state = IBV_QPS_INIT;
  a.port_num = 1;
  a.pkey_index = 0;
  a.qp_access_flags = unsigned(access);
  return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
}

int toRtr(ibv_qp* qp, const Endpoint& r, const Opts& o) {
  ibv_qp_attr a;
  memset(&a, 0, sizeof a);
  a.qp_state = IBV_QPS_RTR;
  a.path_mtu = IBV_MTU_1024;
  a.dest_qp_num = r.qpn;
  a.rq_psn = r.psn;
  a.max_dest_rd_atomic = uint8_t(o.maxDestRd);
  a.min_rnr_timer = uint8_t(o.minRnrTimer);
  a.ah_attr.dlid = r.lid;
  a.ah_attr.port_num = 1;
  if (o.grh) {
    a.ah_attr.is_global = 1;
    a.ah_attr.grh.dgid = r.gid;
    a.ah_attr.grh.sgid_index = uint8_t(o.sgidIndex);
    a.ah_attr.grh.hop_limit = 1;
  }
  return ibv_modify_qp(qp, &a,
                       IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                           IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
}

int toRts(ibv_qp* qp, uint32_t psn, const Opts& o) {
  ibv_qp_attr a;
  memset(&a, 0, sizeof a);
  a.qp_state = IBV_QPS_RTS;
  a.timeout = uint8_t(o.timeout);
  a.retry_cnt = uint8_t(o.retry);
  a.rnr_retry = uint8_t(o.rnrRetry);
  a.sq_psn = psn;
  a.max_rd_atomic = uint8_t(o.maxRd);
  return ibv_modify_qp(qp, &a,
                       IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                           IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
}

// Connects `qp` (whose own PSN is `myPsn`) to `r`.
int connect(ibv_qp* qp, const Endpoint& r, uint32_t myPsn, const Opts& o = Opts()) {
  int rc = toInit(qp, o.access);
  if (!rc) rc = toRtr(qp, r, o);
  if (!rc) rc = toRts(qp, myPsn, o);
  return rc;
}

// Waits for one completion; 0 when none came within timeoutMs.
int pollOne(ibv_cq* cq, ibv_wc* wc, int timeoutMs = 5000) {
  auto end = Clock::now() + std::chrono::milliseconds(timeoutMs);
  for (;;) {
    int n = ibv_poll_cq(cq, 1, wc);
    if (n != 0) return n;
    if (Clock::now() > end) return 0;
    usleep(100);
  }
}

int postSend(ibv_qp* qp, ibv_wr_opcode op, uint64_t wrId, void* addr, uint32_t len, uint32_t lkey,
             int flags = IBV_SEND_SIGNALED, uint64_t raddr = 0, uint32_t rkey = 0,
             uint32_t imm = 0) {
  ibv_sge sge{uint64_t(uintptr_t(addr)), len, lkey};
  ibv_send_wr wr;
  memset(&wr, 0, sizeof wr);
  wr.wr_id = wrId;
  wr.sg_list = &sge;
  wr.num_sge = len || lkey ? 1 : 0;
  wr.opcode = op;
  wr.send_flags = unsigned(flags);
  wr.imm_data = htonl(imm);
  wr.wr.rdma.remote_addr = raddr;
  wr.wr.rdma.rkey = rkey;
  ibv_send_wr* bad = nullptr;
  return ibv_post_send(qp, &wr, &bad);
}

int postRecv(ibv_qp* qp, uint64_t wrId, void* addr, uint32_t len, uint32_t lkey) {
  ibv_sge sge{uint64_t(uintptr_t(addr)), len, lkey};
  ibv_recv_wr wr;
  memset(&wr, 0, sizeof wr);
  wr.wr_id = wrId;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  ibv_recv_wr* bad = nullptr;
  return ibv_post_recv(qp, &wr, &bad);
}

// Two QPs of one process connected to each other (or one QP to itself when b == nullptr).
void pairUp(Dev& d, Q& a, Q* b, const Opts& o = Opts()) {
  Endpoint ea = a.ep(d, nullptr, 100);
  if (!b) {
    ASSERT_EQ(connect(a.qp, ea, 100, o), 0);
    return;
  }
  Endpoint eb = b->ep(d, nullptr, 200);
  ASSERT_EQ(connect(a.qp, eb, 100, o), 0);
  ASSERT_EQ(connect(b->qp, ea, 200, o), 0);
}

// ---------------------------------------------------------------------------------------------
// Two processes
bool writeAll(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n) {
    ssize_t k = write(fd, c, n);
    if (k <= 0) return false;
    c += k;
    n -= size_t(k);
  }
  return true;
}

bool readAll(int fd, void* p, size_t n, int timeoutMs = 10000) {
  char* c = static_cast<char*>(p);
  while (n) {
    pollfd pf{fd, POLLIN, 0};
    if (poll(&pf, 1, timeoutMs) <= 0) return false;
    ssize_t k = read(fd, c, n);
    if (k <= 0) return false;
    c += k;
    n -= size_t(k);
  }
  return true;
}

template <typename T>
bool sendObj(int fd, const T& v) { return writeAll(fd, &v, sizeof v); }
template <typename T>
bool recvObj(int fd, T* v) { return readAll(fd, v, sizeof *v); }

struct Peer {
  pid_t pid = -1;
  int fd = -1;
  // Runs fn(fd) in a forked child; its return value is the child's exit code.
  explicit Peer(const std::function<int(int)>& fn) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return;
    fflush(nullptr);
    pid = fork();
    if (pid == 0) {
      close(sv[0]);
      alarm(30);  // never outlive a hung test
      int rc = fn(sv[1]);
      _exit(rc);
    }
    close(sv[1]);
    fd = sv[0];
  }
  // Exit code of the child, -1 on timeout (it is killed).
  int join(int timeoutMs = 20000) {
    auto end = Clock::now() + std::chrono::milliseconds(timeoutMs);
    int st = 0;
    for (;;) {
      pid_t r = waitpid(pid, &st, WNOHANG);
      if (r == pid) break;
      if (Clock::now() > end) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        pid = -1;
        return -1;
      }
      usleep(1000);
    }
    pid = -1;
    if (fd >= 0) close(fd);
    fd = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  ~Peer() {
    if (pid > 0) join(1000);
  }
};

void fillPattern(char* p, size_t n, int seed) {
  for (size_t i = 0; i < n; ++i) p[i] = char((i * 31 + size_t(seed) * 7) & 0xff);
}
bool checkPattern(const char* p, size_t n, int seed) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != char((i * 31 + size_t(seed) * 7) & 0xff)) return false;
  return true;
}

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = getenv(name);
    had_ = old != nullptr;
    if (old) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_.c_str(), old_.c_str(), 1);
    else unsetenv(name_.c_str());
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

// =============================================================================================
// Devices and queries
TEST(Devices, DefaultDeviceAndQueries) {
  int n = -1;
  ibv_device** list = ibv_get_device_list(&n);
  ASSERT_NE(list, nullptr);
  ASSERT_EQ(n, 1);
  EXPECT_STREQ(ibv_get_device_name(list[0]), "softverbs0");
  EXPECT_EQ(ibv_get_device_index(list[0]), 0);
  EXPECT_NE(ibv_get_device_guid(list[0]), 0u);
  ibv_context* ctx = ibv_open_device(list[0]);
  ibv_free_device_list(list);
  ASSERT_NE(ctx, nullptr);
  EXPECT_EQ(ctx->cmd_fd, -1);
  EXPECT_GE(ctx->async_fd, 0);
  EXPECT_NE(verbs_get_ctx(ctx), nullptr);

  ibv_device_attr da;
  ASSERT_EQ(ibv_query_device(ctx, &da), 0);
  EXPECT_EQ(da.phys_port_cnt, 1);
  EXPECT_GE(da.max_qp_wr, 1024);
  EXPECT_GE(da.max_sge, 4);

  ibv_device_attr_ex dax;
  ASSERT_EQ(ibv_query_device_ex(ctx, nullptr, &dax), 0);  // inline: falls back to the legacy call
  EXPECT_EQ(dax.orig_attr.phys_port_cnt, 1);

  // The macro path (verbs_context::query_port) fills the whole struct...
  ibv_port_attr pa;
  memset(&pa, 0xab, sizeof pa);
  ASSERT_EQ(ibv_query_port(ctx, 1, &pa), 0);
  EXPECT_EQ(pa.state, IBV_PORT_ACTIVE);
  EXPECT_EQ(pa.link_layer, IBV_LINK_LAYER_INFINIBAND);
  EXPECT_NE(pa.lid, 0);
  EXPECT_EQ(pa.port_cap_flags2, 0);
  EXPECT_EQ(ibv_query_port(ctx, 2, &pa), EINVAL);
  // ...the exported symbol keeps the compat size and leaves port_cap_flags2 alone.
  memset(&pa, 0xab, sizeof pa);
  ASSERT_EQ((ibv_query_port)(ctx, 1, reinterpret_cast<_compat_ibv_port_attr*>(&pa)), 0);
  EXPECT_EQ(pa.lid, 1);
  EXPECT_EQ(pa.port_cap_flags2, 0xabab);

  ibv_gid gid;
  ASSERT_EQ(ibv_query_gid(ctx, 1, 0, &gid), 0);
  EXPECT_EQ(gid.raw[0], 0xfe);
  EXPECT_EQ(gid.raw[1], 0x80);
  EXPECT_NE(ibv_query_gid(ctx, 1, 1000, &gid), 0);
  ibv_gid_entry ge;
  ASSERT_EQ(ibv_query_gid_ex(ctx, 1, 0, &ge, 0), 0);
  EXPECT_EQ(ge.gid_type, IBV_GID_TYPE_IB);
  EXPECT_EQ(ibv_query_gid_ex(ctx, 1, 1, &ge, 0), ENODATA);
  ibv_gid_entry table[32];
  EXPECT_EQ(ibv_query_gid_table(ctx, table, 32, 0), 1);
  __be16 pkey;
  ASSERT_EQ(ibv_query_pkey(ctx, 1, 0, &pkey), 0);
  EXPECT_EQ(ntohs(pkey), 0xffff);
  EXPECT_EQ(ibv_get_pkey_index(ctx, 1, htons(0xffff)), 0);
  EXPECT_STREQ(ibv_wc_status_str(IBV_WC_RETRY_EXC_ERR), "transport retry counter exceeded");
  EXPECT_STREQ(ibv_event_type_str(IBV_EVENT_CQ_ERR), "CQ error");
  EXPECT_EQ(ibv_fork_init(), 0);
  EXPECT_EQ(ibv_close_device(ctx), 0);
}

TEST(Devices, RoceFixture) {
  ScopedEnv env("SOFTVERBS_SYSFS_ROOT", SOFTVERBS_FIXTURES "/roce");
  Dev d("svroce0");
  ASSERT_NE(d.ctx, nullptr);
  ibv_port_attr pa = d.port();
  EXPECT_EQ(pa.link_layer, IBV_LINK_LAYER_ETHERNET);
  EXPECT_EQ(pa.lid, 0);
  EXPECT_EQ(pa.active_mtu, IBV_MTU_1024);  // eth0 mtu 1500
  EXPECT_EQ(pa.gid_tbl_len, 8);
  ibv_gid_entry ge;
  ASSERT_EQ(ibv_query_gid_ex(d.ctx, 1, 3, &ge, 0), 0);
  EXPECT_EQ(ge.gid_type, IBV_GID_TYPE_ROCE_V2);
  EXPECT_EQ(ge.ndev_ifindex, 2u);
  EXPECT_EQ(ge.gid.raw[10], 0xff);
  EXPECT_EQ(ge.gid.raw[12], 10);
  ASSERT_EQ(ibv_query_gid_ex(d.ctx, 1, 2, &ge, 0), 0);
  EXPECT_EQ(ge.gid_type, IBV_GID_TYPE_ROCE_V1);
  EXPECT_EQ(ibv_query_gid_ex(d.ctx, 1, 5, &ge, 0), ENODATA);
  ibv_gid_entry table[16];
  EXPECT_EQ(ibv_query_gid_table(d.ctx, table, 16, 0), 4);
  ibv_device_attr da;
  ASSERT_EQ(ibv_query_device(d.ctx, &da), 0);
  EXPECT_STREQ(da.fw_ver, "22.35.1012");
  EXPECT_EQ(da.vendor_id, 0x15b3u);

  // RoCE address vectors need a GRH; with one the QP connects to itself and moves data.
  Q q(d);
  ASSERT_NE(q.qp, nullptr);
  Endpoint e = q.ep(d, nullptr, 5);
  ibv_query_gid(d.ctx, 1, 3, &e.gid);
  Opts noGrh;
  ASSERT_EQ(toInit(q.qp, noGrh.access), 0);
  EXPECT_EQ(toRtr(q.qp, e, noGrh), EINVAL);
  Opts badIndex;
  badIndex.grh = true;
  badIndex.sgidIndex = 6;  // empty entry
  EXPECT_EQ(toRtr(q.qp, e, badIndex), EINVAL);
  Opts grh;
  grh.grh = true;
  grh.sgidIndex = 3;
  ASSERT_EQ(toRtr(q.qp, e, grh), 0);
  ASSERT_EQ(toRts(q.qp, 5, grh), 0);
  Buf src(d.pd, 256), dst(d.pd, 256);
  fillPattern(src.p(), 256, 3);
  ASSERT_EQ(postSend(q.qp, IBV_WR_RDMA_WRITE, 1, src.p(), 256, src.mr->lkey, IBV_SEND_SIGNALED,
                     dst.a(), dst.mr->rkey),
            0);
  ibv_wc wc;
  ASSERT_EQ(pollOne(q.cq, &wc), 1);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_TRUE(checkPattern(dst.p(), 256, 3));
}

TEST(Devices, TwoDeviceFixture) {
  ScopedEnv env("SOFTVERBS_SYSFS_ROOT", SOFTVERBS_FIXTURES "/ib2");
  int n = 0;
  ibv_device** list = ibv_get_device_list(&n);
  ASSERT_EQ(n, 2);
  EXPECT_STREQ(ibv_get_device_name(list[0]), "mlx5_0");
  EXPECT_STREQ(ibv_get_device_name(list[1]), "mlx5_1");
  EXPECT_STREQ(list[1]->ibdev_path, SOFTVERBS_FIXTURES "/ib2/class/infiniband/mlx5_1");
  ibv_free_device_list(list);
  Dev d0("mlx5_0"), d1("mlx5_1");
  ASSERT_NE(d0.ctx, nullptr);
  ASSERT_NE(d1.ctx, nullptr);
  EXPECT_EQ(d0.port().lid, 0x11);
  EXPECT_EQ(d1.port().lid, 0x12);
  __be16 pkey;
  ASSERT_EQ(ibv_query_pkey(d1.ctx, 1, 1, &pkey), 0);
  EXPECT_EQ(ntohs(pkey), 0x7fff);
  EXPECT_EQ(ibv_get_pkey_index(d1.ctx, 1, htons(0x7fff)), 1);

  // A QP on mlx5_0 talks to one on mlx5_1 by LID; the wrong LID is dropped -> retry exceeded.
  Q a(d0), b(d1);
  Buf ba(d0.pd, 64), bb(d1.pd, 64);
  Endpoint ea = a.ep(d0, &ba, 1), eb = b.ep(d1, &bb, 2);
  ASSERT_EQ(connect(a.qp, eb, 1), 0);
  ASSERT_EQ(connect(b.qp, ea, 2), 0);
  fillPattern(ba.p(), 64, 9);
  ASSERT_EQ(postSend(a.qp, IBV_WR_RDMA_WRITE, 7, ba.p(), 64, ba.mr->lkey, IBV_SEND_SIGNALED,
                     bb.a(), bb.mr->rkey),
            0);
  ibv_wc wc;
  ASSERT_EQ(pollOne(a.cq, &wc), 1);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_TRUE(checkPattern(bb.p(), 64, 9));

  Q c(d0);
  Endpoint wrongLid = b.ep(d1, &bb, 3);
  wrongLid.lid = 0x11;  // mlx5_0's LID, but the QP lives on mlx5_1
  Opts fast;
  fast.timeout = 8;
  fast.retry = 2;
  ASSERT_EQ(connect(c.qp, wrongLid, 3, fast), 0);
  ASSERT_EQ(postSend(c.qp, IBV_WR_RDMA_WRITE, 8, ba.p(), 8, ba.mr->lkey, IBV_SEND_SIGNALED,
                     bb.a(), bb.mr->rkey),
            0);
  ASSERT_EQ(pollOne(c.cq, &wc), 1);
  EXPECT_EQ(wc.status, IBV_WC_RETRY_EXC_ERR);
}

// =============================================================================================
// PD and MR
TEST(Mr, AccessFlagsBoundsAndLifetime) {
  Dev d;
  ASSERT_NE(d.pd, nullptr);
  std::vector<char> mem(8192);
  errno = 0;
  EXPECT_EQ(ibv_reg_mr(d.pd, mem.data(), mem.size(), IBV_ACCESS_REMOTE_WRITE), nullptr);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(ibv_reg_mr(d.pd, mem.data(), mem.size(), IBV_ACCESS_REMOTE_ATOMIC), nullptr);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(ibv_reg_mr(d.pd, mem.data(), mem.size(), 0x4000), nullptr);  // unknown bit
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(ibv_reg_mr(d.pd, mem.data(), 0, IBV_ACCESS_LOCAL_WRITE), nullptr);
  EXPECT_EQ(errno, EINVAL);
  void* gone = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  munmap(gone, 4096);
  errno = 0;
  EXPECT_EQ(ibv_reg_mr(d.pd, gone, 4096, IBV_ACCESS_LOCAL_WRITE), nullptr);
  EXPECT_EQ(errno, EFAULT);

  ibv_mr* ro = ibv_reg_mr(d.pd, mem.data(), mem.size(), IBV_ACCESS_REMOTE_READ);
  ASSERT_NE(ro, nullptr);
  EXPECT_EQ(ro->lkey, ro->rkey);
  // Optional bits go through ibv_reg_mr_iova2 and are accepted (ignored).
  int relaxed = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_RELAXED_ORDERING;
  ibv_mr* rel = ibv_reg_mr(d.pd, mem.data(), 4096, relaxed);
  ASSERT_NE(rel, nullptr);
  ibv_mr* iova = ibv_reg_mr_iova(d.pd, mem.data(), 4096, 0x100000, IBV_ACCESS_LOCAL_WRITE);
  ASSERT_NE(iova, nullptr);
  EXPECT_EQ(ibv_dealloc_pd(d.pd), EBUSY);
  uint32_t oldKey = ro->rkey;
  EXPECT_EQ(ibv_rereg_mr(ro, IBV_REREG_MR_CHANGE_ACCESS, nullptr, nullptr, 0,
                         IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE),
            0);
  EXPECT_NE(ro->rkey, oldKey);
  EXPECT_EQ(ibv_dereg_mr(ro), 0);
  EXPECT_EQ(ibv_dereg_mr(rel), 0);
  EXPECT_EQ(ibv_dereg_mr(iova), 0);
  // dmabuf is off by default: EOPNOTSUPP is the feature probe's "unsupported".
  errno = 0;
  EXPECT_EQ(ibv_reg_dmabuf_mr(d.pd, 0, 0, 0, -1, 0), nullptr);
  EXPECT_EQ(errno, EOPNOTSUPP);
}

TEST(Mr, DmabufWhenEnabled) {
  Peer child([](int) {
    setenv("SOFTVERBS_DMABUF", "1", 1);  // read at the child's first open
    Dev d;
    CK(d.pd);
    errno = 0;
    CK(!ibv_reg_dmabuf_mr(d.pd, 0, 0, 0, -1, 0) && errno == EBADF);
    int fd = memfd_create("softverbs-test", 0);
    CK(fd >= 0 && ftruncate(fd, 65536) == 0);
    ibv_mr* mr = ibv_reg_dmabuf_mr(d.pd, 4096, 8192, 0x7000000, fd,
                                   IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
    CK(mr);
    CK(mr->rkey == mr->lkey);
    // Write into it through a loopback QP, addressing it by its iova.
    Q q(d);
    Endpoint e = q.ep(d, nullptr, 1);
    CK(connect(q.qp, e, 1) == 0);
    Buf src(d.pd, 512);
    fillPattern(src.p(), 512, 4);
    CK(postSend(q.qp, IBV_WR_RDMA_WRITE, 1, src.p(), 512, src.mr->lkey, IBV_SEND_SIGNALED,
                0x7000000 + 100, mr->rkey) == 0);
    ibv_wc wc;
    CK(pollOne(q.cq, &wc) == 1 && wc.status == IBV_WC_SUCCESS);
    char* view = static_cast<char*>(mmap(nullptr, 65536, PROT_READ, MAP_SHARED, fd, 0));
    CK(view != MAP_FAILED);
    CK(checkPattern(view + 4096 + 100, 512, 4));
    // Past its end: remote access error.
    CK(postSend(q.qp, IBV_WR_RDMA_WRITE, 2, src.p(), 512, src.mr->lkey, IBV_SEND_SIGNALED,
                0x7000000 + 8000, mr->rkey) == 0);
    CK(pollOne(q.cq, &wc) == 1);
    if (wc.status != IBV_WC_REM_ACCESS_ERR) fprintf(stderr, "status %d\n", wc.status);
    CK(wc.status == IBV_WC_REM_ACCESS_ERR);
    munmap(view, 65536);
    CK(ibv_dereg_mr(mr) == 0);
    close(fd);
    return 0;
  });
  EXPECT_EQ(child.join(), 0);
}

// =============================================================================================
// QP state machine
TEST(Qp, CreateLimits) {
  Dev d;
  ibv_cq* cq = ibv_create_cq(d.ctx, 10, nullptr, nullptr, 0);
  ASSERT_NE(cq, nullptr);
  EXPECT_GE(cq->cqe, 10);
  ibv_qp_init_attr ia;
  memset(&ia, 0, sizeof ia);
  ia.send_cq = ia.recv_cq = cq;
  ia.cap.max_send_wr = ia.cap.max_recv_wr = 4;
  ia.cap.max_send_sge = ia.cap.max_recv_sge = 1;
  ia.qp_type = IBV_QPT_UD;
  errno = 0;
  EXPECT_EQ(ibv_create_qp(d.pd, &ia), nullptr);
  EXPECT_EQ(errno, EOPNOTSUPP);
  ia.qp_type = IBV_QPT_RC;
  ia.cap.max_send_sge = 64;
  EXPECT_EQ(ibv_create_qp(d.pd, &ia), nullptr);
  ia.cap.max_send_sge = 1;
  ia.cap.max_inline_data = 100000;
  EXPECT_EQ(ibv_create_qp(d.pd, &ia), nullptr);
  ia.cap.max_inline_data = 0;
  ia.cap.max_send_wr = 1 << 20;
  EXPECT_EQ(ibv_create_qp(d.pd, &ia), nullptr);
  ia.cap.max_send_wr = 4;
  ibv_qp* qp = ibv_create_qp(d.pd, &ia);
  ASSERT_NE(qp, nullptr);
  EXPECT_EQ(qp->state, IBV_QPS_RESET);
  EXPECT_EQ(ibv_destroy_cq(cq), EBUSY);
  EXPECT_EQ(ibv_dealloc_pd(d.pd), EBUSY);
  ibv_qp_attr a;
  ibv_qp_init_attr qi;
  ASSERT_EQ(ibv_query_qp(qp, &a, IBV_QP_CAP, &qi), 0);
  EXPECT_EQ(qi.cap.max_send_wr, 4u);
  EXPECT_EQ(qi.qp_type, IBV_QPT_RC);
  EXPECT_EQ(ibv_qp_to_qp_ex(qp), nullptr);
  EXPECT_EQ(ibv_create_srq(d.pd, nullptr), nullptr);
  EXPECT_EQ(ibv_destroy_qp(qp), 0);
  EXPECT_EQ(ibv_destroy_cq(cq), 0);
}

TEST(Qp, StateMachineAndMasks) {
  Dev d;
  Q q(d);
  ASSERT_NE(q.qp, nullptr);
  Endpoint e = q.ep(d, nullptr, 1);
  Buf b(d.pd, 64);
  ibv_qp_attr a;
  memset(&a, 0, sizeof a);
  // Nothing may be posted in RESET.
  EXPECT_EQ(postRecv(q.qp, 1, b.p(), 64, b.mr->lkey), EINVAL);
  EXPECT_EQ(postSend(q.qp, IBV_WR_SEND, 1, b.p(), 64, b.mr->lkey), EINVAL);
  // RESET -> RTR is not a transition.
  a.qp_state = IBV_QPS_RTR;
  EXPECT_EQ(ibv_modify_qp(q.qp, &a, IBV_QP_STATE), EINVAL);
  // RESET -> INIT needs PKEY_INDEX, PORT, ACCESS_FLAGS and takes nothing else.
  a.qp_state = IBV_QPS_INIT;
  a.port_num = 1;
  EXPECT_EQ(ibv_modify_qp(q.qp, &a, IBV_QP_STATE | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS), EINVAL);
  EXPECT_EQ(ibv_modify_qp(q.qp, &a,
                          IBV_QP_STATE | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX |
                              IBV_QP_TIMEOUT),
            EINVAL);
  a.port_num = 3;
  EXPECT_EQ(ibv_modify_qp(q.qp, &a,
                          IBV_QP_STATE | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX),
            EINVAL);
  a.port_num = 1;
  a.pkey_index = 5;
  EXPECT_EQ(ibv_modify_qp(q.qp, &a,
                          IBV_QP_STATE | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX),
            EINVAL);
  a.pkey_index = 0;
  ASSERT_EQ(toInit(q.qp, IBV_ACCESS_REMOTE_WRITE), 0);
  EXPECT_EQ(q.qp->state, IBV_QPS_INIT);
  // INIT -> INIT with no attributes; receives may be posted from INIT on.
  a.qp_state = IBV_QPS_INIT;
  EXPECT_EQ(ibv_modify_qp(q.qp, &a, IBV_QP_STATE), 0);
  EXPECT_EQ(postRecv(q.qp, 1, b.p(), 64, b.mr->lkey), 0);
  EXPECT_EQ(postSend(q.qp, IBV_WR_SEND, 1, b.p(), 64, b.mr->lkey), EINVAL);
  // CUR_STATE is not accepted from INIT.
  a.cur_qp_state = IBV_QPS_INIT;
  EXPECT_EQ(ibv_modify_qp(q.qp, &a, IBV_QP_STATE | IBV_QP_CUR_STATE), EINVAL);
  // INIT -> RTR: every required bit, valid values.
  Opts o;
  memset(&a, 0, sizeof a);
  a.qp_state = IBV_QPS_RTR;
  a.path_mtu = IBV_MTU_1024;
  a.dest_qp_num = e.qpn;
  a.ah_attr.dlid = e.lid;
  a.ah_attr.port_num = 1;
  a.max_dest_rd_atomic = 1;
  int rtrMask = IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER;
  EXPECT_EQ(ibv_modify_qp(q.qp, &a, rtrMask & ~IBV_QP_MIN_RNR_TIMER), EINVAL);
  EXPECT_EQ(ibv_modify_qp(q.qp, &a, rtrMask & ~IBV_QP_AV), EINVAL);
  EXPECT_EQ(ibv_modify_qp(q.qp, &a, rtrMask | IBV_QP_SQ_PSN), EINVAL);
  a.ah_attr.dlid = 0;
  EXPECT_EQ(ibv_modify_qp(q.qp, &a, rtrMask), EINVAL);  // IB needs a LID
  a.ah_attr.dlid = e.lid;
  a.path_mtu = ibv_mtu(7);
  EXPECT_EQ(ibv_modify_qp(q.qp, &a, rtrMask), EINVAL);
  a.path_mtu = IBV_MTU_1024;
  a.max_dest_rd_atomic = 200;
  EXPECT_EQ(ibv_modify_qp(q.qp, &a, rtrMask), EINVAL);
  a.max_dest_rd_atomic = 1;
  ASSERT_EQ(ibv_modify_qp(q.qp, &a, rtrMask), 0);
  EXPECT_EQ(q.qp->state, IBV_QPS_RTR);
  EXPECT_EQ(postSend(q.qp, IBV_WR_SEND, 1, b.p(), 64, b.mr->lkey), EINVAL);
  // RTR -> RTS.
  memset(&a, 0, sizeof a);
  a.qp_state = IBV_QPS_RTS;
  a.timeout = 14;
  a.retry_cnt = 7;
  a.rnr_retry = 7;
  a.max_rd_atomic = 1;
  int rtsMask = IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC;
  EXPECT_EQ(ibv_modify_qp(q.qp, &a, rtsMask & ~IBV_QP_SQ_PSN), EINVAL);
  a.retry_cnt = 8;
  EXPECT_EQ(ibv_modify_qp(q.qp, &a, rtsMask), EINVAL);
  a.retry_cnt = 7;
  a.timeout = 32;
  EXPECT_EQ(ibv_modify_qp(q.qp, &a, rtsMask), EINVAL);
  a.timeout = 14;
  a.cur_qp_state = IBV_QPS_INIT;  // wrong current state
  EXPECT_EQ(ibv_modify_qp(q.qp, &a, rtsMask | IBV_QP_CUR_STATE), EINVAL);
  a.cur_qp_state = IBV_QPS_RTR;
  ASSERT_EQ(ibv_modify_qp(q.qp, &a, rtsMask | IBV_QP_CUR_STATE), 0);
  EXPECT_EQ(q.qp->state, IBV_QPS_RTS);
  // RTS -> RTS takes optional attributes only; RTS -> INIT does not exist.
  a.min_rnr_timer = 5;
  EXPECT_EQ(ibv_modify_qp(q.qp, &a, IBV_QP_MIN_RNR_TIMER), 0);
  EXPECT_EQ(ibv_modify_qp(q.qp, &a, IBV_QP_TIMEOUT), EINVAL);
  a.qp_state = IBV_QPS_INIT;
  EXPECT_EQ(ibv_modify_qp(q.qp, &a, IBV_QP_STATE), EINVAL);
  ibv_qp_attr qa;
  ibv_qp_init_attr qi;
  ASSERT_EQ(ibv_query_qp(q.qp, &qa, IBV_QP_STATE | IBV_QP_DEST_QPN, &qi), 0);
  EXPECT_EQ(qa.qp_state, IBV_QPS_RTS);
  EXPECT_EQ(qa.dest_qp_num, e.qpn);
  EXPECT_EQ(qa.min_rnr_timer, 5);
  EXPECT_EQ(qa.timeout, 14);
  // SQD and back.
  a.qp_state = IBV_QPS_SQD;
  EXPECT_EQ(ibv_modify_qp(q.qp, &a, IBV_QP_STATE), 0);
  a.qp_state = IBV_QPS_RTS;
  EXPECT_EQ(ibv_modify_qp(q.qp, &a, IBV_QP_STATE), 0);
  // Any -> ERR flushes what is posted; any -> RESET.
  a.qp_state = IBV_QPS_ERR;
  ASSERT_EQ(ibv_modify_qp(q.qp, &a, IBV_QP_STATE), 0);
  ibv_wc wc;
  ASSERT_EQ(pollOne(q.cq, &wc), 1);
  EXPECT_EQ(wc.status, IBV_WC_WR_FLUSH_ERR);
  EXPECT_EQ(wc.wr_id, 1u);
  // Posting to an ERR QP is accepted and completes with a flush error.
  EXPECT_EQ(postSend(q.qp, IBV_WR_SEND, 2, b.p(), 64, b.mr->lkey, 0), 0);
  ASSERT_EQ(pollOne(q.cq, &wc), 1);
  EXPECT_EQ(wc.status, IBV_WC_WR_FLUSH_ERR);
  EXPECT_EQ(wc.wr_id, 2u);
  a.qp_state = IBV_QPS_RESET;
  ASSERT_EQ(ibv_modify_qp(q.qp, &a, IBV_QP_STATE), 0);
  EXPECT_EQ(q.qp->state, IBV_QPS_RESET);
  ASSERT_EQ(connect(q.qp, e, 1), 0);  // usable again after RESET
}

// =============================================================================================
// Data path in one process
TEST(DataPath, LoopbackQpEveryOpcode) {
  Dev d;
  Q q(d);
  ASSERT_NO_FATAL_FAILURE(pairUp(d, q, nullptr));
  Buf src(d.pd, 4096), dst(d.pd, 4096);
  ibv_wc wc;
  // SEND with immediate, two SGEs gathered, into one receive.
  fillPattern(src.p(), 4096, 1);
  ASSERT_EQ(postRecv(q.qp, 50, dst.p(), 4096, dst.mr->lkey), 0);
  {
    ibv_sge sge[2] = {{src.a(0), 1000, src.mr->lkey}, {src.a(1000), 24, src.mr->lkey}};
    ibv_send_wr wr;
    memset(&wr, 0, sizeof wr);
    wr.wr_id = 51;
    wr.sg_list = sge;
    wr.num_sge = 2;
    wr.opcode = IBV_WR_SEND_WITH_IMM;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.imm_data = htonl(0xabcd);
    ibv_send_wr* bad;
    ASSERT_EQ(ibv_post_send(q.qp, &wr, &bad), 0);
  }
  bool sawSend = false, sawRecv = false;
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(pollOne(q.cq, &wc), 1);
    ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << ibv_wc_status_str(wc.status);
    if (wc.opcode == IBV_WC_SEND) {
      sawSend = true;
      EXPECT_EQ(wc.wr_id, 51u);
    } else {
      sawRecv = true;
      EXPECT_EQ(wc.opcode, IBV_WC_RECV);
      EXPECT_EQ(wc.wr_id, 50u);
      EXPECT_EQ(wc.byte_len, 1024u);
      EXPECT_TRUE(wc.wc_flags & IBV_WC_WITH_IMM);
      EXPECT_EQ(ntohl(wc.imm_data), 0xabcdu);
      EXPECT_EQ(wc.src_qp, q.qp->qp_num);
      EXPECT_EQ(wc.qp_num, q.qp->qp_num);
    }
  }
  EXPECT_TRUE(sawSend && sawRecv);
  EXPECT_TRUE(checkPattern(dst.p(), 1024, 1));
  // RDMA WRITE (no responder CQE), then WRITE_WITH_IMM (consumes a receive).
  memset(dst.p(), 0, 4096);
  ASSERT_EQ(postSend(q.qp, IBV_WR_RDMA_WRITE, 60, src.p(), 2048, src.mr->lkey, IBV_SEND_SIGNALED,
                     dst.a(100), dst.mr->rkey),
            0);
  ASSERT_EQ(pollOne(q.cq, &wc), 1);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_EQ(wc.opcode, IBV_WC_RDMA_WRITE);
  EXPECT_TRUE(checkPattern(dst.p() + 100, 2048, 1));
  EXPECT_EQ(ibv_poll_cq(q.cq, 1, &wc), 0);
  ASSERT_EQ(postRecv(q.qp, 61, nullptr, 0, 0), 0);
  ASSERT_EQ(postSend(q.qp, IBV_WR_RDMA_WRITE_WITH_IMM, 62, src.p(), 16, src.mr->lkey,
                     IBV_SEND_SIGNALED, dst.a(3000), dst.mr->rkey, 77),
            0);
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(pollOne(q.cq, &wc), 1);
    EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
    if (wc.wr_id == 61) {
      EXPECT_EQ(wc.opcode, IBV_WC_RECV_RDMA_WITH_IMM);
      EXPECT_EQ(wc.byte_len, 16u);
      EXPECT_EQ(ntohl(wc.imm_data), 77u);
    } else {
      EXPECT_EQ(wc.wr_id, 62u);
    }
  }
  EXPECT_TRUE(checkPattern(dst.p() + 3000, 16, 1));
  // RDMA READ back into the source buffer (a GPUDirect-flush style self read).
  fillPattern(dst.p(), 4096, 2);
  ASSERT_EQ(postSend(q.qp, IBV_WR_RDMA_READ, 70, src.p(), 4096, src.mr->lkey, IBV_SEND_SIGNALED,
                     dst.a(), dst.mr->rkey),
            0);
  ASSERT_EQ(pollOne(q.cq, &wc), 1);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_EQ(wc.opcode, IBV_WC_RDMA_READ);
  EXPECT_EQ(wc.byte_len, 4096u);
  EXPECT_TRUE(checkPattern(src.p(), 4096, 2));
  // Inline: the buffer may be reused as soon as post returns; no lkey needed.
  char small[32];
  fillPattern(small, 32, 5);
  ASSERT_EQ(postSend(q.qp, IBV_WR_RDMA_WRITE, 80, small, 32, 0,
                     IBV_SEND_SIGNALED | IBV_SEND_INLINE, dst.a(), dst.mr->rkey),
            0);
  memset(small, 0, sizeof small);
  ASSERT_EQ(pollOne(q.cq, &wc), 1);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_TRUE(checkPattern(dst.p(), 32, 5));
  // Inline data larger than max_inline_data is refused at post time.
  std::vector<char> big(1000);
  EXPECT_EQ(postSend(q.qp, IBV_WR_SEND, 81, big.data(), 1000, 0, IBV_SEND_INLINE), EINVAL);
  // Zero-length RDMA WRITE needs no valid rkey.
  ASSERT_EQ(postSend(q.qp, IBV_WR_RDMA_WRITE, 82, nullptr, 0, 0, IBV_SEND_SIGNALED, 0, 0), 0);
  ASSERT_EQ(pollOne(q.cq, &wc), 1);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
}

TEST(DataPath, SendQueueSlotsFreedOnlyByPolledSignaledCompletion) {
  Dev d;
  Q q(d, /*sendWr=*/16, /*recvWr=*/4);
  ASSERT_NO_FATAL_FAILURE(pairUp(d, q, nullptr));
  Buf src(d.pd, 64), dst(d.pd, 64);
  for (int i = 0; i < 15; ++i)
    ASSERT_EQ(postSend(q.qp, IBV_WR_RDMA_WRITE, uint64_t(i), src.p(), 8, src.mr->lkey, 0, dst.a(),
                       dst.mr->rkey),
              0);
  ASSERT_EQ(postSend(q.qp, IBV_WR_RDMA_WRITE, 15, src.p(), 8, src.mr->lkey, IBV_SEND_SIGNALED,
                     dst.a(), dst.mr->rkey),
            0);
  EXPECT_EQ(postSend(q.qp, IBV_WR_RDMA_WRITE, 16, src.p(), 8, src.mr->lkey, IBV_SEND_SIGNALED,
                     dst.a(), dst.mr->rkey),
            ENOMEM);
  usleep(50000);  // everything has executed by now, but nothing was polled
  EXPECT_EQ(postSend(q.qp, IBV_WR_RDMA_WRITE, 16, src.p(), 8, src.mr->lkey, IBV_SEND_SIGNALED,
                     dst.a(), dst.mr->rkey),
            ENOMEM);
  ibv_wc wc;
  ASSERT_EQ(pollOne(q.cq, &wc), 1);
  EXPECT_EQ(wc.wr_id, 15u);  // unsignaled WRs produce no completion
  EXPECT_EQ(ibv_poll_cq(q.cq, 1, &wc), 0);
  // The one polled CQE freed all 16 slots.
  for (int i = 0; i < 16; ++i)
    ASSERT_EQ(postSend(q.qp, IBV_WR_RDMA_WRITE, uint64_t(100 + i), src.p(), 8, src.mr->lkey,
                       i == 15 ? IBV_SEND_SIGNALED : 0, dst.a(), dst.mr->rkey),
              0);
  ASSERT_EQ(pollOne(q.cq, &wc), 1);
  EXPECT_EQ(wc.wr_id, 115u);
  // Receive queue depth.
  for (int i = 0; i < 4; ++i) ASSERT_EQ(postRecv(q.qp, uint64_t(i), dst.p(), 64, dst.mr->lkey), 0);
  EXPECT_EQ(postRecv(q.qp, 9, dst.p(), 64, dst.mr->lkey), ENOMEM);
  // More SGEs than the QP was created with.
  ibv_sge sges[5];
  for (auto& s : sges) s = {src.a(), 1, src.mr->lkey};
  ibv_send_wr wr;
  memset(&wr, 0, sizeof wr);
  wr.sg_list = sges;
  wr.num_sge = 5;
  wr.opcode = IBV_WR_SEND;
  ibv_send_wr* bad = nullptr;
  EXPECT_EQ(ibv_post_send(q.qp, &wr, &bad), EINVAL);
  EXPECT_EQ(bad, &wr);
}

TEST(DataPath, ReadsBeyondMaxRdAtomicWaitTheirTurn) {
  Dev d;
  Q a(d), b(d);
  Opts o;
  o.maxRd = 1;
  Endpoint ea = a.ep(d, nullptr, 1), eb = b.ep(d, nullptr, 2);
  ASSERT_EQ(connect(a.qp, eb, 1, o), 0);
  ASSERT_EQ(connect(b.qp, ea, 2, o), 0);
  Buf src(d.pd, 8 * 512), dst(d.pd, 8 * 512);
  fillPattern(src.p(), 8 * 512, 12);
  for (int i = 0; i < 8; ++i)
    ASSERT_EQ(postSend(a.qp, i % 2 ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE, uint64_t(i),
                       (i % 2 ? dst.p() : src.p()) + i * 512, 512,
                       i % 2 ? dst.mr->lkey : src.mr->lkey, IBV_SEND_SIGNALED,
                       (i % 2 ? src.a() : dst.a()) + uint64_t(i) * 512,
                       i % 2 ? src.mr->rkey : dst.mr->rkey),
              0);
  for (int i = 0; i < 8; ++i) {
    ibv_wc wc;
    ASSERT_EQ(pollOne(a.cq, &wc), 1);
    EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
    EXPECT_EQ(wc.wr_id, uint64_t(i));
  }
  for (int i = 0; i < 8; ++i) {
    const char* want = src.p() + i * 512;
    EXPECT_EQ(memcmp(dst.p() + i * 512, want, 512), 0) << i;
  }
}

TEST(DataPath, CompletionsInOrderPerQpIndependentAcrossQps) {
  Peer child([](int) {
    setenv("SOFTVERBS_DELAY_US", "2000", 1);
    Dev d;
    CK(d.pd);
    ibv_cq* cq = ibv_create_cq(d.ctx, 1024, nullptr, nullptr, 0);
    CK(cq);
    {
    Q a(d, 64, 64, 0, 64, cq), b(d, 64, 64, 0, 64, cq);
    Endpoint ea = a.ep(d, nullptr, 1), eb = b.ep(d, nullptr, 2);
    CK(connect(a.qp, ea, 1) == 0 && connect(b.qp, eb, 2) == 0);  // two loopback QPs
    Buf src(d.pd, 64), dst(d.pd, 64);
    int reordered = 0;
    for (int round = 0; round < 30; ++round) {
      // Four WRs on QP a, then one on QP b.
      for (int i = 0; i < 4; ++i)
        CK(postSend(a.qp, IBV_WR_RDMA_WRITE, uint64_t(i), src.p(), 8, src.mr->lkey,
                    IBV_SEND_SIGNALED, dst.a(), dst.mr->rkey) == 0);
      CK(postSend(b.qp, IBV_WR_RDMA_WRITE, 100, src.p(), 8, src.mr->lkey, IBV_SEND_SIGNALED,
                  dst.a(), dst.mr->rkey) == 0);
      uint64_t nextA = 0;
      bool bDone = false;
      for (int k = 0; k < 5; ++k) {
        ibv_wc wc;
        CK(pollOne(cq, &wc) == 1 && wc.status == IBV_WC_SUCCESS);
        if (wc.qp_num == a.qp->qp_num) {
          CK(wc.wr_id == nextA);  // per-QP order always holds
          ++nextA;
        } else {
          bDone = true;
          if (nextA < 4) ++reordered;
        }
      }
      CK(bDone && nextA == 4);
    }
    CK(reordered > 0);  // QP b overtook QP a at least once
    }
    CK(ibv_destroy_cq(cq) == 0);
    return 0;
  });
  EXPECT_EQ(child.join(), 0);
}

// =============================================================================================
// Error completions (two QPs of one process)
struct Pair {
  Dev d;
  Q a{d}, b{d};
  Buf ba{d.pd, 4096}, bb{d.pd, 4096};
  void up(const Opts& oa = Opts(), const Opts& ob = Opts()) {
    Endpoint ea = a.ep(d, &ba, 10), eb = b.ep(d, &bb, 20);
    ASSERT_EQ(connect(a.qp, eb, 10, oa), 0);
    ASSERT_EQ(connect(b.qp, ea, 20, ob), 0);
  }
};

TEST(Errors, RemoteAccessErrorsThenFlush) {
  Pair p;
  ASSERT_NO_FATAL_FAILURE(p.up());
  ibv_wc wc;
  // Wrong rkey: the requester sees REM_ACCESS_ERR, later WRs flush, both QPs end in ERR.
  ASSERT_EQ(postSend(p.a.qp, IBV_WR_RDMA_WRITE, 1, p.ba.p(), 64, p.ba.mr->lkey, 0, p.bb.a(),
                     p.bb.mr->rkey ^ 0x100),
            0);
  ASSERT_EQ(postSend(p.a.qp, IBV_WR_RDMA_WRITE, 2, p.ba.p(), 64, p.ba.mr->lkey, 0, p.bb.a(),
                     p.bb.mr->rkey),
            0);
  ASSERT_EQ(pollOne(p.a.cq, &wc), 1);
  EXPECT_EQ(wc.wr_id, 1u);  // unsignaled, but errors always complete
  EXPECT_EQ(wc.status, IBV_WC_REM_ACCESS_ERR);
  ASSERT_EQ(pollOne(p.a.cq, &wc), 1);
  EXPECT_EQ(wc.wr_id, 2u);
  EXPECT_EQ(wc.status, IBV_WC_WR_FLUSH_ERR);
  ibv_qp_attr qa;
  ibv_qp_init_attr qi;
  ibv_query_qp(p.a.qp, &qa, IBV_QP_STATE, &qi);
  EXPECT_EQ(qa.qp_state, IBV_QPS_ERR);
  ibv_query_qp(p.b.qp, &qa, IBV_QP_STATE, &qi);
  EXPECT_EQ(qa.qp_state, IBV_QPS_ERR);
  // The responder raised a local access violation async event.
  pollfd pf{p.d.ctx->async_fd, POLLIN, 0};
  ASSERT_EQ(poll(&pf, 1, 2000), 1);
  ibv_async_event ev;
  ASSERT_EQ(ibv_get_async_event(p.d.ctx, &ev), 0);
  EXPECT_EQ(ev.event_type, IBV_EVENT_QP_ACCESS_ERR);
  EXPECT_EQ(ev.element.qp, p.b.qp);
  ibv_ack_async_event(&ev);
}

struct ErrCase {
  const char* name;
  ibv_wr_opcode op;
  int mrAccess;   // of the remote buffer
  int qpAccess;   // of the responder QP
  int64_t off;    // remote offset
  uint32_t len;
  bool badLkey;
  ibv_wc_status expect;
};

TEST(Errors, AccessMatrix) {
  const int all = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
  const ErrCase cases[] = {
      {"write out of bounds", IBV_WR_RDMA_WRITE, all, all, 4000, 200, false,
       IBV_WC_REM_ACCESS_ERR},
      {"write below the MR", IBV_WR_RDMA_WRITE, all, all, -8, 16, false, IBV_WC_REM_ACCESS_ERR},
      {"write to a read-only MR", IBV_WR_RDMA_WRITE, IBV_ACCESS_REMOTE_READ, all, 0, 16, false,
       IBV_WC_REM_ACCESS_ERR},
      {"read from a write-only MR", IBV_WR_RDMA_READ,
       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE, all, 0, 16, false, IBV_WC_REM_ACCESS_ERR},
      {"write to a QP without REMOTE_WRITE", IBV_WR_RDMA_WRITE, all, IBV_ACCESS_REMOTE_READ, 0, 16,
       false, IBV_WC_REM_INV_REQ_ERR},
      {"read from a QP without REMOTE_READ", IBV_WR_RDMA_READ, all, IBV_ACCESS_REMOTE_WRITE, 0, 16,
       false, IBV_WC_REM_INV_REQ_ERR},
      {"bad lkey", IBV_WR_RDMA_WRITE, all, all, 0, 16, true, IBV_WC_LOC_PROT_ERR},
      {"ok write", IBV_WR_RDMA_WRITE, all, all, 0, 16, false, IBV_WC_SUCCESS},
      {"ok read", IBV_WR_RDMA_READ, all, all, 4080, 16, false, IBV_WC_SUCCESS},
  };
  for (const ErrCase& c : cases) {
    SCOPED_TRACE(c.name);
    Dev d;
    Q a(d), b(d);
    Buf local(d.pd, 4096);
    Buf remote(d.pd, 4096, c.mrAccess);
    ASSERT_NE(remote.mr, nullptr);
    Opts oa, ob;
    ob.access = c.qpAccess;
    Endpoint ea = a.ep(d, nullptr, 1), eb = b.ep(d, nullptr, 2);
    ASSERT_EQ(connect(a.qp, eb, 1, oa), 0);
    ASSERT_EQ(connect(b.qp, ea, 2, ob), 0);
    ASSERT_EQ(postSend(a.qp, c.op, 5, local.p(), c.len, c.badLkey ? 0xdead : local.mr->lkey,
                       IBV_SEND_SIGNALED, uint64_t(int64_t(remote.a()) + c.off), remote.mr->rkey),
              0);
    ibv_wc wc;
    ASSERT_EQ(pollOne(a.cq, &wc), 1);
    EXPECT_EQ(wc.status, c.expect) << ibv_wc_status_str(wc.status);
    EXPECT_EQ(wc.wr_id, 5u);
  }
}

TEST(Errors, ErrorsCompleteInPostOrder) {
  Pair p;
  ASSERT_NO_FATAL_FAILURE(p.up());
  for (int round = 0; round < 5; ++round) {
    Q a(p.d), b(p.d);
    Endpoint ea = a.ep(p.d, nullptr, 1), eb = b.ep(p.d, nullptr, 2);
    ASSERT_EQ(connect(a.qp, eb, 1), 0);
    ASSERT_EQ(connect(b.qp, ea, 2), 0);
    ibv_sge good{p.ba.a(), 64, p.ba.mr->lkey}, bad{p.ba.a(), 64, 0xbad};
    ibv_send_wr w[3];
    memset(w, 0, sizeof w);
    for (int i = 0; i < 3; ++i) {
      w[i].wr_id = uint64_t(i);
      w[i].num_sge = 1;
      w[i].sg_list = i == 1 ? &bad : &good;
      w[i].opcode = IBV_WR_RDMA_WRITE;
      w[i].send_flags = IBV_SEND_SIGNALED;
      w[i].wr.rdma.remote_addr = p.bb.a();
      w[i].wr.rdma.rkey = p.bb.mr->rkey;
      w[i].next = i < 2 ? &w[i + 1] : nullptr;
    }
    ibv_send_wr* badWr = nullptr;
    ASSERT_EQ(ibv_post_send(a.qp, w, &badWr), 0);
    const ibv_wc_status expect[3] = {IBV_WC_SUCCESS, IBV_WC_LOC_PROT_ERR, IBV_WC_WR_FLUSH_ERR};
    for (int i = 0; i < 3; ++i) {
      ibv_wc wc;
      ASSERT_EQ(pollOne(a.cq, &wc), 1);
      EXPECT_EQ(wc.wr_id, uint64_t(i));
      EXPECT_EQ(wc.status, expect[i]) << ibv_wc_status_str(wc.status);
    }
    ibv_wc wc;
    EXPECT_EQ(ibv_poll_cq(a.cq, 1, &wc), 0);
  }
}

TEST(Errors, SendLargerThanReceive) {
  Pair p;
  ASSERT_NO_FATAL_FAILURE(p.up());
  ASSERT_EQ(postRecv(p.b.qp, 1, p.bb.p(), 100, p.bb.mr->lkey), 0);
  ASSERT_EQ(postRecv(p.b.qp, 2, p.bb.p(), 100, p.bb.mr->lkey), 0);
  ASSERT_EQ(postSend(p.a.qp, IBV_WR_SEND, 3, p.ba.p(), 200, p.ba.mr->lkey), 0);
  ibv_wc wc;
  ASSERT_EQ(pollOne(p.b.cq, &wc), 1);
  EXPECT_EQ(wc.wr_id, 1u);
  EXPECT_EQ(wc.status, IBV_WC_LOC_LEN_ERR);
  ASSERT_EQ(pollOne(p.b.cq, &wc), 1);
  EXPECT_EQ(wc.wr_id, 2u);
  EXPECT_EQ(wc.status, IBV_WC_WR_FLUSH_ERR);
  ASSERT_EQ(pollOne(p.a.cq, &wc), 1);
  EXPECT_EQ(wc.status, IBV_WC_REM_INV_REQ_ERR);
}

TEST(Errors, RnrRetryExceeded) {
  Pair p;
  Opts oa;
  oa.rnrRetry = 2;
  Opts ob;
  ob.minRnrTimer = 1;  // 10 us
  ASSERT_NO_FATAL_FAILURE(p.up(oa, ob));
  ASSERT_EQ(postSend(p.a.qp, IBV_WR_SEND, 1, p.ba.p(), 10, p.ba.mr->lkey), 0);
  ibv_wc wc;
  ASSERT_EQ(pollOne(p.a.cq, &wc), 1);
  EXPECT_EQ(wc.status, IBV_WC_RNR_RETRY_EXC_ERR);
}

TEST(Errors, RnrInfiniteRetryWaitsForReceive) {
  Pair p;
  Opts ob;
  ob.minRnrTimer = 1;
  ASSERT_NO_FATAL_FAILURE(p.up(Opts(), ob));
  fillPattern(p.ba.p(), 10, 6);
  ASSERT_EQ(postSend(p.a.qp, IBV_WR_SEND_WITH_IMM, 1, p.ba.p(), 10, p.ba.mr->lkey), 0);
  ASSERT_EQ(postSend(p.a.qp, IBV_WR_RDMA_WRITE_WITH_IMM, 2, p.ba.p(), 10, p.ba.mr->lkey,
                     IBV_SEND_SIGNALED, p.bb.a(100), p.bb.mr->rkey),
            0);
  ibv_wc wc;
  EXPECT_EQ(pollOne(p.a.cq, &wc, 50), 0);  // no receive yet: RNR NAKs, retried forever
  ASSERT_EQ(postRecv(p.b.qp, 7, p.bb.p(), 64, p.bb.mr->lkey), 0);
  ASSERT_EQ(pollOne(p.a.cq, &wc), 1);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_EQ(wc.wr_id, 1u);
  EXPECT_EQ(pollOne(p.a.cq, &wc, 50), 0);  // the WRITE_WITH_IMM needs a receive too
  ASSERT_EQ(postRecv(p.b.qp, 8, nullptr, 0, 0), 0);
  ASSERT_EQ(pollOne(p.a.cq, &wc), 1);
  EXPECT_EQ(wc.wr_id, 2u);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  ASSERT_EQ(pollOne(p.b.cq, &wc), 1);
  EXPECT_EQ(wc.wr_id, 7u);
  EXPECT_TRUE(checkPattern(p.bb.p(), 10, 6));
  ASSERT_EQ(pollOne(p.b.cq, &wc), 1);
  EXPECT_EQ(wc.wr_id, 8u);
  EXPECT_EQ(wc.opcode, IBV_WC_RECV_RDMA_WITH_IMM);
  EXPECT_TRUE(checkPattern(p.bb.p() + 100, 10, 6));
}

TEST(Errors, SourceUnmappedBeforeExecutionIsALocalProtectionError) {
  // The SEND waits on RNR (no receive yet); its source disappears; then a receive is posted.
  Dev d;
  Q q(d);
  Opts o;
  o.minRnrTimer = 1;
  Endpoint e = q.ep(d, nullptr, 1);
  ASSERT_EQ(connect(q.qp, e, 1, o), 0);
  void* mem = mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  ibv_mr* mr = ibv_reg_mr(d.pd, mem, 8192, IBV_ACCESS_LOCAL_WRITE);
  ASSERT_NE(mr, nullptr);
  Buf dst(d.pd, 8192);
  ASSERT_EQ(postSend(q.qp, IBV_WR_SEND, 1, mem, 4096, mr->lkey), 0);
  ibv_wc wc;
  EXPECT_EQ(pollOne(q.cq, &wc, 20), 0);
  munmap(mem, 8192);
  ASSERT_EQ(postRecv(q.qp, 2, dst.p(), 8192, dst.mr->lkey), 0);
  bool sawSend = false, sawRecv = false;
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(pollOne(q.cq, &wc), 1);
    if (wc.wr_id == 1) {
      sawSend = true;
      EXPECT_EQ(wc.status, IBV_WC_LOC_PROT_ERR);
    } else {
      sawRecv = true;
      EXPECT_EQ(wc.status, IBV_WC_WR_FLUSH_ERR);
    }
  }
  EXPECT_TRUE(sawSend && sawRecv);
  EXPECT_EQ(ibv_dereg_mr(mr), 0);
}

TEST(Errors, RetryExceededWhenPeerQpIsDestroyed) {
  Dev d;
  Q a(d);
  auto b = std::make_unique<Q>(d);
  Buf buf(d.pd, 64);
  Endpoint eb = b->ep(d, nullptr, 2);
  Opts o;
  o.timeout = 10;  // 4.2 ms
  o.retry = 3;
  ASSERT_EQ(connect(a.qp, eb, 1, o), 0);
  b.reset();
  auto t0 = Clock::now();
  ASSERT_EQ(postSend(a.qp, IBV_WR_RDMA_WRITE, 1, buf.p(), 8, buf.mr->lkey, IBV_SEND_SIGNALED,
                     buf.a(), buf.mr->rkey),
            0);
  ibv_wc wc;
  ASSERT_EQ(pollOne(a.cq, &wc), 1);
  EXPECT_EQ(wc.status, IBV_WC_RETRY_EXC_ERR);
  EXPECT_GE(Clock::now() - t0, std::chrono::milliseconds(12));  // ~timeout x retries
}

// =============================================================================================
// Completion channel, notification, CQ overrun
TEST(Cq, ChannelEventsAndSolicited) {
  Dev d;
  ibv_comp_channel* ch = ibv_create_comp_channel(d.ctx);
  ASSERT_NE(ch, nullptr);
  ibv_cq* cq = ibv_create_cq(d.ctx, 64, reinterpret_cast<void*>(0x1234), ch, 0);
  ASSERT_NE(cq, nullptr);
  EXPECT_EQ(ibv_destroy_comp_channel(ch), EBUSY);
  {
    Q q(d, 64, 64, 0, 64, cq);
    ASSERT_NO_FATAL_FAILURE(pairUp(d, q, nullptr));
    Buf b(d.pd, 64);
    ASSERT_EQ(ibv_req_notify_cq(cq, 0), 0);
    ASSERT_EQ(postSend(q.qp, IBV_WR_RDMA_WRITE, 1, b.p(), 8, b.mr->lkey, IBV_SEND_SIGNALED,
                       b.a(32), b.mr->rkey),
              0);
    ibv_cq* evCq = nullptr;
    void* evCtx = nullptr;
    ASSERT_EQ(ibv_get_cq_event(ch, &evCq, &evCtx), 0);  // blocks until the completion
    EXPECT_EQ(evCq, cq);
    EXPECT_EQ(evCtx, reinterpret_cast<void*>(0x1234));
    ibv_ack_cq_events(cq, 1);
    ibv_wc wc;
    ASSERT_EQ(ibv_poll_cq(cq, 1, &wc), 1);
    // Solicited-only: a plain receive does not wake the channel, a solicited one does.
    ASSERT_EQ(ibv_req_notify_cq(cq, 1), 0);
    ASSERT_EQ(postRecv(q.qp, 10, b.p(), 64, b.mr->lkey), 0);
    ASSERT_EQ(postRecv(q.qp, 11, b.p(), 64, b.mr->lkey), 0);
    ASSERT_EQ(postSend(q.qp, IBV_WR_SEND, 2, b.p(), 8, b.mr->lkey, 0), 0);
    pollfd pf{ch->fd, POLLIN, 0};
    EXPECT_EQ(poll(&pf, 1, 100), 0);
    ASSERT_EQ(postSend(q.qp, IBV_WR_SEND, 3, b.p(), 8, b.mr->lkey, IBV_SEND_SOLICITED), 0);
    EXPECT_EQ(poll(&pf, 1, 2000), 1);
    ASSERT_EQ(ibv_get_cq_event(ch, &evCq, &evCtx), 0);
    ibv_ack_cq_events(cq, 1);
    int got = 0;
    while (got < 2 && pollOne(cq, &wc) == 1) ++got;
    EXPECT_EQ(got, 2);
  }
  EXPECT_EQ(ibv_destroy_cq(cq), 0);
  EXPECT_EQ(ibv_destroy_comp_channel(ch), 0);
}

TEST(Cq, OverrunRaisesAsyncEvent) {
  Dev d;
  ibv_cq* cq = ibv_create_cq(d.ctx, 1, nullptr, nullptr, 0);
  ASSERT_NE(cq, nullptr);
  {
    Q q(d, 16, 16, 0, 64, cq);
    ASSERT_NO_FATAL_FAILURE(pairUp(d, q, nullptr));
    Buf b(d.pd, 64);
    for (int i = 0; i < 4; ++i)
      ASSERT_EQ(postSend(q.qp, IBV_WR_RDMA_WRITE, uint64_t(i), b.p(), 8, b.mr->lkey,
                         IBV_SEND_SIGNALED, b.a(32), b.mr->rkey),
                0);
    pollfd pf{d.ctx->async_fd, POLLIN, 0};
    ASSERT_EQ(poll(&pf, 1, 2000), 1);
    ibv_async_event ev;
    ASSERT_EQ(ibv_get_async_event(d.ctx, &ev), 0);
    EXPECT_EQ(ev.event_type, IBV_EVENT_CQ_ERR);
    EXPECT_EQ(ev.element.cq, cq);
    ibv_ack_async_event(&ev);
    ibv_wc wc;
    EXPECT_LT(ibv_poll_cq(cq, 1, &wc), 0);
  }
  EXPECT_EQ(ibv_destroy_cq(cq), 0);
}

// =============================================================================================
// Two processes
TEST(TwoProcess, EveryOpcodeBetweenProcesses) {
  constexpr size_t kN = 1 << 20;
  Dev d;
  ASSERT_NE(d.pd, nullptr);
  Q q(d);
  Buf buf(d.pd, kN);
  fillPattern(buf.p(), kN, 11);
  Peer child([&](int fd) {
    // The child has its own device context, QP and memory.
    Dev cd;
    CK(cd.pd);
    Q cq(cd);
    Buf cb(cd.pd, kN);
    fillPattern(cb.p(), kN, 22);
    Endpoint mine = cq.ep(cd, &cb, 0x222), theirs;
    CK(sendObj(fd, mine) && recvObj(fd, &theirs));
    CK(connect(cq.qp, theirs, 0x222) == 0);
    CK(postRecv(cq.qp, 1, cb.p(), uint32_t(kN), cb.mr->lkey) == 0);
    CK(postRecv(cq.qp, 2, nullptr, 0, 0) == 0);
    char ready = 1;
    CK(sendObj(fd, ready));
    ibv_wc wc;
    // 1) A SEND from the parent lands in our receive.
    CK(pollOne(cq.cq, &wc) == 1 && wc.status == IBV_WC_SUCCESS && wc.wr_id == 1);
    CK(wc.opcode == IBV_WC_RECV && wc.byte_len == kN && wc.src_qp == theirs.qpn);
    CK(checkPattern(cb.p(), kN, 11));
    // 2) An RDMA WRITE_WITH_IMM from the parent.
    CK(pollOne(cq.cq, &wc) == 1 && wc.status == IBV_WC_SUCCESS && wc.wr_id == 2);
    CK(wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM && ntohl(wc.imm_data) == 42);
    CK(checkPattern(cb.p() + 4096, 4096, 11));
    // 3) We RDMA READ the parent's buffer and WRITE a pattern into it.
    fillPattern(cb.p(), kN, 33);
    CK(postSend(cq.qp, IBV_WR_RDMA_READ, 3, cb.p(), uint32_t(kN / 2), cb.mr->lkey,
                IBV_SEND_SIGNALED, theirs.addr, theirs.rkey) == 0);
    CK(pollOne(cq.cq, &wc) == 1 && wc.status == IBV_WC_SUCCESS && wc.wr_id == 3);
    CK(checkPattern(cb.p(), kN / 2, 11));
    fillPattern(cb.p(), kN, 44);
    CK(postSend(cq.qp, IBV_WR_RDMA_WRITE, 4, cb.p(), uint32_t(kN), cb.mr->lkey,
                IBV_SEND_SIGNALED, theirs.addr, theirs.rkey) == 0);
    CK(pollOne(cq.cq, &wc) == 1 && wc.status == IBV_WC_SUCCESS && wc.wr_id == 4);
    CK(sendObj(fd, ready));
    // 4) Wait for the parent to be done before tearing down.
    CK(recvObj(fd, &ready));
    return 0;
  });
  ASSERT_GE(child.fd, 0);
  Endpoint mine = q.ep(d, &buf, 0x111), theirs;
  ASSERT_TRUE(recvObj(child.fd, &theirs));
  ASSERT_TRUE(sendObj(child.fd, mine));
  ASSERT_EQ(connect(q.qp, theirs, 0x111), 0);
  EXPECT_NE(theirs.qpn, mine.qpn);
  char ready;
  ASSERT_TRUE(recvObj(child.fd, &ready));
  ibv_wc wc;
  ASSERT_EQ(postSend(q.qp, IBV_WR_SEND, 10, buf.p(), uint32_t(kN), buf.mr->lkey), 0);
  ASSERT_EQ(pollOne(q.cq, &wc), 1);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  ASSERT_EQ(postSend(q.qp, IBV_WR_RDMA_WRITE_WITH_IMM, 11, buf.p(), 4096, buf.mr->lkey,
                     IBV_SEND_SIGNALED, theirs.addr + 4096, theirs.rkey, 42),
            0);
  ASSERT_EQ(pollOne(q.cq, &wc), 1);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  ASSERT_TRUE(recvObj(child.fd, &ready));
  EXPECT_TRUE(checkPattern(buf.p(), kN, 44));
  ASSERT_TRUE(sendObj(child.fd, ready));
  EXPECT_EQ(child.join(), 0);
}

TEST(TwoProcess, RetryExceededWhenPeerProcessIsGone) {
  Dev d;
  Q q(d);
  Buf buf(d.pd, 64);
  Peer child([](int fd) {
    Dev cd;
    CK(cd.pd);
    Q cq(cd);
    Endpoint mine = cq.ep(cd, nullptr, 5), theirs;
    CK(sendObj(fd, mine) && recvObj(fd, &theirs));
    CK(connect(cq.qp, theirs, 5) == 0);
    _exit(0);  // vanish without cleaning up, like a crashed peer
    return 0;
  });
  Endpoint mine = q.ep(d, &buf, 6), theirs;
  ASSERT_TRUE(recvObj(child.fd, &theirs));
  ASSERT_TRUE(sendObj(child.fd, mine));
  EXPECT_EQ(child.join(), 0);
  Opts o;
  o.timeout = 10;
  o.retry = 3;
  ASSERT_EQ(connect(q.qp, theirs, 6, o), 0);
  ASSERT_EQ(postSend(q.qp, IBV_WR_SEND, 1, buf.p(), 8, buf.mr->lkey), 0);
  ASSERT_EQ(postSend(q.qp, IBV_WR_SEND, 2, buf.p(), 8, buf.mr->lkey), 0);
  ibv_wc wc;
  ASSERT_EQ(pollOne(q.cq, &wc), 1);
  EXPECT_EQ(wc.wr_id, 1u);
  EXPECT_EQ(wc.status, IBV_WC_RETRY_EXC_ERR);
  ASSERT_EQ(pollOne(q.cq, &wc), 1);
  EXPECT_EQ(wc.wr_id, 2u);
  EXPECT_EQ(wc.status, IBV_WC_WR_FLUSH_ERR);
}

TEST(TwoProcess, QpNumbersUniqueAcrossProcesses) {
  constexpr int kQps = 20;
  Dev d;
  std::vector<std::unique_ptr<Q>> qps;
  std::set<uint32_t> numbers;
  for (int i = 0; i < kQps; ++i) {
    qps.push_back(std::make_unique<Q>(d, 4, 4, 8));
    ASSERT_NE(qps.back()->qp, nullptr);
    numbers.insert(qps.back()->qp->qp_num);
  }
  Peer child([](int fd) {
    Dev cd;
    CK(cd.pd);
    std::vector<std::unique_ptr<Q>> mine;
    for (int i = 0; i < kQps; ++i) {
      mine.push_back(std::make_unique<Q>(cd, 4, 4, 8));
      CK(mine.back()->qp);
      CK(sendObj(fd, mine.back()->qp->qp_num));
    }
    char done;
    CK(recvObj(fd, &done));
    return 0;
  });
  for (int i = 0; i < kQps; ++i) {
    uint32_t n = 0;
    ASSERT_TRUE(recvObj(child.fd, &n));
    EXPECT_TRUE(numbers.insert(n).second) << "QPN " << n << " used twice";
  }
  char done = 1;
  ASSERT_TRUE(sendObj(child.fd, done));
  EXPECT_EQ(child.join(), 0);
  EXPECT_EQ(numbers.size(), size_t(2 * kQps));
}

TEST(TwoProcess, PingPongWithRandomDelays) {
  // Many small messages both ways with delays on; receives are reposted as they complete.
  constexpr int kIters = 200;
  auto side = [](int fd, bool first) -> int {
    setenv("SOFTVERBS_DELAY_US", "300", 1);
    Dev d;
    CK(d.pd);
    Q q(d, 8, 16);
    Buf b(d.pd, 16 * 64);
    Endpoint mine = q.ep(d, &b, first ? 1 : 2), theirs;
    CK(sendObj(fd, mine) && recvObj(fd, &theirs));
    CK(connect(q.qp, theirs, mine.psn) == 0);
    for (int i = 0; i < 16; ++i) CK(postRecv(q.qp, uint64_t(i), b.p() + i * 64, 64, b.mr->lkey) == 0);
    char sync = 0;
    CK(sendObj(fd, sync) && recvObj(fd, &sync));
    uint32_t expect = 0;
    char out[64];
    for (int it = 0; it < kIters; ++it) {
      ibv_wc wc;
      if (first) {
        uint32_t v = uint32_t(it);
        memcpy(out, &v, 4);
        CK(postSend(q.qp, IBV_WR_SEND, 1000 + uint64_t(it), out, 4, 0,
                    IBV_SEND_SIGNALED | IBV_SEND_INLINE) == 0);
      }
      bool gotRecv = false, gotSend = !first;
      while (!gotRecv || !gotSend) {
        CK(pollOne(q.cq, &wc) == 1 && wc.status == IBV_WC_SUCCESS);
        if (wc.opcode == IBV_WC_RECV) {
          uint32_t v;
          memcpy(&v, b.p() + wc.wr_id * 64, 4);
          CK(v == expect);
          ++expect;
          CK(postRecv(q.qp, wc.wr_id, b.p() + wc.wr_id * 64, 64, b.mr->lkey) == 0);
          gotRecv = true;
        } else {
          gotSend = true;
        }
      }
      if (!first) {
        uint32_t v = uint32_t(it);
        memcpy(out, &v, 4);
        CK(postSend(q.qp, IBV_WR_SEND, 2000 + uint64_t(it), out, 4, 0,
                    IBV_SEND_SIGNALED | IBV_SEND_INLINE) == 0);
        CK(pollOne(q.cq, &wc) == 1 && wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_SEND);
      }
    }
    CK(sendObj(fd, sync) && recvObj(fd, &sync));
    return 0;
  };
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  Peer a([&](int) { close(sv[1]); return side(sv[0], true); });
  Peer b([&](int) { close(sv[0]); return side(sv[1], false); });
  close(sv[0]);
  close(sv[1]);
  EXPECT_EQ(a.join(), 0);
  EXPECT_EQ(b.join(), 0);
}

TEST(TwoProcess, PipelinedSendsSurviveRnrInOrderExactlyOnce) {
  // 64 pipelined SENDs against a receiver that posts receives slowly: RNR NAKs rewind the
  // window (go-back-N) and every message still arrives once, in order.
  constexpr int kMsgs = 64;
  Dev d;
  Q q(d, kMsgs, 4);
  Buf buf(d.pd, kMsgs * 8);
  Peer child([](int fd) -> int {
    Dev cd;
    CK(cd.pd);
    Q cq(cd, 4, 8);
    Buf cb(cd.pd, 8 * 8);
    Opts o;
    o.minRnrTimer = 1;
    Endpoint mine = cq.ep(cd, &cb, 9), theirs;
    CK(sendObj(fd, mine) && recvObj(fd, &theirs));
    CK(connect(cq.qp, theirs, 9, o) == 0);
    for (int i = 0; i < 4; ++i) CK(postRecv(cq.qp, uint64_t(i), cb.p() + i * 8, 8, cb.mr->lkey) == 0);
    char go = 1;
    CK(sendObj(fd, go));
    for (uint64_t expect = 0; expect < kMsgs; ++expect) {
      ibv_wc wc;
      CK(pollOne(cq.cq, &wc) == 1 && wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_RECV);
      uint64_t v;
      memcpy(&v, cb.p() + wc.wr_id * 8, 8);
      CK(v == expect);
      if (expect % 7 == 0) usleep(2000);  // a slow consumer
      CK(postRecv(cq.qp, wc.wr_id, cb.p() + wc.wr_id * 8, 8, cb.mr->lkey) == 0);
    }
    CK(recvObj(fd, &go));
    return 0;
  });
  Endpoint mine = q.ep(d, &buf, 10), theirs;
  ASSERT_TRUE(recvObj(child.fd, &theirs));
  ASSERT_TRUE(sendObj(child.fd, mine));
  ASSERT_EQ(connect(q.qp, theirs, 10), 0);
  char go;
  ASSERT_TRUE(recvObj(child.fd, &go));
  for (uint64_t i = 0; i < kMsgs; ++i) {
    memcpy(buf.p() + i * 8, &i, 8);
    ASSERT_EQ(postSend(q.qp, IBV_WR_SEND, i, buf.p() + i * 8, 8, buf.mr->lkey), 0);
  }
  for (uint64_t i = 0; i < kMsgs; ++i) {
    ibv_wc wc;
    ASSERT_EQ(pollOne(q.cq, &wc), 1);
    EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
    EXPECT_EQ(wc.wr_id, i);
  }
  ASSERT_TRUE(sendObj(child.fd, go));
  EXPECT_EQ(child.join(), 0);
}

// =============================================================================================
// ABI: what NCCL-style loaders and inline helpers rely on
TEST(Abi, VersionedSymbolsAndContextLayout) {
  void* h = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_NOLOAD);
  ASSERT_NE(h, nullptr);
  const struct {
    const char* name;
    const char* version;
  } syms[] = {{"ibv_get_device_list", "IBVERBS_1.1"}, {"ibv_open_device", "IBVERBS_1.1"},
              {"ibv_query_port", "IBVERBS_1.1"},      {"ibv_reg_mr", "IBVERBS_1.1"},
              {"ibv_create_comp_channel", "IBVERBS_1.0"}, {"ibv_qp_to_qp_ex", "IBVERBS_1.6"},
              {"ibv_reg_mr_iova", "IBVERBS_1.7"},     {"ibv_reg_mr_iova2", "IBVERBS_1.8"},
              {"ibv_get_device_index", "IBVERBS_1.9"}, {"ibv_query_ece", "IBVERBS_1.10"},
              {"_ibv_query_gid_ex", "IBVERBS_1.11"},  {"ibv_reg_dmabuf_mr", "IBVERBS_1.12"},
              {"ibv_is_fork_initialized", "IBVERBS_1.13"},
              {"ibv_query_qp_data_in_order", "IBVERBS_1.14"},
              {"ibv_query_gid_type", "IBVERBS_PRIVATE_34"}};
  for (auto& s : syms) EXPECT_NE(dlvsym(h, s.name, s.version), nullptr) << s.name << "@" << s.version;
  EXPECT_EQ(dlvsym(h, "ibv_create_comp_channel", "IBVERBS_1.1"), nullptr);  // 1.0 only
  EXPECT_EQ(dlsym(h, "_ZN2sv1GEv"), nullptr);  // internals stay hidden
  dlclose(h);
  Dev d;
  ASSERT_NE(d.ctx, nullptr);
  EXPECT_EQ(d.ctx->abi_compat, __VERBS_ABI_IS_EXTENDED);
  verbs_context* v = verbs_get_ctx(d.ctx);
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->sz, sizeof(verbs_context));
  EXPECT_NE(verbs_get_ctx_op(d.ctx, query_port), nullptr);
  EXPECT_EQ(verbs_get_ctx_op(d.ctx, create_qp_ex), nullptr);
  EXPECT_NE(d.ctx->ops.post_send, nullptr);
  EXPECT_NE(d.ctx->ops.post_recv, nullptr);
  EXPECT_NE(d.ctx->ops.poll_cq, nullptr);
  EXPECT_NE(d.ctx->ops.req_notify_cq, nullptr);
  ibv_cq_init_attr_ex ca;
  memset(&ca, 0, sizeof ca);
  ca.cqe = 4;
  errno = 0;
  EXPECT_EQ(ibv_create_cq_ex(d.ctx, &ca), nullptr);
  EXPECT_EQ(errno, EOPNOTSUPP);
}

}  // namespace
