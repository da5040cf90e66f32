/*
 * sendrecv_group: point to point inside a group, then an all-gather.
 *
 *   sendrecv_group <nranks> <rank> <id-file>
 *
 * Every rank sends a block to rank+1 and receives one from rank-1 (a ring shift). Both calls go
 * between weftGroupStart and weftGroupEnd: nothing runs until weftGroupEnd, which runs them
 * together, so the order they are posted in does not matter (even ranks post the send first, odd
 * ranks the receive, and nothing deadlocks). Then an all-gather collects one value per rank, and
 * every rank checks both results.
 *
 * The id travels as in allreduce.c: rank 0 creates it and writes <id-file>, the others read it.
 *
 * Build: cc -std=c99 sendrecv_group.c $(pkg-config --cflags --libs weft) -o sendrecv_group
 * Run:   ./sendrecv_group 3 0 /tmp/weft.id & ./sendrecv_group 3 1 /tmp/weft.id & \
 *        ./sendrecv_group 3 2 /tmp/weft.id
 */
#define _POSIX_C_SOURCE 200809L

#include <weft/weft.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define COUNT 4096
#define ID_WAIT_SECONDS 60

static weftComm_t comm = NULL;

#define CHECK(call)                                                                           \
  do {                                                                                        \
    weftResult_t res_ = (call);                                                               \
    if (res_ != weftSuccess) {                                                                \
      fprintf(stderr, "sendrecv_group: %s failed: %s (%s)\n", #call, weftGetErrorString(res_), \
              weftGetLastError(comm));                                                        \
      return 1;                                                                               \
    }                                                                                         \
  } while (0)

/* Write the id to path atomically: a temporary file in the same directory, then rename. */
static int publishId(const char* path, const weftUniqueId* id) {
  char tmp[4096];
  FILE* f;
  if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
    fprintf(stderr, "sendrecv_group: id file path too long\n");
    return -1;
  }
  f = fopen(tmp, "wb");
  if (!f || fwrite(id->internal, 1, WEFT_UNIQUE_ID_BYTES, f) != WEFT_UNIQUE_ID_BYTES ||
      fflush(f) != 0 || fsync(fileno(f)) != 0) {
    fprintf(stderr, "sendrecv_group: cannot write %s: %s\n", tmp, strerror(errno));
    if (f) fclose(f);
    unlink(tmp);
    return -1;
  }
  fclose(f);
  if (rename(tmp, path) != 0) {
    fprintf(stderr, "sendrecv_group: cannot rename %s to %s: %s\n", tmp, path, strerror(errno));
    unlink(tmp);
    return -1;
  }
  return 0;
}

/* Wait (up to ID_WAIT_SECONDS) for rank 0 to publish the id. */
static int readId(const char* path, weftUniqueId* id) {
  const struct timespec tick = {0, 100 * 1000 * 1000}; /* 100 ms */
  int i;
  for (i = 0; i < ID_WAIT_SECONDS * 10; ++i) {
    FILE* f = fopen(path, "rb");
    if (f) {
      size_t n = fread(id->internal, 1, WEFT_UNIQUE_ID_BYTES, f);
      fclose(f);
      if (n == WEFT_UNIQUE_ID_BYTES) return 0;
    }
    nanosleep(&tick, NULL);
  }
  fprintf(stderr, "sendrecv_group: no id in %s after %d s (is rank 0 running?)\n", path,
          ID_WAIT_SECONDS);
  return -1;
}

/* The value rank r puts at index i of the block it sends. */
static int32_t blockValue(int r, int i) { return (int32_t)(r * 100000 + i); }

int main(int argc, char** argv) {
  int nranks, rank, next, prev, i, wrong = 0;
  weftUniqueId id;
  int32_t* sendbuf;
  int32_t* recvbuf;
  int32_t mine;
  int32_t* all;

  if (argc != 4 || (nranks = atoi(argv[1])) < 1 || (rank = atoi(argv[2])) < 0 || rank >= nranks) {
    fprintf(stderr, "usage: %s <nranks> <rank> <id-file>\n", argv[0]);
    return 2;
  }
  if (rank == 0) {
    CHECK(weftGetUniqueId(&id));
    if (publishId(argv[3], &id) != 0) return 1;
  } else if (readId(argv[3], &id) != 0) {
    return 1;
  }
  CHECK(weftCommInitRank(&comm, nranks, id, rank));
  if (rank == 0) unlink(argv[3]);

  sendbuf = malloc(COUNT * sizeof(int32_t));
  recvbuf = malloc(COUNT * sizeof(int32_t));
  all = malloc((size_t)nranks * sizeof(int32_t));
  if (!sendbuf || !recvbuf || !all) {
    fprintf(stderr, "sendrecv_group: out of memory\n");
    return 1;
  }
  for (i = 0; i < COUNT; ++i) {
    sendbuf[i] = blockValue(rank, i);
    recvbuf[i] = -1;
  }

  /* Ring shift: send to the next rank, receive from the previous one, in one group. */
  next = (rank + 1) % nranks;
  prev = (rank + nranks - 1) % nranks;
  CHECK(weftGroupStart());
  if (rank % 2 == 0) {
    CHECK(weftSend(sendbuf, COUNT, weftInt32, next, comm, NULL));
    CHECK(weftRecv(recvbuf, COUNT, weftInt32, prev, comm, NULL));
  } else {
    CHECK(weftRecv(recvbuf, COUNT, weftInt32, prev, comm, NULL));
    CHECK(weftSend(sendbuf, COUNT, weftInt32, next, comm, NULL));
  }
  CHECK(weftGroupEnd()); /* both have completed when this returns (host buffers) */
  for (i = 0; i < COUNT; ++i) {
    if (recvbuf[i] != blockValue(prev, i)) ++wrong;
  }

  /* All-gather: rank r's value lands at all[r] on every rank. */
  mine = (int32_t)(rank * rank + 7);
  CHECK(weftAllGather(&mine, all, 1, weftInt32, comm, NULL));
  for (i = 0; i < nranks; ++i) {
    if (all[i] != (int32_t)(i * i + 7)) ++wrong;
  }

  printf("rank %d of %d: received %d ints from rank %d (recvbuf[1] = %d), gathered %d values, %s\n",
         rank, nranks, COUNT, prev, (int)recvbuf[1], nranks, wrong ? "WRONG" : "OK");

  CHECK(weftCommDestroy(comm));
  free(sendbuf);
  free(recvbuf);
  free(all);
  return wrong ? 1 : 0;
}
