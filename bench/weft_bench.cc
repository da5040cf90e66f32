// weft-bench: an nccl-tests-compatible benchmark for weft, written against the public C API only.
//
//   weft-bench all_reduce [-b minbytes] [-e maxbytes] [-f factor | -i step] [-n iters] [-w warmup]
//                         [-c checks] [-d type|all] [-o op|all] [-z blocking] [--ranks N] ...
//
// The process started by the user is the launcher: it creates the bootstrap id (which runs the
// rendezvous in this process), then fork+execs itself N times in a hidden worker mode that carries
// rank, nranks and the id (hex) on the command line, and waits for them. Rank 0 prints the table
// in nccl-tests' layout. `weft-bench --help` lists the flags.
#include <weft/weft.h>

#include "weft_bench_data.h"

#include <getopt.h>
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
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace weftbench {
namespace {

constexpr const char* kWorkerFlag = "--weft-bench-worker";
constexpr int kExitWrong = 1;   // wrong results
constexpr int kExitError = 2;   // usage or weft error
constexpr int kGraceSeconds = 10;

struct Options {
  std::string collective;
  size_t minBytes = 8;
  size_t maxBytes = size_t{64} << 20;
  size_t stepBytes = size_t{1} << 20;
  long stepFactor = 2;
  bool stepFactorGiven = false;
  bool stepBytesGiven = false;
  int iters = 20;
  int warmup = 1;
  int check = 1;
  int aggIters = 1;
  int blocking = 0;
  int average = 1;
  int ranks = 2;
  long timeoutS = 0;
  std::vector<const TypeDesc*> types;
  std::vector<const OpDesc*> ops;
};

void usage(FILE* out) {
  std::fprintf(out,
      "usage: weft-bench all_reduce [flags]\n"
      "\n"
      "nccl-tests-compatible benchmark for weft. Spawns --ranks local processes (no launcher\n"
      "needed); rank 0 prints the table. Host buffers (there is no GPU support yet).\n"
      "\n"
      "  -b, --minbytes <n>        smallest size in bytes, suffix K/M/G (default 8)\n"
      "  -e, --maxbytes <n>        largest size in bytes, suffix K/M/G (default 64M)\n"
      "  -f, --stepfactor <n>      multiply the size by n each step (default 2; 1 = use -i)\n"
      "  -i, --stepbytes <n>       add n bytes each step when -f is 1 (default 1M; giving -i\n"
      "                            without -f selects the additive step)\n"
      "  -n, --iters <n>           timed iterations per size (default 20)\n"
      "  -w, --warmup_iters <n>    warm-up iterations (default 1)\n"
      "  -m, --agg_iters <n>       operations per iteration (default 1)\n"
      "  -c, --check <n>           checked iterations per size, 0 = no check (default 1)\n"
      "  -d, --datatype <t>        int8 uint8 int32 uint32 int64 uint64 half float double\n"
      "                            bfloat16 f8e4m3 f8e5m2, or all (default float)\n"
      "  -o, --op <op>             sum prod max min avg, or all (default sum)\n"
      "  -z, --blocking <0-3>      1, 3: barrier after each iteration, not timed (default 0;\n"
      "                            host buffers always complete before the call returns)\n"
      "  -a, --average <0-3>       time across ranks: 0 rank 0, 1 average, 2 min, 3 max (default 1)\n"
      "  -r, --root <r>            accepted for compatibility; all_reduce has no root\n"
      "  -t, --nthreads 1, -g, --ngpus 1   accepted for compatibility (only 1)\n"
      "  -T, --timeout <s>         kill the ranks and fail after s seconds (default 0 = none)\n"
      "      --ranks <n>           number of local ranks to spawn (default 2)\n"
      "  -h, --help                this text\n"
      "\n"
      "Exit status: 0 all results correct, 1 wrong results, 2 usage or weft error (or a rank\n"
      "that failed or was killed).\n");
}

[[noreturn]] void usageError(const std::string& msg) {
  std::fprintf(stderr, "weft-bench: %s\n(see weft-bench --help)\n", msg.c_str());
  std::exit(kExitError);
}

// Sizes: a decimal number with an optional K/M/G suffix (powers of 2^10).
bool parseSize(const char* s, size_t* out) {
  if (!s || !*s || *s == '-') return false;
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (errno || end == s) return false;
  unsigned shift = 0;
  if (*end) {
    switch (*end) {
      case 'k': case 'K': shift = 10; break;
      case 'm': case 'M': shift = 20; break;
      case 'g': case 'G': shift = 30; break;
      default: return false;
    }
    ++end;
    if (*end == 'B' || *end == 'b') ++end;
    if (*end) return false;
  }
  if (shift && v > (~0ull >> shift)) return false;
  *out = static_cast<size_t>(v << shift);
  return true;
}

bool parseLong(const char* s, long lo, long hi, long* out) {
  if (!s || !*s) return false;
  errno = 0;
  char* end = nullptr;
  long v = std::strtol(s, &end, 10);
  if (errno || *end || end == s || v < lo || v > hi) return false;
  *out = v;
  return true;
}

int intArg(const char* flag, const char* arg, long lo, long hi) {
  long v;
  if (!parseLong(arg, lo, hi, &v)) {
    usageError(std::string(flag) + ": expected an integer in [" + std::to_string(lo) + ", " +
               std::to_string(hi) + "], got '" + (arg ? arg : "") + "'");
  }
  return static_cast<int>(v);
}

size_t sizeArg(const char* flag, const char* arg) {
  size_t v;
  if (!parseSize(arg, &v)) {
    usageError(std::string(flag) + ": expected a byte count such as 8, 64K, 1M or 2G, got '" +
               (arg ? arg : "") + "'");
  }
  return v;
}

Options parseOptions(int argc, char** argv) {
  Options o;
  if (argc < 2) usageError("missing the collective: weft-bench all_reduce [flags]");
  if (!std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help")) {
    usage(stdout);
    std::exit(0);
  }
  if (argv[1][0] == '-') usageError("the first argument must be the collective (all_reduce)");
  o.collective = argv[1];
  if (o.collective != "all_reduce" && o.collective != "all_reduce_perf") {
    usageError("unknown collective '" + o.collective + "': only all_reduce is supported");
  }

  enum { kRanks = 1000 };
  static const option longOpts[] = {
      {"minbytes", required_argument, nullptr, 'b'},
      {"maxbytes", required_argument, nullptr, 'e'},
      {"stepbytes", required_argument, nullptr, 'i'},
      {"stepfactor", required_argument, nullptr, 'f'},
      {"iters", required_argument, nullptr, 'n'},
      {"warmup_iters", required_argument, nullptr, 'w'},
      {"agg_iters", required_argument, nullptr, 'm'},
      {"check", required_argument, nullptr, 'c'},
      {"datatype", required_argument, nullptr, 'd'},
      {"op", required_argument, nullptr, 'o'},
      {"blocking", required_argument, nullptr, 'z'},
      {"average", required_argument, nullptr, 'a'},
      {"root", required_argument, nullptr, 'r'},
      {"nthreads", required_argument, nullptr, 't'},
      {"ngpus", required_argument, nullptr, 'g'},
      {"timeout", required_argument, nullptr, 'T'},
      {"ranks", required_argument, nullptr, kRanks},
      {"help", no_argument, nullptr, 'h'},
      {nullptr, 0, nullptr, 0},
  };
  std::string typeArg = "float", opArg = "sum";
  int subArgc = argc - 1;
  char** subArgv = argv + 1;
  opterr = 0;
  optind = 1;
  for (;;) {
    int idx = -1;
    int c = getopt_long(subArgc, subArgv, ":b:e:i:f:n:w:m:c:d:o:z:a:r:t:g:T:h", longOpts, &idx);
    if (c == -1) break;
    switch (c) {
      case 'b': o.minBytes = sizeArg("-b/--minbytes", optarg); break;
      case 'e': o.maxBytes = sizeArg("-e/--maxbytes", optarg); break;
      case 'i': o.stepBytes = sizeArg("-i/--stepbytes", optarg); o.stepBytesGiven = true; break;
      case 'f': o.stepFactor = intArg("-f/--stepfactor", optarg, 1, 1 << 20); o.stepFactorGiven = true; break;
      case 'n': o.iters = intArg("-n/--iters", optarg, 0, 1 << 30); break;
      case 'w': o.warmup = intArg("-w/--warmup_iters", optarg, 0, 1 << 30); break;
      case 'm': o.aggIters = intArg("-m/--agg_iters", optarg, 1, 1 << 20); break;
      case 'c': o.check = intArg("-c/--check", optarg, 0, 1 << 20); break;
      case 'd': typeArg = optarg; break;
      case 'o': opArg = optarg; break;
      case 'z': o.blocking = intArg("-z/--blocking", optarg, 0, 3); break;
      case 'a': o.average = intArg("-a/--average", optarg, 0, 3); break;
      case 'r':
        if (std::strcmp(optarg, "all") != 0) intArg("-r/--root", optarg, 0, 1 << 30);
        break;
      case 't':
        intArg("-t/--nthreads", optarg, 1, 1);
        break;
      case 'g':
        intArg("-g/--ngpus", optarg, 1, 1);
        break;
      case 'T': o.timeoutS = intArg("-T/--timeout", optarg, 0, 1 << 30); break;
      case kRanks: o.ranks = intArg("--ranks", optarg, 1, 4096); break;
      case 'h': usage(stdout); std::exit(0);
      case ':':
        usageError(std::string("option '") + subArgv[optind - 1] + "' needs a value");
      default: {
        const std::string flag = optopt > 0 && optopt < 128
                                     ? std::string("-") + static_cast<char>(optopt)
                                     : std::string(subArgv[optind - 1]);
        usageError("unknown option '" + flag + "'");
      }
    }
  }
  if (optind < subArgc) usageError(std::string("unexpected argument '") + subArgv[optind] + "'");

  if (o.stepBytesGiven && !o.stepFactorGiven) o.stepFactor = 1;
  if (o.maxBytes < o.minBytes) usageError("-e/--maxbytes is smaller than -b/--minbytes");
  if (o.stepFactor > 1 && o.minBytes == 0) usageError("-b/--minbytes must be > 0 with -f > 1");
  if (o.stepFactor == 1 && o.stepBytes == 0) usageError("-i/--stepbytes must be > 0 with -f 1");

  size_t nTypes, nOps;
  const TypeDesc* types = allTypes(&nTypes);
  const OpDesc* ops = allOps(&nOps);
  if (typeArg == "all") {
    for (size_t i = 0; i < nTypes; ++i) o.types.push_back(&types[i]);
  } else if (const TypeDesc* t = findType(typeArg)) {
    o.types.push_back(t);
  } else {
    usageError("-d/--datatype: unknown type '" + typeArg +
               "' (int8 uint8 int32 uint32 int64 uint64 half float double bfloat16 f8e4m3 "
               "f8e5m2 all)");
  }
  if (opArg == "all") {
    for (size_t i = 0; i < nOps; ++i) o.ops.push_back(&ops[i]);
  } else if (const OpDesc* op = findOp(opArg)) {
    o.ops.push_back(op);
  } else {
    usageError("-o/--op: unknown op '" + opArg + "' (sum prod max min avg all)");
  }
  return o;
}

// ------------------------------------------------------------------------------------------------
// Launcher

volatile sig_atomic_t gSignal = 0;
void onSignal(int sig) { gSignal = sig; }

std::string toHex(const weftUniqueId& id) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < WEFT_UNIQUE_ID_BYTES; ++i) {
    const unsigned char b = static_cast<unsigned char>(id.internal[i]);
    s += digits[b >> 4];
    s += digits[b & 15];
  }
  return s;
}

bool fromHex(std::string_view s, weftUniqueId* id) {
  if (s.size() != 2 * WEFT_UNIQUE_ID_BYTES) return false;
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (int i = 0; i < WEFT_UNIQUE_ID_BYTES; ++i) {
    const int hi = nib(s[2 * i]), lo = nib(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    id->internal[i] = static_cast<char>((hi << 4) | lo);
  }
  return true;
}

std::string describeStatus(int st) {
  if (WIFEXITED(st)) return "exited with status " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) {
    return std::string("was killed by signal ") + std::to_string(WTERMSIG(st)) + " (" +
           strsignal(WTERMSIG(st)) + ")";
  }
  return "stopped";
}

int launch(const Options& o, int argc, char** argv) {
  weftUniqueId id;
  const weftResult_t r = weftGetUniqueId(&id);
  if (r != weftSuccess) {
    std::fprintf(stderr, "weft-bench: weftGetUniqueId failed: %s — %s\n", weftGetErrorString(r),
                 weftGetLastError(nullptr));
    return kExitError;
  }
  const std::string hex = toHex(id);
  const int n = o.ranks;

  // Everything the children need is built before forking (the parent has threads).
  std::vector<std::string> tokens(n);
  std::vector<std::vector<char*>> childArgv(n);
  for (int rank = 0; rank < n; ++rank) {
    tokens[rank] = std::to_string(rank) + ":" + std::to_string(n) + ":" + hex;
    childArgv[rank].push_back(argv[0]);
    childArgv[rank].push_back(const_cast<char*>(kWorkerFlag));
    childArgv[rank].push_back(tokens[rank].data());
    for (int i = 1; i < argc; ++i) childArgv[rank].push_back(argv[i]);
    childArgv[rank].push_back(nullptr);
  }
  std::fflush(stdout);
  std::fflush(stderr);

  struct sigaction sa {};
  sa.sa_handler = onSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);

  const pid_t parent = getpid();
  std::vector<pid_t> pids(n, -1);
  std::vector<bool> running(n, false);
  int live = 0;
  int exitCode = 0;
  using Clock = std::chrono::steady_clock;
  Clock::time_point killAt = Clock::time_point::max();
  const Clock::time_point start = Clock::now();

  std::vector<bool> signalled(n, false);
  auto killAll = [&](int sig) {
    for (int i = 0; i < n; ++i) {
      if (running[i]) {
        kill(pids[i], sig);
        signalled[i] = true;
      }
    }
  };

  for (int rank = 0; rank < n; ++rank) {
    const pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(kExitError);
      execv("/proc/self/exe", childArgv[rank].data());
      execvp(argv[0], childArgv[rank].data());
      static const char msg[] = "weft-bench: cannot exec the worker process\n";
      (void)!write(2, msg, sizeof(msg) - 1);
      _exit(127);
    }
    if (pid < 0) {
      std::fprintf(stderr, "weft-bench: fork failed for rank %d: %s\n", rank, std::strerror(errno));
      killAll(SIGKILL);
      exitCode = kExitError;
      break;
    }
    pids[rank] = pid;
    running[rank] = true;
    ++live;
  }

  bool timedOut = false, forwarded = false;
  while (live > 0) {
    int st = 0;
    const pid_t p = waitpid(-1, &st, WNOHANG);
    if (p > 0) {
      const int rank = static_cast<int>(std::find(pids.begin(), pids.end(), p) - pids.begin());
      if (rank >= n || !running[rank]) continue;
      running[rank] = false;
      --live;
      const bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
      if (!ok) {
        // Wrong results (status 1) are already reported by the table; say nothing more.
        if (!signalled[rank] && !(WIFEXITED(st) && WEXITSTATUS(st) == kExitWrong)) {
          std::fprintf(stderr, "weft-bench: rank %d (pid %d) %s\n", rank, static_cast<int>(p),
                       describeStatus(st).c_str());
        }
        if (exitCode == 0) {
          exitCode = WIFEXITED(st) ? WEXITSTATUS(st) : kExitError;
        }
        if (killAt == Clock::time_point::max() && live > 0) {
          killAt = Clock::now() + std::chrono::seconds(kGraceSeconds);
        }
      }
      continue;
    }
    if (p < 0 && errno != EINTR) break;  // ECHILD: nothing left
    const auto now = Clock::now();
    if (gSignal && !forwarded) {
      forwarded = true;
      killAll(gSignal);
      if (exitCode == 0) exitCode = 128 + gSignal;
      killAt = std::min(killAt, now + std::chrono::seconds(3));
    }
    if (o.timeoutS > 0 && !timedOut && now - start > std::chrono::seconds(o.timeoutS)) {
      timedOut = true;
      std::fprintf(stderr, "weft-bench: timed out after %ld s (-T); killing the ranks\n", o.timeoutS);
      killAll(SIGKILL);
      exitCode = kExitError;
    }
    if (now >= killAt) {
      for (int i = 0; i < n; ++i) {
        if (running[i] && !signalled[i]) {
          std::fprintf(stderr,
                       "weft-bench: rank %d (pid %d) still running %d s after a rank failed; "
                       "killing it\n",
                       i, static_cast<int>(pids[i]), kGraceSeconds);
        }
      }
      killAll(SIGKILL);
      killAt = Clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return exitCode;
}

// ------------------------------------------------------------------------------------------------
// Worker

weftComm_t gComm = nullptr;
int gRank = -1, gNranks = 0;

[[noreturn]] void weftFailed(const char* expr, weftResult_t r) {
  const char* paren = std::strchr(expr, '(');
  const int len = paren ? static_cast<int>(paren - expr) : static_cast<int>(std::strlen(expr));
  std::fprintf(stderr, "weft-bench: %.*s failed: %s — %s (rank %d of %d)\n", len, expr,
               weftGetErrorString(r), weftGetLastError(gComm), gRank, gNranks);
  std::fflush(stderr);
  if (gComm) {
    weftCommAbort(gComm);  // so the peers fail fast instead of waiting for a timeout
    gComm = nullptr;
  }
  std::exit(kExitError);
}

#define WB_CHECK(call)                                   \
  do {                                                   \
    const weftResult_t wbRes_ = (call);                  \
    if (wbRes_ != weftSuccess) weftFailed(#call, wbRes_); \
  } while (0)

void barrier() {
  int32_t one = 1;
  WB_CHECK(weftAllReduce(&one, &one, 1, weftInt32, weftSum, gComm, nullptr));
}

// nccl-tests' number style: 2 decimals, then 1, then 0, then exponent form, to fit the width.
std::string fmtNum(double v, int width) {
  char buf[64];
  for (int prec = 2; prec >= 0; --prec) {
    std::snprintf(buf, sizeof(buf), "%.*f", prec, v);
    if (static_cast<int>(std::strlen(buf)) <= width) return buf;
  }
  std::snprintf(buf, sizeof(buf), "%.*e", std::max(0, width - 6), v);
  return buf;
}

void* allocBuffer(size_t bytes) {
  const size_t align = 4096;
  const size_t rounded = std::max(align, (bytes + align - 1) / align * align);
  void* p = std::aligned_alloc(align, rounded);
  if (!p) {
    std::fprintf(stderr, "weft-bench: cannot allocate %zu bytes (rank %d); lower -e/--maxbytes\n",
                 rounded, gRank);
    std::exit(kExitError);
  }
  std::memset(p, 0, rounded);
  return p;
}

struct Cell {
  double usec = 0, algbw = 0, busbw = 0;
  uint64_t wrong = 0;
};

std::vector<size_t> sizeList(const Options& o) {
  std::vector<size_t> sizes;
  for (size_t s = o.minBytes; s <= o.maxBytes;) {
    sizes.push_back(s);
    const size_t next = o.stepFactor > 1 ? s * static_cast<size_t>(o.stepFactor) : s + o.stepBytes;
    if (next <= s) break;  // overflow
    s = next;
  }
  return sizes;
}

int runWorker(const Options& o, int rank, int nranks, const weftUniqueId& id) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  gRank = rank;
  gNranks = nranks;
  const bool print = rank == 0;

  int version = 0;
  WB_CHECK(weftGetVersion(&version));
  if (print) {
    std::printf("# weft-bench version %d.%d.%d weft-headers=%d weft-library=%d\n", WEFT_MAJOR,
                WEFT_MINOR, WEFT_PATCH, WEFT_VERSION_CODE, version);
    std::printf("# Collective test starting: %s\n", o.collective.c_str());
    std::printf("# nThread 1 nGpus 1 minBytes %zu maxBytes %zu step: %zu(%s) warmup iters: %d "
                "iters: %d agg iters: %d validation: %d graph: 0 unalign: 0\n",
                o.minBytes, o.maxBytes, o.stepFactor > 1 ? static_cast<size_t>(o.stepFactor) : o.stepBytes,
                o.stepFactor > 1 ? "factor" : "bytes", o.warmup, o.iters, o.aggIters, o.check);
    if (o.blocking == 1 || o.blocking == 3) {
      std::printf("#\n# Blocking Enabled: barrier after each iteration (not timed)\n");
    }
    std::printf("#\n# Using devices\n");
  }

  WB_CHECK(weftCommInitRank(&gComm, nranks, id, rank));

  // Who is where: each rank fills its slot, a sum all-reduce gathers them.
  constexpr size_t kHostLen = 64;
  std::vector<int64_t> pids(nranks, 0);
  std::vector<uint8_t> hosts(nranks * kHostLen, 0);
  pids[rank] = getpid();
  char host[kHostLen] = {};
  gethostname(host, kHostLen - 1);
  std::memcpy(&hosts[rank * kHostLen], host, kHostLen - 1);
  WB_CHECK(weftAllReduce(pids.data(), pids.data(), pids.size(), weftInt64, weftSum, gComm, nullptr));
  WB_CHECK(weftAllReduce(hosts.data(), hosts.data(), hosts.size(), weftUint8, weftSum, gComm, nullptr));
  if (print) {
    for (int r = 0; r < nranks; ++r) {
      std::printf("#  Rank %2d Group  0 Pid %6d on %10s device -1 [cpu] host memory (no GPU)\n", r,
                  static_cast<int>(pids[r]), reinterpret_cast<const char*>(&hosts[r * kHostLen]));
    }
    std::printf("#\n");
    std::printf("#                                                              out-of-place"
                "                       in-place\n");
    std::printf("#%11s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %6s  %7s  %6s  %6s  %6s\n", "size",
                "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "time",
                "algbw", "busbw", "#wrong");
    std::printf("#%11s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %6s  %7s  %6s  %6s\n", "(B)",
                "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)");
  }

  char* send = static_cast<char*>(allocBuffer(o.maxBytes));
  char* recv = static_cast<char*>(allocBuffer(o.maxBytes));
  char* pristine = static_cast<char*>(allocBuffer(o.maxBytes));
  char* expected = o.check ? static_cast<char*>(allocBuffer(o.maxBytes)) : nullptr;
  const std::vector<size_t> sizes = sizeList(o);
  const double busFactor = nranks > 1 ? 2.0 * (nranks - 1) / nranks : 0.0;

  uint64_t totalWrong = 0;
  double bwSum = 0;
  size_t bwCells = 0;
  using Clock = std::chrono::steady_clock;

  for (const TypeDesc* t : o.types) {
    for (const OpDesc* op : o.ops) {
      const size_t maxCount = o.maxBytes / t->size;
      fillInput(pristine, maxCount, *t, *op, rank, nranks);
      if (o.check) fillExpected(expected, maxCount, *t, *op, nranks);
      std::memcpy(send, pristine, maxCount * t->size);

      // Warm-up at the largest and the smallest size (connections, staging buffers, caches).
      for (size_t warmCount : {maxCount, o.minBytes / t->size}) {
        for (int w = 0; w < o.warmup; ++w) {
          WB_CHECK(weftAllReduce(send, recv, warmCount, t->type, op->op, gComm, nullptr));
        }
      }

      for (size_t size : sizes) {
        const size_t count = size / t->size;
        const size_t bytes = count * t->size;
        Cell cells[2];
        for (int inPlace = 0; inPlace < 2; ++inPlace) {
          Cell& cell = cells[inPlace];
          const void* sbuf = inPlace ? recv : send;
          if (inPlace) std::memcpy(recv, pristine, bytes);
          barrier();
          double seconds = 0;
          if (o.blocking == 1 || o.blocking == 3) {
            for (int it = 0; it < o.iters; ++it) {
              const auto t0 = Clock::now();
              for (int a = 0; a < o.aggIters; ++a) {
                WB_CHECK(weftAllReduce(sbuf, recv, count, t->type, op->op, gComm, nullptr));
              }
              seconds += std::chrono::duration<double>(Clock::now() - t0).count();
              barrier();
            }
          } else {
            const auto t0 = Clock::now();
            for (int it = 0; it < o.iters; ++it) {
              for (int a = 0; a < o.aggIters; ++a) {
                WB_CHECK(weftAllReduce(sbuf, recv, count, t->type, op->op, gComm, nullptr));
              }
            }
            seconds = std::chrono::duration<double>(Clock::now() - t0).count();
          }
          const double ops = static_cast<double>(o.iters) * o.aggIters;
          double perOp = ops > 0 ? seconds / ops : 0.0;
          // Combine the time across ranks (-a): 0 rank 0, 1 average, 2 min, 3 max.
          weftRedOp_t combine = weftSum;
          if (o.average == 0 && rank != 0) perOp = 0;
          if (o.average == 2) combine = weftMin;
          if (o.average == 3) combine = weftMax;
          WB_CHECK(weftAllReduce(&perOp, &perOp, 1, weftFloat64, combine, gComm, nullptr));
          if (o.average == 1) perOp /= nranks;
          cell.usec = perOp * 1e6;
          cell.algbw = perOp > 0 ? static_cast<double>(bytes) / 1e9 / perOp : 0.0;
          cell.busbw = cell.algbw * busFactor;

          // Check: fresh inputs each time; the output starts as the complement of the expected
          // result, so an untouched element can never pass.
          uint64_t wrong = 0;
          for (int c = 0; c < o.check; ++c) {
            if (inPlace) {
              std::memcpy(recv, pristine, bytes);
            } else {
              std::memcpy(send, pristine, bytes);
              for (size_t b = 0; b < bytes; ++b) recv[b] = static_cast<char>(~expected[b]);
            }
            WB_CHECK(weftAllReduce(inPlace ? recv : send, recv, count, t->type, op->op, gComm, nullptr));
            wrong += countMismatches(recv, expected, count, t->size);
            if (!inPlace) wrong += countMismatches(send, pristine, count, t->size);  // input kept
          }
          if (o.check) {
            WB_CHECK(weftAllReduce(&wrong, &wrong, 1, weftUint64, weftSum, gComm, nullptr));
          }
          cell.wrong = wrong;
          totalWrong += wrong;
          bwSum += cell.busbw;
          ++bwCells;
        }
        // The out-of-place send buffer must hold the inputs for the next size's timing.
        if (o.check) std::memcpy(send, pristine, bytes);
        if (print) {
          std::printf("%12zu  %12zu  %8s  %6s  %6d", bytes, count, t->name, op->name, -1);
          for (const Cell& cell : cells) {
            std::printf("  %7s  %6s  %6s", fmtNum(cell.usec, 7).c_str(), fmtNum(cell.algbw, 6).c_str(),
                        fmtNum(cell.busbw, 6).c_str());
            if (o.check) {
              std::printf("  %6g", static_cast<double>(cell.wrong));
            } else {
              std::printf("  %6s", "N/A");
            }
          }
          std::printf("\n");
        }
      }
    }
  }

  size_t staging = 0;
  WB_CHECK(weftCommMemStats(gComm, &staging));
  if (print) {
    std::printf("# weft staging bytes held: %zu\n", staging);
    std::printf("# %-20s : %llu %s\n", "Out of bounds values",
                static_cast<unsigned long long>(totalWrong), totalWrong ? "FAILED" : "OK");
    std::printf("# %-20s : %g\n", "Avg bus bandwidth", bwCells ? bwSum / bwCells : 0.0);
    std::printf("#\n# Collective test concluded: %s\n", o.collective.c_str());
    std::fflush(stdout);
  }

  WB_CHECK(weftCommDestroy(gComm));
  gComm = nullptr;
  std::free(send);
  std::free(recv);
  std::free(pristine);
  std::free(expected);
  return totalWrong ? kExitWrong : 0;
}

}  // namespace
}  // namespace weftbench

int main(int argc, char** argv) {
  using namespace weftbench;
  if (argc >= 3 && std::strcmp(argv[1], kWorkerFlag) == 0) {
    // Hidden worker mode: <rank>:<nranks>:<hex id>, then the user's arguments.
    int rank = -1, nranks = 0;
    weftUniqueId id;
    const char* tok = argv[2];
    const char* c1 = std::strchr(tok, ':');
    const char* c2 = c1 ? std::strchr(c1 + 1, ':') : nullptr;
    long r, n;
    if (!c1 || !c2 || !parseLong(std::string(tok, c1).c_str(), 0, 1 << 20, &r) ||
        !parseLong(std::string(c1 + 1, c2).c_str(), 1, 1 << 20, &n) || r >= n ||
        !fromHex(c2 + 1, &id)) {
      std::fprintf(stderr, "weft-bench: malformed worker arguments\n");
      return kExitError;
    }
    rank = static_cast<int>(r);
    nranks = static_cast<int>(n);
    argv[2] = argv[0];
    const Options o = parseOptions(argc - 2, argv + 2);
    return runWorker(o, rank, nranks, id);
  }
  const Options o = parseOptions(argc, argv);
  return launch(o, argc, argv);
}
