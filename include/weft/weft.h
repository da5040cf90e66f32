/*
 * weft: collective communication for inference on RDMA clusters.
 *
 * The public C ABI. C99-clean, no C++ and no CUDA header needed. Shaped like NCCL's API so that
 * code written for NCCL ports by renaming ncclX -> weftX; every enum carries NCCL's numeric value.
 *
 * Threading: a communicator may be used by one thread at a time for collectives; weftCommAbort and
 * weftCommGetAsyncError may be called from any thread at any time.
 *
 * Memory kinds: the kind of memory is found from the buffer pointers, not from the stream. Pageable
 * host buffers run synchronously on the calling thread whatever the stream: the call returns when the
 * result is in recvbuff. (Device buffers, stream-ordered, come with the CUDA support.)
 */
#ifndef WEFT_WEFT_H_
#define WEFT_WEFT_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(WEFT_BUILDING_LIBRARY)
#define WEFT_API __attribute__((visibility("default")))
#else
#define WEFT_API
#endif

#define WEFT_MAJOR 0
#define WEFT_MINOR 1
#define WEFT_PATCH 0
/* NCCL-style version code: X*10000 + Y*100 + Z. */
#define WEFT_VERSION(X, Y, Z) ((X) * 10000 + (Y) * 100 + (Z))
#define WEFT_VERSION_CODE WEFT_VERSION(WEFT_MAJOR, WEFT_MINOR, WEFT_PATCH)

/* Result codes: 0-7 have NCCL's values; weftTimeout = 8 as in NCCL 2.30. */
typedef enum {
  weftSuccess = 0,
  weftUnhandledCudaError = 1,
  weftSystemError = 2,
  weftInternalError = 3,
  weftInvalidArgument = 4,
  weftInvalidUsage = 5,
  weftRemoteError = 6,
  weftInProgress = 7,
  weftTimeout = 8,
  weftNumResults = 9
} weftResult_t;

/* Data types, NCCL's values. */
typedef enum {
  weftInt8 = 0,
  weftChar = 0,
  weftUint8 = 1,
  weftInt32 = 2,
  weftInt = 2,
  weftUint32 = 3,
  weftInt64 = 4,
  weftUint64 = 5,
  weftFloat16 = 6,
  weftHalf = 6,
  weftFloat32 = 7,
  weftFloat = 7,
  weftFloat64 = 8,
  weftDouble = 8,
  weftBfloat16 = 9,
  weftFloat8e4m3 = 10,
  weftFloat8e5m2 = 11,
  weftNumTypes = 12
} weftDataType_t;

/*
 * Reduction operations, NCCL's values. The semantics, shared by every kernel:
 * - integers wrap modulo 2^n (sum and prod are computed unsigned);
 * - max and min propagate NaN (if any input is NaN the result is NaN);
 * - fp16, bf16 and fp8 are computed in fp32 and rounded to nearest-even to the type once per
 *   reduction step (once per hop); fp8 results saturate to the largest finite value (an infinite
 *   or overflowing result becomes +-max finite; NaN stays NaN);
 * - max(+0, -0) = +0 and min(+0, -0) = -0 whatever the order (IEEE 754-2019 maximum/minimum);
 * - denormals are kept (never flushed), whatever the calling thread's FTZ/DAZ setting;
 * - avg = the sum (with the rules above), then divided by the number of ranks once, by the rank
 *   that completes the sum: integers divide with C semantics (truncation toward zero, signed types
 *   as signed); fp32 and fp64 divide in their own precision; fp16, bf16 and fp8 divide in fp32 and
 *   round to nearest-even to the type.
 * Every rank receives bitwise the same result.
 */
typedef enum {
  weftSum = 0,
  weftProd = 1,
  weftMax = 2,
  weftMin = 3,
  weftAvg = 4,
  weftNumOps = 5
} weftRedOp_t;

/* ABI-identical to cudaStream_t; no CUDA header needed. NULL is the default stream. */
typedef struct CUstream_st* weftStream_t;

/* An opaque communicator. */
typedef struct weftComm* weftComm_t;
#define WEFT_COMM_NULL NULL

/* 128 bytes, passed by value as NCCL's ncclUniqueId. Holds the root's address, a 128-bit random
 * secret and the library version; a wrong or corrupted id is refused with a clear error. */
#define WEFT_UNIQUE_ID_BYTES 128
typedef struct {
  char internal[WEFT_UNIQUE_ID_BYTES];
} weftUniqueId;

/* The library's version code (WEFT_VERSION_CODE of the build that was loaded). */
WEFT_API weftResult_t weftGetVersion(int* version);

/* A static English sentence for a result code. */
WEFT_API const char* weftGetErrorString(weftResult_t result);

/* A sentence naming what went wrong in the last failing call on this thread (or, if none, the
 * communicator's asynchronous error), and what to do. Never NULL; "" when nothing failed. */
WEFT_API const char* weftGetLastError(weftComm_t comm);

/* Create a bootstrap id on one process and give it to every rank out of band. The calling process
 * serves the rendezvous (a background thread) until every rank has arrived or init times out
 * (WEFT_INIT_TIMEOUT_MS), so it must stay alive until the communicator is created. */
WEFT_API weftResult_t weftGetUniqueId(weftUniqueId* uniqueId);

/* Collective: every rank of [0, nranks) calls it once with the same id. Returns when all ranks have
 * arrived, or with weftTimeout naming the missing ranks after WEFT_INIT_TIMEOUT_MS. */
WEFT_API weftResult_t weftCommInitRank(weftComm_t* comm, int nranks, weftUniqueId commId, int rank);

/* Free local resources. Local (not collective) and never blocks on peers. */
WEFT_API weftResult_t weftCommDestroy(weftComm_t comm);

/* Callable from any thread: a call blocked on this communicator returns within 100 ms, the peers
 * are told (their calls fail with weftRemoteError), then the communicator is freed. */
WEFT_API weftResult_t weftCommAbort(weftComm_t comm);

WEFT_API weftResult_t weftCommCount(const weftComm_t comm, int* count);
WEFT_API weftResult_t weftCommUserRank(const weftComm_t comm, int* rank);

/* The communicator's sticky error: weftSuccess, or the error (remote failure, timeout, mismatch)
 * that made it unusable. Callable from any thread. */
WEFT_API weftResult_t weftCommGetAsyncError(weftComm_t comm, weftResult_t* asyncError);

/* Bytes of staging buffers the communicator holds (connections and their buffers are created on
 * first use, sized by WEFT_BUFFSIZE). */
WEFT_API weftResult_t weftCommMemStats(const weftComm_t comm, size_t* stagingBytes);

/* Reduce count elements across all ranks with op; every rank gets the result in recvbuff.
 * In place when sendbuff == recvbuff; any other overlap is weftInvalidArgument. Buffers must be
 * aligned to the element size (as any C array of that type is).
 * count == 0 succeeds with NULL buffers. Host buffers: synchronous on the calling thread. */
WEFT_API weftResult_t weftAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                                    weftDataType_t datatype, weftRedOp_t op, weftComm_t comm,
                                    weftStream_t stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* WEFT_WEFT_H_ */
