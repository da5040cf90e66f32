// Scalar, portable reduction kernels. Compiled with -ffp-contract=off (see CMakeLists.txt) and run
// under the default FP environment (DefaultFpEnv) so that fp32/fp64 results are plain IEEE
// operations, the same on every machine and in every kernel.
//
// Structure: a traits struct per data type (storage type, compute type, load/store conversions),
// an op functor per reduction, one loop template over both, and a table of function pointers
// indexed by [type][op]. The SIMD levels (reduce_avx2.cc, reduce_avx512.cc, on reduce_simd.h)
// provide tables of the same shape; activeKernels() picks one at the first call (end of file).
#include "collectives/reduce/reduce.h"

#include <atomic>
#include <bit>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "lib/core/config.h"
#include "lib/core/log.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <xmmintrin.h>
#endif

namespace weft::reduce {
namespace {

[[noreturn]] void fatal(const char* what, int value) {
  std::fprintf(stderr, "weft: internal error: reduce: %s %d\n", what, value);
  std::abort();
}

// The kernels' arithmetic assumes the default FP environment: round to nearest-even, denormals
// kept. A host application may have changed it for the calling thread (frameworks often turn on
// flush-to-zero / denormals-are-zero, and threads inherit it); set the default for the duration
// of a call and put the caller's back afterwards.
class DefaultFpEnv {
 public:
#if defined(__x86_64__) || defined(__i386__)
  DefaultFpEnv() : saved_(_mm_getcsr()) {
    constexpr unsigned kFlushToZero = 1u << 15, kRoundingMask = 3u << 13, kDenormalsAreZero = 1u << 6;
    const unsigned wanted = saved_ & ~(kFlushToZero | kRoundingMask | kDenormalsAreZero);
    changed_ = wanted != saved_;
    if (changed_) _mm_setcsr(wanted);
  }
  ~DefaultFpEnv() {
    if (changed_) _mm_setcsr(saved_);
  }
  DefaultFpEnv(const DefaultFpEnv&) = delete;
  DefaultFpEnv& operator=(const DefaultFpEnv&) = delete;

 private:
  unsigned saved_;
  bool changed_;
#else
  // Other architectures: not handled yet (aarch64 would clear FPCR.FZ and RMode the same way).
#endif
};

// ---------------------------------------------------------------------------------------------
// Conversions. Branch-free (selects only) so the kernel loops vectorize, and independent of the
// FP environment: exponent/mantissa work is integer, and the few float operations are exact
// (power-of-two scaling, int<->float of small integers, truncation), so neither the rounding mode
// nor flush-to-zero / denormals-are-zero can change a result.

// The magnitude of a float (abs bits `x`, at most 0x7f800000 = inf; NaN gives garbage the caller
// discards) rounded to nearest-even to a binary format with kExp exponent bits (IEEE bias) and
// kMan mantissa bits, as that format's code (exponent field then mantissa field). Values beyond
// the format's range give codes past its largest finite one; the caller maps those to inf or
// saturates. For formats with a narrower exponent range than fp32 (fp16, fp8).
template <int kExp, int kMan>
inline uint32_t roundMagnitude(uint32_t x) {
  constexpr int kBias = (1 << (kExp - 1)) - 1;
  constexpr int kDrop = 23 - kMan;  // mantissa bits dropped from a float
  constexpr uint32_t kMinNormal = static_cast<uint32_t>(127 - kBias + 1) << 23;  // as fp32 bits
  // Normal in the target: rebias, then round at bit kDrop (a carry rolls into the exponent).
  // Wraps (harmlessly, unsigned) for inputs that take the denormal path.
  uint32_t r = x - (static_cast<uint32_t>(127 - kBias) << 23);
  r += (1u << (kDrop - 1)) - 1 + ((r >> kDrop) & 1u);
  const uint32_t normal = r >> kDrop;
  // Denormal (or zero) in the target: the code is |f| / unit, unit = 2^(1-bias-kMan), rounded to an
  // integer. The scaling is exact and lands in [0, 2^kMan]; truncate, then round half to even
  // using the exact fraction.
  constexpr float kScale = static_cast<float>(1ull << (kBias + kMan - 1));
  const bool isNormal = static_cast<int32_t>(x) >= static_cast<int32_t>(kMinNormal);
  const float v = std::bit_cast<float>(isNormal ? kMinNormal : x) * kScale;
  const int32_t t = static_cast<int32_t>(v);
  const float frac = v - static_cast<float>(t);
  // (Spelled as two selects: GCC 12 does not vectorize `(frac > 0.5f) | ((frac == 0.5f) & t)`.)
  const uint32_t above = frac > 0.5f ? 1u : 0u;
  const uint32_t tie = frac == 0.5f ? 1u : 0u;
  const uint32_t denormal = static_cast<uint32_t>(t) + (above | (tie & static_cast<uint32_t>(t)));
  return isNormal ? normal : denormal;
}

enum class Special { kIeee, kFiniteOnly };  // kIeee: top exponent = inf/NaN; kFiniteOnly: e4m3 (S.1111.111 = NaN)

// Decode a narrow binary float (exponent field then mantissa field, sign above) to fp32, exactly.
template <int kExp, int kMan, Special kSpecial>
inline float decodeNarrow(uint32_t code) {
  constexpr int kBias = (1 << (kExp - 1)) - 1;
  constexpr uint32_t kInfCode = ((1u << kExp) - 1) << kMan;  // top exponent, mantissa 0
  constexpr uint32_t kAllOnes = (1u << (kExp + kMan)) - 1;
  constexpr float kUnit = 1.0f / static_cast<float>(1ull << (kBias + kMan - 1));  // smallest denormal
  const uint32_t sign = (code >> (kExp + kMan) & 1u) << 31;
  const uint32_t em = code & kAllOnes;
  const uint32_t normal = (em << (23 - kMan)) + (static_cast<uint32_t>(127 - kBias) << 23);
  // Zero or denormal: mantissa * unit, exact (and a normal fp32).
  const uint32_t denormal = std::bit_cast<uint32_t>(static_cast<float>(static_cast<int32_t>(em)) * kUnit);
  // (Compares are on int32: SSE2 has only signed vector compares.)
  const int32_t emSigned = static_cast<int32_t>(em);
  uint32_t bits = emSigned < (1 << kMan) ? denormal : normal;
  if constexpr (kSpecial == Special::kIeee) {
    // inf, or NaN quietened (as F16C does) with its payload kept.
    constexpr int32_t kInf = static_cast<int32_t>(kInfCode);
    const uint32_t special = 0x7f800000u | (em << (23 - kMan)) | (emSigned > kInf ? 0x400000u : 0u);
    bits = emSigned >= kInf ? special : bits;
  } else {
    bits = emSigned == static_cast<int32_t>(kAllOnes) ? 0x7fc00000u : bits;
  }
  return std::bit_cast<float>(bits | sign);
}

inline float halfToFloatImpl(uint16_t h) { return decodeNarrow<5, 10, Special::kIeee>(h); }

inline uint16_t floatToHalfImpl(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t x = u & 0x7fffffffu;
  int32_t c = static_cast<int32_t>(roundMagnitude<5, 10>(x));
  c = c > 0x7c00 ? 0x7c00 : c;  // overflow (and inf) -> inf
  const int32_t nan = static_cast<int32_t>(0x7e00u | ((x >> 13) & 0x3ffu));  // quiet, payload kept
  c = static_cast<int32_t>(x) > 0x7f800000 ? nan : c;
  return static_cast<uint16_t>(sign | static_cast<uint32_t>(c));
}

inline float bf16ToFloatImpl(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  return std::bit_cast<float>(static_cast<int32_t>(h & 0x7fffu) > 0x7f80 ? bits | 0x400000u : bits);  // NaN: quiet
}

inline uint16_t floatToBf16Impl(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  // bf16 is fp32 with the low 16 bits dropped: round at bit 16. Denormals and the carry into the
  // exponent (up to inf) work out by themselves.
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x40u;  // quiet, sign and top payload kept
  return static_cast<uint16_t>(static_cast<int32_t>(u & 0x7fffffffu) > 0x7f800000 ? nan : rounded);
}

inline float e4m3ToFloatImpl(uint8_t v) { return decodeNarrow<4, 3, Special::kFiniteOnly>(v); }

inline uint8_t floatToE4m3Impl(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t x = u & 0x7fffffffu;
  int32_t c = static_cast<int32_t>(roundMagnitude<4, 3>(x));
  c = c > 0x7e ? 0x7e : c;                                // saturate to 448 (0x7f is NaN); inf included
  c = static_cast<int32_t>(x) > 0x7f800000 ? 0x7f : c;    // NaN
  return static_cast<uint8_t>(sign | static_cast<uint32_t>(c));
}

inline float e5m2ToFloatImpl(uint8_t v) { return decodeNarrow<5, 2, Special::kIeee>(v); }

inline uint8_t floatToE5m2Impl(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t x = u & 0x7fffffffu;
  int32_t c = static_cast<int32_t>(roundMagnitude<5, 2>(x));
  c = c > 0x7b ? 0x7b : c;                                // saturate to 57344 (0x7c is inf); inf included
  c = static_cast<int32_t>(x) > 0x7f800000 ? 0x7e : c;    // NaN (quiet)
  return static_cast<uint8_t>(sign | static_cast<uint32_t>(c));
}

// ---------------------------------------------------------------------------------------------
// Per-type traits: Storage is what sits in memory, Compute what the op works in.

template <class T>
struct NativeTraits {
  using Storage = T;
  using Compute = T;
  static T load(T v) { return v; }
  static T store(T v) { return v; }
};

template <float (*kLoad)(uint16_t), uint16_t (*kStore)(float)>
struct Narrow16Traits {
  using Storage = uint16_t;
  using Compute = float;
  static float load(uint16_t v) { return kLoad(v); }
  static uint16_t store(float v) { return kStore(v); }
};

template <float (*kLoad)(uint8_t), uint8_t (*kStore)(float)>
struct Narrow8Traits {
  using Storage = uint8_t;
  using Compute = float;
  static float load(uint8_t v) { return kLoad(v); }
  static uint8_t store(float v) { return kStore(v); }
};

template <DataType D>
struct TypeTraits;
template <> struct TypeTraits<DataType::kInt8> : NativeTraits<int8_t> {};
template <> struct TypeTraits<DataType::kUint8> : NativeTraits<uint8_t> {};
template <> struct TypeTraits<DataType::kInt32> : NativeTraits<int32_t> {};
template <> struct TypeTraits<DataType::kUint32> : NativeTraits<uint32_t> {};
template <> struct TypeTraits<DataType::kInt64> : NativeTraits<int64_t> {};
template <> struct TypeTraits<DataType::kUint64> : NativeTraits<uint64_t> {};
template <> struct TypeTraits<DataType::kFloat32> : NativeTraits<float> {};
template <> struct TypeTraits<DataType::kFloat64> : NativeTraits<double> {};
template <> struct TypeTraits<DataType::kFloat16> : Narrow16Traits<halfToFloatImpl, floatToHalfImpl> {};
template <> struct TypeTraits<DataType::kBfloat16> : Narrow16Traits<bf16ToFloatImpl, floatToBf16Impl> {};
template <> struct TypeTraits<DataType::kFloat8e4m3> : Narrow8Traits<e4m3ToFloatImpl, floatToE4m3Impl> {};
template <> struct TypeTraits<DataType::kFloat8e5m2> : Narrow8Traits<e5m2ToFloatImpl, floatToE5m2Impl> {};

// ---------------------------------------------------------------------------------------------
// Ops, on the compute type.

// Unsigned arithmetic type for wrapping integer sum/prod (at least unsigned int, so that small
// types do not promote to a signed int that could overflow).
template <class T>
using WrapType = std::conditional_t<(sizeof(T) < sizeof(unsigned)), unsigned, std::make_unsigned_t<T>>;

template <class F>
using FloatBits = std::conditional_t<sizeof(F) == 4, uint32_t, uint64_t>;

struct OpSum {
  template <class C>
  static C apply(C a, C b) {
    if constexpr (std::is_integral_v<C>) {
      return static_cast<C>(static_cast<WrapType<C>>(a) + static_cast<WrapType<C>>(b));
    } else {
      return a + b;
    }
  }
};

struct OpProd {
  template <class C>
  static C apply(C a, C b) {
    if constexpr (std::is_integral_v<C>) {
      return static_cast<C>(static_cast<WrapType<C>>(a) * static_cast<WrapType<C>>(b));
    } else {
      return a * b;
    }
  }
};

// Floats: NaN if either is NaN; equal values (only +0/-0 differ) combine their bits so that
// max(+0,-0) = +0 and min(+0,-0) = -0 in either order. Written as selects so loops vectorize.
struct OpMax {
  template <class C>
  static C apply(C a, C b) {
    if constexpr (std::is_integral_v<C>) {
      return a < b ? b : a;
    } else {
      using U = FloatBits<C>;
      C r = a < b ? b : a;
      r = a == b ? std::bit_cast<C>(std::bit_cast<U>(a) & std::bit_cast<U>(b)) : r;
      r = (a != a || b != b) ? a + b : r;
      return r;
    }
  }
};

struct OpMin {
  template <class C>
  static C apply(C a, C b) {
    if constexpr (std::is_integral_v<C>) {
      return b < a ? b : a;
    } else {
      using U = FloatBits<C>;
      C r = b < a ? b : a;
      r = a == b ? std::bit_cast<C>(std::bit_cast<U>(a) | std::bit_cast<U>(b)) : r;
      r = (a != a || b != b) ? a + b : r;
      return r;
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Loops. Separate restrict-qualified loops for the in-place cases, so the compiler vectorizes
// without runtime overlap checks (which exact aliasing would fail).

template <class Tr, class Op>
void reduceDistinct(typename Tr::Storage* __restrict d, const typename Tr::Storage* __restrict x,
                    const typename Tr::Storage* __restrict y, size_t n) {
  for (size_t i = 0; i < n; ++i) d[i] = Tr::store(Op::apply(Tr::load(x[i]), Tr::load(y[i])));
}

// d[i] = d[i] OP y[i], or y[i] OP d[i] when kDstIsB (keeps operand order for NaN payloads).
template <class Tr, class Op, bool kDstIsB>
void reduceInPlace(typename Tr::Storage* __restrict d, const typename Tr::Storage* __restrict y,
                   size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const auto v = Tr::load(d[i]);
    const auto w = Tr::load(y[i]);
    d[i] = Tr::store(kDstIsB ? Op::apply(w, v) : Op::apply(v, w));
  }
}

template <class Tr, class Op>
void reduceSelf(typename Tr::Storage* __restrict d, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const auto v = Tr::load(d[i]);
    d[i] = Tr::store(Op::apply(v, v));
  }
}

template <class Tr, class Op>
void reduceKernel(void* dst, const void* a, const void* b, size_t n) {
  using S = typename Tr::Storage;
  S* d = static_cast<S*>(dst);
  const S* x = static_cast<const S*>(a);
  const S* y = static_cast<const S*>(b);
  if (d == x) {
    if (d == y) {
      reduceSelf<Tr, Op>(d, n);
    } else {
      reduceInPlace<Tr, Op, false>(d, y, n);
    }
  } else if (d == y) {
    reduceInPlace<Tr, Op, true>(d, x, n);
  } else {
    reduceDistinct<Tr, Op>(d, x, y, n);
  }
}

// The avg post-op on one element.
template <class Tr>
struct Divider {
  using C = typename Tr::Compute;
  explicit Divider(int n) : n_(n) {}
  C operator()(C v) const {
    if constexpr (std::is_integral_v<C>) {
      // In 64 bits: n may not fit the element type (e.g. int8 with 200 ranks). The quotient's
      // magnitude is at most |v|, so it always fits back.
      if constexpr (std::is_signed_v<C>) {
        return static_cast<C>(static_cast<int64_t>(v) / static_cast<int64_t>(n_));
      } else {
        return static_cast<C>(static_cast<uint64_t>(v) / static_cast<uint64_t>(n_));
      }
    } else {
      return v / static_cast<C>(n_);
    }
  }
  int n_;
};

template <class Tr>
void divideDistinct(typename Tr::Storage* __restrict d, const typename Tr::Storage* __restrict x,
                    size_t count, Divider<Tr> div) {
  for (size_t i = 0; i < count; ++i) d[i] = Tr::store(div(Tr::load(x[i])));
}

template <class Tr>
void divideInPlace(typename Tr::Storage* __restrict d, size_t count, Divider<Tr> div) {
  for (size_t i = 0; i < count; ++i) d[i] = Tr::store(div(Tr::load(d[i])));
}

template <class Tr>
void divideKernel(void* dst, const void* src, size_t count, int n) {
  using S = typename Tr::Storage;
  if (n < 1) fatal("divide by rank count", n);
  S* d = static_cast<S*>(dst);
  const S* x = static_cast<const S*>(src);
  if (d == x) {
    divideInPlace<Tr>(d, count, Divider<Tr>(n));
  } else {
    divideDistinct<Tr>(d, x, count, Divider<Tr>(n));
  }
}

// ---------------------------------------------------------------------------------------------
// The scalar table.

template <DataType D>
constexpr void addType(detail::KernelTable& t) {
  using Tr = TypeTraits<D>;
  const int i = static_cast<int>(D);
  t.reduce[i][static_cast<int>(RedOp::kSum)] = &reduceKernel<Tr, OpSum>;
  t.reduce[i][static_cast<int>(RedOp::kProd)] = &reduceKernel<Tr, OpProd>;
  t.reduce[i][static_cast<int>(RedOp::kMax)] = &reduceKernel<Tr, OpMax>;
  t.reduce[i][static_cast<int>(RedOp::kMin)] = &reduceKernel<Tr, OpMin>;
  t.reduce[i][static_cast<int>(RedOp::kAvg)] = &reduceKernel<Tr, OpSum>;  // divide is a post-op
  t.divide[i] = &divideKernel<Tr>;
}

constexpr detail::KernelTable makeScalarTable() {
  detail::KernelTable t{};
  t.name = "scalar";
  addType<DataType::kInt8>(t);
  addType<DataType::kUint8>(t);
  addType<DataType::kInt32>(t);
  addType<DataType::kUint32>(t);
  addType<DataType::kInt64>(t);
  addType<DataType::kUint64>(t);
  addType<DataType::kFloat16>(t);
  addType<DataType::kFloat32>(t);
  addType<DataType::kFloat64>(t);
  addType<DataType::kBfloat16>(t);
  addType<DataType::kFloat8e4m3>(t);
  addType<DataType::kFloat8e5m2>(t);
  return t;
}

constinit const detail::KernelTable kScalarKernels = makeScalarTable();

// ---------------------------------------------------------------------------------------------
// Run-time choice of the table.

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// F16C straight from CPUID leaf 1 (clang's __builtin_cpu_supports does not know "f16c"). Only
// consulted together with AVX2, whose check covers the OS saving the YMM state.
bool cpuHasF16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}
#endif

bool cpuHas(Isa isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  switch (isa) {
    case Isa::kPortable: return true;
    // (__builtin_cpu_supports also checks that the OS saves the YMM / ZMM state.)
    case Isa::kAvx2: return __builtin_cpu_supports("avx2") && cpuHasF16c();
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") && cpuHasF16c();
  }
  return false;
#else
  return isa == Isa::kPortable;
#endif
}

const detail::KernelTable* builtTable(Isa isa) {
  switch (isa) {
    case Isa::kPortable: return &kScalarKernels;
    case Isa::kAvx2: return detail::avx2Kernels();
    case Isa::kAvx512: return detail::avx512Kernels();
  }
  return nullptr;
}

Isa bestSupported(Isa atMost) {
  for (int i = static_cast<int>(atMost); i > 0; --i) {
    if (isaSupported(static_cast<Isa>(i))) return static_cast<Isa>(i);
  }
  return Isa::kPortable;
}

// Set by setIsaForTesting() (-1: not forced); otherwise the first call's choice (WEFT_CPU_ISA,
// CPUID) holds for the life of the process.
std::atomic<int> gForcedIsa{-1};

Isa currentIsa() {
  const int forced = gForcedIsa.load(std::memory_order_relaxed);
  if (forced >= 0) return static_cast<Isa>(forced);
  static const Isa chosen = [] {
    const std::string request = config::getString("WEFT_CPU_ISA");
    const Isa isa = detail::resolveIsa(request.c_str());
    WEFT_INFO(COLL, "reduction kernels: %s (WEFT_CPU_ISA=%s)", isaName(isa),
              request.empty() ? "(unset)" : request.c_str());
    return isa;
  }();
  return chosen;
}

}  // namespace

const char* isaName(Isa isa) {
  switch (isa) {
    case Isa::kPortable: return "portable";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "unknown";
}

bool isaSupported(Isa isa) {
  const int i = static_cast<int>(isa);
  if (i < 0 || i >= kNumIsas) return false;
  return builtTable(isa) != nullptr && cpuHas(isa);
}

Isa activeIsa() { return currentIsa(); }

bool setIsaForTesting(Isa isa) {
  if (!isaSupported(isa)) return false;
  gForcedIsa.store(static_cast<int>(isa), std::memory_order_relaxed);
  return true;
}

namespace detail {
const KernelTable& scalarKernels() { return kScalarKernels; }
const KernelTable& activeKernels() { return *builtTable(currentIsa()); }
const KernelTable* kernelsFor(Isa isa) { return isaSupported(isa) ? builtTable(isa) : nullptr; }

Isa resolveIsa(const char* request) {
  std::string r;
  for (const char* p = request; p != nullptr && *p != '\0'; ++p) {
    if (*p != ' ') r += static_cast<char>(std::tolower(static_cast<unsigned char>(*p)));
  }
  const Isa best = bestSupported(Isa::kAvx512);
  if (r.empty() || r == "auto") return best;
  for (int i = 0; i < kNumIsas; ++i) {
    const Isa want = static_cast<Isa>(i);
    if (r != isaName(want)) continue;
    if (isaSupported(want)) return want;
    const Isa fallback = bestSupported(want);
    WEFT_WARN(ENV, "WEFT_CPU_ISA=%s: this CPU (or build) does not support %s; using %s instead", request,
              isaName(want), isaName(fallback));
    return fallback;
  }
  WEFT_WARN(ENV, "WEFT_CPU_ISA=%s is not one of portable, avx2, avx512; ignoring it (using %s)", request,
            isaName(best));
  return best;
}
}  // namespace detail

void reduce(DataType type, RedOp op, void* dst, const void* a, const void* b, size_t count) {
  const int t = static_cast<int>(type);
  const int o = static_cast<int>(op);
  if (t < 0 || t >= kNumDataTypes) fatal("invalid data type", t);
  if (o < 0 || o >= kNumRedOps) fatal("invalid reduction op", o);
  const DefaultFpEnv env;
  detail::activeKernels().reduce[t][o](dst, a, b, count);
}

void divide(DataType type, void* dst, const void* src, size_t count, int n) {
  const int t = static_cast<int>(type);
  if (t < 0 || t >= kNumDataTypes) fatal("invalid data type", t);
  if (n < 1) fatal("divide by rank count", n);  // (the SIMD kernels assume n >= 1)
  const DefaultFpEnv env;
  detail::activeKernels().divide[t](dst, src, count, n);
}

float halfToFloat(uint16_t h) { return halfToFloatImpl(h); }
uint16_t floatToHalf(float f) { return floatToHalfImpl(f); }
float bf16ToFloat(uint16_t h) { return bf16ToFloatImpl(h); }
uint16_t floatToBf16(float f) { return floatToBf16Impl(f); }
float e4m3ToFloat(uint8_t v) { return e4m3ToFloatImpl(v); }
uint8_t floatToE4m3(float f) { return floatToE4m3Impl(f); }
float e5m2ToFloat(uint8_t v) { return e5m2ToFloatImpl(v); }
uint8_t floatToE5m2(float f) { return floatToE5m2Impl(f); }

}  // namespace weft::reduce
