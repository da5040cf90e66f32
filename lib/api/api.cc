// The C ABI: validate arguments, build the Op, hand it to the engine. No exception or C++ type
// crosses this boundary; every failure leaves a sentence for weftGetLastError.
#include "weft/weft.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "lib/bootstrap/launcher.h"
#include "lib/bootstrap/root.h"
#include "lib/bootstrap/unique_id.h"
#include "lib/core/log.h"
#include "lib/core/status.h"
#include "lib/core/types.h"
#include "lib/core/util.h"
#include "lib/core/version.h"
#include "lib/device/device.h"
#include "lib/engine/communicator.h"

static_assert(weft::kLibraryVersion == WEFT_VERSION_CODE, "lib/core/version.h and weft.h disagree");
static_assert(sizeof(weftUniqueId) == weft::bootstrap::kUniqueIdBytes);
static_assert(static_cast<int>(weftFloat8e5m2) == static_cast<int>(weft::DataType::kFloat8e5m2));
static_assert(static_cast<int>(weftAvg) == static_cast<int>(weft::RedOp::kAvg));
static_assert(static_cast<int>(weftTimeout) == static_cast<int>(weft::Code::kTimeout));

struct weftRegistration;

struct weftComm {
  std::unique_ptr<weft::engine::Communicator> impl;
  // Calls in flight (weftCommAbort waits for them to leave before freeing).
  std::atomic<int> activeCalls{0};
  // Non-blocking init (config.blocking == 0): the communicator is built on this thread.
  std::mutex initMu;
  std::thread initThread;
  std::atomic<bool> initializing{false};
  weft::Status initStatus;
  // Device buffers (lib/device): null when this communicator cannot take them; deviceWhyNot says why.
  std::unique_ptr<weft::device::DeviceComm> device;
  std::string deviceWhyNot;
  // Registered buffers and windows (weftCommRegister / weftCommWindowRegister), freed with the comm.
  std::mutex regMu;
  std::vector<std::unique_ptr<weftRegistration>> regs;
  std::vector<std::unique_ptr<weftWindow>> windows;
  ~weftComm();
};

// What weftCommRegister hands out (void* handle) and weftCommWindowRegister (weftWindow_t).
struct weftRegistration {
  void* buf = nullptr;
  size_t size = 0;
  bool device = false;
};
struct weftWindow {
  weft::device::Window w;
  int flags = 0;
};

weftComm::~weftComm() {
  if (initThread.joinable()) initThread.join();
  for (auto& w : windows) weft::device::closeWindow(&w->w);
  windows.clear();
  regs.clear();
  device.reset();  // before impl: a multi-process device state says goodbye over the bootstrap
}

namespace {

thread_local std::string tlsLastError;

weftResult_t toResult(weft::Code c) { return static_cast<weftResult_t>(static_cast<int>(c)); }

weftResult_t report(const weft::Status& s, const char* call) {
  if (s.isOk()) return weftSuccess;
  tlsLastError = std::string(call) + ": " + s.message();
  WEFT_INFO(INIT, "%s failed: %s", call, s.message().c_str());
  return toResult(s.code());
}

weftResult_t argError(const char* call, const std::string& what) {
  return report(weft::invalidArgument(what), call);
}

// Runs f, turning any escaping C++ exception into an error code.
template <typename F>
weftResult_t guarded(const char* call, F&& f) {
  try {
    tlsLastError.clear();
    return f();
  } catch (const std::bad_alloc&) {
    return report(weft::systemError("out of memory"), call);
  } catch (const std::exception& e) {
    return report(weft::internalError(e.what()), call);
  } catch (...) {
    return report(weft::internalError("unknown exception"), call);
  }
}

// Waits for a non-blocking init to finish; the init's error, if any.
weft::Status ready(weftComm* c) {
  if (c->initializing.load()) {
    std::lock_guard<std::mutex> g(c->initMu);
    if (c->initThread.joinable()) c->initThread.join();
  }
  return c->initStatus;
}

// Collective, right after the communicator is created: the device state for device buffers
// (lib/device). Ranks without CUDA take part and get none, touching no CUDA.
// device: the CUDA device of the thread that created the communicator (a non-blocking init runs
// this on its own thread, whose current device would be 0).
weft::Status setupDevice(weftComm* c, int device) {
  if (!weft::device::built()) {
    c->deviceWhyNot = "this libweft was built without CUDA";
    return weft::Status::ok();
  }
  weft::device::DeviceCommOptions o;
  o.timeoutMs = c->impl->config().timeoutMs;
  o.initTimeoutMs = c->impl->config().initTimeoutMs;
  o.device = device;
  return weft::device::DeviceComm::create(c->impl->bootstrapRef(), o, &c->device, &c->deviceWhyNot);
}

// One call at a time per communicator; weftCommAbort waits for calls to leave before freeing.
class CallGuard {
 public:
  explicit CallGuard(weftComm* c) : c_(c) { busy_ = c_->activeCalls.fetch_add(1) != 0; }
  ~CallGuard() { c_->activeCalls.fetch_sub(1); }
  bool busy() const { return busy_; }

 private:
  weftComm* c_;
  bool busy_;
};

weft::Status readConfig(const weftConfig_t* config, weft::engine::CommOptions* opts, bool* blocking) {
  *blocking = true;
  if (config == nullptr) return weft::Status::ok();
  if (config->magic != WEFT_CONFIG_MAGIC || config->size < offsetof(weftConfig_t, blocking))
    return weft::invalidArgument("the config was not initialised with WEFT_CONFIG_INITIALIZER (bad magic or size)");
  auto has = [&](size_t offset, size_t bytes) { return config->size >= offset + bytes; };
  auto intField = [&](size_t offset, const int* field, const char* name, int64_t* out) -> weft::Status {
    if (!has(offset, sizeof(int)) || *field == WEFT_CONFIG_UNDEF_INT) return weft::Status::ok();
    if (*field < 0) return weft::invalidArgument(std::string("config.") + name + "=" + std::to_string(*field) + " is negative");
    *out = *field;
    return weft::Status::ok();
  };
  if (has(offsetof(weftConfig_t, blocking), sizeof(int)) && config->blocking != WEFT_CONFIG_UNDEF_INT) {
    if (config->blocking != 0 && config->blocking != 1)
      return weft::invalidArgument("config.blocking must be 0 or 1, not " + std::to_string(config->blocking));
    *blocking = config->blocking == 1;
  }
  WEFT_TRY(intField(offsetof(weftConfig_t, initTimeoutMs), &config->initTimeoutMs, "initTimeoutMs", &opts->initTimeoutMs));
  WEFT_TRY(intField(offsetof(weftConfig_t, timeoutMs), &config->timeoutMs, "timeoutMs", &opts->timeoutMs));
  WEFT_TRY(intField(offsetof(weftConfig_t, buffSize), &config->buffSize, "buffSize", &opts->buffSize));
  if (has(offsetof(weftConfig_t, commName), sizeof(const char*)) && config->commName != nullptr)
    opts->name = config->commName;
  return weft::Status::ok();
}

// Creates the communicator now, or (non-blocking) on a thread: then weftInProgress.
weftResult_t initComm(const char* call, weftComm_t* out, int nranks, int rank, const weft::bootstrap::UniqueId& id,
                      const weft::engine::CommOptions& opts, bool blocking) {
  auto c = std::make_unique<weftComm>();
  if (blocking) {
    weft::Status s = weft::engine::Communicator::create(id, nranks, rank, opts, &c->impl);
    if (s) s = setupDevice(c.get(), weft::device::currentDevice());
    if (!s) return report(s, call);
    *out = c.release();
    return weftSuccess;
  }
  weftComm* raw = c.get();
  raw->initializing.store(true);
  const int device = weft::device::currentDevice();  // the caller's, not the init thread's
  raw->initThread = std::thread([raw, id, nranks, rank, opts, device] {
    weft::Status s;
    try {
      s = weft::engine::Communicator::create(id, nranks, rank, opts, &raw->impl);
      if (s) s = setupDevice(raw, device);
    } catch (const std::exception& e) {
      s = weft::internalError(e.what());
    }
    raw->initStatus = s;
    raw->initializing.store(false);
  });
  *out = c.release();
  return weftInProgress;
}

const char* kTypes = "0-11: int8 ... fp8 e5m2";

// The caller may pass any int where an enum is expected (C, ctypes); reading such a value as a C++
// enum is undefined, so enum parameters are only ever read as their int bits.
template <typename E>
int raw(const E& e) {
  static_assert(sizeof(E) == sizeof(int));
  int v;
  std::memcpy(&v, &e, sizeof v);
  return v;
}

// Common checks of a collective call; fills esize. Returns weftSuccess to go on.
weftResult_t checkCommon(const char* call, weftComm_t comm, int datatype, bool hasOp, int op, size_t count,
                         size_t factor, size_t* esize) {
  if (comm == nullptr) return argError(call, "comm is NULL");
  if (datatype < 0 || datatype >= weftNumTypes)
    return argError(call, "datatype " + std::to_string(datatype) + " is not a weftDataType_t (" + kTypes + ")");
  if (hasOp && (op < 0 || op >= weftNumOps))
    return argError(call, "op " + std::to_string(op) + " is not a weftRedOp_t (0-4: sum, prod, max, min, avg)");
  *esize = weft::typeSize(static_cast<weft::DataType>(datatype));
  if (count > static_cast<size_t>(PTRDIFF_MAX) / *esize / std::max<size_t>(factor, 1))
    return argError(call, "count " + std::to_string(count) + " of " + weft::typeName(static_cast<weft::DataType>(datatype)) +
                              " overflows the address space");
  weft::Status s = ready(comm);
  if (!s) return report(s, call);
  return weftSuccess;
}

weftResult_t checkBuffer(const char* call, const char* name, const void* p, size_t esize, size_t count) {
  if (count == 0) return weftSuccess;
  if (p == nullptr) return argError(call, std::string(name) + " is NULL with count " + std::to_string(count));
  if (reinterpret_cast<uintptr_t>(p) % esize != 0)
    return argError(call, std::string(name) + " must be aligned to the element size (" + std::to_string(esize) + " bytes)");
  return weftSuccess;
}

bool overlaps(const void* a, size_t abytes, const void* b, size_t bbytes) {
  auto x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return abytes && bbytes && x < y + bbytes && y < x + abytes;
}

// Group state of this thread: operations posted between the outermost start and end.
struct PendingOp {
  weftComm_t comm;
  weft::engine::OpDesc op;
};
thread_local int tlsGroupDepth = 0;
thread_local std::vector<PendingOp> tlsGroupOps;
// Device sends and receives posted inside a group, and the device collectives kept with them (on a
// communicator that has device sends/receives in the group): launched at the outermost
// weftGroupEnd in posting order per communicator, consecutive sends/receives as one kernel
// (lib/device/p2p_plan.h DeviceGroup).
thread_local weft::device::DeviceGroup tlsDeviceGroup;
thread_local std::vector<weft::device::DeviceCall> tlsGroupDeviceColls;
// Window registrations posted inside a group: exchanged at the outermost weftGroupEnd (one thread
// may drive several ranks; see there).
struct PendingWindow {
  weftComm_t comm;
  weftWindow* win;
  void* buff;
  size_t size;
  int device;  // the posting thread's CUDA device
};
thread_local std::vector<PendingWindow> tlsGroupWindows;

// A second thread entered a call on a communicator that one thread is already using.
weftResult_t busyError(const char* call) {
  return report(weft::invalidUsage("another thread is already in a call on this communicator: one thread at a time "
                                   "may use a communicator"),
                call);
}

// Runs (or, inside a group, posts) one operation.
// Device buffers: *handled = true when the call had device buffers (then the result is returned).
// Both buffers must be of one kind. Device collectives are stream-ordered; inside
// weftGroupStart/End they are launched when posted, in posting order (each on its stream), which
// is what the group would do with them, until the group has a device send/receive on their
// communicator: from then on they are kept and launched at weftGroupEnd in posting order with the
// sends and receives. Device sends, receives and all-to-all are one kernel per call, or, inside a
// group, one kernel per run of consecutive ones of a communicator at the outermost weftGroupEnd
// (so that sends and receives of the group never wait on each other's launches). Device
// sends/receives on two communicators in one group are refused there (DeviceGroup).
weftResult_t submitDevice(const char* call, weftComm_t comm, const weft::engine::OpDesc& d, bool* handled) {
  using weft::device::MemKind;
  *handled = false;
  const MemKind ks = weft::device::classify(d.sendbuff);
  const MemKind kr = weft::device::classify(d.recvbuff);
  if (ks == MemKind::kHost && kr == MemKind::kHost) return weftSuccess;
  *handled = true;
  if (d.sendbuff != nullptr && d.recvbuff != nullptr && ks != kr)
    return argError(call, std::string("sendbuff is ") + (ks == MemKind::kDevice ? "device" : "host") +
                              " memory and recvbuff " + (kr == MemKind::kDevice ? "device" : "host") +
                              " memory: both buffers of a call must be of one kind");
  if (!comm->device) return report(weft::invalidUsage("device buffers: " + comm->deviceWhyNot), call);
  if (d.coll == weft::CollType::kSend || d.coll == weft::CollType::kRecv || d.coll == weft::CollType::kAlltoAll) {
    const size_t bytes = d.count * weft::typeSize(d.dtype);
    std::vector<weft::device::P2pCall> calls;
    if (d.coll == weft::CollType::kAlltoAll)
      weft::device::appendAllToAll(comm->impl->rank(), comm->impl->nranks(), d.sendbuff, d.recvbuff, bytes, d.stream, &calls);
    else if (d.coll == weft::CollType::kSend)
      calls.push_back({false, const_cast<void*>(d.sendbuff), bytes, d.root, d.stream});
    else
      calls.push_back({true, d.recvbuff, bytes, d.root, d.stream});
    if (tlsGroupDepth > 0) {
      for (auto& x : calls) tlsDeviceGroup.addP2p(comm, x);
      return weftSuccess;
    }
    CallGuard guard(comm);
    if (guard.busy())
      return busyError(call);
    weft::Status s = comm->impl->asyncError();
    if (s) s = comm->device->runP2p(calls);
    return report(s, call);
  }
  weft::device::DeviceCall dc;
  dc.coll = d.coll;
  dc.send = d.sendbuff;
  dc.recv = d.recvbuff;
  dc.count = d.count;
  dc.type = d.dtype;
  dc.op = d.op;
  dc.root = d.root;
  dc.stream = d.stream;
  if (tlsGroupDepth > 0 && tlsDeviceGroup.keepsCollectives(comm)) {
    tlsDeviceGroup.addCollective(comm, tlsGroupDeviceColls.size());
    tlsGroupDeviceColls.push_back(dc);
    return weftSuccess;
  }
  CallGuard guard(comm);
  if (guard.busy())
    return busyError(call);
  weft::Status s = comm->impl->asyncError();
  if (s) s = comm->device->run(dc);
  return report(s, call);
}

weftResult_t submit(const char* call, weftComm_t comm, const weft::engine::OpDesc& d) {
  bool handled = false;
  weftResult_t dr = submitDevice(call, comm, d, &handled);
  if (handled) return dr;
  if (tlsGroupDepth > 0) {
    tlsGroupOps.push_back({comm, d});
    return weftSuccess;
  }
  CallGuard guard(comm);
  if (guard.busy())
    return busyError(call);
  return report(comm->impl->run(d), call);
}

weft::engine::OpDesc makeOp(weft::CollType coll, const void* sendbuff, void* recvbuff, size_t count, int datatype,
                            int op, int root) {
  weft::engine::OpDesc d;
  d.coll = coll;
  d.sendbuff = sendbuff;
  d.recvbuff = recvbuff;
  d.count = count;
  d.dtype = static_cast<weft::DataType>(datatype);
  d.op = static_cast<weft::RedOp>(op);
  d.root = root;
  return d;
}

weftResult_t checkRoot(const char* call, weftComm_t comm, int root, const char* what) {
  if (root < 0 || root >= comm->impl->nranks())
    return argError(call, std::string(what) + " " + std::to_string(root) + " is outside [0, nranks=" +
                              std::to_string(comm->impl->nranks()) + ")");
  return weftSuccess;
}

}  // namespace

extern "C" {

WEFT_API weftResult_t weftGetVersion(int* version) {
  if (version == nullptr) return argError("weftGetVersion", "version is NULL");
  *version = WEFT_VERSION_CODE;
  return weftSuccess;
}

WEFT_API const char* weftGetErrorString(weftResult_t result) {
  switch (result) {
    case weftSuccess: return "no error";
    case weftUnhandledCudaError: return "unhandled CUDA error (run with WEFT_DEBUG=INFO for details)";
    case weftSystemError: return "unhandled system error (run with WEFT_DEBUG=INFO for details)";
    case weftInternalError: return "internal error in weft (please report it with WEFT_DEBUG=INFO output)";
    case weftInvalidArgument: return "invalid argument (see weftGetLastError)";
    case weftInvalidUsage: return "invalid usage (see weftGetLastError)";
    case weftRemoteError: return "remote process exited or there was a network error";
    case weftInProgress: return "weft operation in progress";
    case weftTimeout: return "operation timed out (see weftGetLastError)";
    default: return "unknown result code";
  }
}

WEFT_API const char* weftGetLastError(weftComm_t comm) {
  if (!tlsLastError.empty()) return tlsLastError.c_str();
  if (comm != nullptr) {
    thread_local std::string commError;
    try {
      weft::Status s = comm->initializing.load() ? weft::Status() : comm->initStatus;
      if (s && comm->impl) s = comm->impl->asyncError();
      if (s && comm->device) s = comm->device->asyncError();
      commError = s.isOk() ? "" : s.message();
    } catch (...) {
      commError.clear();
    }
    return commError.c_str();
  }
  return "";
}

WEFT_API weftResult_t weftGetUniqueId(weftUniqueId* uniqueId) {
  return guarded("weftGetUniqueId", [&] {
    if (uniqueId == nullptr) return argError("weftGetUniqueId", "uniqueId is NULL");
    weft::bootstrap::UniqueId id;
    weft::Status s = weft::bootstrap::startRoot(&id);
    if (!s) return report(s, "weftGetUniqueId");
    weft::bootstrap::encodeUniqueId(id, reinterpret_cast<unsigned char*>(uniqueId->internal));
    return weftSuccess;
  });
}

WEFT_API weftResult_t weftCommInitRankConfig(weftComm_t* comm, int nranks, weftUniqueId commId, int rank,
                                             weftConfig_t* config) {
  return guarded("weftCommInitRank", [&] {
    const char* call = "weftCommInitRank";
    if (comm == nullptr) return argError(call, "comm is NULL: pass the address of a weftComm_t");
    *comm = nullptr;
    if (nranks < 1) return argError(call, "nranks=" + std::to_string(nranks) + " must be at least 1");
    if (rank < 0 || rank >= nranks)
      return argError(call, "rank=" + std::to_string(rank) + " is outside [0, nranks=" + std::to_string(nranks) + ")");
    weft::engine::CommOptions opts;
    bool blocking;
    weft::Status s = readConfig(config, &opts, &blocking);
    if (!s) return report(s, call);
    weft::bootstrap::UniqueId id;
    s = weft::bootstrap::decodeUniqueId(reinterpret_cast<const unsigned char*>(commId.internal), &id);
    if (!s) return report(s, call);
    return initComm(call, comm, nranks, rank, id, opts, blocking);
  });
}

WEFT_API weftResult_t weftCommInitRank(weftComm_t* comm, int nranks, weftUniqueId commId, int rank) {
  return weftCommInitRankConfig(comm, nranks, commId, rank, nullptr);
}

WEFT_API weftResult_t weftCommInitFromEnv(weftComm_t* comm, weftConfig_t* config) {
  return guarded("weftCommInitFromEnv", [&] {
    const char* call = "weftCommInitFromEnv";
    if (comm == nullptr) return argError(call, "comm is NULL: pass the address of a weftComm_t");
    *comm = nullptr;
    weft::engine::CommOptions opts;
    bool blocking;
    weft::Status s = readConfig(config, &opts, &blocking);
    if (!s) return report(s, call);
    weft::bootstrap::LaunchInfo info;
    s = weft::bootstrap::launchInfoFromEnv(&info);
    if (!s) return report(s, call);
    WEFT_INFO(INIT, "launcher %s: rank %d of %d (local rank %d), rendezvous %s from %s, secret from %s",
              info.launcher.c_str(), info.rank, info.nranks, info.localRank, info.root.str().c_str(),
              info.rootSource.c_str(), info.secretSource.c_str());
    weft::bootstrap::UniqueId id;
    id.libraryVersion = static_cast<uint32_t>(weft::kLibraryVersion);
    std::memcpy(id.secret, info.secret, sizeof id.secret);
    id.root = info.root;
    if (info.rank == 0) {
      s = weft::bootstrap::startRootAt(info.root, info.secret, &id);
      if (!s) return report(s.withContext("rank 0 serving the rendezvous named by " + info.rootSource), call);
    }
    return initComm(call, comm, info.nranks, info.rank, id, opts, blocking);
  });
}

WEFT_API weftResult_t weftCommSplit(weftComm_t comm, int color, int key, weftComm_t* newcomm, weftConfig_t* config) {
  return guarded("weftCommSplit", [&] {
    const char* call = "weftCommSplit";
    if (comm == nullptr) return argError(call, "comm is NULL");
    if (newcomm == nullptr) return argError(call, "newcomm is NULL");
    *newcomm = nullptr;
    if (color < 0 && color != WEFT_SPLIT_NOCOLOR)
      return argError(call, "color " + std::to_string(color) + " is negative: use WEFT_SPLIT_NOCOLOR to opt out");
    weft::Status s = ready(comm);
    if (!s) return report(s, call);
    weft::engine::CommOptions opts;
    bool blocking;
    s = readConfig(config, &opts, &blocking);
    if (!s) return report(s, call);
    CallGuard guard(comm);
    if (guard.busy()) return report(weft::invalidUsage("another thread is in a call on this communicator"), call);
    auto c = std::make_unique<weftComm>();
    s = comm->impl->split(color, key, config ? &opts : nullptr, &c->impl);
    if (s && c->impl) s = setupDevice(c.get(), weft::device::currentDevice());
    if (!s) return report(s, call);
    if (c->impl) *newcomm = c.release();
    return weftSuccess;
  });
}

WEFT_API weftResult_t weftCommDestroy(weftComm_t comm) {
  return guarded("weftCommDestroy", [&] {
    if (comm == nullptr) return weftSuccess;
    (void)ready(comm);
    if (comm->activeCalls.load() != 0)
      return report(weft::invalidUsage("the communicator is in use by another thread; use weftCommAbort to interrupt it"),
                    "weftCommDestroy");
    delete comm;
    return weftSuccess;
  });
}

WEFT_API weftResult_t weftCommAbort(weftComm_t comm) {
  return guarded("weftCommAbort", [&] {
    if (comm == nullptr) return weftSuccess;
    (void)ready(comm);  // an init in progress ends within its timeout
    if (comm->device) comm->device->abort();  // GPU waits give up at once
    if (comm->impl) comm->impl->requestAbort();
    // A blocked call notices the flag within one poll slice (10 ms); wait for it to leave.
    while (comm->activeCalls.load() != 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    delete comm;
    return weftSuccess;
  });
}

WEFT_API weftResult_t weftCommCount(const weftComm_t comm, int* count) {
  if (comm == nullptr) return argError("weftCommCount", "comm is NULL");
  if (count == nullptr) return argError("weftCommCount", "count is NULL");
  weft::Status s = ready(comm);
  if (!s) return report(s, "weftCommCount");
  *count = comm->impl->nranks();
  return weftSuccess;
}

WEFT_API weftResult_t weftCommUserRank(const weftComm_t comm, int* rank) {
  if (comm == nullptr) return argError("weftCommUserRank", "comm is NULL");
  if (rank == nullptr) return argError("weftCommUserRank", "rank is NULL");
  weft::Status s = ready(comm);
  if (!s) return report(s, "weftCommUserRank");
  *rank = comm->impl->rank();
  return weftSuccess;
}

WEFT_API weftResult_t weftCommGetAsyncError(weftComm_t comm, weftResult_t* asyncError) {
  return guarded("weftCommGetAsyncError", [&] {
    if (comm == nullptr) return argError("weftCommGetAsyncError", "comm is NULL");
    if (asyncError == nullptr) return argError("weftCommGetAsyncError", "asyncError is NULL");
    if (comm->initializing.load()) {
      *asyncError = weftInProgress;
      return weftSuccess;
    }
    if (!comm->initStatus.isOk()) {
      *asyncError = toResult(comm->initStatus.code());
      return weftSuccess;
    }
    weft::Status s = comm->impl->asyncError();
    if (s && comm->device) s = comm->device->asyncError();
    *asyncError = toResult(s.code());
    return weftSuccess;
  });
}

WEFT_API weftResult_t weftCommMemStats(const weftComm_t comm, size_t* stagingBytes) {
  if (comm == nullptr) return argError("weftCommMemStats", "comm is NULL");
  if (stagingBytes == nullptr) return argError("weftCommMemStats", "stagingBytes is NULL");
  weft::Status s = ready(comm);
  if (!s) return report(s, "weftCommMemStats");
  *stagingBytes = comm->impl->stagingBytes();
  return weftSuccess;
}

WEFT_API weftResult_t weftAllReduce(const void* sendbuff, void* recvbuff, size_t count, weftDataType_t datatype,
                                    weftRedOp_t op, weftComm_t comm, weftStream_t stream) {
  // Host buffers run synchronously whatever the stream; device buffers are stream-ordered.
  return guarded("weftAllReduce", [&] {
    const char* call = "weftAllReduce";
    size_t es;
    weftResult_t r = checkCommon(call, comm, raw(datatype), true, raw(op), count, 1, &es);
    if (r != weftSuccess) return r;
    if ((r = checkBuffer(call, "sendbuff", sendbuff, es, count)) != weftSuccess) return r;
    if ((r = checkBuffer(call, "recvbuff", recvbuff, es, count)) != weftSuccess) return r;
    if (count == 0) return weftSuccess;
    if (sendbuff != recvbuff && overlaps(sendbuff, count * es, recvbuff, count * es))
      return argError(call, "sendbuff and recvbuff overlap without being equal: use sendbuff == recvbuff for in-place, "
                            "or separate buffers");
    weft::engine::OpDesc d = makeOp(weft::CollType::kAllReduce, sendbuff, recvbuff, count, raw(datatype), raw(op), -1);
    d.stream = stream;
    return submit(call, comm, d);
  });
}

namespace {
weftResult_t broadcastImpl(const char* call, const void* sendbuff, void* recvbuff, size_t count, int datatype, int root,
                           weftComm_t comm, weftStream_t stream) {
  return guarded(call, [&] {
    size_t es;
    weftResult_t r = checkCommon(call, comm, datatype, false, 0, count, 1, &es);
    if (r != weftSuccess || (r = checkRoot(call, comm, root, "root")) != weftSuccess) return r;
    bool isRoot = root == comm->impl->rank();
    if (isRoot && (r = checkBuffer(call, "sendbuff", sendbuff, es, count)) != weftSuccess) return r;
    if ((r = checkBuffer(call, "recvbuff", recvbuff, es, count)) != weftSuccess) return r;
    if (count == 0) return weftSuccess;
    if (isRoot && sendbuff != recvbuff && overlaps(sendbuff, count * es, recvbuff, count * es))
      return argError(call, "sendbuff and recvbuff overlap without being equal");
    weft::engine::OpDesc d = makeOp(weft::CollType::kBroadcast, isRoot ? sendbuff : nullptr, recvbuff, count, datatype, 0, root);
    d.stream = stream;
    return submit(call, comm, d);
  });
}
}  // namespace

WEFT_API weftResult_t weftBroadcast(const void* sendbuff, void* recvbuff, size_t count, weftDataType_t datatype,
                                    int root, weftComm_t comm, weftStream_t stream) {
  return broadcastImpl("weftBroadcast", sendbuff, recvbuff, count, raw(datatype), root, comm, stream);
}

WEFT_API weftResult_t weftBcast(void* buff, size_t count, weftDataType_t datatype, int root, weftComm_t comm,
                                weftStream_t stream) {
  return broadcastImpl("weftBcast", buff, buff, count, raw(datatype), root, comm, stream);
}

WEFT_API weftResult_t weftReduce(const void* sendbuff, void* recvbuff, size_t count, weftDataType_t datatype,
                                 weftRedOp_t op, int root, weftComm_t comm, weftStream_t stream) {
  return guarded("weftReduce", [&] {
    const char* call = "weftReduce";
    size_t es;
    weftResult_t r = checkCommon(call, comm, raw(datatype), true, raw(op), count, 1, &es);
    if (r != weftSuccess || (r = checkRoot(call, comm, root, "root")) != weftSuccess) return r;
    bool isRoot = root == comm->impl->rank();
    if ((r = checkBuffer(call, "sendbuff", sendbuff, es, count)) != weftSuccess) return r;
    if (isRoot && (r = checkBuffer(call, "recvbuff", recvbuff, es, count)) != weftSuccess) return r;
    if (count == 0) return weftSuccess;
    if (isRoot && sendbuff != recvbuff && overlaps(sendbuff, count * es, recvbuff, count * es))
      return argError(call, "sendbuff and recvbuff overlap without being equal");
    weft::engine::OpDesc d = makeOp(weft::CollType::kReduce, sendbuff, isRoot ? recvbuff : nullptr, count, raw(datatype), raw(op), root);
    d.stream = stream;
    return submit(call, comm, d);
  });
}

WEFT_API weftResult_t weftAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, weftDataType_t datatype,
                                    weftComm_t comm, weftStream_t stream) {
  return guarded("weftAllGather", [&] {
    const char* call = "weftAllGather";
    size_t es;
    weftResult_t r = checkCommon(call, comm, raw(datatype), false, 0, sendcount, 1, &es);
    if (r != weftSuccess) return r;
    size_t n = static_cast<size_t>(comm->impl->nranks());
    if (sendcount > static_cast<size_t>(PTRDIFF_MAX) / es / n) return argError(call, "sendcount * nranks overflows");
    if ((r = checkBuffer(call, "sendbuff", sendbuff, es, sendcount)) != weftSuccess) return r;
    if ((r = checkBuffer(call, "recvbuff", recvbuff, es, sendcount)) != weftSuccess) return r;
    if (sendcount == 0) return weftSuccess;
    size_t bytes = sendcount * es;
    const char* inPlace = static_cast<const char*>(recvbuff) + static_cast<size_t>(comm->impl->rank()) * bytes;
    if (sendbuff != inPlace && overlaps(sendbuff, bytes, recvbuff, bytes * n))
      return argError(call, "sendbuff overlaps recvbuff without being in place (in place is sendbuff == recvbuff + rank * sendcount)");
    weft::engine::OpDesc d = makeOp(weft::CollType::kAllGather, sendbuff, recvbuff, sendcount, raw(datatype), 0, -1);
    d.stream = stream;
    return submit(call, comm, d);
  });
}

WEFT_API weftResult_t weftReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                                        weftDataType_t datatype, weftRedOp_t op, weftComm_t comm,
                                        weftStream_t stream) {
  return guarded("weftReduceScatter", [&] {
    const char* call = "weftReduceScatter";
    size_t es;
    weftResult_t r = checkCommon(call, comm, raw(datatype), true, raw(op), recvcount, 1, &es);
    if (r != weftSuccess) return r;
    size_t n = static_cast<size_t>(comm->impl->nranks());
    if (recvcount > static_cast<size_t>(PTRDIFF_MAX) / es / n) return argError(call, "recvcount * nranks overflows");
    if ((r = checkBuffer(call, "sendbuff", sendbuff, es, recvcount)) != weftSuccess) return r;
    if ((r = checkBuffer(call, "recvbuff", recvbuff, es, recvcount)) != weftSuccess) return r;
    if (recvcount == 0) return weftSuccess;
    size_t bytes = recvcount * es;
    const char* inPlace = static_cast<const char*>(sendbuff) + static_cast<size_t>(comm->impl->rank()) * bytes;
    if (recvbuff != inPlace && overlaps(sendbuff, bytes * n, recvbuff, bytes))
      return argError(call, "recvbuff overlaps sendbuff without being in place (in place is recvbuff == sendbuff + rank * recvcount)");
    weft::engine::OpDesc d = makeOp(weft::CollType::kReduceScatter, sendbuff, recvbuff, recvcount, raw(datatype), raw(op), -1);
    d.stream = stream;
    return submit(call, comm, d);
  });
}

WEFT_API weftResult_t weftAlltoAll(const void* sendbuff, void* recvbuff, size_t count, weftDataType_t datatype,
                                   weftComm_t comm, weftStream_t stream) {
  return guarded("weftAlltoAll", [&] {
    const char* call = "weftAlltoAll";
    size_t es;
    weftResult_t r = checkCommon(call, comm, raw(datatype), false, 0, count, 1, &es);
    if (r != weftSuccess) return r;
    size_t n = static_cast<size_t>(comm->impl->nranks());
    if (count > static_cast<size_t>(PTRDIFF_MAX) / es / n) return argError(call, "count * nranks overflows");
    if ((r = checkBuffer(call, "sendbuff", sendbuff, es, count)) != weftSuccess) return r;
    if ((r = checkBuffer(call, "recvbuff", recvbuff, es, count)) != weftSuccess) return r;
    if (count == 0) return weftSuccess;
    if (sendbuff != recvbuff && overlaps(sendbuff, count * es * n, recvbuff, count * es * n))
      return argError(call, "sendbuff and recvbuff overlap without being equal");
    weft::engine::OpDesc d = makeOp(weft::CollType::kAlltoAll, sendbuff, recvbuff, count, raw(datatype), 0, -1);
    d.stream = stream;
    return submit(call, comm, d);
  });
}

WEFT_API weftResult_t weftBarrier(weftComm_t comm, weftStream_t stream) {
  return guarded("weftBarrier", [&] {
    const char* call = "weftBarrier";
    size_t es;
    weftResult_t r = checkCommon(call, comm, weftUint8, false, 0, 1, 1, &es);
    if (r != weftSuccess) return r;
    if (tlsGroupDepth > 0) return argError(call, "weftBarrier cannot be part of a group");
    (void)stream;
    unsigned char in = 0, out = 0;
    return submit(call, comm, makeOp(weft::CollType::kAllReduce, &in, &out, 1, weftUint8, weftMax, -1));
  });
}

WEFT_API weftResult_t weftSend(const void* sendbuff, size_t count, weftDataType_t datatype, int peer,
                               weftComm_t comm, weftStream_t stream) {
  return guarded("weftSend", [&] {
    const char* call = "weftSend";
    size_t es;
    weftResult_t r = checkCommon(call, comm, raw(datatype), false, 0, count, 1, &es);
    if (r != weftSuccess || (r = checkRoot(call, comm, peer, "peer")) != weftSuccess) return r;
    if ((r = checkBuffer(call, "sendbuff", sendbuff, es, count)) != weftSuccess) return r;
    if (count == 0) return weftSuccess;
    weft::engine::OpDesc d = makeOp(weft::CollType::kSend, sendbuff, nullptr, count, raw(datatype), 0, peer);
    d.stream = stream;
    return submit(call, comm, d);
  });
}

WEFT_API weftResult_t weftRecv(void* recvbuff, size_t count, weftDataType_t datatype, int peer, weftComm_t comm,
                               weftStream_t stream) {
  return guarded("weftRecv", [&] {
    const char* call = "weftRecv";
    size_t es;
    weftResult_t r = checkCommon(call, comm, raw(datatype), false, 0, count, 1, &es);
    if (r != weftSuccess || (r = checkRoot(call, comm, peer, "peer")) != weftSuccess) return r;
    if ((r = checkBuffer(call, "recvbuff", recvbuff, es, count)) != weftSuccess) return r;
    if (count == 0) return weftSuccess;
    weft::engine::OpDesc d = makeOp(weft::CollType::kRecv, nullptr, recvbuff, count, raw(datatype), 0, peer);
    d.stream = stream;
    return submit(call, comm, d);
  });
}

namespace {
// The window exchanges of a group, per communicator in posting order. Each is collective and
// blocks until every rank of its communicator takes part; one thread may drive ranks of several
// communicators in one group (as with collectives), so communicators exchange concurrently, each
// on its own thread (which makes the posting thread's CUDA device current).
weftResult_t openPendingWindows(const std::vector<PendingWindow>& wins) {
  if (wins.empty()) return weftSuccess;
  std::vector<weftComm_t> comms;
  for (auto& p : wins)
    if (std::find(comms.begin(), comms.end(), p.comm) == comms.end()) comms.push_back(p.comm);
  std::vector<weft::Status> results(comms.size());
  auto runComm = [&](size_t i) {
    const int callerDevice = weft::device::currentDevice();  // restored after (inline: the caller's thread)
    struct Restore {
      int dev;
      ~Restore() { weft::device::selectDevice(dev); }
    } restore{callerDevice};
    try {
      weftComm_t c = comms[i];
      CallGuard guard(c);
      if (guard.busy()) {
        results[i] = weft::invalidUsage("another thread is in a call on this communicator");
        return;
      }
      for (auto& p : wins) {
        if (p.comm != c) continue;
        weft::device::selectDevice(p.device);
        std::string note;
        weft::Status s = weft::device::openWindow(c->impl->bootstrapRef(), p.buff, p.size,
                                                  weft::nowNs() + c->impl->config().initTimeoutMs * 1000000ull, &p.win->w, &note);
        if (!note.empty()) WEFT_INFO(INIT, "weftCommWindowRegister (group): %s", note.c_str());
        if (!s) {
          results[i] = s;
          return;
        }
      }
    } catch (const std::exception& e) {
      results[i] = weft::internalError(e.what());
    }
  };
  if (comms.size() == 1) {
    runComm(0);
  } else {
    std::vector<std::thread> threads;
    for (size_t i = 0; i < comms.size(); ++i) threads.emplace_back(runComm, i);
    for (auto& t : threads) t.join();
  }
  for (auto& s : results)
    if (!s) return report(s, "weftGroupEnd (window registration)");
  return weftSuccess;
}
}  // namespace

WEFT_API weftResult_t weftGroupStart(void) {
  ++tlsGroupDepth;
  return weftSuccess;
}

WEFT_API weftResult_t weftGroupEnd(void) {
  return guarded("weftGroupEnd", [&] {
    if (tlsGroupDepth == 0) return report(weft::invalidUsage("weftGroupEnd without weftGroupStart"), "weftGroupEnd");
    if (--tlsGroupDepth > 0) return weftSuccess;
    std::vector<PendingOp> ops;
    ops.swap(tlsGroupOps);
    std::vector<PendingWindow> wins;
    wins.swap(tlsGroupWindows);
    weft::device::DeviceGroup devGroup;
    std::swap(devGroup, tlsDeviceGroup);
    std::vector<weft::device::DeviceCall> devColls;
    devColls.swap(tlsGroupDeviceColls);
    weftResult_t winResult = openPendingWindows(wins);
    weftResult_t result = weftSuccess;
    // Device sends and receives (and the collectives kept with them): per communicator, kernels in
    // posting order (launched, not waited for). A communicator whose group also has host-buffer
    // operations runs neither: a host operation's peer may have posted its side on device buffers
    // (or the reverse), which no kernel and no host channel could match.
    std::vector<weftComm_t> refused;
    {
      std::vector<weft::device::DeviceGroup::Launch> launches;
      weft::Status gs = devGroup.launches(&launches);
      if (!gs) result = report(gs, "weftGroupEnd");
      std::vector<weftComm_t> devComms;
      for (auto& l : launches) {
        weftComm_t c = static_cast<weftComm_t>(const_cast<void*>(l.comm));
        if (std::find(devComms.begin(), devComms.end(), c) == devComms.end()) devComms.push_back(c);
      }
      for (weftComm_t c : devComms) {
        const bool mixed = std::any_of(ops.begin(), ops.end(), [&](const PendingOp& o) { return o.comm == c; });
        weft::Status s;
        if (mixed) {
          refused.push_back(c);
          s = weft::invalidUsage("a group mixes device-buffer sends/receives (or all-to-all) with host-buffer operations on "
                                 "one communicator: put them in separate groups (none of them was run)");
        } else {
          CallGuard guard(c);
          s = guard.busy() ? weft::invalidUsage("another thread is in a call on this communicator") : c->impl->asyncError();
          for (auto& l : launches) {
            if (!s) break;
            if (l.comm != c) continue;
            s = l.p2p ? c->device->runP2p(l.calls) : c->device->run(devColls[l.index]);
          }
        }
        if (!s && result == weftSuccess) result = report(s, "weftGroupEnd");
      }
    }
    // Host operations per communicator, in posting order.
    std::vector<weftComm_t> comms;
    for (auto& p : ops)
      if (std::find(comms.begin(), comms.end(), p.comm) == comms.end() &&
          std::find(refused.begin(), refused.end(), p.comm) == refused.end())
        comms.push_back(p.comm);
    for (weftComm_t c : comms) {
      std::vector<weft::engine::OpDesc> mine;
      for (auto& p : ops)
        if (p.comm == c) mine.push_back(p.op);
      CallGuard guard(c);
      weft::Status s = guard.busy() ? weft::invalidUsage("another thread is in a call on this communicator")
                                    : c->impl->runGroup(mine);
      if (!s && result == weftSuccess) result = report(s, "weftGroupEnd");
    }
    return winResult != weftSuccess ? winResult : result;
  });
}

WEFT_API weftResult_t weftCommRegister(const weftComm_t comm, void* buff, size_t size, void** handle) {
  return guarded("weftCommRegister", [&] {
    const char* call = "weftCommRegister";
    if (comm == nullptr) return argError(call, "comm is NULL");
    if (handle == nullptr) return argError(call, "handle is NULL");
    *handle = nullptr;
    if (buff == nullptr) return argError(call, "buff is NULL");
    if (size == 0) return argError(call, "size is 0");
    weft::Status s = ready(comm);
    if (!s) return report(s, call);
    auto r = std::make_unique<weftRegistration>();
    r->buf = buff;
    r->size = size;
    const weft::device::BufferInfo info = weft::device::describe(buff);
    if (info.kind == weft::device::MemKind::kDevice) {
      const uintptr_t a = reinterpret_cast<uintptr_t>(buff);
      if (info.size != 0 && (a < info.base || size > info.base + info.size - a))
        return argError(call, "[buff, buff + size) extends past the end of its CUDA allocation (" +
                                  std::to_string(info.base + info.size - a) + " bytes from buff)");
      r->device = true;
      if (!info.ipcCapable)
        WEFT_INFO(INIT, "%s: buffer %p is memory CUDA IPC cannot export (cuMem / expandable segments): it is staged",
                  call, buff);
    }
    std::lock_guard<std::mutex> g(comm->regMu);
    *handle = r.get();
    comm->regs.push_back(std::move(r));
    return weftSuccess;
  });
}

WEFT_API weftResult_t weftCommDeregister(const weftComm_t comm, void* handle) {
  return guarded("weftCommDeregister", [&] {
    const char* call = "weftCommDeregister";
    if (comm == nullptr) return argError(call, "comm is NULL");
    if (handle == nullptr) return argError(call, "handle is NULL");
    std::lock_guard<std::mutex> g(comm->regMu);
    auto it = std::find_if(comm->regs.begin(), comm->regs.end(), [&](const auto& r) { return r.get() == handle; });
    if (it == comm->regs.end())
      return argError(call, "handle was not registered on this communicator (or was deregistered already)");
    comm->regs.erase(it);
    return weftSuccess;
  });
}

WEFT_API weftResult_t weftCommWindowRegister(weftComm_t comm, void* buff, size_t size, weftWindow_t* win, int winFlags) {
  return guarded("weftCommWindowRegister", [&] {
    const char* call = "weftCommWindowRegister";
    if (comm == nullptr) return argError(call, "comm is NULL");
    if (win == nullptr) return argError(call, "win is NULL");
    *win = nullptr;
    if (buff == nullptr) return argError(call, "buff is NULL");
    if (size == 0) return argError(call, "size is 0");
    if ((winFlags & ~WEFT_WIN_COLL_SYMMETRIC) != 0)
      return argError(call, "winFlags " + std::to_string(winFlags) + " is not WEFT_WIN_DEFAULT or WEFT_WIN_COLL_SYMMETRIC");
    if ((winFlags & WEFT_WIN_COLL_SYMMETRIC) && reinterpret_cast<uintptr_t>(buff) % WEFT_WIN_REQUIRED_ALIGNMENT != 0)
      return argError(call, "a symmetric window must start on a WEFT_WIN_REQUIRED_ALIGNMENT (4096-byte) boundary");
    const weft::device::BufferInfo info = weft::device::describe(buff);
    if (info.kind == weft::device::MemKind::kDevice && info.size != 0) {
      const uintptr_t a = reinterpret_cast<uintptr_t>(buff);
      if (a < info.base || size > info.base + info.size - a)
        return argError(call, "[buff, buff + size) extends past the end of its CUDA allocation (" +
                                  std::to_string(info.base + info.size - a) + " bytes from buff)");
    }
    weft::Status s = ready(comm);
    if (!s) return report(s, call);
    if (tlsGroupDepth > 0) {
      // Collective: exchanged at weftGroupEnd (as NCCL does); *win is valid from now on.
      auto w = std::make_unique<weftWindow>();
      w->flags = winFlags;
      std::lock_guard<std::mutex> g(comm->regMu);
      tlsGroupWindows.push_back(PendingWindow{comm, w.get(), buff, size, weft::device::currentDevice()});
      *win = w.get();
      comm->windows.push_back(std::move(w));
      return weftSuccess;
    }
    CallGuard guard(comm);
    if (guard.busy()) return report(weft::invalidUsage("another thread is in a call on this communicator"), call);
    auto w = std::make_unique<weftWindow>();
    w->flags = winFlags;
    std::string note;
    s = weft::device::openWindow(comm->impl->bootstrapRef(), buff, size,
                                 weft::nowNs() + comm->impl->config().initTimeoutMs * 1000000ull, &w->w, &note);
    if (!s) return report(s, call);
    if (!note.empty()) WEFT_INFO(INIT, "%s: %s", call, note.c_str());
    std::lock_guard<std::mutex> g(comm->regMu);
    *win = w.get();
    comm->windows.push_back(std::move(w));
    return weftSuccess;
  });
}

WEFT_API weftResult_t weftCommWindowDeregister(weftComm_t comm, weftWindow_t win) {
  return guarded("weftCommWindowDeregister", [&] {
    const char* call = "weftCommWindowDeregister";
    if (comm == nullptr) return argError(call, "comm is NULL");
    if (win == nullptr) return argError(call, "win is NULL");
    std::lock_guard<std::mutex> g(comm->regMu);
    auto it = std::find_if(comm->windows.begin(), comm->windows.end(), [&](const auto& w) { return w.get() == win; });
    if (it == comm->windows.end())
      return argError(call, "win was not registered on this communicator (or was deregistered already)");
    weft::device::closeWindow(&(*it)->w);
    comm->windows.erase(it);
    return weftSuccess;
  });
}

}  // extern "C"
