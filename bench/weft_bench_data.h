// weft-bench: data types, reduction ops, and the verifiable test data (inputs per rank and the
// expected results, computed independently on the host).
#pragma once

#include <weft/weft.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace weftbench {

enum class Kind { SignedInt, UnsignedInt, Float };

struct FloatFormat;

struct TypeDesc {
  weftDataType_t type;
  const char* name;       // nccl-tests' name, printed in the table
  size_t size;            // bytes per element
  Kind kind;
  int precision;          // floats: significand bits incl. the implicit one; ints: bit width
  const FloatFormat* fmt; // narrow floats only (fp16, bf16, fp8); nullptr for fp32/fp64/ints
};

struct OpDesc {
  weftRedOp_t op;
  const char* name;
};

// All types / ops in NCCL's enum order (the order of `-d all` / `-o all`).
const TypeDesc* allTypes(size_t* n);
const OpDesc* allOps(size_t* n);
// Parse a name (nccl-tests' names plus a few aliases); nullptr if unknown.
const TypeDesc* findType(std::string_view name);
const OpDesc* findOp(std::string_view name);

// The verifiable data. Inputs depend on (rank, element index, type, op, nranks) only, so one
// buffer generated for the largest count serves every smaller count as a prefix.
//
// Construction (every partial result over any subset of ranks, in any order, is exactly
// representable, so any algorithm gives bit-identical results):
// - float sum/avg: integers a in [-A, A] scaled by 2^s (s in -2..1, by element); only K ranks per
//   element are non-zero (a sliding window over the ranks), with K*A <= 2^p (p = significand
//   bits), so every partial sum is an integer of at most p bits times 2^s;
// - float prod: +-1 and +-2, at most 4 factors of 2 per element (|result| <= 16);
// - float max/min: integers in [-2^p, 2^p] scaled by 2^s;
// - integers: sum/max/min full-range values (sum wraps), prod mostly 1 with some 2, 3, -1 (wraps),
//   avg small enough that the sum does not wrap;
// - avg = sum / nranks as weft.h documents: fp64 and fp32 divide in their own precision, narrow
//   floats divide in fp32 and round to nearest-even, integers truncate (C semantics).
void fillInput(void* buf, size_t count, const TypeDesc& t, const OpDesc& op, int rank, int nranks);
void fillExpected(void* buf, size_t count, const TypeDesc& t, const OpDesc& op, int nranks);

// The same values for the element indices [first, first + count) only (buf[0] is element `first`):
// what a collective that moves or reduces a block taken from the middle of an array expects.
void fillInputRange(void* buf, size_t first, size_t count, const TypeDesc& t, const OpDesc& op,
                    int rank, int nranks);
void fillExpectedRange(void* buf, size_t first, size_t count, const TypeDesc& t, const OpDesc& op,
                       int nranks);

// The op whose inputs the collectives that only move data (all_gather, broadcast, alltoall,
// sendrecv) use: max's inputs, full-range integers and floats that differ by rank and index.
const OpDesc& dataOnlyOp();

// Number of elements of `got` that differ bitwise from `want`.
size_t countMismatches(const void* got, const void* want, size_t count, size_t typeSize);

}  // namespace weftbench
