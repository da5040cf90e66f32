// End to end over the verbs transport: forked ranks, the public API, WEFT_TRANSPORTS=ib (set by
// ctest with softverbs and the RoCE fixture); all-reduce results checked bit for bit.
#include <gtest/gtest.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "support/mp_harness.h"
#include "support/reference.h"

namespace weft::test {
namespace {

int body(const RankContext& ctx) {
  weftComm_t comm;
  if (weftCommInitRank(&comm, ctx.nranks, ctx.ids[0], ctx.rank) != weftSuccess) {
    ctx.say(std::string("init: ") + weftGetLastError(nullptr));
    return 1;
  }
  int failures = 0;
  for (weftDataType_t t : {weftFloat32, weftInt32, weftBfloat16}) {
    for (size_t count : {size_t{0}, size_t{1}, size_t{7}, size_t{1000}, size_t{65537}, size_t{(1u << 20) + 13}}) {
      size_t b = typeBytes(t);
      std::vector<char> send(count * b + 1), recv(count * b + 1), want(count * b + 1);
      fillInput(t, weftSum, ctx.rank, ctx.nranks, send.data(), count);
      fillExpected(t, weftSum, ctx.nranks, want.data(), count);
      weftResult_t r = weftAllReduce(count ? send.data() : nullptr, count ? recv.data() : nullptr, count, t, weftSum, comm, nullptr);
      if (r != weftSuccess) {
        ctx.say("all-reduce count " + std::to_string(count) + ": " + weftGetLastError(comm));
        ++failures;
        break;
      }
      size_t nwrong = 0;
      long long first = firstMismatch(t, recv.data(), want.data(), count, &nwrong);
      if (first >= 0) {
        ctx.say("type " + std::to_string(t) + " count " + std::to_string(count) + ": " + std::to_string(nwrong) +
                " wrong, first at " + std::to_string(first));
        ++failures;
      }
    }
  }
  weftCommDestroy(comm);
  return failures ? 1 : 0;
}

std::string slurp(const std::string& path) {
  std::string out;
  FILE* f = fopen(path.c_str(), "r");
  if (!f) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  fclose(f);
  return out;
}

std::vector<std::string> linesWith(const std::string& text, const std::string& needle) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (line.find(needle) != std::string::npos) out.push_back(line);
    start = end + 1;
  }
  return out;
}

// Runs first in this binary: the log settings are read once per process (the parent's first log
// call), and the forked ranks inherit them. At WEFT_DEBUG=INFO every ib connection logs one line
// naming the peer, NIC, port, GID index and address, QPs, MTU and registration mode.
std::string gLog;
TEST(IbAllReduce, OneInfoLinePerConnectionNamesNicPortGidQpsMtuRegistration) {
  gLog = ::testing::TempDir() + "/ib-info-" + std::to_string(getpid()) + ".log";
  setenv("WEFT_DEBUG", "INFO", 1);
  setenv("WEFT_DEBUG_SUBSYS", "NET", 1);
  setenv("WEFT_DEBUG_FILE", gLog.c_str(), 1);
  RunOptions o;
  o.nranks = 3;
  o.timeoutSec = 50;
  auto reports = runRanks(o, body);
  for (const Report& r : reports) ASSERT_EQ(r.exitCode, 0) << describe(reports);
  std::string text = slurp(gLog);
  auto conns = linesWith(text, "ib transport: connected to");
  auto accepts = linesWith(text, "ib transport: accepted from");
  // Every rank connects to and accepts from each peer it talks to (at least its ring neighbours).
  EXPECT_GE(conns.size(), 3u) << text;
  EXPECT_EQ(conns.size(), accepts.size()) << text;
  conns.insert(conns.end(), accepts.begin(), accepts.end());
  for (const std::string& l : conns) {
    size_t a = l.find(l.find("connected to ") != std::string::npos ? "connected to " : "accepted from ");
    size_t b = l.find(": NIC ");
    ASSERT_TRUE(a != std::string::npos && b != std::string::npos && b > a + 13) << l;
    EXPECT_NE(l.substr(a + 13, b - a - 13).find(':'), std::string::npos) << l;  // the peer's address:port
    EXPECT_NE(l.find("NIC svroce0 port 1"), std::string::npos) << l;
    EXPECT_NE(l.find("GID index 3 ::ffff:10.0.0.1 -> ::ffff:10.0.0.1"), std::string::npos) << l;
    EXPECT_NE(l.find(" 2 QPs"), std::string::npos) << l;
    EXPECT_NE(l.find("MTU 1024"), std::string::npos) << l;
    EXPECT_NE(l.find("registration: host memory"), std::string::npos) << l;
    EXPECT_NE(l.find("device memory: host staging (dmabuf refused"), std::string::npos) << l;
  }
}

// No RDMA device (an empty sysfs root for softverbs and discovery): one INFO line says why ib is not
// used and the ranks run over the socket transport; WEFT_REQUIRE=rdma makes it an error instead.
TEST(IbAllReduce, NoDeviceFallsBackWithAnInfoLineAndRequireRdmaRefuses) {
  ASSERT_FALSE(gLog.empty()) << "run with the first test (the log settings are per process)";
  std::string empty = ::testing::TempDir() + "/ib-mp-no-device";
  ASSERT_EQ(0, system(("mkdir -p " + empty).c_str()));
  std::string sv = getenv("SOFTVERBS_SYSFS_ROOT") ? getenv("SOFTVERBS_SYSFS_ROOT") : "";
  std::string ws = getenv("WEFT_SYSFS_ROOT") ? getenv("WEFT_SYSFS_ROOT") : "";
  std::string tr = getenv("WEFT_TRANSPORTS") ? getenv("WEFT_TRANSPORTS") : "";
  setenv("SOFTVERBS_SYSFS_ROOT", empty.c_str(), 1);
  setenv("WEFT_SYSFS_ROOT", empty.c_str(), 1);
  setenv("WEFT_TRANSPORTS", "ib,socket", 1);
  size_t before = slurp(gLog).size();
  RunOptions o;
  o.nranks = 2;
  o.timeoutSec = 50;
  auto reports = runRanks(o, body);
  for (const Report& r : reports) EXPECT_EQ(r.exitCode, 0) << describe(reports);
  std::string text = slurp(gLog).substr(before);
  auto lines = linesWith(text, "transport ib unavailable");
  EXPECT_EQ(lines.size(), 2u) << text;  // one per rank
  for (const std::string& l : lines) EXPECT_NE(l.find("no RDMA device"), std::string::npos) << l;
  EXPECT_TRUE(linesWith(text, "ib transport: connected to").empty()) << text;

  setenv("WEFT_REQUIRE", "rdma", 1);
  reports = runRanks(o, [](const RankContext& ctx) {
    weftComm_t comm;
    if (weftCommInitRank(&comm, ctx.nranks, ctx.ids[0], ctx.rank) == weftSuccess) {
      ctx.say("init succeeded without an RDMA device under WEFT_REQUIRE=rdma");
      weftCommDestroy(comm);
      return 1;
    }
    std::string e = weftGetLastError(nullptr);
    if (e.find("WEFT_REQUIRE=rdma") == std::string::npos || e.find("no RDMA device") == std::string::npos) {
      ctx.say("unclear error: " + e);
      return 2;
    }
    return 0;
  });
  unsetenv("WEFT_REQUIRE");
  for (const Report& r : reports) EXPECT_EQ(r.exitCode, 0) << describe(reports);
  setenv("SOFTVERBS_SYSFS_ROOT", sv.c_str(), 1);
  setenv("WEFT_SYSFS_ROOT", ws.c_str(), 1);
  setenv("WEFT_TRANSPORTS", tr.c_str(), 1);
}

TEST(IbAllReduce, TwoAndThreeRanksOverSoftverbs) {
  for (int n : {2, 3}) {
    RunOptions o;
    o.nranks = n;
    o.timeoutSec = 50;
    auto reports = runRanks(o, body);
    for (const Report& r : reports) ASSERT_EQ(r.exitCode, 0) << describe(reports);
  }
}

}  // namespace
}  // namespace weft::test
