// The SIMD reduction kernels, written once over an instruction-set struct S (Avx2 in
// reduce_avx2.cc, Avx512 in reduce_avx512.cc) that wraps the intrinsics: vector types F (fp32
// lanes), D (fp64 lanes), I (integer bits), their compare-mask types, and the few operations the
// kernels need. Every kernel gives, lane by lane, the bits the scalar reference in reduce.cc gives
// (the same op definitions; conversions by the same formulas or by hardware ones shown equal
// below), except the payload of a NaN made from two NaNs, which the semantics leave open.
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
  // The reference quietens a signalling NaN here; not needed for the same bits: every result
  // passes through an add, multiply or divide (max/min return a + b for NaN), which quietens it.
  static typename S::F load(const uint16_t* p) { return S::castF(S::template slli32<16>(S::widenU16(p))); }
  // Integer rounding at bit 16 (the reference's formula). Not the AVX512-BF16 convert: that one
  // flushes fp32 denormals to zero, and this is as fast for a memory-bound kernel.
  static void store(uint16_t* p, typename S::F v) {
    const I u = S::castI(v);
    const I high = S::template srli32<16>(u);
    const I rounded = S::template srli32<16>(S::add32(u, S::add32(S::set1I(0x7fff), S::and_(high, S::set1I(1)))));
    S::narrow16(p, S::selectI(S::isNanI(v), S::or_(high, S::set1I(0x40)), rounded));
  }
};

// bf16 for reduce: two fp32 vectors per load. Interleaving a whole vector of bf16 with zeros
// (unpack low / high 16-bit halves, per 128-bit lane) gives their fp32 values in one instruction
// each, lane-permuted; the unsigned pack of the two rounded halves undoes that permutation. Same
// per-element computation as Bf16Conv (which the divide uses).
template <class S>
struct Bf16Lanes {
  using Storage = uint16_t;
  using F = typename S::F;
  struct V {
    F lo, hi;
  };
  static constexpr size_t kStep = S::kBytes / sizeof(uint16_t);
  static V load(const uint16_t* p) {
    const typename S::I x = S::loadI(p);
    return V{S::castF(S::unpackLo16(S::set1I(0), x)), S::castF(S::unpackHi16(S::set1I(0), x))};
  }
  static typename S::I round(F v) {
    const typename S::I u = S::castI(v);
    const typename S::I high = S::template srli32<16>(u);
    const typename S::I rounded =
        S::template srli32<16>(S::add32(u, S::add32(S::set1I(0x7fff), S::and_(high, S::set1I(1)))));
    return S::selectI(S::isNanI(v), S::or_(high, S::set1I(0x40)), rounded);
  }
  static void store(uint16_t* p, V v) { S::storeI(p, S::packUs32(round(v.lo), round(v.hi))); }
  static V sum(V a, V b) { return V{S::add(a.lo, b.lo), S::add(a.hi, b.hi)}; }
  static V prod(V a, V b) { return V{S::mul(a.lo, b.lo), S::mul(a.hi, b.hi)}; }
  static V max(V a, V b) { return V{floatMax<S>(a.lo, b.lo), floatMax<S>(a.hi, b.hi)}; }
  static V min(V a, V b) { return V{floatMin<S>(a.lo, b.lo), floatMin<S>(a.hi, b.hi)}; }
};

// fp8 <-> fp32 through fp16 (the F16C / AVX-512F conversions), in 16-bit lanes S::H.
// Decode, exact: an e5m2 code is the top byte of the fp16 of the same value; an e4m3 code's
// exponent and mantissa placed in an fp16 (bias 15 instead of 7) read as 2^-8 times its value,
// denormals included; e4m3's S.1111.111 is NaN.
// Encode: |x| (times 2^-8 for e4m3) converted to fp16 toward zero, with the lowest bit set when
// inexact (round to odd: 11 significant bits), then rounded to nearest-even at the fp8 mantissa
// in integer arithmetic. Rounding to odd with at least two more bits than the target makes the
// second rounding exact (also on the denormal grid, which is 2^7 / 2^8 times finer in fp16), so
// this equals the reference's single rounding. fp16 overflow under round-toward-zero stops at
// 65504 and fp8 saturates anyway; NaN and sign are applied last.
template <class S>
inline typename S::F decodeE4m3(const uint8_t* p) {
  using H = typename S::H;
  // code << 8 is S.EEEE.MMM then zeros; an arithmetic shift by one copies the sign into bit 14,
  // which the mask clears: sign at bit 15, exponent and mantissa at bits 7..13.
  H h = S::andH(S::template sraiH<1>(S::template slliH<8>(S::widen8to16(p))), S::set1H(static_cast<int16_t>(0xbf80)));
  // S.1111.111 (NaN) would read as +-480: make it the fp16 quiet NaN 0x7e00 (sign kept), which
  // converts to the reference's 0x7fc00000 and stays that through the exact scaling below.
  const auto isNan = S::cmpeqH(S::andH(h, S::set1H(0x7fff)), S::set1H(0x3f80));
  h = S::selectH(isNan, S::xorH(h, S::set1H(0x3f80 ^ 0x7e00)), h);
  return S::mul(S::cvtHtoF(h), S::set1(256.0f));
}

template <class S>
inline typename S::F decodeE5m2(const uint8_t* p) {
  return S::cvtHtoF(S::template slliH<8>(S::widen8to16(p)));
}

template <class S, bool kE4m3>
inline void encodeFp8(uint8_t* p, typename S::F v) {
  using H = typename S::H;
  constexpr int kDrop = kE4m3 ? 7 : 8;  // fp16 mantissa bits beyond the fp8 ones
  constexpr int16_t kMaxCode = kE4m3 ? 0x7e : 0x7b;
  constexpr int16_t kNanCode = kE4m3 ? 0x7f : 0x7e;
  const typename S::F a = S::castF(S::and_(S::castI(v), S::set1I(0x7fffffff)));
  const typename S::F y = kE4m3 ? S::mul(a, S::set1(1.0f / 256.0f)) : a;  // exact where it matters
  H h = S::cvtFtoHrz(y);
  h = S::selectH(S::cmpneqFtoH(S::cvtHtoF(h), y), S::orH(h, S::set1H(1)), h);  // sticky bit
  H c = S::addH(h, S::addH(S::set1H((1 << (kDrop - 1)) - 1), S::andH(S::template srliH<kDrop>(h), S::set1H(1))));
  c = S::minUH(S::template srliH<kDrop>(c), S::set1H(kMaxCode));  // saturate (inf included)
  c = S::selectH(S::isNanFtoH(v), S::set1H(kNanCode), c);
  c = S::selectH(S::isNegFtoH(v), S::orH(c, S::set1H(0x80)), c);
  S::narrow16to8(p, c);
}

template <class S>
struct E4m3Conv {
  using Storage = uint8_t;
  static typename S::F load(const uint8_t* p) { return decodeE4m3<S>(p); }
  static void store(uint8_t* p, typename S::F v) { encodeFp8<S, true>(p, v); }
};

template <class S>
struct E5m2Conv {
  using Storage = uint8_t;
  static typename S::F load(const uint8_t* p) { return decodeE5m2<S>(p); }
  static void store(uint8_t* p, typename S::F v) { encodeFp8<S, false>(p, v); }
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
  addReduce<Bf16Lanes<S>>(t, DataType::kBfloat16);
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
