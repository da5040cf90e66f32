// The C ABI: validate arguments, build the Op, hand it to the engine. No exception or C++ type
// crosses this boundary; every failure leaves a sentence for weftGetLastError.
#include "weft/weft.h"

#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <thread>

#include "lib/bootstrap/root.h"
#include "lib/bootstrap/unique_id.h"
#include "lib/core/log.h"
#include "lib/core/status.h"
#include "lib/core/types.h"
#include "lib/core/util.h"
#include "lib/core/version.h"
#include "lib/engine/communicator.h"

static_assert(weft::kLibraryVersion == WEFT_VERSION_CODE, "lib/core/version.h and weft.h disagree");
static_assert(sizeof(weftUniqueId) == weft::bootstrap::kUniqueIdBytes);
static_assert(static_cast<int>(weftFloat8e5m2) == static_cast<int>(weft::DataType::kFloat8e5m2));
static_assert(static_cast<int>(weftAvg) == static_cast<int>(weft::RedOp::kAvg));
static_assert(static_cast<int>(weftTimeout) == static_cast<int>(weft::Code::kTimeout));

struct weftComm {
  std::unique_ptr<weft::engine::Communicator> impl;
};

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

// Runs f, turning any escaping C++ exception into weftInternalError.
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

// One call at a time per communicator; weftCommAbort waits for calls to leave before freeing.
class CallGuard {
 public:
  explicit CallGuard(weftComm* c) : c_(c) { busy_ = c_->impl->activeCalls.fetch_add(1) != 0; }
  ~CallGuard() { c_->impl->activeCalls.fetch_sub(1); }
  bool busy() const { return busy_; }

 private:
  weftComm* c_;
  bool busy_;
};

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
      weft::Status s = comm->impl->asyncError();
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

WEFT_API weftResult_t weftCommInitRank(weftComm_t* comm, int nranks, weftUniqueId commId, int rank) {
  return guarded("weftCommInitRank", [&] {
    const char* call = "weftCommInitRank";
    if (comm == nullptr) return argError(call, "comm is NULL: pass the address of a weftComm_t");
    *comm = nullptr;
    if (nranks < 1) return argError(call, "nranks=" + std::to_string(nranks) + " must be at least 1");
    if (rank < 0 || rank >= nranks)
      return argError(call, "rank=" + std::to_string(rank) + " is outside [0, nranks=" + std::to_string(nranks) + ")");
    weft::bootstrap::UniqueId id;
    weft::Status s = weft::bootstrap::decodeUniqueId(reinterpret_cast<const unsigned char*>(commId.internal), &id);
    if (!s) return report(s, call);
    auto c = std::make_unique<weftComm>();
    s = weft::engine::Communicator::create(id, nranks, rank, &c->impl);
    if (!s) return report(s, call);
    *comm = c.release();
    return weftSuccess;
  });
}

WEFT_API weftResult_t weftCommDestroy(weftComm_t comm) {
  return guarded("weftCommDestroy", [&] {
    if (comm == nullptr) return weftSuccess;
    if (comm->impl->activeCalls.load() != 0)
      return report(weft::invalidUsage("the communicator is in use by another thread; use weftCommAbort to "
                                       "interrupt it"),
                    "weftCommDestroy");
    delete comm;
    return weftSuccess;
  });
}

WEFT_API weftResult_t weftCommAbort(weftComm_t comm) {
  return guarded("weftCommAbort", [&] {
    if (comm == nullptr) return weftSuccess;
    comm->impl->requestAbort();
    // A blocked call notices the flag within one poll slice (10 ms); wait for it to leave.
    while (comm->impl->activeCalls.load() != 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    delete comm;
    return weftSuccess;
  });
}

WEFT_API weftResult_t weftCommCount(const weftComm_t comm, int* count) {
  if (comm == nullptr) return argError("weftCommCount", "comm is NULL");
  if (count == nullptr) return argError("weftCommCount", "count is NULL");
  *count = comm->impl->nranks();
  return weftSuccess;
}

WEFT_API weftResult_t weftCommUserRank(const weftComm_t comm, int* rank) {
  if (comm == nullptr) return argError("weftCommUserRank", "comm is NULL");
  if (rank == nullptr) return argError("weftCommUserRank", "rank is NULL");
  *rank = comm->impl->rank();
  return weftSuccess;
}

WEFT_API weftResult_t weftCommGetAsyncError(weftComm_t comm, weftResult_t* asyncError) {
  return guarded("weftCommGetAsyncError", [&] {
    if (comm == nullptr) return argError("weftCommGetAsyncError", "comm is NULL");
    if (asyncError == nullptr) return argError("weftCommGetAsyncError", "asyncError is NULL");
    *asyncError = toResult(comm->impl->asyncError().code());
    return weftSuccess;
  });
}

WEFT_API weftResult_t weftCommMemStats(const weftComm_t comm, size_t* stagingBytes) {
  if (comm == nullptr) return argError("weftCommMemStats", "comm is NULL");
  if (stagingBytes == nullptr) return argError("weftCommMemStats", "stagingBytes is NULL");
  *stagingBytes = comm->impl->stagingBytes();
  return weftSuccess;
}

WEFT_API weftResult_t weftAllReduce(const void* sendbuff, void* recvbuff, size_t count, weftDataType_t datatype,
                                    weftRedOp_t op, weftComm_t comm, weftStream_t stream) {
  (void)stream;  // host buffers run synchronously whatever the stream
  return guarded("weftAllReduce", [&] {
    const char* call = "weftAllReduce";
    if (comm == nullptr) return argError(call, "comm is NULL");
    if (static_cast<int>(datatype) < 0 || static_cast<int>(datatype) >= weftNumTypes)
      return argError(call, "datatype " + std::to_string(static_cast<int>(datatype)) +
                                " is not a weftDataType_t (0-11: int8 ... fp8 e5m2)");
    if (static_cast<int>(op) < 0 || static_cast<int>(op) >= weftNumOps)
      return argError(call, "op " + std::to_string(static_cast<int>(op)) + " is not a weftRedOp_t (0-4: sum, prod, max, min, avg)");
    auto dtype = static_cast<weft::DataType>(datatype);
    size_t esize = weft::typeSize(dtype);
    if (count > static_cast<size_t>(PTRDIFF_MAX) / esize)
      return argError(call, "count " + std::to_string(count) + " of " + weft::typeName(dtype) +
                                " overflows the address space");
    if (count == 0) return weftSuccess;
    if (sendbuff == nullptr || recvbuff == nullptr)
      return argError(call, std::string(sendbuff == nullptr ? "sendbuff" : "recvbuff") + " is NULL with count " +
                                std::to_string(count));
    if (reinterpret_cast<uintptr_t>(sendbuff) % esize != 0 || reinterpret_cast<uintptr_t>(recvbuff) % esize != 0)
      return argError(call, std::string("sendbuff and recvbuff must be aligned to the element size (") +
                                std::to_string(esize) + " bytes for " + weft::typeName(dtype) + ")");
    size_t bytes = count * esize;
    auto s0 = reinterpret_cast<uintptr_t>(sendbuff), r0 = reinterpret_cast<uintptr_t>(recvbuff);
    if (s0 != r0 && s0 < r0 + bytes && r0 < s0 + bytes)
      return argError(call, "sendbuff and recvbuff overlap without being equal: use sendbuff == recvbuff for in-place, "
                            "or separate buffers");
    CallGuard guard(comm);
    if (guard.busy())
      return report(weft::invalidUsage("another thread is already in a call on this communicator: one thread at a "
                                       "time may use a communicator"),
                    call);
    weft::engine::OpDesc d;
    d.coll = weft::CollType::kAllReduce;
    d.sendbuff = sendbuff;
    d.recvbuff = recvbuff;
    d.count = count;
    d.dtype = dtype;
    d.op = static_cast<weft::RedOp>(op);
    return report(comm->impl->run(d), call);
  });
}

}  // extern "C"
