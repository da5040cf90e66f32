/*
 * allreduce: the smallest complete weft program.
 *
 *   allreduce <nranks> <rank> <id-file>
 *
 * Start it once per rank (on one host or several hosts that share a file system). Rank 0 creates
 * the bootstrap id and publishes it in <id-file> (written to a temporary file and renamed, so
 * readers never see half a file); the other ranks wait for the file, then every rank joins the
 * communicator, sums a float buffer across all ranks and checks the result.
 *
 * Use a fresh <id-file> path per job (a stale file from an earlier run holds a dead id); rank 0
 * removes it once every rank has joined.
 *
 * Build: cc -std=c99 allreduce.c $(pkg-config --cflags --libs weft) -o allreduce
 *   or   cmake -S examples -B build-examples -DCMAKE_PREFIX_PATH=<weft prefix>
 * Run:   ./allreduce 2 0 /tmp/weft.id & ./allreduce 2 1 /tmp/weft.id
 */
#define _POSIX_C_SOURCE 200809L

#include <weft/weft.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define COUNT 1024
#define ID_WAIT_SECONDS 60

static weftComm_t comm = NULL;

#define CHECK(call)                                                                      \
  do {                                                                                   \
    weftResult_t res_ = (call);                                                          \
    if (res_ != weftSuccess) {                                                           \
      fprintf(stderr, "allreduce: %s failed: %s (%s)\n", #call, weftGetErrorString(res_), \
              weftGetLastError(comm));                                                   \
      return 1;                                                                          \
    }                                                                                    \
  } while (0)

/* Write the id to path atomically: a temporary file in the same directory, then rename. */
static int publishId(const char* path, const weftUniqueId* id) {
  char tmp[4096];
  FILE* f;
  if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
    fprintf(stderr, "allreduce: id file path too long\n");
    return -1;
  }
  f = fopen(tmp, "wb");
  if (!f || fwrite(id->internal, 1, WEFT_UNIQUE_ID_BYTES, f) != WEFT_UNIQUE_ID_BYTES ||
      fflush(f) != 0 || fsync(fileno(f)) != 0) {
    fprintf(stderr, "allreduce: cannot write %s: %s\n", tmp, strerror(errno));
    if (f) fclose(f);
    unlink(tmp);
    return -1;
  }
  fclose(f);
  if (rename(tmp, path) != 0) {
    fprintf(stderr, "allreduce: cannot rename %s to %s: %s\n", tmp, path, strerror(errno));
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
  fprintf(stderr, "allreduce: no id in %s after %d s (is rank 0 running?)\n", path,
          ID_WAIT_SECONDS);
  return -1;
}

int main(int argc, char** argv) {
  int nranks, rank, i, wrong = 0;
  weftUniqueId id;
  float* sendbuf;
  float* recvbuf;
  float expected0;

  if (argc != 4 || (nranks = atoi(argv[1])) < 1 || (rank = atoi(argv[2])) < 0 || rank >= nranks) {
    fprintf(stderr, "usage: %s <nranks> <rank> <id-file>\n", argv[0]);
    return 2;
  }

  if (rank == 0) {
    /* The rendezvous runs in this process until every rank has joined. */
    CHECK(weftGetUniqueId(&id));
    if (publishId(argv[3], &id) != 0) return 1;
  } else if (readId(argv[3], &id) != 0) {
    return 1;
  }

  CHECK(weftCommInitRank(&comm, nranks, id, rank));
  if (rank == 0) unlink(argv[3]); /* everyone has joined: the id is no longer needed */

  sendbuf = malloc(COUNT * sizeof(float));
  recvbuf = malloc(COUNT * sizeof(float));
  if (!sendbuf || !recvbuf) {
    fprintf(stderr, "allreduce: out of memory\n");
    return 1;
  }
  /* Small integers: every summation order gives the same exact result. */
  for (i = 0; i < COUNT; ++i) sendbuf[i] = (float)(rank + 1 + i % 7);

  CHECK(weftAllReduce(sendbuf, recvbuf, COUNT, weftFloat, weftSum, comm, NULL));

  for (i = 0; i < COUNT; ++i) {
    /* sum over r of (r + 1 + i % 7) */
    float expected = (float)(nranks * (nranks + 1) / 2 + nranks * (i % 7));
    if (recvbuf[i] != expected) ++wrong;
  }
  expected0 = (float)(nranks * (nranks + 1) / 2);
  printf("rank %d of %d: sum of %d floats: recvbuf[0] = %g (expected %g), %s\n", rank, nranks,
         COUNT, recvbuf[0], expected0, wrong ? "WRONG" : "OK");

  CHECK(weftCommDestroy(comm));
  free(sendbuf);
  free(recvbuf);
  return wrong ? 1 : 0;
}
