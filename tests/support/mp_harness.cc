#include "support/mp_harness.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

namespace weft::test {

long long monoNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

void RankContext::say(const std::string& s) const {
  size_t used = std::strlen(report->message);
  std::snprintf(report->message + used, sizeof report->message - used, "%s%s", used ? "; " : "", s.c_str());
}

std::vector<Report> runRanks(const RunOptions& opt, const std::function<int(const RankContext&)>& body) {
  std::vector<weftUniqueId> ids(static_cast<size_t>(opt.nids));
  for (auto& id : ids) {
    if (weftGetUniqueId(&id) != weftSuccess) {
      std::vector<Report> r(static_cast<size_t>(opt.nranks));
      for (auto& x : r) std::snprintf(x.message, sizeof x.message, "weftGetUniqueId failed: %s", weftGetLastError(nullptr));
      return r;
    }
  }
  size_t bytes = sizeof(Report) * static_cast<size_t>(opt.nranks);
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* reports = static_cast<Report*>(mem);
  for (int r = 0; r < opt.nranks; ++r) new (&reports[r]) Report();
  std::fflush(stdout);
  std::fflush(stderr);
  std::vector<int> pids;
  for (int r = 0; r < opt.nranks; ++r) {
    pid_t pid = fork();
    if (pid == 0) {
      RankContext ctx{r, opt.nranks, ids, &reports[r]};
      int code = 99;
      try {
        code = body(ctx);
      } catch (...) {
        ctx.say("exception");
      }
      std::fflush(stdout);
      std::fflush(stderr);
      _exit(code);
    }
    pids.push_back(pid);
  }
  if (opt.parentAction) opt.parentAction(pids);
  long long deadline = monoNs() + static_cast<long long>(opt.timeoutSec) * 1000000000LL;
  size_t left = pids.size();
  std::vector<bool> done(pids.size(), false);
  while (left > 0) {
    for (size_t i = 0; i < pids.size(); ++i) {
      if (done[i]) continue;
      int st;
      if (waitpid(pids[i], &st, WNOHANG) == pids[i]) {
        done[i] = true;
        --left;
        reports[i].exitCode = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        reports[i].signaled = WIFSIGNALED(st);
      }
    }
    if (left > 0 && monoNs() > deadline) {
      for (size_t i = 0; i < pids.size(); ++i)
        if (!done[i]) {
          kill(pids[i], SIGKILL);
          int st;
          waitpid(pids[i], &st, 0);
          done[i] = true;
          reports[i].signaled = true;
          std::strncat(reports[i].message, " [killed: test timeout]", 100);
        }
      left = 0;
    }
    if (left > 0) usleep(2000);
  }
  std::vector<Report> out(reports, reports + opt.nranks);
  munmap(mem, bytes);
  return out;
}

KillRun runAllReduceAndKill(int nranks, int victim, const char* algo, size_t bigCount, bool mixSmall,
                            long long killAfterUs) {
  setenv("WEFT_ALGO", algo, 1);
  RunOptions o;
  o.nranks = nranks;
  KillRun run;
  o.parentAction = [&](const std::vector<int>& pids) {
    usleep(static_cast<useconds_t>(killAfterUs));
    run.killedAtNs = monoNs();
    kill(pids[static_cast<size_t>(victim)], SIGKILL);
  };
  run.reports = runRanks(o, [bigCount, mixSmall](const RankContext& ctx) {
    weftComm_t comm;
    if (weftCommInitRank(&comm, ctx.nranks, ctx.ids[0], ctx.rank) != weftSuccess) return 10;
    std::vector<float> a(bigCount, 1.0f), b(bigCount);
    for (long it = 0; it < 1000000000L; ++it) {
      size_t count = (mixSmall && it % 3 == 0) ? 3 : a.size();
      weftResult_t r = weftAllReduce(a.data(), b.data(), count, weftFloat, weftSum, comm, nullptr);
      if (r != weftSuccess) {
        ctx.report->timeNs = monoNs();
        ctx.report->result = r;
        ctx.say(weftGetLastError(comm));
        weftCommAbort(comm);
        return 0;
      }
    }
    return 1;
  });
  unsetenv("WEFT_ALGO");
  return run;
}

std::string survivorsNameVictim(const KillRun& run, int victim, long long limitNs) {
  std::string bad;
  const std::string name = "rank " + std::to_string(victim);
  for (size_t r = 0; r < run.reports.size(); ++r) {
    const Report& x = run.reports[r];
    const std::string who = "rank " + std::to_string(r) + ": ";
    if (static_cast<int>(r) == victim) {
      if (!x.signaled) bad += who + "the victim was not killed\n";
      continue;
    }
    if (x.exitCode != 0) bad += who + "exit " + std::to_string(x.exitCode) + "\n";
    if (x.result != weftRemoteError) bad += who + "result " + std::to_string(x.result) + ", not weftRemoteError\n";
    if (x.timeNs - run.killedAtNs >= limitNs)
      bad += who + "failed " + std::to_string((x.timeNs - run.killedAtNs) / 1000000) + " ms after the kill\n";
    if (std::strstr(x.message, name.c_str()) == nullptr) bad += who + "the error does not name " + name + "\n";
  }
  return bad.empty() ? bad : bad + describe(run.reports);
}

std::string describe(const std::vector<Report>& r) {
  std::string s;
  for (size_t i = 0; i < r.size(); ++i)
    s += "rank " + std::to_string(i) + ": exit " + std::to_string(r[i].exitCode) + (r[i].signaled ? " (signaled)" : "") +
         " result " + std::to_string(r[i].result) + " " + r[i].message + "\n";
  return s;
}

}  // namespace weft::test
