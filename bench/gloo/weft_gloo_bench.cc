// weft-gloo-bench: the Gloo side of `weft-bench --compare gloo`. Times Gloo's allreduce (its TCP
// transport over 127.0.0.1) at the element counts weft-bench uses, so weft-bench can print both
// side by side; checks every row's result against weft-bench's independent reference. Written
// against Gloo only (no weft library; the reference data comes from bench/weft_bench_data.cc).
// Started by weft-bench as
//
//   weft-gloo-bench all_reduce --ranks N -n iters -w warmup -m agg -a average -c checks
//       -T timeout_s [--bind 0|1] <spec>...
//
//   spec: <type>:<op>:<root>:<count>[,<count>...]   (weft-bench's names; root is -1)
//
// The process started is the launcher: it makes a temporary directory for Gloo's FileStore (the
// rendezvous), forks N ranks (bound one per core like weft-bench's, when the cores suffice; each
// rank's Gloo TCP event-loop thread then shares its core; --bind 0 leaves them unbound), waits
// for them (killing them all when one fails, on a signal or after -T seconds) and removes the
// directory. Output (rank 0, stdout): '#' comment lines, then per count
// "R <type> <op> <root> <count> <usec>" (the -a rule across ranks: 0 rank 0, 1 mean, 2 min, 3 max)
// or "<usec>" = "-" where Gloo has no such type or op (bfloat16 and fp8, avg). Exit status: 0; 1
// when Gloo computed a wrong element (said on stderr: a wrong baseline is worthless); 2 on errors.
#include "weft_bench_data.h"

#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/config.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/types.h>

#include <dirent.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using weftbench::OpDesc;
using weftbench::TypeDesc;

struct Args {
  int ranks = 2, iters = 20, warmup = 1, agg = 1, average = 1, check = 1;
  long timeoutS = 0;
  bool corrupt = false;  // --test-corrupt 1: flip an output byte before the check (the check's test)
  bool bind = true;      // --bind 0: leave the ranks unbound (Gloo's TCP loop thread then floats)
  std::vector<std::string> specs;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "weft-gloo-bench: %s\nusage: weft-gloo-bench all_reduce [--ranks N] [-n iters] [-w warmup] "
               "[-m agg] [-a average] [-c checks] [-T timeout_s] <type>:<op>:<root>:<count>,...\n",
               why.c_str());
  std::exit(2);
}

long intArg(const char* flag, const char* s, long lo, long hi) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(s, &end, 10);
  if (!*s || *end || errno || v < lo || v > hi) {
    usage(std::string(flag) + ": '" + s + "' is not an integer in [" + std::to_string(lo) + ", " +
          std::to_string(hi) + "]");
  }
  return v;
}

// ------------------------------------------------------------------------------------------------
// One rank

// Gloo's element-wise reductions have two overloads each; this is the one allreduce takes.
using RawFn = void (*)(void*, const void*, const void*, size_t);

// Gloo's element-wise reduction for weft-bench's (type, op), or nullptr when Gloo has none.
template <typename T>
gloo::AllreduceOptions::Func funcFor(weftRedOp_t op) {
  switch (op) {
    case weftSum: return static_cast<RawFn>(&gloo::sum<T>);
    case weftProd: return static_cast<RawFn>(&gloo::product<T>);
    case weftMax: return static_cast<RawFn>(&gloo::max<T>);
    case weftMin: return static_cast<RawFn>(&gloo::min<T>);
    default: return nullptr;  // avg: Gloo has no such op
  }
}

gloo::AllreduceOptions::Func reductionFor(const TypeDesc& t, const OpDesc& op) {
  switch (t.type) {
    case weftInt8: return funcFor<int8_t>(op.op);
    case weftUint8: return funcFor<uint8_t>(op.op);
    case weftInt32: return funcFor<int32_t>(op.op);
    case weftUint32: return funcFor<uint32_t>(op.op);
    case weftInt64: return funcFor<int64_t>(op.op);
    case weftUint64: return funcFor<uint64_t>(op.op);
    case weftFloat16: return funcFor<gloo::float16>(op.op);
    case weftFloat32: return funcFor<float>(op.op);
    case weftFloat64: return funcFor<double>(op.op);
    default: return nullptr;  // bfloat16, fp8: Gloo has no such type
  }
}

// Out-of-place allreduce of `count` elements of t.size bytes (Gloo's default algorithm: the ring).
void allreduce(const std::shared_ptr<gloo::Context>& ctx, const gloo::AllreduceOptions::Func& fn,
               const void* in, void* out, size_t count, size_t elemSize) {
  gloo::AllreduceOptions opts(ctx);
  // The element type only sets the element size: bytes pass through as the matching integer.
  switch (elemSize) {
    case 1:
      opts.setInput(static_cast<uint8_t*>(const_cast<void*>(in)), count);
      opts.setOutput(static_cast<uint8_t*>(out), count);
      break;
    case 2:
      opts.setInput(static_cast<uint16_t*>(const_cast<void*>(in)), count);
      opts.setOutput(static_cast<uint16_t*>(out), count);
      break;
    case 4:
      opts.setInput(static_cast<uint32_t*>(const_cast<void*>(in)), count);
      opts.setOutput(static_cast<uint32_t*>(out), count);
      break;
    default:
      opts.setInput(static_cast<uint64_t*>(const_cast<void*>(in)), count);
      opts.setOutput(static_cast<uint64_t*>(out), count);
      break;
  }
  opts.setReduceFunction(fn);
  gloo::allreduce(opts);
}

// A double combined across ranks: `average` as weft-bench's -a (0 rank 0's value, 1 mean, 2 min,
// 3 max), or 4: the sum.
double combine(const std::shared_ptr<gloo::Context>& ctx, double v, int average) {
  double in = average == 0 && ctx->rank != 0 ? 0.0 : v, out = 0;
  gloo::AllreduceOptions::Func fn = static_cast<RawFn>(&gloo::sum<double>);
  if (average == 2) fn = static_cast<RawFn>(&gloo::min<double>);
  if (average == 3) fn = static_cast<RawFn>(&gloo::max<double>);
  allreduce(ctx, fn, &in, &out, 1, sizeof(double));
  return average == 1 ? out / ctx->size : out;
}
constexpr int kSum = 4;

struct Spec {
  const TypeDesc* t = nullptr;
  const OpDesc* op = nullptr;
  std::string typeName, opName;
  int root = -1;
  std::vector<size_t> counts;
};

Spec parseSpec(const std::string& s) {
  Spec spec;
  const size_t c1 = s.find(':'), c2 = s.find(':', c1 + 1), c3 = s.find(':', c2 + 1);
  if (c1 == std::string::npos || c2 == std::string::npos || c3 == std::string::npos) {
    usage("malformed spec '" + s + "': want <type>:<op>:<root>:<count>,...");
  }
  spec.typeName = s.substr(0, c1);
  spec.opName = s.substr(c1 + 1, c2 - c1 - 1);
  spec.root = static_cast<int>(intArg("spec root", s.substr(c2 + 1, c3 - c2 - 1).c_str(), -1, 1 << 20));
  spec.t = weftbench::findType(spec.typeName);
  spec.op = weftbench::findOp(spec.opName);
  if (!spec.t) usage("unknown type '" + spec.typeName + "'");
  if (!spec.op) usage("unknown op '" + spec.opName + "'");
  size_t pos = c3 + 1;
  while (pos <= s.size()) {
    size_t comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    const std::string c = s.substr(pos, comma - pos);
    spec.counts.push_back(static_cast<size_t>(intArg("spec count", c.c_str(), 0, 1L << 40)));
    pos = comma + 1;
  }
  return spec;
}

void* alloc(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, 4096, bytes ? bytes : 64) != 0) throw std::runtime_error("out of memory");
  return p;
}

// Returns the number of wrong elements this rank saw (its output and its input kept intact).
uint64_t runRank(const Args& a, int rank, const std::string& storeDir) {
  gloo::transport::tcp::attr attr;
  attr.hostname = "127.0.0.1";  // loopback: every rank is on this host
  auto dev = gloo::transport::tcp::CreateDevice(attr);
  gloo::rendezvous::FileStore store(storeDir);
  auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, a.ranks);
  const std::chrono::milliseconds timeout(a.timeoutS > 0 ? a.timeoutS * 1000 : 300000);
  ctx->setTimeout(timeout);
  ctx->connectFullMesh(store, dev);
  if (rank == 0) {
    std::printf("# gloo library: Gloo %d.%d.%d, TCP transport over 127.0.0.1 (FileStore rendezvous), "
                "allreduce (ring), %d ranks\n",
                GLOO_VERSION_MAJOR, GLOO_VERSION_MINOR, GLOO_VERSION_PATCH, a.ranks);
  }
  uint64_t wrongTotal = 0;
  for (const std::string& text : a.specs) {
    const Spec spec = parseSpec(text);
    const TypeDesc& t = *spec.t;
    const gloo::AllreduceOptions::Func fn = reductionFor(t, *spec.op);
    size_t maxCount = 0, minCount = spec.counts.empty() ? 0 : SIZE_MAX;
    for (size_t c : spec.counts) {
      maxCount = std::max(maxCount, c);
      minCount = std::min(minCount, c);
    }
    if (!fn) {
      for (size_t c : spec.counts) {
        if (rank == 0) std::printf("R %s %s %d %zu -\n", spec.typeName.c_str(), spec.opName.c_str(), spec.root, c);
      }
      continue;
    }
    const size_t bytes = maxCount * t.size;
    char* pristine = static_cast<char*>(alloc(bytes));
    char* send = static_cast<char*>(alloc(bytes));
    char* recv = static_cast<char*>(alloc(bytes));
    char* expected = static_cast<char*>(alloc(bytes));
    weftbench::fillInputRange(pristine, 0, maxCount, t, *spec.op, rank, a.ranks);
    weftbench::fillExpectedRange(expected, 0, maxCount, t, *spec.op, a.ranks);
    std::memcpy(send, pristine, bytes);
    for (size_t warm : {maxCount, minCount}) {
      for (int w = 0; w < a.warmup && warm > 0; ++w) allreduce(ctx, fn, send, recv, warm, t.size);
    }
    for (size_t count : spec.counts) {
      if (count == 0) {  // nothing to reduce (Gloo refuses empty buffers): no time to compare
        if (rank == 0) std::printf("R %s %s %d 0 -\n", spec.typeName.c_str(), spec.opName.c_str(), spec.root);
        continue;
      }
      gloo::BarrierOptions bopts(ctx);
      gloo::barrier(bopts);
      const auto t0 = std::chrono::steady_clock::now();
      for (int it = 0; it < a.iters; ++it) {
        for (int m = 0; m < a.agg; ++m) allreduce(ctx, fn, send, recv, count, t.size);
      }
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double ops = static_cast<double>(a.iters) * a.agg;
      const double usec = combine(ctx, ops > 0 ? seconds / ops : 0.0, a.average) * 1e6;
      // The check: the output starts as the complement of the expected result, so an element Gloo
      // never wrote cannot pass; the input must come back unchanged.
      uint64_t wrong = 0;
      for (int c = 0; c < a.check; ++c) {
        std::memcpy(send, pristine, count * t.size);
        for (size_t b = 0; b < count * t.size; ++b) recv[b] = static_cast<char>(~expected[b]);
        allreduce(ctx, fn, send, recv, count, t.size);
        if (a.corrupt && rank == a.ranks - 1) recv[(count - 1) * t.size] ^= 1;
        wrong += weftbench::countMismatches(recv, expected, count, t.size);
        wrong += weftbench::countMismatches(send, pristine, count, t.size);
      }
      const double wrongAll = a.check ? combine(ctx, static_cast<double>(wrong), kSum) : 0;  // exact below 2^53
      if (wrong) {
        std::fprintf(stderr,
                     "weft-gloo-bench: rank %d: Gloo's allreduce of %zu %s %s elements gave %llu wrong "
                     "elements (checked against weft-bench's reference)\n",
                     rank, count, spec.typeName.c_str(), spec.opName.c_str(),
                     static_cast<unsigned long long>(wrong));
      }
      wrongTotal += wrong;
      if (rank == 0) {
        std::printf("R %s %s %d %zu %.3f %.0f\n", spec.typeName.c_str(), spec.opName.c_str(), spec.root,
                    count, usec, wrongAll);
      }
      std::memcpy(send, pristine, count * t.size);
    }
    std::free(pristine);
    std::free(send);
    std::free(recv);
    std::free(expected);
  }
  std::fflush(stdout);
  gloo::BarrierOptions bopts(ctx);
  gloo::barrier(bopts);  // nobody leaves while a peer still reads from it
  return wrongTotal;
}

// ------------------------------------------------------------------------------------------------
// The launcher

volatile sig_atomic_t gSignal = 0;
void onSignal(int sig) { gSignal = sig; }

void bindRank(int rank, int nranks) {
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || CPU_COUNT(&allowed) < nranks) return;
  int seen = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &allowed) && seen++ == rank) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      (void)sched_setaffinity(0, sizeof one, &one);
      return;
    }
  }
}

void removeDir(const std::string& dir) {
  if (DIR* d = opendir(dir.c_str())) {
    while (const dirent* e = readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
        (void)unlink((dir + "/" + e->d_name).c_str());
      }
    }
    closedir(d);
  }
  (void)rmdir(dir.c_str());
}

int launch(const Args& a) {
  const char* tmp = std::getenv("TMPDIR");
  std::string dir = std::string(tmp && *tmp ? tmp : "/tmp") + "/weft-gloo-store.XXXXXX";
  if (!mkdtemp(dir.data())) {
    std::fprintf(stderr, "weft-gloo-bench: cannot create %s: %s\n", dir.c_str(), std::strerror(errno));
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = onSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t parent = getpid();
  std::vector<pid_t> pids;
  for (int rank = 0; rank < a.ranks; ++rank) {
    const pid_t pid = fork();  // the launcher has no threads: forking without exec is safe
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(2);
      signal(SIGINT, SIG_DFL);
      signal(SIGTERM, SIG_DFL);
      if (a.bind) bindRank(rank, a.ranks);
      if (rank != 0) (void)!freopen("/dev/null", "w", stdout);
      int rc = 0;
      try {
        rc = runRank(a, rank, dir) ? 1 : 0;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "weft-gloo-bench: rank %d: Gloo failed: %s\n", rank, e.what());
        rc = 2;
      }
      std::fflush(stdout);
      std::fflush(stderr);
      _exit(rc);
    }
    if (pid < 0) {
      std::fprintf(stderr, "weft-gloo-bench: fork failed: %s\n", std::strerror(errno));
      break;
    }
    pids.push_back(pid);
  }
  // Exit 2 when a rank failed (or was killed), else 1 when a rank saw wrong results, else 0.
  bool error = static_cast<int>(pids.size()) != a.ranks, wrong = false, killed = false;
  auto killAll = [&] {
    if (!killed) {
      for (pid_t q : pids) kill(q, SIGKILL);
    }
    killed = true;
  };
  if (error) killAll();
  const auto start = std::chrono::steady_clock::now();
  size_t live = pids.size();
  while (live > 0) {
    int st = 0;
    const pid_t p = waitpid(-1, &st, WNOHANG);
    if (p > 0) {
      --live;
      if (WIFEXITED(st) && WEXITSTATUS(st) == 1) {
        wrong = true;  // said on stderr by the rank
      } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        if (!killed && !WIFEXITED(st)) {
          std::fprintf(stderr, "weft-gloo-bench: a rank (pid %d) was killed by signal %d\n",
                       static_cast<int>(p), WTERMSIG(st));
        }
        error = true;
        killAll();  // the others cannot finish without it
      }
      continue;
    }
    if (p < 0 && errno != EINTR) break;
    const bool late = a.timeoutS > 0 && std::chrono::steady_clock::now() - start > std::chrono::seconds(a.timeoutS);
    if ((late || gSignal) && !killed) {
      std::fprintf(stderr, "weft-gloo-bench: %s; killing the ranks\n", gSignal ? "interrupted" : "timed out (-T)");
      error = true;
      killAll();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const int exitCode = error ? 2 : wrong ? 1 : 0;
  removeDir(dir);
  return exitCode;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) usage("no collective given");
  if (std::strcmp(argv[1], "all_reduce") != 0) {
    usage(std::string("'") + argv[1] + "': only all_reduce is compared with Gloo");
  }
  Args a;
  int i = 2;
  for (; i < argc && argv[i][0] == '-'; i += 2) {
    const std::string f = argv[i];
    if (i + 1 >= argc) usage("flag " + f + " needs a value");
    const char* v = argv[i + 1];
    if (f == "--ranks") a.ranks = static_cast<int>(intArg("--ranks", v, 1, 1024));
    else if (f == "-n") a.iters = static_cast<int>(intArg("-n", v, 0, 1 << 30));
    else if (f == "-w") a.warmup = static_cast<int>(intArg("-w", v, 0, 1 << 30));
    else if (f == "-m") a.agg = static_cast<int>(intArg("-m", v, 1, 1 << 20));
    else if (f == "-a") a.average = static_cast<int>(intArg("-a", v, 0, 3));
    else if (f == "-c") a.check = static_cast<int>(intArg("-c", v, 0, 1 << 20));
    else if (f == "-T") a.timeoutS = intArg("-T", v, 0, 1L << 30);
    else if (f == "--test-corrupt") a.corrupt = intArg("--test-corrupt", v, 0, 1) == 1;
    else if (f == "--bind") a.bind = intArg("--bind", v, 0, 1) == 1;
    else usage("unknown flag " + f);
  }
  for (; i < argc; ++i) {
    (void)parseSpec(argv[i]);  // refuse a malformed spec before starting any rank
    a.specs.push_back(argv[i]);
  }
  return launch(a);
}
