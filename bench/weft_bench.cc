// weft-bench: an nccl-tests-compatible benchmark for weft, written against the public C API only.
//
//   weft-bench <coll> [-b minbytes] [-e maxbytes] [-f factor | -i step] [-n iters] [-w warmup]
//                     [-c checks] [-d type|all] [-o op|all] [-r root|all] [-z blocking] [--ranks N]
//                     [--compare mpi] ...
//   coll: all_reduce all_gather reduce_scatter broadcast reduce alltoall sendrecv
//
// Without a launcher, the process started by the user is the launcher: it creates the bootstrap id
// (which runs the rendezvous in this process), then fork+execs itself N times in a hidden worker
// mode that carries rank, nranks and the id (hex) on the command line, and waits for them. Under a
// launcher (mpirun, srun, torchrun, or WEFT_RANK/WEFT_NRANKS) every process is one rank and joins
// through weftCommInitFromEnv. Rank 0 prints the table in nccl-tests' layout. `--compare mpi` first
// times the same operations with Open MPI (bench/mpi/weft_mpi_bench.c under mpirun) and adds its
// time and the ratio to each row; `--compare gloo` does the same with Gloo's allreduce over TCP
// (bench/gloo/weft_gloo_bench.cc, which spawns its own ranks). `weft-bench --help` lists the flags.
#include <weft/weft.h>

#include "weft_bench_cuda.h"
#include "weft_bench_data.h"

#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace weftbench {
namespace {

constexpr const char* kWorkerFlag = "--weft-bench-worker";
constexpr int kExitWrong = 1;   // wrong results
constexpr int kExitError = 2;   // usage or weft error
constexpr int kExitNoDevice = 3;  // --device, but no usable CUDA device or driver
constexpr int kGraceSeconds = 10;
constexpr const char* kMpiHelperName = "weft-mpi-bench";
constexpr const char* kGlooHelperName = "weft-gloo-bench";

// The collectives, with nccl-tests' names.
enum class Coll { AllReduce, AllGather, ReduceScatter, Broadcast, Reduce, AllToAll, SendRecv };
struct CollDesc {
  Coll coll;
  const char* name;
  bool reduces;  // takes -o (else the redop column prints "none")
  bool rooted;   // takes -r (else the root column prints -1)
};
const CollDesc kColls[] = {
    {Coll::AllReduce, "all_reduce", true, false},   {Coll::AllGather, "all_gather", false, false},
    {Coll::ReduceScatter, "reduce_scatter", true, false}, {Coll::Broadcast, "broadcast", false, true},
    {Coll::Reduce, "reduce", true, true},           {Coll::AllToAll, "alltoall", false, false},
    {Coll::SendRecv, "sendrecv", false, false},
};

// nccl-tests' binary names (all_reduce_perf ...) are accepted too.
const CollDesc* findColl(std::string_view name) {
  if (name.size() > 5 && name.substr(name.size() - 5) == "_perf") name.remove_suffix(5);
  for (const CollDesc& c : kColls) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

// Element counts of one row, nccl-tests' rules: all_gather, reduce_scatter and alltoall split the
// requested size (the whole array) over the ranks, rounded down to a multiple of 16 bytes per rank.
struct Counts {
  size_t param = 0;  // the count passed to weft (and printed)
  size_t send = 0;   // elements in sendbuff
  size_t recv = 0;   // elements in recvbuff
};

Counts countsFor(Coll c, size_t bytes, size_t typeSize, int nranks) {
  const size_t count = bytes / typeSize;
  const size_t n = static_cast<size_t>(nranks);
  const size_t base = (count / n) & ~(16 / typeSize - 1);
  switch (c) {
    case Coll::AllGather: return {base, base, base * n};
    case Coll::ReduceScatter: return {base, base * n, base};
    case Coll::AllToAll: return {base, base * n, base * n};
    default: return {count, count, count};
  }
}

// busbw = algbw x factor (nccl-tests' *GetBw).
double busFactor(Coll c, int n) {
  switch (c) {
    case Coll::AllReduce: return 2.0 * (n - 1) / n;
    case Coll::AllGather:
    case Coll::ReduceScatter:
    case Coll::AllToAll: return static_cast<double>(n - 1) / n;
    default: return 1.0;
  }
}

struct Options {
  std::string collective;
  const CollDesc* coll = nullptr;
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
  bool ranksGiven = false;
  int nthreads = 1;  // -t: ranks per spawned process, as threads (nccl-tests' -t)
  int root = 0;
  bool rootAll = false;
  std::string compare;  // --compare: "" (none), "mpi" or "gloo"
  bool device = false;    // --device: buffers on the rank's GPU, calls on a CUDA stream
  int graphLaunches = 0;  // -G N: the iterations captured in a CUDA graph, launched N times
  long timeoutS = 0;
  std::vector<const TypeDesc*> types;
  std::vector<const OpDesc*> ops;
};

void usage(FILE* out) {
  std::fprintf(out,
      "usage: weft-bench <collective> [flags]\n"
      "  collective: all_reduce all_gather reduce_scatter broadcast reduce alltoall sendrecv\n"
      "\n"
      "nccl-tests-compatible benchmark for weft. Spawns --ranks local processes (no launcher\n"
      "needed), or, under mpirun/srun/torchrun (or with WEFT_RANK/WEFT_NRANKS set), runs as one\n"
      "rank of the launcher's job (weftCommInitFromEnv); rank 0 prints the table. Host buffers,\n"
      "or with --device buffers on the GPU (as nccl-tests).\n"
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
      "                            host buffers always complete before the call returns; with\n"
      "                            --device each iteration, or graph launch, is waited for)\n"
      "  -a, --average <0-3>       time across ranks: 0 rank 0, 1 average, 2 min, 3 max (default 1)\n"
      "  -r, --root <r|all>        root of broadcast and reduce, or all = every rank in turn\n"
      "                            (default 0; ignored by the collectives without a root)\n"
      "  -t, --nthreads <n>        ranks per process, as threads (default 1): --ranks N spawns\n"
      "                            N/n processes of n threads (N a multiple of n)\n"
      "  -g, --ngpus 1             accepted for compatibility (only 1)\n"
      "  -T, --timeout <s>         kill the ranks and fail after s seconds (default 0 = none)\n"
      "      --ranks <n>           number of local ranks to spawn (default 2); giving it spawns\n"
      "                            local ranks even under a launcher\n"
      "      --compare mpi         also time the same operations with Open MPI (mpirun -np N\n"
      "                            --mca btl self,vader, its shared memory, or tcp,self when\n"
      "                            WEFT_TRANSPORTS leaves shm out; needs the weft-mpi-bench helper) and print\n"
      "                            its time and weft/mpi per row (spawned ranks only)\n"
      "      --compare gloo        the same with Gloo's allreduce over its TCP transport on\n"
      "                            127.0.0.1 (all_reduce only; no bfloat16/fp8, no avg: \"-\";\n"
      "                            needs the weft-gloo-bench helper, built when Gloo is found)\n"
      "      --device              buffers from cudaMalloc on the rank's GPU (GPU = local rank\n"
      "                            modulo the visible GPUs: with one GPU every rank uses GPU 0),\n"
      "                            calls on one non-blocking CUDA stream per rank, timed with CUDA\n"
      "                            events; results copied back and checked as for host buffers.\n"
      "                            Ranks as processes on one GPU need MPS (else the library refuses\n"
      "                            device calls and weft-bench prints why); -t N ranks as threads\n"
      "  -G, --cudagraph <n>       with --device: capture the -n iterations of each row in one CUDA\n"
      "                            graph per rank and launch it n times (time per call = elapsed /\n"
      "                            (n x iters x agg)); 0 = eager launches (default 0)\n"
      "  -h, --help                this text\n"
      "\n"
      "Exit status: 0 all results correct, 1 wrong results, 2 usage or weft error (or a rank\n"
      "that failed or was killed; --device in a weft-bench built without CUDA), 3 --device but\n"
      "no usable CUDA device or driver (the message says which CUDA call failed).\n");
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
  if (argc < 2) usageError("missing the collective: weft-bench <collective> [flags]");
  if (!std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help")) {
    usage(stdout);
    std::exit(0);
  }
  static const char* kCollList =
      "all_reduce all_gather reduce_scatter broadcast reduce alltoall sendrecv";
  if (argv[1][0] == '-') usageError(std::string("the first argument must be the collective (") + kCollList + ")");
  o.coll = findColl(argv[1]);
  if (!o.coll) usageError(std::string("unknown collective '") + argv[1] + "' (" + kCollList + ")");
  o.collective = o.coll->name;

  enum { kRanks = 1000, kCompare, kDevice };
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
      {"compare", required_argument, nullptr, kCompare},
      {"device", no_argument, nullptr, kDevice},
      {"cudagraph", required_argument, nullptr, 'G'},
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
    int c = getopt_long(subArgc, subArgv, ":b:e:i:f:n:w:m:c:d:o:z:a:r:t:g:T:G:h", longOpts, &idx);
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
        o.rootAll = std::strcmp(optarg, "all") == 0;
        if (!o.rootAll) o.root = intArg("-r/--root", optarg, 0, 1 << 30);
        break;
      case 't': o.nthreads = intArg("-t/--nthreads", optarg, 1, 1024); break;
      case 'g':
        intArg("-g/--ngpus", optarg, 1, 1);
        break;
      case 'T': o.timeoutS = intArg("-T/--timeout", optarg, 0, 1 << 30); break;
      case 'G': o.graphLaunches = intArg("-G/--cudagraph", optarg, 0, 1 << 20); break;
      case kDevice: o.device = true; break;
      case kRanks: o.ranks = intArg("--ranks", optarg, 1, 4096); o.ranksGiven = true; break;
      case kCompare:
        if (std::strcmp(optarg, "mpi") != 0 && std::strcmp(optarg, "gloo") != 0) {
          usageError(std::string("--compare: unknown peer '") + optarg + "' (mpi or gloo)");
        }
        o.compare = optarg;
        break;
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

  if (o.compare == "gloo" && o.coll->coll != Coll::AllReduce) {
    usageError("--compare gloo compares all_reduce only (Gloo's allreduce), not " + o.collective);
  }
  if (o.graphLaunches > 0 && !o.device) {
    usageError("-G/--cudagraph captures calls on a CUDA stream: it needs --device (host buffers run "
               "synchronously, nothing to capture)");
  }
  if (o.device && !o.compare.empty()) {
    usageError("--compare " + o.compare + " times host buffers; it cannot be combined with --device");
  }
  if (o.device && !dev::built()) {
    int none = 0;
    std::fprintf(stderr, "weft-bench: --device: %s\n", dev::deviceCount(&none).c_str());
    std::exit(kExitError);
  }
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
// Worker

// Per rank: with -t the ranks of one process are threads.
thread_local weftComm_t gComm = nullptr;
thread_local int gRank = -1, gNranks = 0;
// --device: the rank's stream (the host path passes NULL). A failing rank of a --device run leaves
// with _Exit (std::exit would tear the CUDA runtime down under the other thread ranks' feet).
thread_local weftStream_t gStream = nullptr;
bool gDeviceMode = false;

[[noreturn]] void leave(int code) {
  if (!gDeviceMode) std::exit(code);
  std::fflush(nullptr);
  std::_Exit(code);
}

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
  leave(kExitError);
}

// A failed CUDA call of --device (weft_bench_cuda.h says which and why).
[[noreturn]] void devFailed(const std::string& msg) {
  std::fprintf(stderr, "weft-bench: %s (rank %d of %d)\n", msg.c_str(), gRank, gNranks);
  std::fflush(stderr);
  if (gComm) {
    weftCommAbort(gComm);
    gComm = nullptr;
  }
  leave(kExitError);
}

#define DEV_CHECK(call)                                \
  do {                                                 \
    const std::string wbErr_ = (call);                 \
    if (!wbErr_.empty()) devFailed(wbErr_);            \
  } while (0)

// -t N: the thread ranks of one process meet here around the CUDA calls that must not overlap a
// peer thread's (a capture in global mode forbids other threads' unsafe calls; cudaFree and graph
// destruction may wait for the whole device, where a peer's kernel may be waiting for this rank's
// next launch). Null with one rank per process. Bounded: 600 s, then the process fails.
class LocalBarrier {
 public:
  explicit LocalBarrier(int n) : n_(n) {}
  bool wait() {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t gen = gen_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++gen_;
      cv_.notify_all();
      return true;
    }
    return cv_.wait_for(lock, std::chrono::seconds(600), [&] { return gen_ != gen; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  const int n_;
  int arrived_ = 0;
  uint64_t gen_ = 0;
};
LocalBarrier* gLocal = nullptr;

void localBarrier(const char* where) {
  if (gLocal && !gLocal->wait()) {
    devFailed(std::string("the other thread ranks of this process did not reach ") + where + " within 600 s");
  }
}

// Quiet point of a process: this rank's stream drained, then every thread rank of the process
// here (so none has a kernel left that waits for another's launch).
void quiesce(const char* where) {
  DEV_CHECK(dev::streamSync(gStream));
  localBarrier(where);
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
  double faults = 0;  // minor + major page faults per operation (process, largest over ranks)
  uint64_t wrong = 0;
};

// One (collective, type, op, root) series of rows.
struct Variant {
  const CollDesc* c;
  const TypeDesc* t;
  const OpDesc* op;     // the op passed to reducing collectives; the data generator's op
  const char* opName;   // printed: the op, or "none"
  int root;             // -1 when the collective has no root
};

// One operation on the communicator. sendrecv: each rank sends to rank+1 and receives from rank-1
// inside one group, as nccl-tests' sendrecv does.
void runOp(const Variant& v, const void* sbuf, void* rbuf, size_t count) {
  const weftDataType_t dt = v.t->type;
  switch (v.c->coll) {
    case Coll::AllReduce:
      WB_CHECK(weftAllReduce(sbuf, rbuf, count, dt, v.op->op, gComm, gStream));
      break;
    case Coll::AllGather: WB_CHECK(weftAllGather(sbuf, rbuf, count, dt, gComm, gStream)); break;
    case Coll::ReduceScatter:
      WB_CHECK(weftReduceScatter(sbuf, rbuf, count, dt, v.op->op, gComm, gStream));
      break;
    case Coll::Broadcast: WB_CHECK(weftBroadcast(sbuf, rbuf, count, dt, v.root, gComm, gStream)); break;
    case Coll::Reduce:
      WB_CHECK(weftReduce(sbuf, rbuf, count, dt, v.op->op, v.root, gComm, gStream));
      break;
    case Coll::AllToAll: WB_CHECK(weftAlltoAll(sbuf, rbuf, count, dt, gComm, gStream)); break;
    case Coll::SendRecv: {
      const int next = (gRank + 1) % gNranks, prev = (gRank + gNranks - 1) % gNranks;
      WB_CHECK(weftGroupStart());
      WB_CHECK(weftSend(sbuf, count, dt, next, gComm, gStream));
      WB_CHECK(weftRecv(rbuf, count, dt, prev, gComm, gStream));
      WB_CHECK(weftGroupEnd());
      break;
    }
  }
}

// -m > 1: the operations of one iteration go in one group, as nccl-tests does.
void runIteration(const Options& o, const Variant& v, const void* sbuf, void* rbuf, size_t count) {
  if (o.aggIters > 1) WB_CHECK(weftGroupStart());
  for (int a = 0; a < o.aggIters; ++a) runOp(v, sbuf, rbuf, count);
  if (o.aggIters > 1) WB_CHECK(weftGroupEnd());
}

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

// The roots a rooted collective runs with (-r r, or every rank with -r all); {-1} otherwise.
std::vector<int> rootList(const Options& o, int nranks) {
  if (!o.coll->rooted) return {-1};
  if (!o.rootAll) return {o.root};
  std::vector<int> roots;
  for (int r = 0; r < nranks; ++r) roots.push_back(r);
  return roots;
}

std::vector<Variant> variantList(const Options& o, int nranks) {
  std::vector<Variant> vs;
  for (const TypeDesc* t : o.types) {
    if (o.coll->reduces) {
      for (const OpDesc* op : o.ops) {
        for (int root : rootList(o, nranks)) vs.push_back({o.coll, t, op, op->name, root});
      }
    } else {
      for (int root : rootList(o, nranks)) vs.push_back({o.coll, t, &dataOnlyOp(), "none", root});
    }
  }
  return vs;
}

// Open MPI's times from weft-mpi-bench (lines "R <type> <op> <root> <count> <usec or ->").
struct MpiTimes {
  std::vector<std::string> comments;           // its '#' lines, printed in the header
  std::map<std::string, std::string> usec;     // "<type> <op> <root> <count>" -> usec
  std::map<std::string, std::string> faults;   // the same key -> page faults per operation
};

std::string mpiKey(const std::string& type, const std::string& op, int root, size_t count) {
  return type + " " + op + " " + std::to_string(root) + " " + std::to_string(count);
}

MpiTimes readMpiTimes(const std::string& path) {
  MpiTimes m;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("#", 0) == 0) {
      m.comments.push_back(line);
      continue;
    }
    std::istringstream ls(line);
    std::string tag, type, op, usec;
    int root = 0;
    size_t count = 0;
    if (ls >> tag >> type >> op >> root >> count >> usec && tag == "R") {
      m.usec[mpiKey(type, op, root, count)] = usec;
      std::string faults;
      if (ls >> faults) m.faults[mpiKey(type, op, root, count)] = faults;
    }
  }
  return m;
}

// Buffers of one rank, each -e bytes.
struct Buffers {
  char* send;
  char* recv;
  char* pristine;  // this rank's inputs for the largest size (a prefix serves every row)
  char* expected;  // the expected output of the current row (or a prefix that serves every row)
};

// The expected output of one row, from the independent host computation. For all_reduce, reduce,
// broadcast and sendrecv the expected output of the largest size is a prefix of every row's and
// was filled once per variant (rowDependent false).
bool rowDependent(Coll c) {
  return c == Coll::AllGather || c == Coll::ReduceScatter || c == Coll::AllToAll;
}

void fillVariantExpected(const Variant& v, char* expected, size_t maxElems, int rank, int n) {
  const TypeDesc& t = *v.t;
  switch (v.c->coll) {
    case Coll::AllReduce:
    case Coll::Reduce: fillExpectedRange(expected, 0, maxElems, t, *v.op, n); break;
    case Coll::Broadcast: fillInputRange(expected, 0, maxElems, t, *v.op, v.root, n); break;
    case Coll::SendRecv: fillInputRange(expected, 0, maxElems, t, *v.op, (rank + n - 1) % n, n); break;
    default: break;
  }
}

void fillRowExpected(const Variant& v, char* expected, const Counts& k, int rank, int n) {
  const TypeDesc& t = *v.t;
  const size_t c = k.param, es = t.size;
  switch (v.c->coll) {
    case Coll::AllGather:  // block q = rank q's first c inputs
      for (int q = 0; q < n; ++q) fillInputRange(expected + q * c * es, 0, c, t, *v.op, q, n);
      break;
    case Coll::ReduceScatter:  // our block of the reduction of the whole array
      fillExpectedRange(expected, static_cast<size_t>(rank) * c, c, t, *v.op, n);
      break;
    case Coll::AllToAll:  // block q = what rank q sent to us: its block number `rank`
      for (int q = 0; q < n; ++q) {
        fillInputRange(expected + q * c * es, static_cast<size_t>(rank) * c, c, t, *v.op, q, n);
      }
      break;
    default: break;
  }
}

// Where an in-place operation reads and writes (nccl-tests' offsets): all_gather sends from
// recvbuff + rank*count, reduce_scatter receives at sendbuff + rank*recvcount, the others use one
// buffer.
void inPlacePointers(Coll c, char* recv, size_t count, size_t es, int rank, char** sbuf, char** rbuf) {
  *sbuf = *rbuf = recv;
  if (c == Coll::AllGather) *sbuf = recv + static_cast<size_t>(rank) * count * es;
  if (c == Coll::ReduceScatter) *rbuf = recv + static_cast<size_t>(rank) * count * es;
}

void fillComplement(char* dst, const char* src, size_t bytes) {
  for (size_t b = 0; b < bytes; ++b) dst[b] = static_cast<char>(~src[b]);
}

// Where the collective's send and receive buffers live: host memory (used directly), or with
// --device the rank's GPU, filled and read back through stream-ordered copies that complete before
// they return. The inputs and expected results are always computed on the host.
struct Mem {
  bool device = false;
  char* host = nullptr;  // --device: -e bytes of host memory (complements, results copied back)

  void put(char* dst, const char* src, size_t bytes) const {
    if (!device) {
      std::memcpy(dst, src, bytes);
      return;
    }
    DEV_CHECK(dev::toDevice(dst, src, bytes, gStream));
  }
  // dst = the complement of `want`, so an element the collective never writes cannot pass.
  void putComplement(char* dst, const char* want, size_t bytes) const {
    if (!device) {
      fillComplement(dst, want, bytes);
      return;
    }
    fillComplement(host, want, bytes);
    DEV_CHECK(dev::toDevice(dst, host, bytes, gStream));
  }
  // The bytes at src, readable on the host (valid until the next get), after the rank's stream
  // has finished the calls queued on it.
  const char* get(const char* src, size_t bytes) const {
    if (!device) return src;
    DEV_CHECK(dev::toHost(host, src, bytes, gStream));
    return host;
  }
};

// The local rank under a launcher (its variables, in the library's order), for --device's GPU
// choice, which must be made before the communicator exists; else 0.
int launcherLocalRank() {
  static const char* const kVars[][2] = {{"WEFT_RANK", "WEFT_LOCAL_RANK"},
                                         {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"},
                                         {"SLURM_PROCID", "SLURM_LOCALID"},
                                         {"RANK", "LOCAL_RANK"}};
  for (const auto& v : kVars) {
    const char* rank = std::getenv(v[0]);
    if (!rank || !*rank) continue;
    const char* local = std::getenv(v[1]);
    long r = 0;
    if (local && parseLong(local, 0, 1 << 20, &r)) return static_cast<int>(r);
    if (parseLong(rank, 0, 1 << 20, &r)) return static_cast<int>(r);
    return 0;
  }
  return 0;
}

// --device: which GPU a rank uses (nccl-tests' local rank -> device rule): local rank modulo the
// visible GPUs. Exits with kExitNoDevice, saying why, when CUDA finds no usable device.
int chooseGpu(int localRank) {
  int count = 0;
  const std::string why = dev::deviceCount(&count);
  if (!why.empty()) {
    std::fprintf(stderr, "weft-bench: --device: no usable CUDA device (local rank %d): %s\n", localRank, why.c_str());
    std::fflush(stderr);
    std::_Exit(kExitNoDevice);
  }
  return localRank % count;
}

// Spawned ranks are bound one per core, as mpirun binds its ranks (--bind-to core), when the
// allowed cores are at least as many as the ranks; otherwise (oversubscribed) they float, as
// mpirun's do then. Unbound, two ranks that share a core hand it back and forth on every message.
void bindSpawnedRank(int rank, int nranks) {
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || CPU_COUNT(&allowed) < nranks) return;
  int seen = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed)) continue;
    if (seen++ == rank) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      (void)sched_setaffinity(0, sizeof one, &one);
      return;
    }
  }
}

int runWorker(const Options& o, const weftUniqueId* id, int rank, int nranks,
              const std::string& mpiTimesPath) {
  static std::once_flag lineBuffered;
  std::call_once(lineBuffered, [] { std::setvbuf(stdout, nullptr, _IOLBF, 0); });
  gRank = rank;
  gNranks = nranks;
  // --device: GPU, stream and buffers before the communicator (the library takes the thread's
  // current device at init; nothing device-synchronising happens while peers' kernels run).
  std::string where = "device -1 [cpu] host memory (no GPU)";
  char* devSend = nullptr;
  char* devRecv = nullptr;
  if (o.device) {
    gDeviceMode = true;
    const int gpu = chooseGpu(id ? rank : launcherLocalRank());
    DEV_CHECK(dev::setDevice(gpu));
    DEV_CHECK(dev::streamCreate(&gStream));
    void* p = nullptr;
    DEV_CHECK(dev::alloc(&p, o.maxBytes));
    devSend = static_cast<char*>(p);
    DEV_CHECK(dev::alloc(&p, o.maxBytes));
    devRecv = static_cast<char*>(p);
    where = dev::describe(gpu);
  }
  if (id) {
    bindSpawnedRank(rank, nranks);
    WB_CHECK(weftCommInitRank(&gComm, nranks, *id, rank));
  } else {
    // Under a launcher: rank, size and rendezvous from its environment.
    WB_CHECK(weftCommInitFromEnv(&gComm, nullptr));
    WB_CHECK(weftCommUserRank(gComm, &gRank));
    WB_CHECK(weftCommCount(gComm, &gNranks));
    rank = gRank;
    nranks = gNranks;
  }
  const bool print = rank == 0;
  if (o.coll->rooted && !o.rootAll && o.root >= nranks) {
    if (print) {
      std::fprintf(stderr, "weft-bench: -r/--root %d is not a rank of the %d-rank communicator\n",
                   o.root, nranks);
    }
    WB_CHECK(weftCommDestroy(gComm));
    return kExitError;
  }

  int version = 0;
  WB_CHECK(weftGetVersion(&version));
  MpiTimes mpi;
  const bool compare = !mpiTimesPath.empty() && mpiTimesPath != "-";
  const int ratioWidth = compare && o.compare == "gloo" ? 9 : 8;  // fits "weft/<peer>"
  if (compare && print) mpi = readMpiTimes(mpiTimesPath);
  if (print) {
    std::printf("# weft-bench version %d.%d.%d weft-headers=%d weft-library=%d\n", WEFT_MAJOR,
                WEFT_MINOR, WEFT_PATCH, WEFT_VERSION_CODE, version);
    std::printf("# Collective test starting: %s\n", o.collective.c_str());
    std::printf("# nThread %d nGpus 1 minBytes %zu maxBytes %zu step: %zu(%s) warmup iters: %d "
                "iters: %d agg iters: %d validation: %d graph: %d unalign: 0\n",
                o.nthreads, o.minBytes, o.maxBytes, o.stepFactor > 1 ? static_cast<size_t>(o.stepFactor) : o.stepBytes,
                o.stepFactor > 1 ? "factor" : "bytes", o.warmup, o.iters, o.aggIters, o.check, o.graphLaunches);
    if (o.device) {
      std::printf("#\n# Device buffers (--device): cudaMalloc on each rank's GPU, calls on one non-blocking stream\n"
                  "# per rank, timed with CUDA events; results copied back and checked on the host\n");
      if (o.graphLaunches > 0) {
        std::printf("# CUDA graph (-G %d): each row's %d iterations captured in one graph per rank, launched %d times;\n"
                    "# time = elapsed / (launches x iterations x agg); the checked calls replay a graph of one call\n",
                    o.graphLaunches, o.iters, o.graphLaunches);
      } else {
        std::printf("# Eager launches (no -G): time = elapsed between events around the iterations / calls\n");
      }
    }
    if (o.blocking == 1 || o.blocking == 3) {
      std::printf("#\n# Blocking Enabled: barrier after each iteration (not timed)\n");
    }
    if (compare && o.compare == "gloo") {
      std::printf("#\n# --compare gloo: gloo(us) = Gloo's allreduce time per operation (TCP over 127.0.0.1),\n"
                  "# out-of-place, same sizes, iterations and -a rule, its results checked against the same\n"
                  "# reference; weft/gloo = weft's out-of-place time / Gloo's (< 1: weft faster)\n");
      for (const std::string& line : mpi.comments) std::printf("%s\n", line.c_str());
    } else if (compare) {
      std::printf("#\n# --compare mpi: mpi(us) = Open MPI's time per operation, out-of-place, same sizes,\n"
                  "# iterations and -a rule; weft/mpi = weft's out-of-place time / MPI's (< 1: weft faster)\n");
      for (const std::string& line : mpi.comments) std::printf("%s\n", line.c_str());
    }
    std::printf("#\n# Using devices\n");
  }

  // Who is where: each rank fills its slot, a sum all-reduce gathers them.
  constexpr size_t kHostLen = 64, kWhereLen = 128;
  std::vector<int64_t> pids(nranks, 0);
  std::vector<uint8_t> hosts(nranks * kHostLen, 0), wheres(nranks * kWhereLen, 0);
  pids[rank] = getpid();
  char host[kHostLen] = {};
  gethostname(host, kHostLen - 1);
  std::memcpy(&hosts[rank * kHostLen], host, kHostLen - 1);
  std::memcpy(&wheres[rank * kWhereLen], where.data(), std::min(where.size(), kWhereLen - 1));
  WB_CHECK(weftAllReduce(pids.data(), pids.data(), pids.size(), weftInt64, weftSum, gComm, nullptr));
  WB_CHECK(weftAllReduce(hosts.data(), hosts.data(), hosts.size(), weftUint8, weftSum, gComm, nullptr));
  WB_CHECK(weftAllReduce(wheres.data(), wheres.data(), wheres.size(), weftUint8, weftSum, gComm, nullptr));
  if (print) {
    for (int r = 0; r < nranks; ++r) {
      std::printf("#  Rank %2d Group  0 Pid %6d on %10s %s\n", r, static_cast<int>(pids[r]),
                  reinterpret_cast<const char*>(&hosts[r * kHostLen]),
                  reinterpret_cast<const char*>(&wheres[r * kWhereLen]));
    }
    std::printf("#\n");
    std::printf("#                                                              out-of-place"
                "                       in-place%s\n", !compare ? "" : o.compare == "gloo" ? "         vs Gloo" : "          vs MPI");
    std::printf("#%11s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %6s  %7s  %6s  %6s  %6s", "size",
                "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "time",
                "algbw", "busbw", "#wrong");
    if (compare) std::printf("  %9s  %*s", o.compare.c_str(), ratioWidth, ("weft/" + o.compare).c_str());
    std::printf("\n#%11s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %6s  %7s  %6s  %6s", "(B)",
                "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)");
    if (compare) std::printf("  %6s  %9s", "", "(us)");
    std::printf("\n");
  }

  Buffers buf;
  Mem mem;
  if (o.device) {
    buf.send = devSend;
    buf.recv = devRecv;
    mem.device = true;
    mem.host = static_cast<char*>(allocBuffer(o.maxBytes));
  } else {
    buf.send = static_cast<char*>(allocBuffer(o.maxBytes));
    buf.recv = static_cast<char*>(allocBuffer(o.maxBytes));
  }
  buf.pristine = static_cast<char*>(allocBuffer(o.maxBytes));
  buf.expected = o.check ? static_cast<char*>(allocBuffer(o.maxBytes)) : nullptr;
  const std::vector<size_t> sizes = sizeList(o);
  const Coll coll = o.coll->coll;
  const double factor = nranks > 1 || coll != Coll::AllReduce ? busFactor(coll, nranks) : 0.0;

  uint64_t totalWrong = 0;
  std::vector<std::string> faultLines;  // rank 0: the page-fault table printed after the rows
  double bwSum = 0;
  size_t bwCells = 0;
  using Clock = std::chrono::steady_clock;

  for (const Variant& v : variantList(o, nranks)) {
    const TypeDesc& t = *v.t;
    const size_t es = t.size;
    const size_t maxElems = o.maxBytes / es;
    // This rank's inputs (non-root ranks of broadcast too: their sendbuff must not matter).
    fillInputRange(buf.pristine, 0, maxElems, t, *v.op, rank, nranks);
    if (o.check) fillVariantExpected(v, buf.expected, maxElems, rank, nranks);
    mem.put(buf.send, buf.pristine, maxElems * es);
    const bool outputChecked = !(coll == Coll::Reduce && rank != v.root);  // reduce: root only

    // --device: every rank has its data in place before the first kernel waits for its peers'.
    if (o.device) barrier();
    // Warm-up at the largest and the smallest size (connections, staging buffers, caches).
    for (size_t warmBytes : {o.maxBytes, o.minBytes}) {
      const Counts k = countsFor(coll, warmBytes, es, nranks);
      for (int w = 0; w < o.warmup; ++w) runOp(v, buf.send, buf.recv, k.param);
    }

    for (size_t size : sizes) {
      const Counts k = countsFor(coll, size, es, nranks);
      const size_t sendBytes = k.send * es, recvBytes = k.recv * es;
      const size_t bytes = std::max(sendBytes, recvBytes);  // the size column
      if (o.check && rowDependent(coll)) fillRowExpected(v, buf.expected, k, rank, nranks);
      Cell cells[2];
      for (int inPlace = 0; inPlace < 2; ++inPlace) {
        Cell& cell = cells[inPlace];
        char* sbuf = buf.send;
        char* rbuf = buf.recv;
        if (inPlace) {
          inPlacePointers(coll, buf.recv, k.param, es, rank, &sbuf, &rbuf);
          mem.put(sbuf, buf.pristine, sendBytes);
        }
        // -G: the row's iterations captured in one graph, and (-c) one call in another, every
        // thread rank of this process capturing at once and nothing else running in it.
        dev::Graph timedGraph = nullptr, checkGraph = nullptr;
        if (o.graphLaunches > 0) {
          quiesce("the CUDA graph capture");
          dev::Captured timedCap = nullptr, checkCap = nullptr;
          DEV_CHECK(dev::captureBegin(gStream));
          for (int it = 0; it < o.iters; ++it) runIteration(o, v, sbuf, rbuf, k.param);
          DEV_CHECK(dev::captureEnd(gStream, &timedCap));
          if (o.check) {
            DEV_CHECK(dev::captureBegin(gStream));
            runOp(v, sbuf, rbuf, k.param);
            DEV_CHECK(dev::captureEnd(gStream, &checkCap));
          }
          localBarrier("the end of the CUDA graph capture");
          DEV_CHECK(dev::instantiate(timedCap, &timedGraph));
          if (checkCap) DEV_CHECK(dev::instantiate(checkCap, &checkGraph));
          localBarrier("the CUDA graph instantiation");
          DEV_CHECK(dev::graphUpload(timedGraph, gStream));
          if (checkGraph) DEV_CHECK(dev::graphUpload(checkGraph, gStream));
          if (o.warmup > 0) DEV_CHECK(dev::graphLaunch(timedGraph, gStream));  // untimed
          DEV_CHECK(dev::streamSync(gStream));
        }
        barrier();
        double seconds = 0;
        double ops = static_cast<double>(o.iters) * o.aggIters;
        rusage ru0{}, ru1{};
        getrusage(RUSAGE_SELF, &ru0);
        if (o.device) {
          // Between two events on the rank's stream: -n iterations of eager calls, or -G launches
          // of the captured iterations; -z 1/3: each one timed alone, then a barrier (not timed).
          const bool graph = timedGraph != nullptr;
          const int reps = graph ? o.graphLaunches : o.iters;
          if (graph) ops *= o.graphLaunches;
          dev::Event start = nullptr, stop = nullptr;
          DEV_CHECK(dev::eventCreate(&start));
          DEV_CHECK(dev::eventCreate(&stop));
          auto one = [&] {
            if (graph) {
              DEV_CHECK(dev::graphLaunch(timedGraph, gStream));
            } else {
              runIteration(o, v, sbuf, rbuf, k.param);
            }
          };
          const bool each = o.blocking == 1 || o.blocking == 3;
          for (int r = 0; r < (each ? reps : 1); ++r) {
            DEV_CHECK(dev::eventRecord(start, gStream));
            for (int it = 0; it < (each ? 1 : reps); ++it) one();
            DEV_CHECK(dev::eventRecord(stop, gStream));
            float ms = 0;
            DEV_CHECK(dev::elapsedMs(start, stop, &ms));
            seconds += static_cast<double>(ms) * 1e-3;
            if (each) barrier();
          }
          DEV_CHECK(dev::eventDestroy(start));
          DEV_CHECK(dev::eventDestroy(stop));
        } else if (o.blocking == 1 || o.blocking == 3) {
          for (int it = 0; it < o.iters; ++it) {
            const auto t0 = Clock::now();
            runIteration(o, v, sbuf, rbuf, k.param);
            seconds += std::chrono::duration<double>(Clock::now() - t0).count();
            barrier();
          }
        } else {
          const auto t0 = Clock::now();
          for (int it = 0; it < o.iters; ++it) runIteration(o, v, sbuf, rbuf, k.param);
          seconds = std::chrono::duration<double>(Clock::now() - t0).count();
        }
        getrusage(RUSAGE_SELF, &ru1);
        double perOp = ops > 0 ? seconds / ops : 0.0;
        double faults = ops > 0 ? static_cast<double>((ru1.ru_minflt - ru0.ru_minflt) + (ru1.ru_majflt - ru0.ru_majflt)) / ops : 0.0;
        WB_CHECK(weftAllReduce(&faults, &faults, 1, weftFloat64, weftMax, gComm, nullptr));
        cell.faults = faults;
        // Combine the time across ranks (-a): 0 rank 0, 1 average, 2 min, 3 max.
        weftRedOp_t combine = weftSum;
        if (o.average == 0 && rank != 0) perOp = 0;
        if (o.average == 2) combine = weftMin;
        if (o.average == 3) combine = weftMax;
        WB_CHECK(weftAllReduce(&perOp, &perOp, 1, weftFloat64, combine, gComm, nullptr));
        if (o.average == 1) perOp /= nranks;
        cell.usec = perOp * 1e6;
        cell.algbw = perOp > 0 ? static_cast<double>(bytes) / 1e9 / perOp : 0.0;
        cell.busbw = cell.algbw * factor;

        // Check: fresh inputs each time; the output starts as the complement of the expected
        // result (where it is not also the input), so an untouched element can never pass.
        // With -G the checked call is a graph replay.
        uint64_t wrong = 0;
        for (int c = 0; c < o.check; ++c) {
          if (!inPlace) {
            mem.put(buf.send, buf.pristine, sendBytes);
            mem.putComplement(buf.recv, buf.expected, recvBytes);
          } else if (coll == Coll::AllGather) {
            mem.putComplement(buf.recv, buf.expected, recvBytes);
            mem.put(sbuf, buf.pristine, sendBytes);
          } else if (coll == Coll::Broadcast && rank != v.root) {
            mem.putComplement(buf.recv, buf.expected, recvBytes);  // its input is never read
          } else {
            mem.put(sbuf, buf.pristine, sendBytes);
          }
          if (checkGraph) {
            DEV_CHECK(dev::graphLaunch(checkGraph, gStream));
          } else {
            runOp(v, sbuf, rbuf, k.param);
          }
          if (outputChecked) wrong += countMismatches(mem.get(rbuf, recvBytes), buf.expected, k.recv, es);
          if (!inPlace) wrong += countMismatches(mem.get(buf.send, sendBytes), buf.pristine, k.send, es);  // input kept
        }
        if (o.device) DEV_CHECK(dev::streamSync(gStream));  // -c 0: the last calls done too
        if (o.check) {
          WB_CHECK(weftAllReduce(&wrong, &wrong, 1, weftUint64, weftSum, gComm, nullptr));
        }
        if (timedGraph) {
          quiesce("the CUDA graph destruction");
          DEV_CHECK(dev::graphDestroy(timedGraph));
          DEV_CHECK(dev::graphDestroy(checkGraph));
          localBarrier("the end of the CUDA graph destruction");
        }
        cell.wrong = wrong;
        totalWrong += wrong;
        bwSum += cell.busbw;
        ++bwCells;
      }
      // The out-of-place send buffer must hold the inputs for the next size's timing.
      mem.put(buf.send, buf.pristine, sendBytes);
      if (print) {
        std::string mpiFaults = "-";
        std::printf("%12zu  %12zu  %8s  %6s  %6d", bytes, k.param, t.name, v.opName, v.root);
        for (const Cell& cell : cells) {
          std::printf("  %7s  %6s  %6s", fmtNum(cell.usec, 7).c_str(), fmtNum(cell.algbw, 6).c_str(),
                      fmtNum(cell.busbw, 6).c_str());
          if (o.check) {
            std::printf("  %6g", static_cast<double>(cell.wrong));
          } else {
            std::printf("  %6s", "N/A");
          }
        }
        if (compare) {
          const auto it = mpi.usec.find(mpiKey(t.name, v.opName, v.root, k.param));
          double mpiUs = 0;
          if (it == mpi.usec.end() || !(std::istringstream(it->second) >> mpiUs) || mpiUs <= 0) {
            std::printf("  %9s  %*s", "-", ratioWidth, "-");  // no such type/op there (half, avg, ...)
          } else {
            std::printf("  %9s  %*s", fmtNum(mpiUs, 9).c_str(), ratioWidth,
                        fmtNum(cells[0].usec / mpiUs, ratioWidth).c_str());
          }
          const auto f = mpi.faults.find(mpiKey(t.name, v.opName, v.root, k.param));
          if (f != mpi.faults.end()) mpiFaults = f->second;
        }
        std::printf("\n");
        char line[160];
        std::snprintf(line, sizeof line, "#  %11zu  %8s  %6s  %10s  %10s", bytes, t.name, v.opName,
                      fmtNum(cells[0].faults, 10).c_str(), compare ? mpiFaults.c_str() : "");
        faultLines.push_back(line);
      }
    }
  }

  size_t staging = 0;
  WB_CHECK(weftCommMemStats(gComm, &staging));
  if (print) {
    // Page faults per operation, out of place (getrusage minor + major of the process, the largest
    // over ranks): steady-state weft takes none; a table apart so the rows keep nccl-tests' layout.
    std::printf("#\n# page faults per operation (out-of-place; minor + major, per process, largest over ranks)\n");
    std::printf("#  %11s  %8s  %6s  %10s  %10s\n", "size(B)", "type", "redop", "weft", compare ? o.compare.c_str() : "");
    for (const std::string& l : faultLines) std::printf("%s\n", l.c_str());
    std::printf("# weft staging bytes held: %zu\n", staging);
    std::printf("# %-20s : %llu %s\n", "Out of bounds values",
                static_cast<unsigned long long>(totalWrong), totalWrong ? "FAILED" : "OK");
    std::printf("# %-20s : %g\n", "Avg bus bandwidth", bwCells ? bwSum / bwCells : 0.0);
    std::printf("#\n# Collective test concluded: %s\n", o.collective.c_str());
    std::fflush(stdout);
  }

  // --device: every thread rank of the process done with its kernels before any destroys (the
  // library frees its staging) or frees its buffers: cudaFree may wait for the whole device.
  if (o.device) quiesce("the end of the run");
  WB_CHECK(weftCommDestroy(gComm));
  gComm = nullptr;
  if (o.device) {
    DEV_CHECK(dev::release(buf.send));
    DEV_CHECK(dev::release(buf.recv));
    DEV_CHECK(dev::streamDestroy(gStream));
    gStream = nullptr;
    std::free(mem.host);
  } else {
    std::free(buf.send);
    std::free(buf.recv);
  }
  std::free(buf.pristine);
  std::free(buf.expected);
  return totalWrong ? kExitWrong : 0;
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

// The directory of this executable (the MPI helper is installed beside it).
std::string exeDir() {
  char path[4096];
  const ssize_t len = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (len <= 0) return ".";
  path[len] = '\0';
  std::string s(path);
  const size_t slash = s.rfind('/');
  return slash == std::string::npos ? "." : s.substr(0, slash);
}

std::string findInPath(const char* name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  for (;;) {
    const size_t colon = dirs.find(':', start);
    std::string dir = dirs.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (dir.empty()) dir = ".";
    const std::string cand = dir + "/" + name;
    if (access(cand.c_str(), X_OK) == 0) return cand;
    if (colon == std::string::npos) return "";
    start = colon + 1;
  }
}

// The helper's command line for --compare mpi (mpirun + weft-mpi-bench) or gloo (weft-gloo-bench,
// which spawns its own ranks), with one spec per (type, op, root): "<type>:<op>:<root>:<count>,...",
// the counts weft uses. Empty (said on stderr) when the helper or mpirun is missing.
std::vector<std::string> helperCommand(const Options& o, size_t* fixedArgs) {
  const bool gloo = o.compare == "gloo";
  const std::string helper = exeDir() + "/" + (gloo ? kGlooHelperName : kMpiHelperName);
  if (access(helper.c_str(), X_OK) != 0 && gloo) {
    std::fprintf(stderr,
                 "weft-bench: --compare gloo: this weft-bench was built without Gloo: the helper %s "
                 "is built when CMake finds Gloo (find_package(Gloo); Debian: apt-get install "
                 "libgloo-dev), then re-run cmake and build weft-bench\n",
                 helper.c_str());
    return {};
  }
  if (access(helper.c_str(), X_OK) != 0) {
    std::fprintf(stderr,
                 "weft-bench: --compare mpi needs the MPI helper %s, which is not built: it is built "
                 "when CMake finds MPI (find_package(MPI COMPONENTS C); Debian: apt-get install "
                 "openmpi-bin libopenmpi-dev), then re-run cmake and build weft-bench\n",
                 helper.c_str());
    return {};
  }
  std::vector<std::string> args;
  if (gloo) {
    args = {helper, o.collective, "--ranks", std::to_string(o.ranks), "-n", std::to_string(o.iters), "-w",
            std::to_string(o.warmup), "-m", std::to_string(o.aggIters), "-a", std::to_string(o.average),
            "-c", std::to_string(o.check), "-T", std::to_string(o.timeoutS)};
  } else {
    const std::string mpirun = findInPath("mpirun");
    if (mpirun.empty()) {
      std::fprintf(stderr, "weft-bench: --compare mpi: no mpirun in PATH (Debian: apt-get install openmpi-bin)\n");
      return {};
    }
    // Like against like: Open MPI's shared-memory path (vader) while weft's same-host ranks use
    // shm, its TCP path when WEFT_TRANSPORTS leaves shm out.
    const char* allowed = std::getenv("WEFT_TRANSPORTS");
    const bool weftShm = allowed == nullptr || *allowed == '\0' || std::strstr(allowed, "shm") != nullptr;
    args = {mpirun, "--allow-run-as-root", "--oversubscribe", "-np",
            std::to_string(o.ranks), "--mca", "btl", weftShm ? "self,vader" : "tcp,self", "--mca", "pml",
            "ob1", helper, o.collective, "-n", std::to_string(o.iters), "-w",
            std::to_string(o.warmup), "-m", std::to_string(o.aggIters), "-a",
            std::to_string(o.average)};
  }
  *fixedArgs = args.size();
  const std::vector<size_t> sizes = sizeList(o);
  for (const Variant& v : variantList(o, o.ranks)) {
    std::string spec = std::string(v.t->name) + ":" + v.opName + ":" + std::to_string(v.root) + ":";
    for (size_t i = 0; i < sizes.size(); ++i) {
      spec += (i ? "," : "") + std::to_string(countsFor(o.coll->coll, sizes[i], v.t->size, o.ranks).param);
    }
    args.push_back(spec);
  }
  return args;
}

// --compare: time the same rows with Open MPI or Gloo before the weft ranks start (never both at
// once). The helper's output (lines "R <type> <op> <root> <count> <usec>") goes to a temporary
// file whose path the workers get; rank 0 reads it. Returns 0, or the exit status to fail with.
int runCompareHelper(const Options& o, std::string* timesPath) {
  const std::string what = "--compare " + o.compare;
  size_t kFixedArgs = 0;
  std::vector<std::string> args = helperCommand(o, &kFixedArgs);
  if (args.empty()) return kExitError;

  const char* tmpdir = std::getenv("TMPDIR");
  std::string path = std::string(tmpdir && *tmpdir ? tmpdir : "/tmp") + "/weft-bench-" + o.compare + ".XXXXXX";
  const int fd = mkstemp(path.data());
  if (fd < 0) {
    std::fprintf(stderr, "weft-bench: %s: cannot create %s: %s\n", what.c_str(), path.c_str(), std::strerror(errno));
    return kExitError;
  }
  std::string cmdline = "# " + o.compare + " command:";
  const size_t specs = args.size() - kFixedArgs;
  for (size_t i = 0; i < args.size() && i < kFixedArgs + 2; ++i) {
    cmdline += " " + (args[i].size() > 60 ? args[i].substr(0, 57) + "..." : args[i]);
  }
  if (specs > 2) cmdline += " ... (" + std::to_string(specs) + " type:op:root:counts specs)";
  cmdline += "\n";
  (void)!write(fd, cmdline.data(), cmdline.size());

  std::vector<char*> cargv;
  for (std::string& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fd, 1);
    execv(cargv[0], cargv.data());
    static const char msg[] = "weft-bench: cannot exec the --compare helper\n";
    (void)!write(2, msg, sizeof(msg) - 1);
    _exit(127);
  }
  close(fd);
  if (pid < 0) {
    std::fprintf(stderr, "weft-bench: %s: fork failed: %s\n", what.c_str(), std::strerror(errno));
    unlink(path.c_str());
    return kExitError;
  }
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  int st = 0;
  for (;;) {
    const pid_t p = waitpid(pid, &st, WNOHANG);
    if (p == pid) break;
    if (p < 0 && errno != EINTR) break;
    if ((o.timeoutS > 0 && Clock::now() - start > std::chrono::seconds(o.timeoutS)) || gSignal) {
      kill(pid, SIGTERM);
      std::this_thread::sleep_for(std::chrono::seconds(2));
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      std::fprintf(stderr, "weft-bench: %s: %s; %s stopped\n", what.c_str(),
                   gSignal ? "interrupted" : "timed out (-T)", args[0].c_str());
      unlink(path.c_str());
      return kExitError;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    std::fprintf(stderr, "weft-bench: %s: %s %s; its output:\n", what.c_str(), args[0].c_str(),
                 describeStatus(st).c_str());
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) std::fprintf(stderr, "  %s\n", line.c_str());
    unlink(path.c_str());
    return kExitError;
  }
  *timesPath = path;
  return 0;
}

int launchRanks(const Options& o, int argc, char** argv, const std::string& mpiTimes);

// --device with spawned ranks: ask CUDA for a device in a forked child first, so that a machine
// without a GPU or driver gets one message (not one per rank) and exit status 3. The launcher
// itself never initialises CUDA (its ranks are forked from it). 0, or the status to exit with.
int probeDevice() {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid == 0) {
    int count = 0;
    const std::string why = dev::deviceCount(&count);
    if (!why.empty()) {
      std::fprintf(stderr, "weft-bench: --device: no usable CUDA device: %s\n", why.c_str());
      std::fflush(stderr);
      _exit(kExitNoDevice);
    }
    _exit(0);
  }
  if (pid < 0) {
    std::fprintf(stderr, "weft-bench: --device: fork failed: %s\n", std::strerror(errno));
    return kExitError;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int st = 0;
  for (;;) {
    const pid_t p = waitpid(pid, &st, WNOHANG);
    if (p == pid) break;
    if (p < 0 && errno != EINTR) {
      std::fprintf(stderr, "weft-bench: --device: waiting for the CUDA probe: %s\n", std::strerror(errno));
      return kExitError;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      std::fprintf(stderr, "weft-bench: --device: cudaGetDeviceCount did not return within 60 s\n");
      return kExitError;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == kExitNoDevice)) return WEXITSTATUS(st);
  std::fprintf(stderr, "weft-bench: --device: the CUDA probe process %s\n", describeStatus(st).c_str());
  return kExitError;
}

int launch(const Options& o, int argc, char** argv) {
  if (o.coll->rooted && !o.rootAll && o.root >= o.ranks) {
    usageError("-r/--root " + std::to_string(o.root) + " is not a rank (--ranks " + std::to_string(o.ranks) + ")");
  }
  if (o.device) {
    if (const int rc = probeDevice()) return rc;
  }
  std::string mpiTimes = "-";
  if (!o.compare.empty()) {
    struct sigaction sa {};
    sa.sa_handler = onSignal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    if (const int rc = runCompareHelper(o, &mpiTimes)) return rc;
  }
  const int rc = launchRanks(o, argc, argv, mpiTimes);
  if (mpiTimes != "-") unlink(mpiTimes.c_str());
  return rc;
}

int launchRanks(const Options& o, int argc, char** argv, const std::string& mpiTimes) {
  weftUniqueId id;
  const weftResult_t r = weftGetUniqueId(&id);
  if (r != weftSuccess) {
    std::fprintf(stderr, "weft-bench: weftGetUniqueId failed: %s — %s\n", weftGetErrorString(r),
                 weftGetLastError(nullptr));
    return kExitError;
  }
  const std::string hex = toHex(id);
  const int n = o.ranks / o.nthreads;  // processes; process i runs ranks i*T .. i*T+T-1 (-t T)

  // Everything the children need is built before forking (the parent has threads).
  std::vector<std::string> tokens(n);
  std::vector<std::vector<char*>> childArgv(n);
  for (int rank = 0; rank < n; ++rank) {
    tokens[rank] = std::to_string(rank * o.nthreads) + ":" + std::to_string(o.ranks) + ":" + hex;
    childArgv[rank].push_back(argv[0]);
    childArgv[rank].push_back(const_cast<char*>(kWorkerFlag));
    childArgv[rank].push_back(tokens[rank].data());
    childArgv[rank].push_back(const_cast<char*>(mpiTimes.c_str()));
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
// Under a launcher

// Which launcher's variables weftCommInitFromEnv will find (the library's own order), or null.
const char* launcherEnv() {
  auto set = [](const char* name) {
    const char* v = std::getenv(name);
    return v && *v;
  };
  if (set("WEFT_RANK")) return "WEFT_RANK";
  if (set("OMPI_COMM_WORLD_RANK")) return "OMPI_COMM_WORLD_RANK";
  if (set("SLURM_PROCID")) return "SLURM_PROCID";
  if (set("RANK") && set("WORLD_SIZE")) return "RANK";
  return nullptr;
}

// Plain mpirun gives no rendezvous address. When every rank is on this host, rank 0 serves it on
// 127.0.0.1 at a port derived from Open MPI's job id (so every rank of one job computes the same
// port and two jobs most likely differ). Set WEFT_COMM_ID (or MASTER_ADDR/MASTER_PORT) to choose.
void defaultOpenMpiRendezvous() {
  auto get = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v ? v : "";
  };
  if (get("OMPI_COMM_WORLD_RANK").empty() || !get("WEFT_RANK").empty()) return;
  if (!get("WEFT_COMM_ID").empty() || !get("MASTER_ADDR").empty()) return;
  if (!get("SLURM_STEP_NODELIST").empty()) return;  // the library uses Slurm's node list
  const std::string size = get("OMPI_COMM_WORLD_SIZE"), local = get("OMPI_COMM_WORLD_LOCAL_SIZE");
  if (size.empty() || size != local) {
    std::fprintf(stderr,
                 "weft-bench: under mpirun across hosts, set WEFT_COMM_ID=<host of rank 0>:<free port> "
                 "(mpirun -x WEFT_COMM_ID=...) for the rendezvous\n");
    return;  // weftCommInitFromEnv then fails naming WEFT_COMM_ID
  }
  const std::string job = get("OMPI_MCA_ess_base_jobid");
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a of the job id
  for (char ch : job) h = (h ^ static_cast<unsigned char>(ch)) * 0x100000001b3ull;
  const int port = 20000 + static_cast<int>(h % 10000);  // below the ephemeral range (32768+)
  const std::string addr = "127.0.0.1:" + std::to_string(port);
  setenv("WEFT_COMM_ID", addr.c_str(), 1);
}

int runUnderLauncher(const Options& o) {
  defaultOpenMpiRendezvous();
  if (o.timeoutS > 0) {
    std::thread([s = o.timeoutS] {
      std::this_thread::sleep_for(std::chrono::seconds(s));
      std::fprintf(stderr, "weft-bench: timed out after %ld s (-T) (rank %d)\n", s, gRank);
      std::fflush(stderr);
      _exit(kExitError);
    }).detach();
  }
  return runWorker(o, nullptr, -1, 0, "");
}

}  // namespace
}  // namespace weftbench

int main(int argc, char** argv) {
  using namespace weftbench;
  if (argc >= 4 && std::strcmp(argv[1], kWorkerFlag) == 0) {
    // Hidden worker mode: <rank>:<nranks>:<hex id>, the MPI times file (or -), then the user's
    // arguments.
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
    const std::string mpiTimes = argv[3];
    argv[3] = argv[0];
    const Options o = parseOptions(argc - 3, argv + 3);
    if (o.nthreads == 1) return runWorker(o, &id, rank, nranks, mpiTimes);
    // -t T: this process's T ranks as threads; the worst exit code.
    LocalBarrier local(o.nthreads);
    gLocal = &local;
    std::vector<int> rcs(static_cast<size_t>(o.nthreads), 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < o.nthreads; ++t)
      threads.emplace_back([&, t] { rcs[static_cast<size_t>(t)] = runWorker(o, &id, rank + t, nranks, mpiTimes); });
    for (auto& th : threads) th.join();
    return *std::max_element(rcs.begin(), rcs.end());
  }
  const Options o = parseOptions(argc, argv);
  if (o.nthreads > 1 && o.ranks % o.nthreads != 0)
    usageError("--ranks " + std::to_string(o.ranks) + " is not a multiple of -t/--nthreads " + std::to_string(o.nthreads));
  if (!o.ranksGiven) {
    if (const char* var = launcherEnv()) {
      if (!o.compare.empty()) {
        usageError("--compare " + o.compare + (o.compare == "mpi" ? " starts mpirun itself" : " starts its own ranks") +
                   ": run weft-bench without a launcher "
                   "(found " + var + "), or give --ranks N to spawn local ranks");
      }
      if (o.nthreads > 1) usageError("-t/--nthreads > 1 needs spawned ranks (--ranks N), not a launcher");
      return runUnderLauncher(o);
    }
  }
  return launch(o, argc, argv);
}
