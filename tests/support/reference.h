// Test data and independently computed expected results for reductions. Float data follows
// nccl-tests' construction (small integers scaled by powers of two) so that every summation order is
// exact; the encoders/decoders here are written from the format definitions, not from weft's kernels.
#pragma once

#include <weft/weft.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace weft::test {

size_t typeBytes(weftDataType_t t);
bool isFloatType(weftDataType_t t);
const char* typeLabel(weftDataType_t t);
const char* opLabel(weftRedOp_t op);

// Round-to-nearest-even encoding of a double into the type (fp8 saturates to finite; integers wrap).
void encodeValue(weftDataType_t t, double v, void* out);
double decodeValue(weftDataType_t t, const void* in);

// The input element i of rank r for (type, op) on nranks ranks.
double inputValue(weftDataType_t t, weftRedOp_t op, int rank, int nranks, size_t i);
void fillInput(weftDataType_t t, weftRedOp_t op, int rank, int nranks, void* buf, size_t count);
// The expected result bytes, computed from every rank's inputValue.
void fillExpected(weftDataType_t t, weftRedOp_t op, int nranks, void* buf, size_t count);

// Index of the first element whose bytes differ, or -1; *nwrong counts them.
long long firstMismatch(weftDataType_t t, const void* got, const void* want, size_t count, size_t* nwrong);

}  // namespace weft::test
