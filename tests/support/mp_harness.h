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

// "rank 0: exit 0 ...\nrank 1: ..." for failure messages.
std::string describe(const std::vector<Report>& r);

}  // namespace weft::test
