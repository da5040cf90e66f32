// End to end over the verbs transport: forked ranks, the public API, WEFT_TRANSPORTS=ib (set by
// ctest with softverbs and the RoCE fixture); all-reduce results checked bit for bit.
#include <gtest/gtest.h>
#include <stdlib.h>

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
