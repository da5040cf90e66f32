// AVX-512 reduction kernels (512-bit; F, BW and VL, nothing else: fp16 conversion is AVX512F,
// bf16 uses integer rounding rather than the AVX512-BF16 convert, which flushes denormals, and the
// 64-bit multiply is built from vpmuludq rather than AVX512DQ's vpmullq). Every function below the
// target pragma is only reached through the table when the CPU (and OS) support these extensions.
#include "collectives/reduce/reduce.h"

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), which its -Wmaybe-uninitialized
// reports once they are inlined (GCC PR 105593, fixed in 12.3 / 13). A false positive: silenced
// for this file only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,f16c")
#endif

namespace weft::reduce {
namespace {

struct Avx512 {
  using F = __m512;
  using D = __m512d;
  using I = __m512i;
  static constexpr size_t kLanes32 = 16;
  static constexpr size_t kBytes = 64;

  // Memory (unaligned: buffers are only element-aligned).
  static F loadF(const float* p) { return _mm512_loadu_ps(p); }
  static void storeF(float* p, F v) { _mm512_storeu_ps(p, v); }
  static D loadD(const double* p) { return _mm512_loadu_pd(p); }
  static void storeD(double* p, D v) { _mm512_storeu_pd(p, v); }
  static I loadI(const void* p) { return _mm512_loadu_si512(p); }
  static void storeI(void* p, I v) { _mm512_storeu_si512(p, v); }

  // Floats. Compares give k-masks; select(m, t, f) = m ? t : f per lane.
  static F set1(float v) { return _mm512_set1_ps(v); }
  static D set1(double v) { return _mm512_set1_pd(v); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static D add(D a, D b) { return _mm512_add_pd(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static D mul(D a, D b) { return _mm512_mul_pd(a, b); }
  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  static D div(D a, D b) { return _mm512_div_pd(a, b); }
  static F maxRaw(F a, F b) { return _mm512_max_ps(a, b); }
  static D maxRaw(D a, D b) { return _mm512_max_pd(a, b); }
  static F minRaw(F a, F b) { return _mm512_min_ps(a, b); }
  static D minRaw(D a, D b) { return _mm512_min_pd(a, b); }
  static __mmask16 cmpEq(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
  static __mmask8 cmpEq(D a, D b) { return _mm512_cmp_pd_mask(a, b, _CMP_EQ_OQ); }
  static __mmask16 cmpUnord(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q); }
  static __mmask8 cmpUnord(D a, D b) { return _mm512_cmp_pd_mask(a, b, _CMP_UNORD_Q); }
  static F select(__mmask16 m, F t, F f) { return _mm512_mask_blend_ps(m, f, t); }
  static D select(__mmask8 m, D t, D f) { return _mm512_mask_blend_pd(m, f, t); }
  // (and/or on float vectors is AVX512DQ; the integer forms are AVX512F.)
  static F bitAnd(F a, F b) { return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_castps_si512(b))); }
  static D bitAnd(D a, D b) { return _mm512_castsi512_pd(_mm512_and_si512(_mm512_castpd_si512(a), _mm512_castpd_si512(b))); }
  static F bitOr(F a, F b) { return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(a), _mm512_castps_si512(b))); }
  static D bitOr(D a, D b) { return _mm512_castsi512_pd(_mm512_or_si512(_mm512_castpd_si512(a), _mm512_castpd_si512(b))); }

  // Integer element ops (wrapping).
  static I add8(I a, I b) { return _mm512_add_epi8(a, b); }
  static I add32(I a, I b) { return _mm512_add_epi32(a, b); }
  static I add64(I a, I b) { return _mm512_add_epi64(a, b); }
  static I mul8(I a, I b) {  // no byte multiply: even and odd bytes through 16-bit products
    const I even = _mm512_mullo_epi16(a, b);
    const I odd = _mm512_mullo_epi16(_mm512_srli_epi16(a, 8), _mm512_srli_epi16(b, 8));
    return _mm512_or_si512(_mm512_and_si512(even, _mm512_set1_epi16(0x00ff)), _mm512_slli_epi16(odd, 8));
  }
  static I mul32(I a, I b) { return _mm512_mullo_epi32(a, b); }
  static I mul64(I a, I b) {  // lo*lo + ((hi*lo + lo*hi) << 32), mod 2^64 (vpmullq is AVX512DQ)
    const I lo = _mm512_mul_epu32(a, b);
    const I cross = _mm512_add_epi64(_mm512_mul_epu32(_mm512_srli_epi64(a, 32), b),
                                     _mm512_mul_epu32(a, _mm512_srli_epi64(b, 32)));
    return _mm512_add_epi64(lo, _mm512_slli_epi64(cross, 32));
  }
  static I maxS8(I a, I b) { return _mm512_max_epi8(a, b); }
  static I minS8(I a, I b) { return _mm512_min_epi8(a, b); }
  static I maxU8(I a, I b) { return _mm512_max_epu8(a, b); }
  static I minU8(I a, I b) { return _mm512_min_epu8(a, b); }
  static I maxS32(I a, I b) { return _mm512_max_epi32(a, b); }
  static I minS32(I a, I b) { return _mm512_min_epi32(a, b); }
  static I maxU32(I a, I b) { return _mm512_max_epu32(a, b); }
  static I minU32(I a, I b) { return _mm512_min_epu32(a, b); }
  static I maxS64(I a, I b) { return _mm512_max_epi64(a, b); }
  static I minS64(I a, I b) { return _mm512_min_epi64(a, b); }
  static I maxU64(I a, I b) { return _mm512_max_epu64(a, b); }
  static I minU64(I a, I b) { return _mm512_min_epu64(a, b); }

  // 32-bit lanes (conversions).
  static I set1I(int32_t v) { return _mm512_set1_epi32(v); }
  static I and_(I a, I b) { return _mm512_and_si512(a, b); }
  static I or_(I a, I b) { return _mm512_or_si512(a, b); }
  template <int k>
  static I slli32(I v) { return _mm512_slli_epi32(v, k); }
  template <int k>
  static I srli32(I v) { return _mm512_srli_epi32(v, k); }
  static I selectI(__mmask16 m, I t, I f) { return _mm512_mask_blend_epi32(m, f, t); }
  static I castI(F v) { return _mm512_castps_si512(v); }
  static F castF(I v) { return _mm512_castsi512_ps(v); }
  static I unpackLo16(I a, I b) { return _mm512_unpacklo_epi16(a, b); }
  static I unpackHi16(I a, I b) { return _mm512_unpackhi_epi16(a, b); }
  static I packUs32(I a, I b) { return _mm512_packus_epi32(a, b); }
  static __mmask16 isNanI(F v) { return _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q); }
  static F cvtToF(I v) { return _mm512_cvtepi32_ps(v); }   // exact for the small integers used
  static I cvttToI(F v) { return _mm512_cvttps_epi32(v); }  // truncation: no rounding mode

  // Narrow storage.
  static F loadHalf(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static void storeHalf(uint16_t* p, F v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static I widenU16(const uint16_t* p) { return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static void narrow16(uint16_t* p, I v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(v)); }
  static I widenU8(const void* p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128(static_cast<const __m128i*>(p))); }
  static I widenS8(const void* p) { return _mm512_cvtepi8_epi32(_mm_loadu_si128(static_cast<const __m128i*>(p))); }
  static void narrow8(void* p, I v) { _mm_storeu_si128(static_cast<__m128i*>(p), _mm512_cvtepi32_epi8(v)); }

  // 16-bit lanes (fp8 through fp16): H holds 16; masks are k-masks.
  using H = __m256i;
  static H set1H(int16_t v) { return _mm256_set1_epi16(v); }
  static H andH(H a, H b) { return _mm256_and_si256(a, b); }
  static H orH(H a, H b) { return _mm256_or_si256(a, b); }
  static H addH(H a, H b) { return _mm256_add_epi16(a, b); }
  template <int k>
  static H slliH(H v) { return _mm256_slli_epi16(v, k); }
  template <int k>
  static H srliH(H v) { return _mm256_srli_epi16(v, k); }
  template <int k>
  static H sraiH(H v) { return _mm256_srai_epi16(v, k); }
  static H xorH(H a, H b) { return _mm256_xor_si256(a, b); }
  static H minUH(H a, H b) { return _mm256_min_epu16(a, b); }
  static __mmask16 cmpeqH(H a, H b) { return _mm256_cmpeq_epi16_mask(a, b); }
  static H selectH(__mmask16 m, H t, H f) { return _mm256_mask_blend_epi16(m, f, t); }
  static H widen8to16(const void* p) { return _mm256_cvtepu8_epi16(_mm_loadu_si128(static_cast<const __m128i*>(p))); }
  static void narrow16to8(void* p, H v) { _mm_storeu_si128(static_cast<__m128i*>(p), _mm256_cvtepi16_epi8(v)); }
  static F cvtHtoF(H h) { return _mm512_cvtph_ps(h); }
  static H cvtFtoHrz(F v) { return _mm512_cvtps_ph(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC); }
  static __mmask16 cmpneqFtoH(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_NEQ_UQ); }
  static __mmask16 isNanFtoH(F v) { return _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q); }
  static __mmask16 isNegFtoH(F v) { return _mm512_cmplt_epi32_mask(_mm512_castps_si512(v), _mm512_setzero_si512()); }

  // 32-bit integer divide by n (C truncation) through fp64: exact (see reduce_simd.h).
  static I join(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }
  static I divS32(I v, double n) {
    const D dn = _mm512_set1_pd(n);
    const __m256i lo = _mm512_cvttpd_epi32(_mm512_div_pd(_mm512_cvtepi32_pd(_mm512_castsi512_si256(v)), dn));
    const __m256i hi = _mm512_cvttpd_epi32(_mm512_div_pd(_mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(v, 1)), dn));
    return join(lo, hi);
  }
  static I divU32(I v, double n) {
    const D dn = _mm512_set1_pd(n);
    const __m256i lo = _mm512_cvttpd_epu32(_mm512_div_pd(_mm512_cvtepu32_pd(_mm512_castsi512_si256(v)), dn));
    const __m256i hi = _mm512_cvttpd_epu32(_mm512_div_pd(_mm512_cvtepu32_pd(_mm512_extracti64x4_epi64(v, 1)), dn));
    return join(lo, hi);
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
constinit const detail::KernelTable kAvx512Kernels = makeSimdTable<Avx512>("avx512");
}  // namespace
namespace detail {
const KernelTable* avx512Kernels() { return &kAvx512Kernels; }
}  // namespace detail
}  // namespace weft::reduce

#else  // not x86-64

namespace weft::reduce::detail {
const KernelTable* avx512Kernels() { return nullptr; }
}  // namespace weft::reduce::detail

#endif
