// weft-bench: small, independent encoders and decoders for the narrow floating-point types
// (fp16, bf16, fp8 e4m3, fp8 e5m2). The benchmark checks the library's results against these, so
// they deliberately share no code with the library.
#pragma once

#include <cmath>
#include <cstdint>

namespace weftbench {

// A binary floating-point format with 1 sign bit, expBits exponent bits and mantBits stored
// mantissa bits.
struct FloatFormat {
  int expBits;
  int mantBits;
  int bias;
  bool hasInf;      // IEEE-like: all-ones exponent is inf (mantissa 0) or NaN
  bool e4m3Style;   // OCP e4m3: no inf; only S.1111.111 is NaN
  bool saturate;    // overflow and infinities encode as +-max finite (fp8, as weft.h documents)
  double maxFinite;
};

inline constexpr FloatFormat kFp16{5, 10, 15, true, false, false, 65504.0};
inline constexpr FloatFormat kBf16{8, 7, 127, true, false, false,
                                   3.38953138925153547590470800371487866880e+38};
inline constexpr FloatFormat kFp8E4M3{4, 3, 7, false, true, true, 448.0};
inline constexpr FloatFormat kFp8E5M2{5, 2, 15, true, false, true, 57344.0};

inline double decodeFloat(const FloatFormat& f, uint32_t bits) {
  const uint32_t mantMask = (1u << f.mantBits) - 1;
  const uint32_t expMask = (1u << f.expBits) - 1;
  const bool neg = (bits >> (f.expBits + f.mantBits)) & 1u;
  const uint32_t e = (bits >> f.mantBits) & expMask;
  const uint32_t m = bits & mantMask;
  double v;
  if (e == expMask && f.hasInf) {
    v = m == 0 ? INFINITY : NAN;
  } else if (e == expMask && f.e4m3Style && m == mantMask) {
    v = NAN;
  } else if (e == 0) {
    v = std::ldexp(static_cast<double>(m), 1 - f.bias - f.mantBits);
  } else {
    v = std::ldexp(static_cast<double>(m + (1u << f.mantBits)),
                   static_cast<int>(e) - f.bias - f.mantBits);
  }
  return neg ? -v : v;
}

// Round x to nearest-even into format f and return its bits.
inline uint32_t encodeFloat(const FloatFormat& f, double x) {
  const uint32_t signBit = 1u << (f.expBits + f.mantBits);
  const uint32_t expMask = (1u << f.expBits) - 1;
  const uint32_t mantMask = (1u << f.mantBits) - 1;
  if (std::isnan(x)) {
    if (f.e4m3Style) return (expMask << f.mantBits) | mantMask;
    return (expMask << f.mantBits) | (1u << (f.mantBits - 1));
  }
  const uint32_t sign = std::signbit(x) ? signBit : 0;
  double a = std::fabs(x);
  if (a == 0) return sign;
  const int emin = 1 - f.bias;
  // Round at the quantum of a's binade (or of the subnormal range).
  if (!std::isinf(a)) {
    int e2;
    std::frexp(a, &e2);  // a = fr * 2^e2, fr in [0.5, 1)
    int e = e2 - 1;
    if (e < emin) e = emin;
    const int qe = e - f.mantBits;
    a = std::ldexp(std::nearbyint(std::ldexp(a, -qe)), qe);  // default mode: round to nearest even
  }
  if (a > f.maxFinite) {
    if (f.saturate || !f.hasInf) a = f.maxFinite;
    else return sign | (expMask << f.mantBits);
  }
  if (a < std::ldexp(1.0, emin)) {  // subnormal (a is a multiple of the subnormal quantum)
    return sign | static_cast<uint32_t>(std::ldexp(a, f.mantBits - emin));
  }
  int e2;
  std::frexp(a, &e2);
  const int e = e2 - 1;
  const uint32_t m =
      static_cast<uint32_t>(std::ldexp(a, f.mantBits - e)) - (1u << f.mantBits);
  return sign | (static_cast<uint32_t>(e + f.bias) << f.mantBits) | (m & mantMask);
}

}  // namespace weftbench
