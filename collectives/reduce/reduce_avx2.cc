// AVX2 + F16C reduction kernels (256-bit). Every function below the target pragma is compiled for
// avx2,f16c and only reached through the table when the CPU has both (reduce.cc checks CPUID).
// No FMA: the target does not enable it, so no multiply-add can be contracted.
#include "collectives/reduce/reduce.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,f16c")
#endif

namespace weft::reduce {
namespace {

struct Avx2 {
  using F = __m256;
  using D = __m256d;
  using I = __m256i;
  static constexpr size_t kLanes32 = 8;
  static constexpr size_t kBytes = 32;

  // Memory (unaligned: buffers are only element-aligned).
  static F loadF(const float* p) { return _mm256_loadu_ps(p); }
  static void storeF(float* p, F v) { _mm256_storeu_ps(p, v); }
  static D loadD(const double* p) { return _mm256_loadu_pd(p); }
  static void storeD(double* p, D v) { _mm256_storeu_pd(p, v); }
  static I loadI(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
  static void storeI(void* p, I v) { _mm256_storeu_si256(static_cast<__m256i*>(p), v); }

  // Floats.
  static F set1(float v) { return _mm256_set1_ps(v); }
  static D set1(double v) { return _mm256_set1_pd(v); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static D add(D a, D b) { return _mm256_add_pd(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static D mul(D a, D b) { return _mm256_mul_pd(a, b); }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static D div(D a, D b) { return _mm256_div_pd(a, b); }
  static F maxRaw(F a, F b) { return _mm256_max_ps(a, b); }
  static D maxRaw(D a, D b) { return _mm256_max_pd(a, b); }
  static F minRaw(F a, F b) { return _mm256_min_ps(a, b); }
  static D minRaw(D a, D b) { return _mm256_min_pd(a, b); }
  static F cmpEq(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
  static D cmpEq(D a, D b) { return _mm256_cmp_pd(a, b, _CMP_EQ_OQ); }
  static F cmpUnord(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_UNORD_Q); }
  static D cmpUnord(D a, D b) { return _mm256_cmp_pd(a, b, _CMP_UNORD_Q); }
  static F select(F m, F t, F f) { return _mm256_blendv_ps(f, t, m); }
  static D select(D m, D t, D f) { return _mm256_blendv_pd(f, t, m); }
  static F bitAnd(F a, F b) { return _mm256_and_ps(a, b); }
  static D bitAnd(D a, D b) { return _mm256_and_pd(a, b); }
  static F bitOr(F a, F b) { return _mm256_or_ps(a, b); }
  static D bitOr(D a, D b) { return _mm256_or_pd(a, b); }

  // Integer element ops (wrapping).
  static I add8(I a, I b) { return _mm256_add_epi8(a, b); }
  static I add32(I a, I b) { return _mm256_add_epi32(a, b); }
  static I add64(I a, I b) { return _mm256_add_epi64(a, b); }
  static I mul8(I a, I b) {  // no byte multiply: even and odd bytes through 16-bit products
    const I even = _mm256_mullo_epi16(a, b);
    const I odd = _mm256_mullo_epi16(_mm256_srli_epi16(a, 8), _mm256_srli_epi16(b, 8));
    return _mm256_or_si256(_mm256_and_si256(even, _mm256_set1_epi16(0x00ff)), _mm256_slli_epi16(odd, 8));
  }
  static I mul32(I a, I b) { return _mm256_mullo_epi32(a, b); }
  static I mul64(I a, I b) {  // lo*lo + ((hi*lo + lo*hi) << 32), mod 2^64
    const I lo = _mm256_mul_epu32(a, b);
    const I cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), b),
                                     _mm256_mul_epu32(a, _mm256_srli_epi64(b, 32)));
    return _mm256_add_epi64(lo, _mm256_slli_epi64(cross, 32));
  }
  static I maxS8(I a, I b) { return _mm256_max_epi8(a, b); }
  static I minS8(I a, I b) { return _mm256_min_epi8(a, b); }
  static I maxU8(I a, I b) { return _mm256_max_epu8(a, b); }
  static I minU8(I a, I b) { return _mm256_min_epu8(a, b); }
  static I maxS32(I a, I b) { return _mm256_max_epi32(a, b); }
  static I minS32(I a, I b) { return _mm256_min_epi32(a, b); }
  static I maxU32(I a, I b) { return _mm256_max_epu32(a, b); }
  static I minU32(I a, I b) { return _mm256_min_epu32(a, b); }
  static I maxS64(I a, I b) { return _mm256_blendv_epi8(b, a, _mm256_cmpgt_epi64(a, b)); }
  static I minS64(I a, I b) { return _mm256_blendv_epi8(a, b, _mm256_cmpgt_epi64(a, b)); }
  static I flip64(I v) { return _mm256_xor_si256(v, _mm256_set1_epi64x(INT64_MIN)); }
  static I maxU64(I a, I b) { return _mm256_blendv_epi8(b, a, _mm256_cmpgt_epi64(flip64(a), flip64(b))); }
  static I minU64(I a, I b) { return _mm256_blendv_epi8(a, b, _mm256_cmpgt_epi64(flip64(a), flip64(b))); }

  // 32-bit lanes (conversions). A mask is a vector of all-ones / zero lanes.
  static I set1I(int32_t v) { return _mm256_set1_epi32(v); }
  static I and_(I a, I b) { return _mm256_and_si256(a, b); }
  static I or_(I a, I b) { return _mm256_or_si256(a, b); }
  template <int k>
  static I slli32(I v) { return _mm256_slli_epi32(v, k); }
  template <int k>
  static I srli32(I v) { return _mm256_srli_epi32(v, k); }
  static I selectI(I m, I t, I f) { return _mm256_blendv_epi8(f, t, m); }
  static I castI(F v) { return _mm256_castps_si256(v); }
  static F castF(I v) { return _mm256_castsi256_ps(v); }
  static I unpackLo16(I a, I b) { return _mm256_unpacklo_epi16(a, b); }
  static I unpackHi16(I a, I b) { return _mm256_unpackhi_epi16(a, b); }
  static I packUs32(I a, I b) { return _mm256_packus_epi32(a, b); }
  static I isNanI(F v) { return _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)); }
  static F cvtToF(I v) { return _mm256_cvtepi32_ps(v); }   // exact for the small integers used
  static I cvttToI(F v) { return _mm256_cvttps_epi32(v); }  // truncation: no rounding mode

  // Narrow storage.
  static F loadHalf(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static void storeHalf(uint16_t* p, F v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static I widenU16(const uint16_t* p) { return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static void narrow16(uint16_t* p, I v) {  // lanes hold 0..0xffff: the unsigned-saturating pack is exact
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
  }
  static I widenU8(const void* p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64(static_cast<const __m128i*>(p))); }
  static I widenS8(const void* p) { return _mm256_cvtepi8_epi32(_mm_loadl_epi64(static_cast<const __m128i*>(p))); }
  static void narrow8(void* p, I v) {  // the low byte of each lane
    const I pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                    0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    const I t = _mm256_shuffle_epi8(v, pick);
    _mm_storel_epi64(static_cast<__m128i*>(p),
                     _mm_unpacklo_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1)));
  }

  // 16-bit lanes (fp8 through fp16): H holds 8, a mask is a vector of all-ones / zero lanes.
  using H = __m128i;
  static H set1H(int16_t v) { return _mm_set1_epi16(v); }
  static H andH(H a, H b) { return _mm_and_si128(a, b); }
  static H orH(H a, H b) { return _mm_or_si128(a, b); }
  static H addH(H a, H b) { return _mm_add_epi16(a, b); }
  template <int k>
  static H slliH(H v) { return _mm_slli_epi16(v, k); }
  template <int k>
  static H srliH(H v) { return _mm_srli_epi16(v, k); }
  template <int k>
  static H sraiH(H v) { return _mm_srai_epi16(v, k); }
  static H xorH(H a, H b) { return _mm_xor_si128(a, b); }
  static H minUH(H a, H b) { return _mm_min_epu16(a, b); }
  static H cmpeqH(H a, H b) { return _mm_cmpeq_epi16(a, b); }
  static H selectH(H m, H t, H f) { return _mm_blendv_epi8(f, t, m); }
  static H widen8to16(const void* p) { return _mm_cvtepu8_epi16(_mm_loadl_epi64(static_cast<const __m128i*>(p))); }
  static void narrow16to8(void* p, H v) { _mm_storel_epi64(static_cast<__m128i*>(p), _mm_packus_epi16(v, v)); }
  static F cvtHtoF(H h) { return _mm256_cvtph_ps(h); }
  static H cvtFtoHrz(F v) { return _mm256_cvtps_ph(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC); }
  static H packMask(__m256i m) { return _mm_packs_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1)); }
  static H cmpneqFtoH(F a, F b) { return packMask(_mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_NEQ_UQ))); }
  static H isNanFtoH(F v) { return packMask(_mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q))); }
  static H isNegFtoH(F v) { return packMask(_mm256_srai_epi32(_mm256_castps_si256(v), 31)); }

  // 32-bit integer divide by n (C truncation) through fp64: exact (see reduce_simd.h).
  static I divS32(I v, double n) {
    const D dn = _mm256_set1_pd(n);
    const __m128i lo = _mm256_cvttpd_epi32(_mm256_div_pd(_mm256_cvtepi32_pd(_mm256_castsi256_si128(v)), dn));
    const __m128i hi = _mm256_cvttpd_epi32(_mm256_div_pd(_mm256_cvtepi32_pd(_mm256_extracti128_si256(v, 1)), dn));
    return _mm256_set_m128i(hi, lo);
  }
  static __m128i divU32Half(__m128i flipped, D dn) {
    // flipped = v ^ 2^31 as signed; + 2^31 gives v exactly. The truncated quotient q < 2^32 goes
    // back through q - 2^31 (exact) and the same flip.
    const D off = _mm256_set1_pd(2147483648.0);
    const D v = _mm256_add_pd(_mm256_cvtepi32_pd(flipped), off);
    const D q = _mm256_round_pd(_mm256_div_pd(v, dn), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    return _mm256_cvttpd_epi32(_mm256_sub_pd(q, off));
  }
  static I divU32(I v, double n) {
    const D dn = _mm256_set1_pd(n);
    const I flip = _mm256_set1_epi32(INT32_MIN);
    const I f = _mm256_xor_si256(v, flip);
    const I r = _mm256_set_m128i(divU32Half(_mm256_extracti128_si256(f, 1), dn), divU32Half(_mm256_castsi256_si128(f), dn));
    return _mm256_xor_si256(r, flip);
  }
};

#include "collectives/reduce/reduce_simd.h"

}  // namespace
}  // namespace weft::reduce

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace weft::reduce {
namespace {
constinit const detail::KernelTable kAvx2Kernels = makeSimdTable<Avx2>("avx2");
}  // namespace
namespace detail {
const KernelTable* avx2Kernels() { return &kAvx2Kernels; }
}  // namespace detail
}  // namespace weft::reduce

#else  // not x86-64

namespace weft::reduce::detail {
const KernelTable* avx2Kernels() { return nullptr; }
}  // namespace weft::reduce::detail

#endif
