/*
 * weft-mpi-bench: the MPI side of `weft-bench --compare mpi`. Times the same collective at the same
 * element counts with MPI, so weft-bench can print both side by side. Started by weft-bench as
 *
 *   mpirun --allow-run-as-root --oversubscribe -np N --mca btl tcp,self --mca pml ob1 \
 *       weft-mpi-bench <coll> -n iters -w warmup -m agg -a average <spec>...
 *
 *   coll: all_reduce all_gather reduce_scatter broadcast reduce alltoall sendrecv
 *   spec: <type>:<op>:<root>:<count>[,<count>...]   (weft-bench's type and op names; op "none" for
 *         the collectives that only move data; root -1 when the collective has none; counts are
 *         the per-rank counts weft is called with)
 *
 * Output (rank 0): '#' comment lines, then per count "R <type> <op> <root> <count> <usec>", where
 * usec is the time per operation combined across ranks like weft-bench's -a (0 rank 0, 1 mean,
 * 2 min, 3 max), or "-" when MPI has no such type or op (half, bfloat16, fp8 reductions; avg).
 * Timing as weft-bench's: warm-up at the largest and the smallest count, a barrier, then iters
 * iterations of agg operations between two timer reads. Out-of-place only. A seventh field gives
 * the minor+major page faults per operation during the timed loop (getrusage of the process, the
 * largest over ranks).
 */
#include <mpi.h>

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static int rank_, nranks_;

static void die(const char* msg) {
  if (rank_ == 0) fprintf(stderr, "weft-mpi-bench: %s\n", msg);
  MPI_Abort(MPI_COMM_WORLD, 2);
  exit(2);
}

enum { AllReduce, AllGather, ReduceScatter, Broadcast, Reduce, AllToAll, SendRecv };
static const char* const kCollNames[] = {"all_reduce", "all_gather", "reduce_scatter", "broadcast",
                                         "reduce", "alltoall", "sendrecv"};

/* Element size and MPI type of a weft-bench type name; *reducible = MPI can reduce it. The 16-bit
 * and 8-bit floats travel as unsigned integers of their width when only moved. */
static int typeOf(const char* name, MPI_Datatype* dt, size_t* size, int* reducible) {
  *reducible = 1;
  if (!strcmp(name, "int8")) { *dt = MPI_INT8_T; *size = 1; }
  else if (!strcmp(name, "uint8")) { *dt = MPI_UINT8_T; *size = 1; }
  else if (!strcmp(name, "int32")) { *dt = MPI_INT32_T; *size = 4; }
  else if (!strcmp(name, "uint32")) { *dt = MPI_UINT32_T; *size = 4; }
  else if (!strcmp(name, "int64")) { *dt = MPI_INT64_T; *size = 8; }
  else if (!strcmp(name, "uint64")) { *dt = MPI_UINT64_T; *size = 8; }
  else if (!strcmp(name, "float")) { *dt = MPI_FLOAT; *size = 4; }
  else if (!strcmp(name, "double")) { *dt = MPI_DOUBLE; *size = 8; }
  else if (!strcmp(name, "half") || !strcmp(name, "bfloat16")) { *dt = MPI_UINT16_T; *size = 2; *reducible = 0; }
  else if (!strcmp(name, "f8e4m3") || !strcmp(name, "f8e5m2")) { *dt = MPI_UINT8_T; *size = 1; *reducible = 0; }
  else return 0;
  return 1;
}

/* MPI op of a weft-bench op name; 0 when MPI has none (avg). */
static int opOf(const char* name, MPI_Op* op) {
  if (!strcmp(name, "sum")) *op = MPI_SUM;
  else if (!strcmp(name, "prod")) *op = MPI_PROD;
  else if (!strcmp(name, "max")) *op = MPI_MAX;
  else if (!strcmp(name, "min")) *op = MPI_MIN;
  else if (!strcmp(name, "none")) *op = MPI_OP_NULL;
  else return 0;
  return 1;
}

/* Ones of the type (so products and sums stay normal numbers). */
static void fillOnes(void* buf, size_t elems, size_t size, MPI_Datatype dt) {
  size_t i;
  if (dt == MPI_FLOAT) {
    for (i = 0; i < elems; ++i) ((float*)buf)[i] = 1.0f;
  } else if (dt == MPI_DOUBLE) {
    for (i = 0; i < elems; ++i) ((double*)buf)[i] = 1.0;
  } else {
    memset(buf, 0, elems * size);
    for (i = 0; i < elems; ++i) ((unsigned char*)buf)[i * size] = 1; /* little-endian 1 */
  }
}

static void runOp(int coll, const void* s, void* r, int count, MPI_Datatype dt, MPI_Op op, int root) {
  const int next = (rank_ + 1) % nranks_, prev = (rank_ + nranks_ - 1) % nranks_;
  int rc = MPI_SUCCESS;
  switch (coll) {
    case AllReduce: rc = MPI_Allreduce(s, r, count, dt, op, MPI_COMM_WORLD); break;
    case AllGather: rc = MPI_Allgather(s, count, dt, r, count, dt, MPI_COMM_WORLD); break;
    case ReduceScatter: rc = MPI_Reduce_scatter_block(s, r, count, dt, op, MPI_COMM_WORLD); break;
    case Broadcast: rc = MPI_Bcast(rank_ == root ? (void*)s : r, count, dt, root, MPI_COMM_WORLD); break;
    case Reduce: rc = MPI_Reduce(s, r, count, dt, op, root, MPI_COMM_WORLD); break;
    case AllToAll: rc = MPI_Alltoall(s, count, dt, r, count, dt, MPI_COMM_WORLD); break;
    case SendRecv:
      rc = MPI_Sendrecv(s, count, dt, next, 0, r, count, dt, prev, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      break;
    default: break;
  }
  if (rc != MPI_SUCCESS) die("an MPI call failed");
}

static int parseInt(const char* s, int lo, int hi) {
  char* end = NULL;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < lo || v > hi) die("bad integer argument");
  return (int)v;
}

int main(int argc, char** argv) {
  int coll = -1, iters = 20, warmup = 1, agg = 1, average = 1, i, argi;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
  if (argc < 2) die("usage: weft-mpi-bench <coll> [-n iters] [-w warmup] [-m agg] [-a average] <type>:<op>:<root>:<counts>...");
  for (i = 0; i < 7; ++i) {
    if (!strcmp(argv[1], kCollNames[i])) coll = i;
  }
  if (coll < 0) die("unknown collective");
  for (argi = 2; argi + 1 < argc && argv[argi][0] == '-'; argi += 2) {
    const char* f = argv[argi];
    if (!strcmp(f, "-n")) iters = parseInt(argv[argi + 1], 0, 1 << 30);
    else if (!strcmp(f, "-w")) warmup = parseInt(argv[argi + 1], 0, 1 << 30);
    else if (!strcmp(f, "-m")) agg = parseInt(argv[argi + 1], 1, 1 << 20);
    else if (!strcmp(f, "-a")) average = parseInt(argv[argi + 1], 0, 3);
    else die("unknown flag");
  }
  if (rank_ == 0) {
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(version, &len);
    for (i = 0; i < len; ++i) {
      if (version[i] == '\n') version[i] = ' ';
    }
    while (len > 0 && version[len - 1] == ' ') version[--len] = '\0';
    printf("# mpi library: %s, %d ranks\n", version, nranks_);
  }

  for (; argi < argc; ++argi) {
    char spec[65536], type[32], opName[32];
    char* fields[4];
    char* p = spec;
    int root, nf, reducible, supported, k;
    MPI_Datatype dt;
    MPI_Op op = MPI_OP_NULL;
    size_t size, maxElems = 0, counts[4096], ncounts = 0, minCount = (size_t)-1, maxCount = 0;
    void *sbuf, *rbuf;
    if (strlen(argv[argi]) >= sizeof(spec)) die("spec too long");
    strcpy(spec, argv[argi]);
    for (nf = 0; nf < 4; ++nf) {
      fields[nf] = p;
      if (nf < 3) {
        p = strchr(p, ':');
        if (!p) die("malformed spec: want <type>:<op>:<root>:<count>,...");
        *p++ = '\0';
      }
    }
    if (strlen(fields[0]) >= sizeof(type) || strlen(fields[1]) >= sizeof(opName)) die("malformed spec");
    strcpy(type, fields[0]);
    strcpy(opName, fields[1]);
    root = parseInt(fields[2], -1, nranks_ - 1);
    if (!typeOf(type, &dt, &size, &reducible)) die("unknown type");
    supported = opOf(opName, &op);
    if (op != MPI_OP_NULL && !reducible) supported = 0;
    for (p = strtok(fields[3], ","); p; p = strtok(NULL, ",")) {
      char* end = NULL;
      unsigned long long c = strtoull(p, &end, 10);
      if (*end || ncounts == sizeof(counts) / sizeof(counts[0])) die("bad count list");
      counts[ncounts++] = (size_t)c;
    }
    for (k = 0; k < (int)ncounts; ++k) {
      const size_t c = counts[k];
      const size_t elems = (coll == AllGather || coll == ReduceScatter || coll == AllToAll) ? c * (size_t)nranks_ : c;
      if (elems > maxElems) maxElems = elems;
      if (c < minCount) minCount = c;
      if (c > maxCount) maxCount = c;
    }
    if (maxCount > INT_MAX) supported = 0;
    sbuf = malloc(maxElems * size + 64);
    rbuf = malloc(maxElems * size + 64);
    if (!sbuf || !rbuf) die("out of memory");
    fillOnes(sbuf, maxElems, size, dt);
    fillOnes(rbuf, maxElems, size, dt);

    if (supported && ncounts) {
      int w;
      for (w = 0; w < warmup; ++w) runOp(coll, sbuf, rbuf, (int)maxCount, dt, op, root);
      for (w = 0; w < warmup; ++w) runOp(coll, sbuf, rbuf, (int)minCount, dt, op, root);
    }
    for (k = 0; k < (int)ncounts; ++k) {
      double t0, perOp, combined = 0, faults, maxFaults = 0;
      struct rusage ru0, ru1;
      int it, a;
      if (!supported) {
        if (rank_ == 0) printf("R %s %s %d %zu -\n", type, opName, root, counts[k]);
        continue;
      }
      MPI_Barrier(MPI_COMM_WORLD);
      getrusage(RUSAGE_SELF, &ru0);
      t0 = MPI_Wtime();
      for (it = 0; it < iters; ++it) {
        for (a = 0; a < agg; ++a) runOp(coll, sbuf, rbuf, (int)counts[k], dt, op, root);
      }
      perOp = iters > 0 ? (MPI_Wtime() - t0) / ((double)iters * agg) : 0.0;
      getrusage(RUSAGE_SELF, &ru1);
      faults = iters > 0 ? (double)((ru1.ru_minflt - ru0.ru_minflt) + (ru1.ru_majflt - ru0.ru_majflt)) /
                               ((double)iters * agg)
                         : 0.0;
      MPI_Allreduce(&faults, &maxFaults, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      if (average == 0) {
        combined = perOp;
        MPI_Bcast(&combined, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
      } else {
        MPI_Allreduce(&perOp, &combined, 1, MPI_DOUBLE, average == 2 ? MPI_MIN : average == 3 ? MPI_MAX : MPI_SUM,
                      MPI_COMM_WORLD);
        if (average == 1) combined /= nranks_;
      }
      if (rank_ == 0) printf("R %s %s %d %zu %.3f %.2f\n", type, opName, root, counts[k], combined * 1e6, maxFaults);
    }
    free(sbuf);
    free(rbuf);
  }
  fflush(stdout);
  MPI_Finalize();
  return 0;
}
