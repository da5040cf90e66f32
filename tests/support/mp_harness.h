// Multi-process test harness (Gloo-style): the parent makes the unique ids, forks one child per
// rank, and collects what each child reports through shared memory. Children never use GoogleTest
// assertions (they run in forked copies); they return an exit code and fill their Report.
#pragma once

#include <weft/weft.h>

#include <functional>
#include <string>
#include <vector>

namespace weft::test {

struct Report {
  int exitCode = -1;
  bool signaled = false;
  int result = 0;          // a weftResult_t the child wants to report
  long long timeNs = 0;    // a CLOCK_MONOTONIC time the child wants to report
  long long valueA = 0;
  long long valueB = 0;
  char message[1024] = {};
};

struct RankContext {
  int rank;
  int nranks;
  std::vector<weftUniqueId> ids;  // as many as asked for
  Report* report;                 // this rank's (shared with the parent)
  void say(const std::string& s) const;  // append to the report message
};

struct RunOptions {
  int nranks = 2;
  int nids = 1;
  int timeoutSec = 120;
  // Called in the parent after forking (e.g. to kill a child); pids by rank.
  std::function<void(const std::vector<int>& pids)> parentAction;
};

// Runs body in one forked child per rank; returns the reports by rank. A child that outlives the
// timeout is killed (and reported as signaled).
std::vector<Report> runRanks(const RunOptions& opt, const std::function<int(const RankContext&)>& body);

long long monoNs();

// A rank killed in the middle of all-reduces: nranks ranks loop weftAllReduce over float buffers of
// bigCount elements (every third call only 3 elements when mixSmall) with WEFT_ALGO=algo; the
// parent SIGKILLs rank `victim` after killAfterUs. A survivor records the failing call's result,
// the time and the error text, aborts and exits 0.
struct KillRun {
  std::vector<Report> reports;
  long long killedAtNs = 0;
};
KillRun runAllReduceAndKill(int nranks, int victim, const char* algo, size_t bigCount, bool mixSmall,
                            long long killAfterUs = 1500000);

// Empty when every survivor failed with weftRemoteError naming the victim ("rank V") within
// limitNs of the kill and the victim died by the signal; otherwise what went wrong and the reports.
std::string survivorsNameVictim(const KillRun& run, int victim, long long limitNs);

// "rank 0: exit 0 ...\nrank 1: ..." for failure messages.
std::string describe(const std::vector<Report>& r);

}  // namespace weft::test
