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
 * result is in recvbuff. Device (CUDA) buffers, in a build with CUDA, are stream-ordered: the call
 * returns once the work is queued on `stream`, and may be captured into a CUDA graph. One call's
 * buffers must be of one kind.
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

/* Free local resources. Local (not collective) and never blocks on peers, with one exception: a
 * communicator whose device-buffer path spans several processes (CUDA IPC) waits, up to 10 s, for
 * every rank to destroy too before freeing the staging peers may still read (if they do not come,
 * that staging stays allocated until the process exits). */
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

/* ---- Buffer registration (NCCL 2.28's signatures) ----
 * Registration is an optimisation hint: unregistered buffers always work. Device buffers are always
 * moved through the communicator's staging (peers do not yet read registered buffers in place).
 * Host buffers are accepted and give a handle that does nothing. Device memory that CUDA IPC
 * cannot export (cuMem / expandable segments) is accepted with one INFO line: it is staged.
 * weftCommRegister/Deregister are local. weftCommWindowRegister is collective (every rank calls it,
 * in the same order): the ranks exchange their buffers' CUDA IPC handles once and open those of
 * peers in other processes; weftCommWindowDeregister is local (closes them). Handles and windows
 * left registered are released by weftCommDestroy/weftCommAbort. */
typedef struct weftWindow* weftWindow_t;
#define WEFT_WIN_DEFAULT 0x00
#define WEFT_WIN_COLL_SYMMETRIC 0x01
#define WEFT_WIN_REQUIRED_ALIGNMENT 4096
WEFT_API weftResult_t weftCommRegister(const weftComm_t comm, void* buff, size_t size, void** handle);
WEFT_API weftResult_t weftCommDeregister(const weftComm_t comm, void* handle);
WEFT_API weftResult_t weftCommWindowRegister(weftComm_t comm, void* buff, size_t size, weftWindow_t* win, int winFlags);
WEFT_API weftResult_t weftCommWindowDeregister(weftComm_t comm, weftWindow_t win);

/* ---- Communicator creation with a config, from the launcher's environment, and by split ---- */

/* A config built to grow: callers initialise it with WEFT_CONFIG_INITIALIZER (size, magic and the
 * header's version come first), then set the fields they care about; undefined fields keep the
 * defaults and the WEFT_* environment. Readers use `size` to know which fields the caller has. */
#define WEFT_CONFIG_MAGIC 0xcafebeefu
#define WEFT_CONFIG_UNDEF_INT (-2147483647 - 1)
#define WEFT_CONFIG_UNDEF_PTR NULL
typedef struct weftConfig_v1 {
  size_t size;          /* sizeof(weftConfig_t) of the caller's header */
  unsigned int magic;   /* WEFT_CONFIG_MAGIC */
  unsigned int version; /* WEFT_VERSION_CODE of the caller's header */
  int blocking;         /* 1 (default): init returns when done; 0: init returns weftInProgress and
                           completes in the background (poll weftCommGetAsyncError) */
  int initTimeoutMs;    /* overrides WEFT_INIT_TIMEOUT_MS */
  int timeoutMs;        /* overrides WEFT_TIMEOUT_MS (time without progress in a call; 0 = none) */
  int buffSize;         /* overrides WEFT_BUFFSIZE (staging bytes per connection direction) */
  const char* commName; /* a name for log lines */
} weftConfig_t;
#define WEFT_CONFIG_INITIALIZER                                                           \
  {                                                                                       \
    sizeof(weftConfig_t), WEFT_CONFIG_MAGIC, WEFT_VERSION_CODE, WEFT_CONFIG_UNDEF_INT,    \
        WEFT_CONFIG_UNDEF_INT, WEFT_CONFIG_UNDEF_INT, WEFT_CONFIG_UNDEF_INT, WEFT_CONFIG_UNDEF_PTR \
  }

/* weftCommInitRank with a config (NULL = defaults). */
WEFT_API weftResult_t weftCommInitRankConfig(weftComm_t* comm, int nranks, weftUniqueId commId, int rank,
                                             weftConfig_t* config);

/* Create a communicator from the launcher's environment, with no id to pass around:
 * rank, size, local rank from WEFT_RANK/WEFT_NRANKS/WEFT_LOCAL_RANK, else Open MPI's
 * OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK}, else Slurm's SLURM_{PROCID,NTASKS,LOCALID}, else torchrun's
 * RANK/WORLD_SIZE/LOCAL_RANK. Rendezvous at WEFT_COMM_ID=host:port, else MASTER_ADDR with port
 * MASTER_PORT+1 (torchrun's own store keeps MASTER_PORT), else the first host of
 * SLURM_STEP_NODELIST with port 20000 + SLURM_JOB_ID % 20000; rank 0 serves it. The secret is
 * WEFT_COMM_SECRET, else the job id (SLURM_JOB_ID, OMPI_MCA_ess_base_jobid, TORCHELASTIC_RUN_ID):
 * a guard against mixing two jobs' ranks, not security. */
WEFT_API weftResult_t weftCommInitFromEnv(weftComm_t* comm, weftConfig_t* config);

/* Collective over comm: ranks with the same color form a new communicator, ordered by key (then by
 * their rank in comm). color WEFT_SPLIT_NOCOLOR returns *newcomm = NULL. config NULL inherits the
 * parent's settings. */
#define WEFT_SPLIT_NOCOLOR (-1)
WEFT_API weftResult_t weftCommSplit(weftComm_t comm, int color, int key, weftComm_t* newcomm, weftConfig_t* config);

/* ---- Collectives and point to point (host buffers: synchronous on the calling thread) ---- */

/* Reduce count elements across all ranks with op; every rank gets the result in recvbuff.
 * In place when sendbuff == recvbuff; any other overlap is weftInvalidArgument. Buffers must be
 * aligned to the element size (as any C array of that type is).
 * count == 0 succeeds with NULL buffers. Host buffers: synchronous on the calling thread. */
WEFT_API weftResult_t weftAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                                    weftDataType_t datatype, weftRedOp_t op, weftComm_t comm,
                                    weftStream_t stream);

/* root's sendbuff (count elements) lands in every rank's recvbuff. In place when sendbuff ==
 * recvbuff; sendbuff is only read on root and may be NULL elsewhere. */
WEFT_API weftResult_t weftBroadcast(const void* sendbuff, void* recvbuff, size_t count, weftDataType_t datatype,
                                    int root, weftComm_t comm, weftStream_t stream);
/* Legacy in-place broadcast. */
WEFT_API weftResult_t weftBcast(void* buff, size_t count, weftDataType_t datatype, int root, weftComm_t comm,
                                weftStream_t stream);

/* Reduce to root: recvbuff is only written on root and may be NULL elsewhere. In place when
 * sendbuff == recvbuff. */
WEFT_API weftResult_t weftReduce(const void* sendbuff, void* recvbuff, size_t count, weftDataType_t datatype,
                                 weftRedOp_t op, int root, weftComm_t comm, weftStream_t stream);

/* recvbuff holds nranks * sendcount elements, rank i's at offset i * sendcount. In place when
 * sendbuff == recvbuff + rank * sendcount (in elements). */
WEFT_API weftResult_t weftAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, weftDataType_t datatype,
                                    weftComm_t comm, weftStream_t stream);

/* sendbuff holds nranks * recvcount elements; block i reduced over ranks lands on rank i. In place
 * when recvbuff == sendbuff + rank * recvcount (in elements). */
WEFT_API weftResult_t weftReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                                        weftDataType_t datatype, weftRedOp_t op, weftComm_t comm,
                                        weftStream_t stream);

/* Block j (count elements) of sendbuff goes to rank j and lands at recvbuff + rank * count there.
 * In place when sendbuff == recvbuff. */
WEFT_API weftResult_t weftAlltoAll(const void* sendbuff, void* recvbuff, size_t count, weftDataType_t datatype,
                                   weftComm_t comm, weftStream_t stream);

/* Returns when every rank has entered it. */
WEFT_API weftResult_t weftBarrier(weftComm_t comm, weftStream_t stream);

/* Point to point: a send matches the peer's receive in posting order; count and type must agree.
 * Outside a group each call completes before it returns; inside a group (weftGroupStart/End) sends
 * and receives may be posted in any order on each rank and still complete.
 * Device buffers: stream-ordered; the device sends and receives (and all-to-alls) of one
 * communicator in a group run at weftGroupEnd, in posting order with that communicator's device
 * collectives posted after the first of them, consecutive ones as one kernel on one stream; a group
 * may not mix them with host-buffer operations of that communicator, nor have device sends/receives
 * on two communicators, nor need more blocks (one per peer and direction) than the communicator's
 * grid bound (weftInvalidUsage). A send to itself needs its receive in the same group. A count
 * mismatch is reported by weftCommGetAsyncError. */
WEFT_API weftResult_t weftSend(const void* sendbuff, size_t count, weftDataType_t datatype, int peer,
                               weftComm_t comm, weftStream_t stream);
WEFT_API weftResult_t weftRecv(void* recvbuff, size_t count, weftDataType_t datatype, int peer, weftComm_t comm,
                               weftStream_t stream);

/* Groups: nothing runs until the outermost weftGroupEnd, which runs every operation posted since the
 * outermost weftGroupStart (buffers must stay valid until then). Collectives inside a group keep
 * their order, which must be the same on every rank. */
WEFT_API weftResult_t weftGroupStart(void);
WEFT_API weftResult_t weftGroupEnd(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* WEFT_WEFT_H_ */
