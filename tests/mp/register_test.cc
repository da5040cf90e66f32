// Buffer registration (weftCommRegister/Deregister, weftCommWindowRegister/Deregister) on host
// buffers, where every CI machine can run it: host buffers are accepted (a handle that does
// nothing), bad arguments get weftInvalidArgument with a sentence, the window exchange is
// collective over two processes (also posted inside a group, exchanged at weftGroupEnd), and registered buffers still give correct collectives (checked
// against values computed here). Handles left registered are released by weftCommDestroy.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "support/mp_harness.h"

namespace weft::test {
namespace {

int registerBody(const RankContext& ctx) {
  weftComm_t comm;
  if (weftCommInitRank(&comm, ctx.nranks, ctx.ids[0], ctx.rank) != weftSuccess) return 10;
  int fails = 0;
  auto expect = [&](bool ok, const char* what) {
    if (!ok) {
      ++fails;
      ctx.say(std::string("rank ") + std::to_string(ctx.rank) + ": " + what + " (" + weftGetLastError(comm) + "); ");
    }
  };
  std::vector<float> buf(4096, 0.0f), out(4096, 0.0f);
  void* h = reinterpret_cast<void*>(0x1);
  // Local registration of a host buffer: a handle, and deregistration once.
  expect(weftCommRegister(comm, buf.data(), buf.size() * 4, &h) == weftSuccess && h != nullptr, "register a host buffer");
  void* h2 = nullptr;
  expect(weftCommRegister(comm, out.data(), out.size() * 4, &h2) == weftSuccess && h2 != nullptr && h2 != h,
         "register a second host buffer");
  // Bad arguments.
  void* bad = reinterpret_cast<void*>(0x1);
  expect(weftCommRegister(nullptr, buf.data(), 16, &bad) == weftInvalidArgument, "NULL comm");
  expect(weftCommRegister(comm, buf.data(), 16, nullptr) == weftInvalidArgument, "NULL handle");
  expect(weftCommRegister(comm, nullptr, 16, &bad) == weftInvalidArgument && bad == nullptr, "NULL buff clears *handle");
  expect(std::string(weftGetLastError(comm)).find("buff is NULL") != std::string::npos, "the sentence names buff");
  expect(weftCommRegister(comm, buf.data(), 0, &bad) == weftInvalidArgument, "size 0");
  expect(weftCommDeregister(comm, nullptr) == weftInvalidArgument, "deregister NULL");
  expect(weftCommDeregister(nullptr, h) == weftInvalidArgument, "deregister on NULL comm");
  int notAHandle = 0;
  expect(weftCommDeregister(comm, &notAHandle) == weftInvalidArgument, "deregister a foreign pointer");
  // Collectives on registered host buffers.
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<float>(ctx.rank + 1) * static_cast<float>(i % 7);
  expect(weftAllReduce(buf.data(), out.data(), buf.size(), weftFloat32, weftSum, comm, nullptr) == weftSuccess,
         "all-reduce on registered buffers");
  const float sumRanks = static_cast<float>(ctx.nranks * (ctx.nranks + 1) / 2);
  bool right = true;
  for (size_t i = 0; i < out.size(); ++i) right = right && out[i] == sumRanks * static_cast<float>(i % 7);
  expect(right, "all-reduce result on registered buffers");
  expect(weftCommDeregister(comm, h) == weftSuccess, "deregister");
  expect(weftCommDeregister(comm, h) == weftInvalidArgument, "deregister twice");
  // Windows: collective; flags and alignment checked first (locally, before any exchange).
  weftWindow_t w = nullptr;
  expect(weftCommWindowRegister(comm, buf.data(), 64, &w, 0x4) == weftInvalidArgument, "unknown window flags");
  void* page = std::aligned_alloc(4096, 8192);
  expect(weftCommWindowRegister(comm, static_cast<char*>(page) + 64, 64, &w, WEFT_WIN_COLL_SYMMETRIC) ==
             weftInvalidArgument,
         "a symmetric window off a 4096-byte boundary");
  expect(weftCommWindowRegister(comm, page, 8192, nullptr, 0) == weftInvalidArgument, "NULL win");
  expect(weftCommWindowRegister(comm, nullptr, 8192, &w, 0) == weftInvalidArgument, "NULL window buffer");
  // Inside a group (as NCCL allows): the exchange happens at weftGroupEnd.
  weftWindow_t wg = nullptr;
  expect(weftGroupStart() == weftSuccess, "group start");
  expect(weftCommWindowRegister(comm, page, 8192, &wg, 0) == weftSuccess && wg != nullptr,
         "window registration inside a group");
  expect(weftGroupEnd() == weftSuccess, "group end exchanges the window");
  expect(weftCommWindowDeregister(comm, wg) == weftSuccess, "deregister the group's window");
  expect(weftCommWindowRegister(comm, page, 8192, &w, WEFT_WIN_COLL_SYMMETRIC) == weftSuccess && w != nullptr,
         "symmetric window on a host buffer (collective)");
  weftWindow_t w2 = nullptr;
  expect(weftCommWindowRegister(comm, buf.data(), 64, &w2, WEFT_WIN_DEFAULT) == weftSuccess && w2 != nullptr && w2 != w,
         "a second window");
  expect(weftCommWindowDeregister(comm, w) == weftSuccess, "window deregister");
  expect(weftCommWindowDeregister(comm, w) == weftInvalidArgument, "window deregister twice");
  expect(weftCommWindowDeregister(comm, nullptr) == weftInvalidArgument, "window deregister NULL");
  // The communicator still works after the exchange.
  expect(weftAllReduce(buf.data(), out.data(), 16, weftFloat32, weftMax, comm, nullptr) == weftSuccess,
         "all-reduce after windows");
  // w2 and h2 stay registered: destroy releases them.
  if (weftCommDestroy(comm) != weftSuccess) ++fails;
  std::free(page);
  return fails;
}

TEST(Register, HostBuffersHandlesWindowsAndBadArguments) {
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  RunOptions o;
  o.nranks = 2;
  auto reports = runRanks(o, registerBody);
  for (int r = 0; r < o.nranks; ++r) EXPECT_EQ(reports[static_cast<size_t>(r)].exitCode, 0) << describe(reports);
}

TEST(Register, OneRank) {
  setenv("WEFT_SOCKET_IFNAME", "lo", 1);
  RunOptions o;
  o.nranks = 1;
  auto reports = runRanks(o, registerBody);
  EXPECT_EQ(reports[0].exitCode, 0) << describe(reports);
}

}  // namespace
}  // namespace weft::test
