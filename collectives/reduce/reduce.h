// Element-wise reduction kernels for every data type and reduction op (host: the scalar reference,
// which is also the portable level, and AVX2 / AVX-512 levels chosen at run time), plus the
// conversions between fp32 and the narrow float types.
//
// Semantics (the same table as weft.h; every kernel, scalar or SIMD, must give bitwise these results):
// - Integers wrap modulo 2^n: sum and prod are computed in the unsigned type; max and min compare
//   with the type's signedness.
// - max and min propagate NaN: if either input is NaN the result is NaN. Otherwise they follow IEEE
//   754-2019 maximum/minimum, so they are commutative: max(-0, +0) = +0 and min(-0, +0) = -0.
// - fp16, bf16, fp8 (e4m3, e5m2): both inputs are converted to fp32, the op is computed in fp32 and
//   the result is rounded to nearest-even to the type once per call (one rounding per hop). fp8
//   saturates: an overflowing or infinite result becomes +-max finite (e4m3 448, e5m2 57344); NaN
//   stays NaN. Denormals are handled exactly everywhere (no flushing).
// - fp32 and fp64 compute in their own precision with plain IEEE operations (no FMA contraction).
// - RedOp::kAvg reduces as a sum; divide() is the separate post-op applied once to the full sum.
//   Integers divide with C semantics (truncation toward zero, signed types as signed); fp32 and fp64
//   divide in their own precision; the narrow float types divide in fp32 and round to nearest-even
//   to the type (fp8 saturating).
#pragma once

#include <cstddef>
#include <cstdint>

#include "lib/core/types.h"

namespace weft::reduce {

// dst[i] = a[i] OP b[i] for i < count. dst may alias a or b exactly (same pointer), or both; any
// other overlap is not allowed. For RedOp::kAvg this computes the SUM (the divide is a separate
// post-op). Buffers are aligned to the element size. type and op must be valid enumerators (the
// caller validates user input; an invalid one aborts). Runs under the default FP environment
// whatever the calling thread's (x86: MXCSR flush-to-zero, denormals-are-zero and rounding mode
// are set to the defaults for the call and restored after).
void reduce(DataType type, RedOp op, void* dst, const void* a, const void* b, size_t count);

// dst[i] = src[i] / n (the avg post-op); dst may alias src exactly. n >= 1 (n < 1 aborts).
void divide(DataType type, void* dst, const void* src, size_t count, int n);

// Conversions. To the narrow type: round to nearest, ties to even; denormals kept; NaN stays NaN
// (quieted, sign and top payload bits kept; e5m2 gives 0x7e/0xfe, e4m3 0x7f/0xff). fp16/bf16
// overflow to +-inf; fp8 saturates to +-max finite (infinities included). None of them depends on
// the FP environment (rounding mode, flush-to-zero).
float halfToFloat(uint16_t h);
uint16_t floatToHalf(float f);
float bf16ToFloat(uint16_t h);
uint16_t floatToBf16(float f);
float e4m3ToFloat(uint8_t v);
uint8_t floatToE4m3(float f);
float e5m2ToFloat(uint8_t v);
uint8_t floatToE5m2(float f);

// ---- CPU instruction set of the kernels. Every level gives bitwise the same results; the fastest
// one the CPU supports is chosen at the first call (CPUID), unless WEFT_CPU_ISA names a level:
// portable (the scalar reference), avx2 (AVX2 + F16C) or avx512 (AVX-512 F/BW/VL). A level the CPU
// (or this build) does not support is not an error: a WARN line says so and the best supported
// level below it is used. An unknown value likewise warns and chooses automatically.
enum class Isa : int { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };
inline constexpr int kNumIsas = 3;

const char* isaName(Isa isa);  // "portable", "avx2", "avx512"
// Built into this library and supported by this CPU and OS.
bool isaSupported(Isa isa);
// The level reduce() and divide() use (makes the first-call choice if not made yet).
Isa activeIsa();
// Tests and benchmarks: use `isa` from now on, for every thread. Returns false and changes nothing
// if it is not supported. Not meant to race with running reductions.
bool setIsaForTesting(Isa isa);

// ---- Internal: the kernel table, so that SIMD variants can be added and dispatched at startup and
// tested against the scalar reference. Not for use outside collectives/ and tests.
namespace detail {

// dst may alias a and/or b exactly. For kAvg the entry is the sum kernel.
using ReduceFn = void (*)(void* dst, const void* a, const void* b, size_t count);
using DivideFn = void (*)(void* dst, const void* src, size_t count, int n);

struct KernelTable {
  const char* name;
  ReduceFn reduce[kNumDataTypes][kNumRedOps];
  DivideFn divide[kNumDataTypes];
};

// The portable scalar kernels (always available).
const KernelTable& scalarKernels();
// The table reduce()/divide() use.
const KernelTable& activeKernels();
// The table of a level, or nullptr if that level is not supported here (see isaSupported).
const KernelTable* kernelsFor(Isa isa);
// The level WEFT_CPU_ISA's value `request` selects on this CPU (the rules above; warns as they say).
Isa resolveIsa(const char* request);

// Defined by reduce_avx2.cc / reduce_avx512.cc: nullptr where not built (not x86-64). They do not
// check the CPU; kernelsFor() does.
const KernelTable* avx2Kernels();
const KernelTable* avx512Kernels();

}  // namespace detail
}  // namespace weft::reduce
