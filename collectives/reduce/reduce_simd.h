// The SIMD reduction kernels, written once over an instruction-set struct S (Avx2 in
// reduce_avx2.cc, Avx512 in reduce_avx512.cc) that wraps the intrinsics: vector types F (fp32
// lanes), D (fp64 lanes), I (integer bits), their compare-mask types, and the few operations the
// kernels need. Every kernel computes exactly what the scalar reference in reduce.cc computes
// (same conversions, same op definitions), lane by lane.
//
// Not a normal header: each ISA file includes it once, inside an anonymous namespace and inside
// its target region (#pragma GCC target / clang attribute), after <immintrin.h>, <cstring>,
// <cstdint> and reduce.h. Everything here therefore has internal linkage and the ISA's target
// options; nothing is shared between the two ISA files, so no out-of-line copy compiled for one
// ISA can be picked by the linker for a caller of another.
//
// Structure: per data type a "kernel traits" struct K (Storage, V = compute vector, kStep =
// elements per vector, load/store converting storage <-> V, sum/prod/max/min on V); one loop
// template per shape (reduce, divide). Tails shorter than a vector go through a small stack
// buffer and the same vector code, so every element takes the same path.

// ---------------------------------------------------------------------------------------------
// Float max/min with the semantics table's rules, on F or D vectors:
//   NaN if either is NaN (a + b, as the reference), max(+0,-0) = +0, min(+0,-0) = -0.
// maxRaw(a, b) is x86 MAXPS: a > b ? a : b (b when equal or unordered); the equal and unordered
// lanes are then replaced.

template <class S, class V>
inline V floatMax(V a, V b) {
  V r = S::maxRaw(a, b);
  r = S::select(S::cmpEq(a, b), S::bitAnd(a, b), r);  // equal: identical bits, or +0/-0 -> +0
  return S::select(S::cmpUnord(a, b), S::add(a, b), r);
}

template <class S, class V>
inline V floatMin(V a, V b) {
  V r = S::minRaw(a, b);
  r = S::select(S::cmpEq(a, b), S::bitOr(a, b), r);  // equal: identical bits, or +0/-0 -> -0
  return S::select(S::cmpUnord(a, b), S::add(a, b), r);
}

// ---------------------------------------------------------------------------------------------
// Narrow formats <-> fp32 on 32-bit lanes (S::I holding S::kLanes32 int32). Lane-wise copies of
// the scalar decodeNarrow / roundMagnitude / floatToE4m3 / floatToE5m2, so the results are the same
// bits, independent of the FP environment in the same way.

enum class NarrowSpecial { kIeee, kFiniteOnly };

template <class S, int kExp, int kMan, NarrowSpecial kSpecial>
inline typename S::F decodeNarrowLanes(typename S::I code) {
  using I = typename S::I;
  constexpr int kBias = (1 << (kExp - 1)) - 1;
  constexpr int32_t kInfCode = ((1 << kExp) - 1) << kMan;
  constexpr int32_t kAllOnes = (1 << (kExp + kMan)) - 1;
  constexpr float kUnit = 1.0f / static_cast<float>(1ull << (kBias + kMan - 1));
  const I sign = S::template slli32<31 - (kExp + kMan)>(S::and_(code, S::set1I(1 << (kExp + kMan))));
  const I em = S::and_(code, S::set1I(kAllOnes));
  const I normal = S::add32(S::template slli32<23 - kMan>(em), S::set1I((127 - kBias) << 23));
  const I denormal = S::castI(S::mul(S::cvtToF(em), S::set1(kUnit)));  // exact
  I bits = S::selectI(S::cmpgt32(S::set1I(1 << kMan), em), denormal, normal);
  if constexpr (kSpecial == NarrowSpecial::kIeee) {
    I special = S::or_(S::set1I(0x7f800000), S::template slli32<23 - kMan>(em));
    special = S::selectI(S::cmpgt32(em, S::set1I(kInfCode)), S::or_(special, S::set1I(0x400000)), special);
    bits = S::selectI(S::cmpgt32(em, S::set1I(kInfCode - 1)), special, bits);
  } else {
    bits = S::selectI(S::cmpeq32(em, S::set1I(kAllOnes)), S::set1I(0x7fc00000), bits);
  }
  return S::castF(S::or_(bits, sign));
}

// roundMagnitude<kExp, kMan> on lanes: x = |f| bits (<= 0x7f800000 or NaN, discarded by caller).
template <class S, int kExp, int kMan>
inline typename S::I roundMagnitudeLanes(typename S::I x) {
  using I = typename S::I;
  using F = typename S::F;
  constexpr int kBias = (1 << (kExp - 1)) - 1;
  constexpr int kDrop = 23 - kMan;
  constexpr int32_t kMinNormal = (127 - kBias + 1) << 23;
  I r = S::sub32(x, S::set1I((127 - kBias) << 23));
  r = S::add32(r, S::add32(S::set1I((1 << (kDrop - 1)) - 1), S::and_(S::template srli32<kDrop>(r), S::set1I(1))));
  const I normal = S::template srli32<kDrop>(r);
  constexpr float kScale = static_cast<float>(1ull << (kBias + kMan - 1));
  const auto isNormal = S::cmpgt32(x, S::set1I(kMinNormal - 1));
  const F v = S::mul(S::castF(S::selectI(isNormal, S::set1I(kMinNormal), x)), S::set1(kScale));
  const I t = S::cvttToI(v);
  const I frac = S::castI(S::sub(v, S::cvtToF(t)));  // in [0, 1): its bits order like its value
  const I one = S::set1I(1);
  const I above = S::selectI(S::cmpgt32(frac, S::set1I(0x3f000000)), one, S::set1I(0));
  const I tie = S::selectI(S::cmpeq32(frac, S::set1I(0x3f000000)), S::and_(t, one), S::set1I(0));
  const I denormal = S::add32(t, S::or_(above, tie));
  return S::selectI(isNormal, normal, denormal);
}

// fp32 lanes -> fp8 codes in the low byte of each 32-bit lane. kMaxCode: the saturation code
// (e4m3 0x7e, e5m2 0x7b); kNanCode: e4m3 0x7f, e5m2 0x7e.
template <class S, int kExp, int kMan, int32_t kMaxCode, int32_t kNanCode>
inline typename S::I encodeFp8Lanes(typename S::F f) {
  using I = typename S::I;
  const I u = S::castI(f);
  const I sign = S::and_(S::template srli32<24>(u), S::set1I(0x80));
  const I x = S::and_(u, S::set1I(0x7fffffff));
  I c = roundMagnitudeLanes<S, kExp, kMan>(x);
  c = S::min32(c, S::set1I(kMaxCode));  // saturate (infinities included)
  c = S::selectI(S::cmpgt32(x, S::set1I(0x7f800000)), S::set1I(kNanCode), c);
  return S::or_(c, sign);
}

// ---------------------------------------------------------------------------------------------
// Per-type kernel traits.

struct Divisor {
  float f;   // n as fp32 (the fp32 and narrow types divide by this, as the reference)
  double d;  // n as fp64 (exact)
};

// Float types computing in fp32 lanes; Conv provides load/store from the storage type.
template <class S, class Conv>
struct FloatLanes {
  using Storage = typename Conv::Storage;
  using V = typename S::F;
  static constexpr size_t kStep = S::kLanes32;
  static V load(const Storage* p) { return Conv::load(p); }
  static void store(Storage* p, V v) { Conv::store(p, v); }
  static V sum(V a, V b) { return S::add(a, b); }
  static V prod(V a, V b) { return S::mul(a, b); }
  static V max(V a, V b) { return floatMax<S>(a, b); }
  static V min(V a, V b) { return floatMin<S>(a, b); }
  static void divideStep(Storage* d, const Storage* s, const Divisor& q) {
    store(d, S::div(load(s), S::set1(q.f)));
  }
};

template <class S>
struct F32Conv {
  using Storage = float;
  static typename S::F load(const float* p) { return S::loadF(p); }
  static void store(float* p, typename S::F v) { S::storeF(p, v); }
};

template <class S>
struct HalfConv {  // F16C / AVX-512F: exact, round-to-nearest-even by immediate
  using Storage = uint16_t;
  static typename S::F load(const uint16_t* p) { return S::loadHalf(p); }
  static void store(uint16_t* p, typename S::F v) { S::storeHalf(p, v); }
};

template <class S>
struct Bf16Conv {
  using Storage = uint16_t;
  using I = typename S::I;
  static typename S::F load(const uint16_t* p) {
    const I bits = S::template slli32<16>(S::widenU16(p));
    const auto isNan = S::cmpgt32(S::and_(bits, S::set1I(0x7fffffff)), S::set1I(0x7f800000));
    return S::castF(S::selectI(isNan, S::or_(bits, S::set1I(0x400000)), bits));  // NaN quietened
  }
  // Integer rounding at bit 16 (the reference's formula). Not the AVX512-BF16 convert: that one
  // flushes fp32 denormals to zero, and this is as fast for a memory-bound kernel.
  static void store(uint16_t* p, typename S::F v) {
    const I u = S::castI(v);
    const I rounded = S::template srli32<16>(
        S::add32(u, S::add32(S::set1I(0x7fff), S::and_(S::template srli32<16>(u), S::set1I(1)))));
    const I nan = S::or_(S::template srli32<16>(u), S::set1I(0x40));
    const auto isNan = S::cmpgt32(S::and_(u, S::set1I(0x7fffffff)), S::set1I(0x7f800000));
    S::narrow16(p, S::selectI(isNan, nan, rounded));
  }
};

template <class S>
struct E4m3Conv {
  using Storage = uint8_t;
  static typename S::F load(const uint8_t* p) {
    return decodeNarrowLanes<S, 4, 3, NarrowSpecial::kFiniteOnly>(S::widenU8(p));
  }
  static void store(uint8_t* p, typename S::F v) { S::narrow8(p, encodeFp8Lanes<S, 4, 3, 0x7e, 0x7f>(v)); }
};

template <class S>
struct E5m2Conv {
  using Storage = uint8_t;
  static typename S::F load(const uint8_t* p) {
    return decodeNarrowLanes<S, 5, 2, NarrowSpecial::kIeee>(S::widenU8(p));
  }
  static void store(uint8_t* p, typename S::F v) { S::narrow8(p, encodeFp8Lanes<S, 5, 2, 0x7b, 0x7e>(v)); }
};

template <class S>
struct F64Lanes {
  using Storage = double;
  using V = typename S::D;
  static constexpr size_t kStep = S::kLanes32 / 2;
  static V load(const double* p) { return S::loadD(p); }
  static void store(double* p, V v) { S::storeD(p, v); }
  static V sum(V a, V b) { return S::add(a, b); }
  static V prod(V a, V b) { return S::mul(a, b); }
  static V max(V a, V b) { return floatMax<S>(a, b); }
  static V min(V a, V b) { return floatMin<S>(a, b); }
  static void divideStep(double* d, const double* s, const Divisor& q) { store(d, S::div(load(s), S::set1(q.d))); }
};

// Integers: whole vectors of the storage type; Ops names the element-width operations.
template <class S, class T, class Ops>
struct IntLanes {
  using Storage = T;
  using V = typename S::I;
  static constexpr size_t kStep = S::kBytes / sizeof(T);
  static V load(const T* p) { return S::loadI(p); }
  static void store(T* p, V v) { S::storeI(p, v); }
  static V sum(V a, V b) { return Ops::sum(a, b); }
  static V prod(V a, V b) { return Ops::prod(a, b); }
  static V max(V a, V b) { return Ops::max(a, b); }
  static V min(V a, V b) { return Ops::min(a, b); }
};

#define WEFT_INT_OPS(Name, Add, Mul, Max, Min)                                   \
  template <class S>                                                              \
  struct Name {                                                                   \
    using I = typename S::I;                                                      \
    static I sum(I a, I b) { return S::Add(a, b); }                               \
    static I prod(I a, I b) { return S::Mul(a, b); }                              \
    static I max(I a, I b) { return S::Max(a, b); }                               \
    static I min(I a, I b) { return S::Min(a, b); }                               \
  };
WEFT_INT_OPS(OpsS8, add8, mul8, maxS8, minS8)
WEFT_INT_OPS(OpsU8, add8, mul8, maxU8, minU8)
WEFT_INT_OPS(OpsS32, add32, mul32, maxS32, minS32)
WEFT_INT_OPS(OpsU32, add32, mul32, maxU32, minU32)
WEFT_INT_OPS(OpsS64, add64, mul64, maxS64, minS64)
WEFT_INT_OPS(OpsU64, add64, mul64, maxU64, minU64)
#undef WEFT_INT_OPS

// ---------------------------------------------------------------------------------------------
// Integer divide (C truncation). 8-bit: in fp32 (|v| <= 255: the correctly rounded quotient never
// crosses an integer, and n beyond 2^24 gives 0 as it must). 32-bit: in fp64 (same argument with
// |v| < 2^32). 64-bit: no exact vector division; a plain loop.

template <class S, class T>
struct Div8Lanes {
  using Storage = T;
  static constexpr size_t kStep = S::kLanes32;
  static void divideStep(T* d, const T* s, const Divisor& q) {
    const typename S::I v = std::is_signed_v<T> ? S::widenS8(s) : S::widenU8(s);
    S::narrow8(d, S::cvttToI(S::div(S::cvtToF(v), S::set1(q.f))));
  }
};

template <class S, class T>
struct Div32Lanes {
  using Storage = T;
  static constexpr size_t kStep = S::kLanes32;
  static void divideStep(T* d, const T* s, const Divisor& q) {
    const typename S::I v = S::loadI(s);
    S::storeI(d, std::is_signed_v<T> ? S::divS32(v, q.d) : S::divU32(v, q.d));
  }
};

// ---------------------------------------------------------------------------------------------
// Loops.

struct Sum {
  template <class K>
  static typename K::V apply(typename K::V a, typename K::V b) { return K::sum(a, b); }
};
struct Prod {
  template <class K>
  static typename K::V apply(typename K::V a, typename K::V b) { return K::prod(a, b); }
};
struct Max {
  template <class K>
  static typename K::V apply(typename K::V a, typename K::V b) { return K::max(a, b); }
};
struct Min {
  template <class K>
  static typename K::V apply(typename K::V a, typename K::V b) { return K::min(a, b); }
};

// dst may alias a and/or b exactly: every step loads both operands before it stores.
template <class K, class Op>
void reduceKernel(void* dst, const void* a, const void* b, size_t n) {
  using T = typename K::Storage;
  using V = typename K::V;
  constexpr size_t kW = K::kStep;
  T* d = static_cast<T*>(dst);
  const T* x = static_cast<const T*>(a);
  const T* y = static_cast<const T*>(b);
  size_t i = 0;
  for (; i + 2 * kW <= n; i += 2 * kW) {
    const V r0 = Op::template apply<K>(K::load(x + i), K::load(y + i));
    const V r1 = Op::template apply<K>(K::load(x + i + kW), K::load(y + i + kW));
    K::store(d + i, r0);
    K::store(d + i + kW, r1);
  }
  if (i + kW <= n) {
    K::store(d + i, Op::template apply<K>(K::load(x + i), K::load(y + i)));
    i += kW;
  }
  if (i < n) {
    // The tail through full-width stack copies (zero-padded), so it takes the vector path too.
    const size_t bytes = (n - i) * sizeof(T);
    alignas(64) T tx[kW] = {};
    alignas(64) T ty[kW] = {};
    alignas(64) T td[kW];
    std::memcpy(tx, x + i, bytes);
    std::memcpy(ty, y + i, bytes);
    K::store(td, Op::template apply<K>(K::load(tx), K::load(ty)));
    std::memcpy(d + i, td, bytes);
  }
}

template <class K>
void divideKernel(void* dst, const void* src, size_t n, int k) {
  using T = typename K::Storage;
  constexpr size_t kW = K::kStep;
  const Divisor q{static_cast<float>(k), static_cast<double>(k)};
  T* d = static_cast<T*>(dst);
  const T* s = static_cast<const T*>(src);
  size_t i = 0;
  for (; i + kW <= n; i += kW) K::divideStep(d + i, s + i, q);
  if (i < n) {
    const size_t bytes = (n - i) * sizeof(T);
    alignas(64) T ts[kW] = {};
    alignas(64) T td[kW];
    std::memcpy(ts, s + i, bytes);
    K::divideStep(td, ts, q);
    std::memcpy(d + i, td, bytes);
  }
}

template <class T>
void divideInt64Kernel(void* dst, const void* src, size_t n, int k) {
  T* d = static_cast<T*>(dst);
  const T* s = static_cast<const T*>(src);
  const T div = static_cast<T>(k);  // k >= 1: exact in either 64-bit type
  for (size_t i = 0; i < n; ++i) d[i] = static_cast<T>(s[i] / div);
}

// ---------------------------------------------------------------------------------------------
// The table for S. constexpr: built at compile time, so no code with S's target runs to build it.

template <class K>
constexpr void addReduce(detail::KernelTable& t, DataType type) {
  const int i = static_cast<int>(type);
  t.reduce[i][static_cast<int>(RedOp::kSum)] = &reduceKernel<K, Sum>;
  t.reduce[i][static_cast<int>(RedOp::kProd)] = &reduceKernel<K, Prod>;
  t.reduce[i][static_cast<int>(RedOp::kMax)] = &reduceKernel<K, Max>;
  t.reduce[i][static_cast<int>(RedOp::kMin)] = &reduceKernel<K, Min>;
  t.reduce[i][static_cast<int>(RedOp::kAvg)] = &reduceKernel<K, Sum>;  // divide is a post-op
}

template <class S>
constexpr detail::KernelTable makeSimdTable(const char* name) {
  detail::KernelTable t{};
  t.name = name;
  addReduce<IntLanes<S, int8_t, OpsS8<S>>>(t, DataType::kInt8);
  addReduce<IntLanes<S, uint8_t, OpsU8<S>>>(t, DataType::kUint8);
  addReduce<IntLanes<S, int32_t, OpsS32<S>>>(t, DataType::kInt32);
  addReduce<IntLanes<S, uint32_t, OpsU32<S>>>(t, DataType::kUint32);
  addReduce<IntLanes<S, int64_t, OpsS64<S>>>(t, DataType::kInt64);
  addReduce<IntLanes<S, uint64_t, OpsU64<S>>>(t, DataType::kUint64);
  addReduce<FloatLanes<S, HalfConv<S>>>(t, DataType::kFloat16);
  addReduce<FloatLanes<S, F32Conv<S>>>(t, DataType::kFloat32);
  addReduce<F64Lanes<S>>(t, DataType::kFloat64);
  addReduce<FloatLanes<S, Bf16Conv<S>>>(t, DataType::kBfloat16);
  addReduce<FloatLanes<S, E4m3Conv<S>>>(t, DataType::kFloat8e4m3);
  addReduce<FloatLanes<S, E5m2Conv<S>>>(t, DataType::kFloat8e5m2);
  auto div = [&t](DataType type, detail::DivideFn fn) { t.divide[static_cast<int>(type)] = fn; };
  div(DataType::kInt8, &divideKernel<Div8Lanes<S, int8_t>>);
  div(DataType::kUint8, &divideKernel<Div8Lanes<S, uint8_t>>);
  div(DataType::kInt32, &divideKernel<Div32Lanes<S, int32_t>>);
  div(DataType::kUint32, &divideKernel<Div32Lanes<S, uint32_t>>);
  div(DataType::kInt64, &divideInt64Kernel<int64_t>);
  div(DataType::kUint64, &divideInt64Kernel<uint64_t>);
  div(DataType::kFloat16, &divideKernel<FloatLanes<S, HalfConv<S>>>);
  div(DataType::kFloat32, &divideKernel<FloatLanes<S, F32Conv<S>>>);
  div(DataType::kFloat64, &divideKernel<F64Lanes<S>>);
  div(DataType::kBfloat16, &divideKernel<FloatLanes<S, Bf16Conv<S>>>);
  div(DataType::kFloat8e4m3, &divideKernel<FloatLanes<S, E4m3Conv<S>>>);
  div(DataType::kFloat8e5m2, &divideKernel<FloatLanes<S, E5m2Conv<S>>>);
  return t;
}
