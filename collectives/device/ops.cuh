// Device reduction arithmetic: the same semantics table as collectives/reduce/reduce.h (weft.h),
// element for element. Conversions between fp32 and the narrow float types are integer work plus
// exact float operations, so they give the host kernels' bits (the build never uses fast math:
// no flush-to-zero, IEEE division; additions and products use the _rn intrinsics so nothing is
// contracted into an FMA). NaN results are NaN on both sides but their payload bits may differ
// (the GPU produces a canonical NaN where x86 propagates an input's payload).
#pragma once

#include <stdint.h>

namespace weft::device::ops {

__device__ __forceinline__ float u2f(uint32_t u) { return __uint_as_float(u); }
__device__ __forceinline__ uint32_t f2u(float f) { return __float_as_uint(f); }

template <int kExp, int kMan>
__device__ __forceinline__ uint32_t roundMagnitude(uint32_t x) {
  constexpr int kBias = (1 << (kExp - 1)) - 1;
  constexpr int kDrop = 23 - kMan;
  constexpr uint32_t kMinNormal = static_cast<uint32_t>(127 - kBias + 1) << 23;
  uint32_t r = x - (static_cast<uint32_t>(127 - kBias) << 23);
  r += (1u << (kDrop - 1)) - 1 + ((r >> kDrop) & 1u);
  const uint32_t normal = r >> kDrop;
  constexpr float kScale = static_cast<float>(1ull << (kBias + kMan - 1));
  const bool isNormal = static_cast<int32_t>(x) >= static_cast<int32_t>(kMinNormal);
  const float v = __fmul_rn(u2f(isNormal ? kMinNormal : x), kScale);
  const int32_t t = static_cast<int32_t>(v);
  const float frac = __fsub_rn(v, static_cast<float>(t));
  const uint32_t above = frac > 0.5f ? 1u : 0u;
  const uint32_t tie = frac == 0.5f ? 1u : 0u;
  const uint32_t denormal = static_cast<uint32_t>(t) + (above | (tie & static_cast<uint32_t>(t)));
  return isNormal ? normal : denormal;
}

template <int kExp, int kMan, bool kIeee>
__device__ __forceinline__ float decodeNarrow(uint32_t code) {
  constexpr int kBias = (1 << (kExp - 1)) - 1;
  constexpr uint32_t kInfCode = ((1u << kExp) - 1) << kMan;
  constexpr uint32_t kAllOnes = (1u << (kExp + kMan)) - 1;
  constexpr float kUnit = 1.0f / static_cast<float>(1ull << (kBias + kMan - 1));
  const uint32_t sign = (code >> (kExp + kMan) & 1u) << 31;
  const uint32_t em = code & kAllOnes;
  const uint32_t normal = (em << (23 - kMan)) + (static_cast<uint32_t>(127 - kBias) << 23);
  const uint32_t denormal = f2u(__fmul_rn(static_cast<float>(static_cast<int32_t>(em)), kUnit));
  const int32_t emSigned = static_cast<int32_t>(em);
  uint32_t bits = emSigned < (1 << kMan) ? denormal : normal;
  if constexpr (kIeee) {
    constexpr int32_t kInf = static_cast<int32_t>(kInfCode);
    const uint32_t special = 0x7f800000u | (em << (23 - kMan)) | (emSigned > kInf ? 0x400000u : 0u);
    bits = emSigned >= kInf ? special : bits;
  } else {
    bits = emSigned == static_cast<int32_t>(kAllOnes) ? 0x7fc00000u : bits;
  }
  return u2f(bits | sign);
}

struct Half {
  using S = uint16_t;
  using C = float;
  static __device__ __forceinline__ float load(uint16_t h) { return decodeNarrow<5, 10, true>(h); }
  static __device__ __forceinline__ uint16_t store(float f) {
    const uint32_t u = f2u(f);
    const uint32_t sign = (u >> 16) & 0x8000u;
    const uint32_t x = u & 0x7fffffffu;
    int32_t c = static_cast<int32_t>(roundMagnitude<5, 10>(x));
    c = c > 0x7c00 ? 0x7c00 : c;
    const int32_t nan = static_cast<int32_t>(0x7e00u | ((x >> 13) & 0x3ffu));
    c = static_cast<int32_t>(x) > 0x7f800000 ? nan : c;
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(c));
  }
};

struct Bf16 {
  using S = uint16_t;
  using C = float;
  static __device__ __forceinline__ float load(uint16_t h) {
    const uint32_t bits = static_cast<uint32_t>(h) << 16;
    return u2f(static_cast<int32_t>(h & 0x7fffu) > 0x7f80 ? bits | 0x400000u : bits);
  }
  static __device__ __forceinline__ uint16_t store(float f) {
    const uint32_t u = f2u(f);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t nan = (u >> 16) | 0x40u;
    return static_cast<uint16_t>(static_cast<int32_t>(u & 0x7fffffffu) > 0x7f800000 ? nan : rounded);
  }
};

struct E4m3 {
  using S = uint8_t;
  using C = float;
  static __device__ __forceinline__ float load(uint8_t v) { return decodeNarrow<4, 3, false>(v); }
  static __device__ __forceinline__ uint8_t store(float f) {
    const uint32_t u = f2u(f);
    const uint32_t sign = (u >> 24) & 0x80u;
    const uint32_t x = u & 0x7fffffffu;
    int32_t c = static_cast<int32_t>(roundMagnitude<4, 3>(x));
    c = c > 0x7e ? 0x7e : c;
    c = static_cast<int32_t>(x) > 0x7f800000 ? 0x7f : c;
    return static_cast<uint8_t>(sign | static_cast<uint32_t>(c));
  }
};

struct E5m2 {
  using S = uint8_t;
  using C = float;
  static __device__ __forceinline__ float load(uint8_t v) { return decodeNarrow<5, 2, true>(v); }
  static __device__ __forceinline__ uint8_t store(float f) {
    const uint32_t u = f2u(f);
    const uint32_t sign = (u >> 24) & 0x80u;
    const uint32_t x = u & 0x7fffffffu;
    int32_t c = static_cast<int32_t>(roundMagnitude<5, 2>(x));
    c = c > 0x7b ? 0x7b : c;
    c = static_cast<int32_t>(x) > 0x7f800000 ? 0x7e : c;
    return static_cast<uint8_t>(sign | static_cast<uint32_t>(c));
  }
};

template <class T>
struct Native {
  using S = T;
  using C = T;
  static __device__ __forceinline__ T load(T v) { return v; }
  static __device__ __forceinline__ T store(T v) { return v; }
};

template <class T> struct Wrap { using U = unsigned; };
template <> struct Wrap<int64_t> { using U = unsigned long long; };
template <> struct Wrap<uint64_t> { using U = unsigned long long; };
template <> struct Wrap<long long> { using U = unsigned long long; };
template <> struct Wrap<unsigned long long> { using U = unsigned long long; };

__device__ __forceinline__ float addRn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double addRn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float mulRn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mulRn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ uint32_t bitsOf(float v) { return __float_as_uint(v); }
__device__ __forceinline__ unsigned long long bitsOf(double v) { return static_cast<unsigned long long>(__double_as_longlong(v)); }
__device__ __forceinline__ float fromBits(uint32_t v) { return __uint_as_float(v); }
__device__ __forceinline__ double fromBits(unsigned long long v) { return __longlong_as_double(static_cast<long long>(v)); }

template <class C>
inline constexpr bool kIsFloat = sizeof(C) >= 4 && (C(0.5) != C(0));

struct Sum {
  template <class C>
  static __device__ __forceinline__ C apply(C a, C b) {
    if constexpr (kIsFloat<C>) return addRn(a, b);
    else return static_cast<C>(static_cast<typename Wrap<C>::U>(a) + static_cast<typename Wrap<C>::U>(b));
  }
};
struct Prod {
  template <class C>
  static __device__ __forceinline__ C apply(C a, C b) {
    if constexpr (kIsFloat<C>) return mulRn(a, b);
    else return static_cast<C>(static_cast<typename Wrap<C>::U>(a) * static_cast<typename Wrap<C>::U>(b));
  }
};
struct Max {
  template <class C>
  static __device__ __forceinline__ C apply(C a, C b) {
    if constexpr (kIsFloat<C>) {
      C r = a < b ? b : a;
      r = a == b ? fromBits(bitsOf(a) & bitsOf(b)) : r;
      r = (a != a || b != b) ? addRn(a, b) : r;
      return r;
    } else {
      return a < b ? b : a;
    }
  }
};
struct Min {
  template <class C>
  static __device__ __forceinline__ C apply(C a, C b) {
    if constexpr (kIsFloat<C>) {
      C r = b < a ? b : a;
      r = a == b ? fromBits(bitsOf(a) | bitsOf(b)) : r;
      r = (a != a || b != b) ? addRn(a, b) : r;
      return r;
    } else {
      return b < a ? b : a;
    }
  }
};

// One reduction step on stored values (rounded to the type once).
template <class Tr, class Op>
__device__ __forceinline__ typename Tr::S combine(typename Tr::S a, typename Tr::S b) {
  return Tr::store(Op::template apply<typename Tr::C>(Tr::load(a), Tr::load(b)));
}

// The avg post-op: divide the full sum by n.
template <class Tr>
__device__ __forceinline__ typename Tr::S divideBy(typename Tr::S v, int n) {
  using C = typename Tr::C;
  if constexpr (kIsFloat<C>) {
    if constexpr (sizeof(C) == 8) return Tr::store(__ddiv_rn(Tr::load(v), static_cast<double>(n)));
    else return Tr::store(__fdiv_rn(Tr::load(v), static_cast<float>(n)));
  } else {
    if constexpr (sizeof(C) == 8) return static_cast<C>(v / static_cast<C>(n));
    else return static_cast<C>(static_cast<long long>(v) / n);
  }
}

}  // namespace weft::device::ops
