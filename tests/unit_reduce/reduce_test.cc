// Reduction kernels and conversions against references written here, independently of the code
// under test: narrow float formats are decoded with ldexp from (sign, exponent, mantissa) and
// rounded by searching the sorted table of representable values (exact comparisons in double), and
// integer results come from masked 64-bit arithmetic.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "collectives/reduce/reduce.h"
#include "lib/core/config.h"
#include "lib/core/types.h"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define WEFT_TEST_MXCSR 1
#endif

namespace weft::reduce {
namespace {

// ---------------------------------------------------------------------------------------------
// Reference model of the narrow float formats.

struct Format {
  int id;
  const char* name;
  int expBits;
  int manBits;
  bool hasInf;    // IEEE-like: top exponent is inf (mantissa 0) / NaN; else e4m3 (S.1111.111 = NaN)
  bool saturate;  // overflow gives +-max finite instead of inf
};

constexpr Format kHalf{0, "fp16", 5, 10, true, false};
constexpr Format kBf16{1, "bf16", 8, 7, true, false};
constexpr Format kE4m3{2, "e4m3", 4, 3, false, true};
constexpr Format kE5m2{3, "e5m2", 5, 2, true, true};

int bias(const Format& f) { return (1 << (f.expBits - 1)) - 1; }
uint32_t expMax(const Format& f) { return (1u << f.expBits) - 1; }
uint32_t manMask(const Format& f) { return (1u << f.manBits) - 1; }
uint32_t signBit(const Format& f) { return 1u << (f.expBits + f.manBits); }
uint32_t numCodes(const Format& f) { return 1u << (1 + f.expBits + f.manBits); }

uint32_t maxFiniteCode(const Format& f) {
  if (f.hasInf) return ((expMax(f) - 1) << f.manBits) | manMask(f);
  return (expMax(f) << f.manBits) | (manMask(f) - 1);
}

bool codeIsNaN(const Format& f, uint32_t c) {
  const uint32_t e = (c >> f.manBits) & expMax(f);
  const uint32_t m = c & manMask(f);
  if (e != expMax(f)) return false;
  return f.hasInf ? m != 0 : m == manMask(f);
}

double refDecode(const Format& f, uint32_t c) {
  const bool neg = (c & signBit(f)) != 0;
  const uint32_t e = (c >> f.manBits) & expMax(f);
  const uint32_t m = c & manMask(f);
  double v;
  if (codeIsNaN(f, c)) {
    v = std::numeric_limits<double>::quiet_NaN();
  } else if (f.hasInf && e == expMax(f)) {
    v = std::numeric_limits<double>::infinity();
  } else if (e == 0) {
    v = std::ldexp(static_cast<double>(m), 1 - bias(f) - f.manBits);
  } else {
    v = std::ldexp(static_cast<double>(m + (1u << f.manBits)), static_cast<int>(e) - bias(f) - f.manBits);
  }
  return neg ? -v : v;
}

// The non-negative finite values, indexed by code 0..maxFiniteCode (increasing).
const std::vector<double>& positiveValues(const Format& f) {
  static std::vector<double> cache[4];
  std::vector<double>& v = cache[f.id];
  if (v.empty()) {
    for (uint32_t c = 0; c <= maxFiniteCode(f); ++c) v.push_back(refDecode(f, c));
  }
  return v;
}

// Round x to nearest-even in format f, with f's overflow rule. NaN gives some NaN code.
uint32_t refEncode(const Format& f, double x) {
  if (std::isnan(x)) return expMax(f) << f.manBits | manMask(f);
  const uint32_t sign = std::signbit(x) ? signBit(f) : 0;
  const double a = std::fabs(x);
  const std::vector<double>& vals = positiveValues(f);
  const uint32_t maxCode = maxFiniteCode(f);
  const uint32_t overflow = f.saturate ? maxCode : expMax(f) << f.manBits;
  const double vmax = vals[maxCode];
  if (a >= vmax) {
    const int maxExp = static_cast<int>(maxCode >> f.manBits) - bias(f);
    const double mid = vmax + std::ldexp(0.5, maxExp - f.manBits);  // halfway to the next step
    if (a < mid) return sign | maxCode;
    if (a == mid) return sign | ((maxCode & 1) ? overflow : maxCode);
    return sign | overflow;
  }
  const size_t lo = static_cast<size_t>(std::upper_bound(vals.begin(), vals.end(), a) - vals.begin()) - 1;
  const double mid = (vals[lo] + vals[lo + 1]) / 2;  // exact: few significant bits
  uint32_t c;
  if (a < mid) {
    c = static_cast<uint32_t>(lo);
  } else if (a > mid) {
    c = static_cast<uint32_t>(lo + 1);
  } else {
    c = static_cast<uint32_t>((lo & 1) ? lo + 1 : lo);
  }
  return sign | c;
}

// The implementation under test, per format.
float implDecode(const Format& f, uint32_t c) {
  switch (f.id) {
    case 0: return halfToFloat(static_cast<uint16_t>(c));
    case 1: return bf16ToFloat(static_cast<uint16_t>(c));
    case 2: return e4m3ToFloat(static_cast<uint8_t>(c));
    default: return e5m2ToFloat(static_cast<uint8_t>(c));
  }
}
uint32_t implEncode(const Format& f, float x) {
  switch (f.id) {
    case 0: return floatToHalf(x);
    case 1: return floatToBf16(x);
    case 2: return floatToE4m3(x);
    default: return floatToE5m2(x);
  }
}

const Format kFormats[] = {kHalf, kBf16, kE4m3, kE5m2};

std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

uint32_t fbits(float f) { return std::bit_cast<uint32_t>(f); }

// ---------------------------------------------------------------------------------------------
// The reference model itself, on hand-computed values.

TEST(ReduceReference, ModelMatchesKnownValues) {
  EXPECT_EQ(refDecode(kHalf, 0x3c00), 1.0);
  EXPECT_EQ(refDecode(kHalf, 0x7bff), 65504.0);
  EXPECT_EQ(refDecode(kHalf, 0x0001), std::ldexp(1.0, -24));
  EXPECT_EQ(refDecode(kBf16, 0x3f80), 1.0);
  EXPECT_EQ(refDecode(kBf16, 0x0001), std::ldexp(1.0, -133));
  EXPECT_EQ(refDecode(kE4m3, 0x7e), 448.0);
  EXPECT_EQ(refDecode(kE4m3, 0x38), 1.0);
  EXPECT_EQ(refDecode(kE4m3, 0x01), std::ldexp(1.0, -9));
  EXPECT_EQ(refDecode(kE4m3, 0x08), std::ldexp(1.0, -6));
  EXPECT_TRUE(std::isnan(refDecode(kE4m3, 0xff)));
  EXPECT_EQ(refDecode(kE4m3, 0xf8), -256.0);
  EXPECT_EQ(refDecode(kE5m2, 0x7b), 57344.0);
  EXPECT_EQ(refDecode(kE5m2, 0x3c), 1.0);
  EXPECT_EQ(refDecode(kE5m2, 0x01), std::ldexp(1.0, -16));
  EXPECT_EQ(refDecode(kE5m2, 0xfc), -std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(refDecode(kE5m2, 0x7d)));
  EXPECT_EQ(refEncode(kHalf, 65520.0), 0x7c00u);
  EXPECT_EQ(refEncode(kHalf, 65519.0), 0x7bffu);
  EXPECT_EQ(refEncode(kE4m3, 464.0), 0x7eu);
  EXPECT_EQ(refEncode(kE4m3, 1e9), 0x7eu);
  EXPECT_EQ(refEncode(kE5m2, -1e9), 0xfbu);
  EXPECT_EQ(refEncode(kHalf, 1.0 + std::ldexp(1.0, -11)), 0x3c00u);
  EXPECT_EQ(refEncode(kHalf, 1.0 + 3 * std::ldexp(1.0, -11)), 0x3c02u);
}

// ---------------------------------------------------------------------------------------------
// Conversions.

TEST(ReduceConvert, DecodeEveryPatternMatchesFormula) {
  for (const Format& f : kFormats) {
    for (uint32_t c = 0; c < numCodes(f); ++c) {
      const double want = refDecode(f, c);
      const float got = implDecode(f, c);
      if (std::isnan(want)) {
        ASSERT_TRUE(std::isnan(got)) << f.name << " " << hex(c);
      } else {
        ASSERT_EQ(static_cast<double>(got), want) << f.name << " " << hex(c);
        ASSERT_EQ(std::signbit(got), std::signbit(want)) << f.name << " " << hex(c);
      }
    }
  }
}

TEST(ReduceConvert, RoundTripEveryPattern) {
  for (const Format& f : kFormats) {
    for (uint32_t c = 0; c < numCodes(f); ++c) {
      const uint32_t back = implEncode(f, implDecode(f, c));
      if (codeIsNaN(f, c)) {
        ASSERT_TRUE(codeIsNaN(f, back)) << f.name << " NaN " << hex(c) << " came back as " << hex(back);
      } else if (f.saturate && f.hasInf && ((c >> f.manBits) & expMax(f)) == expMax(f)) {
        // e5m2 infinity: the saturating conversion gives the largest finite value.
        ASSERT_EQ(back, (c & signBit(f)) | maxFiniteCode(f)) << f.name << " " << hex(c);
      } else {
        ASSERT_EQ(back, c) << f.name << " " << hex(c);
      }
    }
  }
}

// Every pair of neighbouring values: both ends, the midpoint (a tie) and the floats just either
// side of it, and the floats next to each end; both signs.
TEST(ReduceConvert, RoundingAroundEveryMidpoint) {
  for (const Format& f : kFormats) {
    const std::vector<double>& vals = positiveValues(f);
    for (size_t c = 0; c + 1 < vals.size(); ++c) {
      const float lo = static_cast<float>(vals[c]);
      const float hi = static_cast<float>(vals[c + 1]);
      const float mid = static_cast<float>((vals[c] + vals[c + 1]) / 2);
      ASSERT_EQ(static_cast<double>(mid), (vals[c] + vals[c + 1]) / 2);  // exact in fp32
      const float inf = std::numeric_limits<float>::infinity();
      const float probes[] = {lo, hi, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, inf),
                              std::nextafter(lo, inf), std::nextafter(hi, 0.0f)};
      for (float p : probes) {
        for (float x : {p, -p}) {
          const uint32_t want = refEncode(f, x);
          ASSERT_EQ(implEncode(f, x), want) << f.name << " x=" << x << " bits " << hex(fbits(x));
        }
      }
      // The tie itself goes to the even code.
      ASSERT_EQ(implEncode(f, mid) & 1u, 0u) << f.name << " tie at " << mid;
    }
  }
}

TEST(ReduceConvert, RandomFloats) {
  std::mt19937_64 rng(12345);
  for (const Format& f : kFormats) {
    const int emin = 1 - bias(f) - f.manBits - 3;
    const int emax = static_cast<int>(expMax(f)) - bias(f) + 2;
    for (int i = 0; i < 300000; ++i) {
      float x;
      if (i % 2 == 0) {
        x = std::bit_cast<float>(static_cast<uint32_t>(rng()));  // anything, incl. NaN/inf/denormal
      } else {
        // Within (and just beyond) the format's range, random mantissa.
        const int e = emin + static_cast<int>(rng() % static_cast<uint64_t>(emax - emin + 1));
        const double m = 1.0 + static_cast<double>(rng() & 0x7fffff) / 8388608.0;
        x = static_cast<float>(std::ldexp(m, e));
        if (rng() & 1) x = -x;
      }
      const uint32_t got = implEncode(f, x);
      if (std::isnan(x)) {
        ASSERT_TRUE(codeIsNaN(f, got)) << f.name << " " << hex(fbits(x));
      } else {
        ASSERT_EQ(got, refEncode(f, x)) << f.name << " x=" << x << " bits " << hex(fbits(x));
      }
    }
  }
}

TEST(ReduceConvert, KnownCases) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float fmax = std::numeric_limits<float>::max();
  // fp16
  EXPECT_EQ(floatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(floatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(floatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(floatToHalf(65519.996f), 0x7bff);
  EXPECT_EQ(floatToHalf(65520.0f), 0x7c00);  // tie with the next (even) step -> overflow -> inf
  EXPECT_EQ(floatToHalf(-1e6f), 0xfc00);
  EXPECT_EQ(floatToHalf(inf), 0x7c00);
  EXPECT_EQ(floatToHalf(fmax), 0x7c00);
  EXPECT_EQ(floatToHalf(1.0f + 0x1p-11f), 0x3c00);          // tie -> even
  EXPECT_EQ(floatToHalf(1.0f + 0x1p-11f + 0x1p-23f), 0x3c01);  // just above the tie
  EXPECT_EQ(floatToHalf(1.0f + 3 * 0x1p-11f), 0x3c02);      // tie -> even (up)
  EXPECT_EQ(floatToHalf(0x1p-24f), 0x0001);                 // smallest denormal
  EXPECT_EQ(floatToHalf(0x1p-25f), 0x0000);                 // tie -> 0
  EXPECT_EQ(floatToHalf(std::nextafter(0x1p-25f, 1.0f)), 0x0001);
  EXPECT_EQ(floatToHalf(1.5f * 0x1p-24f), 0x0002);
  EXPECT_EQ(floatToHalf(2.5f * 0x1p-24f), 0x0002);
  EXPECT_EQ(floatToHalf(0x1p-14f - 0x1p-25f), 0x0400);      // rounds up into the normals
  EXPECT_EQ(floatToHalf(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(floatToHalf(-std::numeric_limits<float>::denorm_min()), 0x8000);
  EXPECT_TRUE(codeIsNaN(kHalf, floatToHalf(nan)));
  EXPECT_TRUE(codeIsNaN(kHalf, floatToHalf(-nan)));
  EXPECT_TRUE(codeIsNaN(kHalf, floatToHalf(std::bit_cast<float>(0x7f800001u))));  // sNaN, low payload
  EXPECT_TRUE(std::isinf(halfToFloat(0xfc00)) && halfToFloat(0xfc00) < 0);
  // bf16
  EXPECT_EQ(floatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(floatToBf16(1.0f + 0x1p-8f), 0x3f80);
  EXPECT_EQ(floatToBf16(1.0f + 0x1p-8f + 0x1p-23f), 0x3f81);
  EXPECT_EQ(floatToBf16(1.0f + 3 * 0x1p-8f), 0x3f82);
  EXPECT_EQ(floatToBf16(fmax), 0x7f80);  // rounds up to inf
  EXPECT_EQ(floatToBf16(std::bit_cast<float>(0x7f7f7fffu)), 0x7f7f);
  EXPECT_EQ(floatToBf16(std::bit_cast<float>(0x00008000u)), 0x0000);  // denormal tie -> even
  EXPECT_EQ(floatToBf16(std::bit_cast<float>(0x00008001u)), 0x0001);
  EXPECT_EQ(floatToBf16(std::bit_cast<float>(0x00018000u)), 0x0002);
  EXPECT_EQ(floatToBf16(-inf), 0xff80);
  EXPECT_TRUE(codeIsNaN(kBf16, floatToBf16(nan)));
  EXPECT_TRUE(codeIsNaN(kBf16, floatToBf16(std::bit_cast<float>(0x7f800001u))));  // payload below bf16
  EXPECT_TRUE(codeIsNaN(kBf16, floatToBf16(std::bit_cast<float>(0xffff0001u))));
  // e4m3
  EXPECT_EQ(floatToE4m3(1.0f), 0x38);
  EXPECT_EQ(floatToE4m3(448.0f), 0x7e);
  EXPECT_EQ(floatToE4m3(464.0f), 0x7e);
  EXPECT_EQ(floatToE4m3(479.0f), 0x7e);
  EXPECT_EQ(floatToE4m3(1e9f), 0x7e);
  EXPECT_EQ(floatToE4m3(inf), 0x7e);
  EXPECT_EQ(floatToE4m3(-inf), 0xfe);
  EXPECT_EQ(floatToE4m3(-500.0f), 0xfe);
  EXPECT_EQ(floatToE4m3(fmax), 0x7e);
  EXPECT_EQ(floatToE4m3(nan) & 0x7f, 0x7f);
  EXPECT_EQ(floatToE4m3(-nan) & 0x7f, 0x7f);
  EXPECT_EQ(floatToE4m3(0x1p-9f), 0x01);
  EXPECT_EQ(floatToE4m3(0x1p-10f), 0x00);  // tie -> 0
  EXPECT_EQ(floatToE4m3(3 * 0x1p-10f), 0x02);
  EXPECT_EQ(floatToE4m3(0x1p-6f), 0x08);
  EXPECT_EQ(floatToE4m3(1.0625f), 0x38);  // tie between 1 and 1.125 -> 1
  EXPECT_EQ(floatToE4m3(1.1875f), 0x3a);  // tie between 1.125 and 1.25 -> 1.25
  EXPECT_EQ(floatToE4m3(-0.0f), 0x80);
  // e5m2
  EXPECT_EQ(floatToE5m2(1.0f), 0x3c);
  EXPECT_EQ(floatToE5m2(57344.0f), 0x7b);
  EXPECT_EQ(floatToE5m2(61440.0f), 0x7b);
  EXPECT_EQ(floatToE5m2(1e9f), 0x7b);
  EXPECT_EQ(floatToE5m2(inf), 0x7b);
  EXPECT_EQ(floatToE5m2(-inf), 0xfb);
  EXPECT_TRUE(codeIsNaN(kE5m2, floatToE5m2(nan)));
  EXPECT_TRUE(codeIsNaN(kE5m2, floatToE5m2(-nan)));
  EXPECT_EQ(floatToE5m2(0x1p-16f), 0x01);
  EXPECT_EQ(floatToE5m2(0x1p-17f), 0x00);
  EXPECT_EQ(floatToE5m2(3 * 0x1p-17f), 0x02);
  EXPECT_EQ(floatToE5m2(1.125f), 0x3c);  // tie between 1 and 1.25 -> 1
  EXPECT_EQ(floatToE5m2(1.375f), 0x3e);  // tie between 1.25 and 1.5 -> 1.5
  EXPECT_TRUE(std::isinf(e5m2ToFloat(0x7c)));
}

// ---------------------------------------------------------------------------------------------
// Reduce and divide: a per-element reference on bit patterns (little-endian, zero-extended).

const DataType kAllTypes[] = {DataType::kInt8,    DataType::kUint8,    DataType::kInt32,
                              DataType::kUint32,  DataType::kInt64,    DataType::kUint64,
                              DataType::kFloat16, DataType::kFloat32,  DataType::kFloat64,
                              DataType::kBfloat16, DataType::kFloat8e4m3, DataType::kFloat8e5m2};
const RedOp kAllOps[] = {RedOp::kSum, RedOp::kProd, RedOp::kMax, RedOp::kMin, RedOp::kAvg};

const Format* narrowFormat(DataType t) {
  switch (t) {
    case DataType::kFloat16: return &kHalf;
    case DataType::kBfloat16: return &kBf16;
    case DataType::kFloat8e4m3: return &kE4m3;
    case DataType::kFloat8e5m2: return &kE5m2;
    default: return nullptr;
  }
}
bool isSignedInt(DataType t) {
  return t == DataType::kInt8 || t == DataType::kInt32 || t == DataType::kInt64;
}
uint64_t mask(DataType t) {
  const size_t bits = typeSize(t) * 8;
  return bits == 64 ? ~0ull : (1ull << bits) - 1;
}
int64_t signExtend(DataType t, uint64_t v) {
  const size_t bits = typeSize(t) * 8;
  if (bits == 64) return static_cast<int64_t>(v);
  const uint64_t top = 1ull << (bits - 1);
  return static_cast<int64_t>((v ^ top) - top);
}

bool elemIsNaN(DataType t, uint64_t v) {
  if (const Format* f = narrowFormat(t)) return codeIsNaN(*f, static_cast<uint32_t>(v));
  if (t == DataType::kFloat32) return std::isnan(std::bit_cast<float>(static_cast<uint32_t>(v)));
  if (t == DataType::kFloat64) return std::isnan(std::bit_cast<double>(v));
  return false;
}

uint64_t loadElem(const uint8_t* p, size_t size) {
  uint64_t v = 0;
  std::memcpy(&v, p, size);
  return v;
}
void storeElem(uint8_t* p, size_t size, uint64_t v) { std::memcpy(p, &v, size); }

// IEEE 754-2019 maximum/minimum on doubles; NaN if either is NaN (returned as NaN).
double refMaxMin(double a, double b, bool isMax) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<double>::quiet_NaN();
  if (a != b) return ((a > b) == isMax) ? a : b;
  if (a == 0) {
    const bool neg = isMax ? (std::signbit(a) && std::signbit(b)) : (std::signbit(a) || std::signbit(b));
    return neg ? -0.0 : 0.0;
  }
  return a;
}

uint64_t refReduce(DataType t, RedOp op, uint64_t a, uint64_t b) {
  if (op == RedOp::kAvg) op = RedOp::kSum;
  if (const Format* f = narrowFormat(t)) {
    const double x = refDecode(*f, static_cast<uint32_t>(a));
    const double y = refDecode(*f, static_cast<uint32_t>(b));
    double r;
    switch (op) {
      case RedOp::kSum: r = x + y; break;
      case RedOp::kProd: r = x * y; break;
      case RedOp::kMax: r = refMaxMin(x, y, true); break;
      default: r = refMaxMin(x, y, false); break;
    }
    // The op is defined in fp32: round there first (the double result is exact or rounded
    // innocuously), then once to the type.
    return refEncode(*f, static_cast<double>(static_cast<float>(r)));
  }
  if (t == DataType::kFloat32) {
    const double x = std::bit_cast<float>(static_cast<uint32_t>(a));
    const double y = std::bit_cast<float>(static_cast<uint32_t>(b));
    double r;
    switch (op) {
      case RedOp::kSum: r = x + y; break;   // exact in double
      case RedOp::kProd: r = x * y; break;  // exact in double
      case RedOp::kMax: r = refMaxMin(x, y, true); break;
      default: r = refMaxMin(x, y, false); break;
    }
    return std::bit_cast<uint32_t>(static_cast<float>(r));
  }
  if (t == DataType::kFloat64) {
    const double x = std::bit_cast<double>(a);
    const double y = std::bit_cast<double>(b);
    double r;
    switch (op) {
      case RedOp::kSum: r = x + y; break;
      case RedOp::kProd: r = x * y; break;
      case RedOp::kMax: r = refMaxMin(x, y, true); break;
      default: r = refMaxMin(x, y, false); break;
    }
    return std::bit_cast<uint64_t>(r);
  }
  // Integers.
  switch (op) {
    case RedOp::kSum: return (a + b) & mask(t);
    case RedOp::kProd: return (a * b) & mask(t);
    case RedOp::kMax:
      if (isSignedInt(t)) return signExtend(t, a) >= signExtend(t, b) ? a : b;
      return a >= b ? a : b;
    default:
      if (isSignedInt(t)) return signExtend(t, a) <= signExtend(t, b) ? a : b;
      return a <= b ? a : b;
  }
}

uint64_t refDivide(DataType t, uint64_t a, int n) {
  if (const Format* f = narrowFormat(t)) {
    const double x = refDecode(*f, static_cast<uint32_t>(a));
    return refEncode(*f, static_cast<double>(static_cast<float>(x / n)));
  }
  if (t == DataType::kFloat32) {
    const double x = std::bit_cast<float>(static_cast<uint32_t>(a));
    return std::bit_cast<uint32_t>(static_cast<float>(x / n));  // innocuous double rounding
  }
  if (t == DataType::kFloat64) return std::bit_cast<uint64_t>(std::bit_cast<double>(a) / n);
  if (isSignedInt(t)) return static_cast<uint64_t>(signExtend(t, a) / n) & mask(t);
  return a / static_cast<uint64_t>(n);
}

// Random element: edge values often, for floats specials and "nice" values as well as any bits.
uint64_t randomElem(DataType t, std::mt19937_64& rng) {
  const uint64_t r = rng();
  const unsigned pick = static_cast<unsigned>(rng() % 10);
  if (!isFloat(t)) {
    if (pick == 0) {
      const uint64_t m = mask(t);
      const uint64_t edges[] = {0, 1, m, m >> 1, (m >> 1) + 1, 2, m - 1};  // 0 1 -1 max min 2 -2
      return edges[r % 7];
    }
    if (pick == 1) return r & 0xf;  // small values, so products are often exact
    return r & mask(t);
  }
  if (const Format* f = narrowFormat(t)) {
    if (pick < 3) {  // small integers times powers of two
      const double v = std::ldexp(static_cast<double>(static_cast<int>(r % 15) - 7), static_cast<int>(rng() % 9) - 4);
      return refEncode(*f, v);
    }
    return r & (numCodes(*f) - 1);  // any pattern: NaN, inf, denormals, zeros included
  }
  const bool single = t == DataType::kFloat32;
  auto enc = [&](double v) -> uint64_t {
    return single ? std::bit_cast<uint32_t>(static_cast<float>(v)) : std::bit_cast<uint64_t>(v);
  };
  if (pick < 3) {
    return enc(std::ldexp(static_cast<double>(static_cast<int64_t>(r % 2001) - 1000), static_cast<int>(rng() % 41) - 20));
  }
  if (pick < 5) {
    const double inf = std::numeric_limits<double>::infinity();
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double big = single ? std::numeric_limits<float>::max() : std::numeric_limits<double>::max();
    const double tiny = single ? std::numeric_limits<float>::denorm_min() : std::numeric_limits<double>::denorm_min();
    const double minNormal = single ? std::numeric_limits<float>::min() : std::numeric_limits<double>::min();
    const double specials[] = {0.0, -0.0, inf, -inf, nan, -nan, big, -big, tiny, -tiny, minNormal, 1.0, -1.0};
    return enc(specials[r % 13]);
  }
  if (pick < 6) {  // random denormal
    return single ? (r & 0x807fffffull) : (r & 0x800fffffffffffffull);
  }
  return single ? (r & 0xffffffffull) : r;
}

enum class Alias { kNone, kDstIsA, kDstIsB, kAll };
const char* aliasName(Alias a) {
  switch (a) {
    case Alias::kNone: return "distinct";
    case Alias::kDstIsA: return "dst=a";
    case Alias::kDstIsB: return "dst=b";
    default: return "dst=a=b";
  }
}

// A buffer of `count` elements starting `offset` elements into an 8-byte aligned allocation, with
// guard elements either side that must stay untouched.
struct Buffer {
  static constexpr size_t kGuard = 4;
  Buffer(size_t elemSize, size_t count, size_t offset)
      : size_(elemSize), count_(count),
        storage_(((count + 2 * kGuard + offset) * elemSize + 7) / 8 + 1, 0xa5a5a5a5a5a5a5a5ull),
        base_(reinterpret_cast<uint8_t*>(storage_.data())), first_((kGuard + offset) * elemSize) {}
  uint8_t* data() { return base_ + first_; }
  uint64_t get(size_t i) const { return loadElem(base_ + first_ + i * size_, size_); }
  void set(size_t i, uint64_t v) { storeElem(base_ + first_ + i * size_, size_, v); }
  bool guardsIntact() const {
    const uint8_t* b = base_;
    for (size_t i = 0; i < first_; ++i) {
      if (b[i] != 0xa5) return false;
    }
    const size_t end = first_ + count_ * size_;
    for (size_t i = end; i < end + kGuard * size_; ++i) {
      if (b[i] != 0xa5) return false;
    }
    return true;
  }
  size_t size_, count_;
  std::vector<uint64_t> storage_;
  uint8_t* base_;
  size_t first_;
};

bool sameResult(DataType t, uint64_t got, uint64_t want) {
  if (elemIsNaN(t, want)) return elemIsNaN(t, got);
  return got == want;
}

void checkReduce(DataType t, RedOp op, const std::vector<uint64_t>& av, const std::vector<uint64_t>& bv,
                 size_t offset, Alias alias) {
  const size_t n = av.size();
  const size_t es = typeSize(t);
  Buffer a(es, n, offset), b(es, n, offset), d(es, n, offset);
  for (size_t i = 0; i < n; ++i) {
    a.set(i, av[i]);
    b.set(i, alias == Alias::kAll ? av[i] : bv[i]);
  }
  Buffer* dst = &d;
  if (alias == Alias::kDstIsA || alias == Alias::kAll) dst = &a;
  if (alias == Alias::kDstIsB) dst = &b;
  Buffer* second = alias == Alias::kAll ? &a : &b;
  std::vector<uint64_t> want(n);
  for (size_t i = 0; i < n; ++i) want[i] = refReduce(t, op, a.get(i), second->get(i));
  reduce(t, op, dst->data(), a.data(), second->data(), n);
  ASSERT_TRUE(dst->guardsIntact()) << typeName(t) << " " << opName(op) << " wrote outside n=" << n;
  if (alias == Alias::kNone) {
    ASSERT_TRUE(a.guardsIntact() && b.guardsIntact());
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(a.get(i), av[i]) << "input a modified";
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(b.get(i), bv[i]) << "input b modified";
  }
  for (size_t i = 0; i < n; ++i) {
    const uint64_t x = av[i];
    const uint64_t y = alias == Alias::kAll ? av[i] : bv[i];
    ASSERT_TRUE(sameResult(t, dst->get(i), want[i]))
        << typeName(t) << " " << opName(op) << " n=" << n << " offset=" << offset << " "
        << aliasName(alias) << " i=" << i << ": " << hex(x) << " op " << hex(y) << " = "
        << hex(dst->get(i)) << ", want " << hex(want[i]);
  }
}

// Reduce one pair of values given as bit patterns, returning the result's bits.
uint64_t reduceOne(DataType t, RedOp op, uint64_t a, uint64_t b) {
  uint64_t d = 0;
  reduce(t, op, &d, &a, &b, 1);
  return d & mask(t);
}
uint64_t divideOne(DataType t, uint64_t a, int n) {
  uint64_t d = 0;
  divide(t, &d, &a, 1, n);
  return d & mask(t);
}

// The reduce and divide tests run once per instruction-set level (forced through
// setIsaForTesting), each against the independent reference: a level this CPU lacks is skipped.
class IsaLevel : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    saved_ = activeIsa();
    if (!isaSupported(GetParam())) GTEST_SKIP() << isaName(GetParam()) << " is not supported on this CPU";
    ASSERT_TRUE(setIsaForTesting(GetParam()));
    ASSERT_EQ(activeIsa(), GetParam());
  }
  void TearDown() override { setIsaForTesting(saved_); }
  Isa saved_ = Isa::kPortable;
};
class Reduce : public IsaLevel {};
class Divide : public IsaLevel {};

std::string isaParamName(const ::testing::TestParamInfo<Isa>& info) { return isaName(info.param); }
const Isa kAllIsas[] = {Isa::kPortable, Isa::kAvx2, Isa::kAvx512};

TEST_P(Reduce, EveryTypeOpCountOffsetAlias) {
  std::mt19937_64 rng(777);
  for (DataType t : kAllTypes) {
    for (RedOp op : kAllOps) {
      for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{1003}}) {
        for (size_t offset : {size_t{0}, size_t{1}}) {
          for (Alias alias : {Alias::kNone, Alias::kDstIsA, Alias::kDstIsB, Alias::kAll}) {
            std::vector<uint64_t> av(n), bv(n);
            for (size_t i = 0; i < n; ++i) {
              av[i] = randomElem(t, rng);
              bv[i] = randomElem(t, rng);
            }
            checkReduce(t, op, av, bv, offset, alias);
            if (HasFatalFailure()) return;
          }
        }
      }
    }
  }
}

TEST_P(Reduce, ManyRandomElements) {
  std::mt19937_64 rng(4242);
  for (DataType t : kAllTypes) {
    for (RedOp op : kAllOps) {
      const size_t n = 20000 + 3;
      std::vector<uint64_t> av(n), bv(n);
      for (size_t i = 0; i < n; ++i) {
        av[i] = randomElem(t, rng);
        bv[i] = randomElem(t, rng);
      }
      checkReduce(t, op, av, bv, 0, Alias::kNone);
      if (HasFatalFailure()) return;
    }
  }
}

// Narrow types: every pair of values of the 8-bit formats, every op.
TEST_P(Reduce, Fp8AllPairs) {
  for (DataType t : {DataType::kFloat8e4m3, DataType::kFloat8e5m2}) {
    std::vector<uint64_t> av, bv;
    for (uint64_t x = 0; x < 256; ++x) {
      for (uint64_t y = 0; y < 256; ++y) {
        av.push_back(x);
        bv.push_back(y);
      }
    }
    for (RedOp op : kAllOps) {
      checkReduce(t, op, av, bv, 0, Alias::kNone);
      if (HasFatalFailure()) return;
    }
  }
}

TEST_P(Reduce, IntegerWrapAround) {
  EXPECT_EQ(reduceOne(DataType::kInt8, RedOp::kSum, 0x7f, 0x01), 0x80u);  // 127 + 1 = -128
  EXPECT_EQ(reduceOne(DataType::kInt8, RedOp::kSum, 0x80, 0xff), 0x7fu);  // -128 + -1 = 127
  EXPECT_EQ(reduceOne(DataType::kUint8, RedOp::kSum, 0xff, 0x01), 0x00u);
  EXPECT_EQ(reduceOne(DataType::kInt8, RedOp::kProd, 16, 16), 0x00u);
  EXPECT_EQ(reduceOne(DataType::kInt8, RedOp::kProd, 0x80, 0xff), 0x80u);  // -128 * -1 = -128
  EXPECT_EQ(reduceOne(DataType::kInt8, RedOp::kProd, 0xf6, 0x0d), 0x7eu);  // -10 * 13 = -130 -> 126
  EXPECT_EQ(reduceOne(DataType::kUint8, RedOp::kProd, 0xff, 0xff), 0x01u);
  EXPECT_EQ(reduceOne(DataType::kInt32, RedOp::kSum, 0x7fffffff, 1), 0x80000000u);
  EXPECT_EQ(reduceOne(DataType::kInt32, RedOp::kProd, 65536, 65536), 0u);
  EXPECT_EQ(reduceOne(DataType::kInt32, RedOp::kProd, 0x80000000u, 0xffffffffu), 0x80000000u);
  EXPECT_EQ(reduceOne(DataType::kUint32, RedOp::kProd, 0xffffffffu, 0xffffffffu), 1u);
  EXPECT_EQ(reduceOne(DataType::kInt64, RedOp::kSum, 0x7fffffffffffffffull, 1), 0x8000000000000000ull);
  EXPECT_EQ(reduceOne(DataType::kInt64, RedOp::kProd, 0x8000000000000000ull, ~0ull), 0x8000000000000000ull);
  EXPECT_EQ(reduceOne(DataType::kUint64, RedOp::kProd, ~0ull, ~0ull), 1u);
  EXPECT_EQ(reduceOne(DataType::kUint64, RedOp::kSum, ~0ull, 2), 1u);
  EXPECT_EQ(reduceOne(DataType::kInt64, RedOp::kAvg, 0x7fffffffffffffffull, 1), 0x8000000000000000ull);
}

TEST_P(Reduce, SignedVersusUnsignedMaxMin) {
  EXPECT_EQ(reduceOne(DataType::kInt8, RedOp::kMax, 0xff, 0x01), 0x01u);  // max(-1, 1)
  EXPECT_EQ(reduceOne(DataType::kInt8, RedOp::kMin, 0xff, 0x01), 0xffu);
  EXPECT_EQ(reduceOne(DataType::kUint8, RedOp::kMax, 0xff, 0x01), 0xffu);
  EXPECT_EQ(reduceOne(DataType::kUint8, RedOp::kMin, 0xff, 0x01), 0x01u);
  EXPECT_EQ(reduceOne(DataType::kInt8, RedOp::kMax, 0x80, 0x7f), 0x7fu);
  EXPECT_EQ(reduceOne(DataType::kInt32, RedOp::kMax, 0x80000000u, 0), 0u);
  EXPECT_EQ(reduceOne(DataType::kUint32, RedOp::kMax, 0x80000000u, 0), 0x80000000u);
  EXPECT_EQ(reduceOne(DataType::kInt32, RedOp::kMin, 0x80000000u, 0x7fffffffu), 0x80000000u);
  EXPECT_EQ(reduceOne(DataType::kUint32, RedOp::kMin, 0x80000000u, 0x7fffffffu), 0x7fffffffu);
  EXPECT_EQ(reduceOne(DataType::kInt64, RedOp::kMax, 0x8000000000000000ull, 1), 1u);
  EXPECT_EQ(reduceOne(DataType::kUint64, RedOp::kMax, 0x8000000000000000ull, 1), 0x8000000000000000ull);
  EXPECT_EQ(reduceOne(DataType::kInt64, RedOp::kMin, ~0ull, 0), ~0ull);
  EXPECT_EQ(reduceOne(DataType::kUint64, RedOp::kMin, ~0ull, 0), 0u);
}

// Bit patterns of NaN, 1.0, -inf, +0 and -0 per float type.
struct FloatPatterns {
  DataType t;
  uint64_t nan, one, negInf, zero, negZero;
};
const FloatPatterns kFloatPatterns[] = {
    {DataType::kFloat16, 0x7e00, 0x3c00, 0xfc00, 0x0000, 0x8000},
    {DataType::kFloat32, 0x7fc00000, 0x3f800000, 0xff800000, 0, 0x80000000},
    {DataType::kFloat64, 0x7ff8000000000000, 0x3ff0000000000000, 0xfff0000000000000, 0, 0x8000000000000000},
    {DataType::kBfloat16, 0x7fc0, 0x3f80, 0xff80, 0x0000, 0x8000},
    {DataType::kFloat8e4m3, 0x7f, 0x38, 0xfe /* no inf: -448 */, 0x00, 0x80},
    {DataType::kFloat8e5m2, 0x7e, 0x3c, 0xfc, 0x00, 0x80},
};

TEST_P(Reduce, MaxMinPropagateNaNInEitherPosition) {
  for (const FloatPatterns& p : kFloatPatterns) {
    for (RedOp op : {RedOp::kMax, RedOp::kMin}) {
      for (uint64_t other : {p.one, p.negInf, p.zero, p.nan}) {
        EXPECT_TRUE(elemIsNaN(p.t, reduceOne(p.t, op, p.nan, other))) << typeName(p.t) << " " << opName(op);
        EXPECT_TRUE(elemIsNaN(p.t, reduceOne(p.t, op, other, p.nan))) << typeName(p.t) << " " << opName(op);
      }
      // A negative-signed NaN too.
      const uint64_t negNan = p.nan | (1ull << (typeSize(p.t) * 8 - 1));
      EXPECT_TRUE(elemIsNaN(p.t, reduceOne(p.t, op, negNan, p.one))) << typeName(p.t);
      EXPECT_TRUE(elemIsNaN(p.t, reduceOne(p.t, op, p.one, negNan))) << typeName(p.t);
    }
    // Sum and prod with NaN give NaN as well.
    EXPECT_TRUE(elemIsNaN(p.t, reduceOne(p.t, RedOp::kSum, p.one, p.nan))) << typeName(p.t);
    EXPECT_TRUE(elemIsNaN(p.t, reduceOne(p.t, RedOp::kProd, p.nan, p.one))) << typeName(p.t);
  }
}

TEST_P(Reduce, SignedZerosInMaxMinAreOrderIndependent) {
  for (const FloatPatterns& p : kFloatPatterns) {
    EXPECT_EQ(reduceOne(p.t, RedOp::kMax, p.zero, p.negZero), p.zero) << typeName(p.t);
    EXPECT_EQ(reduceOne(p.t, RedOp::kMax, p.negZero, p.zero), p.zero) << typeName(p.t);
    EXPECT_EQ(reduceOne(p.t, RedOp::kMin, p.zero, p.negZero), p.negZero) << typeName(p.t);
    EXPECT_EQ(reduceOne(p.t, RedOp::kMin, p.negZero, p.zero), p.negZero) << typeName(p.t);
    EXPECT_EQ(reduceOne(p.t, RedOp::kMax, p.negZero, p.negZero), p.negZero) << typeName(p.t);
    EXPECT_EQ(reduceOne(p.t, RedOp::kMin, p.zero, p.zero), p.zero) << typeName(p.t);
  }
}

TEST_P(Reduce, NarrowOverflowAndSaturation) {
  EXPECT_EQ(reduceOne(DataType::kFloat16, RedOp::kSum, 0x7bff, 0x7bff), 0x7c00u);  // 65504*2 -> inf
  EXPECT_EQ(reduceOne(DataType::kFloat16, RedOp::kSum, 0x7bff, 0x3c00), 0x7bffu);  // 65505 -> 65504
  EXPECT_EQ(reduceOne(DataType::kBfloat16, RedOp::kProd, 0x7f7f, 0x4000), 0x7f80u);
  EXPECT_EQ(reduceOne(DataType::kFloat8e4m3, RedOp::kSum, 0x7e, 0x7e), 0x7eu);     // 896 -> 448
  EXPECT_EQ(reduceOne(DataType::kFloat8e4m3, RedOp::kSum, 0xfe, 0xfe), 0xfeu);
  EXPECT_EQ(reduceOne(DataType::kFloat8e4m3, RedOp::kProd, 0x7e, 0x40), 0x7eu);    // 448 * 2
  EXPECT_EQ(reduceOne(DataType::kFloat8e5m2, RedOp::kSum, 0x7b, 0x7b), 0x7bu);
  EXPECT_EQ(reduceOne(DataType::kFloat8e5m2, RedOp::kSum, 0x7c, 0x3c), 0x7bu);     // inf + 1 -> max
  EXPECT_EQ(reduceOne(DataType::kFloat8e5m2, RedOp::kMax, 0xfc, 0x3c), 0x3cu);
  EXPECT_EQ(reduceOne(DataType::kFloat8e5m2, RedOp::kMin, 0xfc, 0x3c), 0xfbu);     // -inf -> -max
  EXPECT_TRUE(codeIsNaN(kE5m2, static_cast<uint32_t>(reduceOne(DataType::kFloat8e5m2, RedOp::kSum, 0x7c, 0xfc))));
}

TEST_P(Reduce, NarrowRoundingOncePerCall) {
  // fp16: 1 + 2^-11 is a tie -> 1; (1 + 2^-10) + 2^-11 is a tie -> 1 + 2^-9.
  EXPECT_EQ(reduceOne(DataType::kFloat16, RedOp::kSum, 0x3c00, 0x1000), 0x3c00u);
  EXPECT_EQ(reduceOne(DataType::kFloat16, RedOp::kSum, 0x3c01, 0x1000), 0x3c02u);
  // Denormals: sums exact, products rounding into the denormal range.
  EXPECT_EQ(reduceOne(DataType::kFloat16, RedOp::kSum, 0x0001, 0x0001), 0x0002u);
  EXPECT_EQ(reduceOne(DataType::kFloat16, RedOp::kProd, 0x0001, 0x3800), 0x0000u);  // 2^-25 tie -> 0
  EXPECT_EQ(reduceOne(DataType::kFloat16, RedOp::kProd, 0x0003, 0x3800), 0x0002u);  // 1.5 units -> 2
  EXPECT_EQ(reduceOne(DataType::kFloat8e4m3, RedOp::kProd, 0x03, 0x30), 0x02u);     // 3*2^-9 * 0.5
  EXPECT_EQ(reduceOne(DataType::kBfloat16, RedOp::kSum, 0x0001, 0x0001), 0x0002u);
  // fp32 keeps denormals (no flush to zero).
  const float dmin = std::numeric_limits<float>::denorm_min();
  EXPECT_EQ(reduceOne(DataType::kFloat32, RedOp::kSum, fbits(dmin), fbits(dmin)), fbits(2 * dmin));
  EXPECT_EQ(reduceOne(DataType::kFloat32, RedOp::kProd, fbits(0x1p-100f), fbits(0x1p-40f)), fbits(0x1p-140f));
  EXPECT_EQ(reduceOne(DataType::kFloat64, RedOp::kSum, std::bit_cast<uint64_t>(std::numeric_limits<double>::denorm_min()),
                      std::bit_cast<uint64_t>(0.0)),
            std::bit_cast<uint64_t>(std::numeric_limits<double>::denorm_min()));
}

#ifdef WEFT_TEST_MXCSR
// A host application may run with flush-to-zero, denormals-are-zero and another rounding mode;
// the kernels must give the same bits anyway and leave the caller's mode as it was. The
// conversions must not depend on the mode either.
TEST_P(Reduce, IndependentOfCallersFpEnvironment) {
  const unsigned saved = _mm_getcsr();
  const unsigned hostile = (saved & ~(3u << 13)) | (1u << 15) | (1u << 6) | (3u << 13);  // FTZ DAZ RZ
  _mm_setcsr(hostile);
  const uint64_t d1 = reduceOne(DataType::kFloat32, RedOp::kSum, 0x00000001, 0x00000001);
  const uint64_t d2 = reduceOne(DataType::kFloat32, RedOp::kProd, fbits(0x1p-100f), fbits(0x1p-40f));
  const uint64_t d3 = reduceOne(DataType::kFloat32, RedOp::kSum, fbits(1.0f), fbits(0x1.8p-24f));
  const uint64_t d4 = reduceOne(DataType::kBfloat16, RedOp::kSum, 0x0001, 0x0001);
  const uint64_t d5 = divideOne(DataType::kFloat32, 0x00000003, 2);
  const uint64_t d6 = reduceOne(DataType::kFloat16, RedOp::kSum, 0x3c00, 0x1200);
  bool roundTrips = true;
  for (uint32_t c = 0; c < 65536; ++c) {
    if (!codeIsNaN(kHalf, c) && floatToHalf(halfToFloat(static_cast<uint16_t>(c))) != c) roundTrips = false;
  }
  for (uint32_t c = 0; c < 256; ++c) {
    if (!codeIsNaN(kE4m3, c) && floatToE4m3(e4m3ToFloat(static_cast<uint8_t>(c))) != c) roundTrips = false;
  }
  const uint32_t h1 = floatToHalf(3 * 0x1p-26f);  // 0.75 of the smallest denormal -> 1
  const uint32_t h2 = floatToHalf(1.0f + 0x1.8p-11f);
  const unsigned after = _mm_getcsr();
  _mm_setcsr(saved);
  EXPECT_EQ(after & ~0x3fu, hostile & ~0x3fu) << "caller's MXCSR not restored";
  EXPECT_EQ(d1, 0x00000002u);
  EXPECT_EQ(d2, fbits(0x1p-140f));
  EXPECT_EQ(d3, fbits(1.0f + 0x1p-23f));
  EXPECT_EQ(d4, 0x0002u);
  EXPECT_EQ(d5, 0x00000002u);
  EXPECT_EQ(d6, 0x3c01u);
  EXPECT_TRUE(roundTrips);
  EXPECT_EQ(h1, 0x0001u);
  EXPECT_EQ(h2, 0x3c01u);
}
#endif

// ---------------------------------------------------------------------------------------------
// Divide.

void checkDivide(DataType t, const std::vector<uint64_t>& av, int k, size_t offset, bool inPlace) {
  const size_t n = av.size();
  const size_t es = typeSize(t);
  Buffer s(es, n, offset), d(es, n, offset);
  for (size_t i = 0; i < n; ++i) s.set(i, av[i]);
  Buffer* dst = inPlace ? &s : &d;
  divide(t, dst->data(), s.data(), n, k);
  ASSERT_TRUE(dst->guardsIntact()) << typeName(t) << " divide wrote outside n=" << n;
  for (size_t i = 0; i < n; ++i) {
    const uint64_t want = refDivide(t, av[i], k);
    ASSERT_TRUE(sameResult(t, dst->get(i), want))
        << typeName(t) << " n=" << n << " offset=" << offset << (inPlace ? " in place" : "") << " i=" << i
        << ": " << hex(av[i]) << " / " << k << " = " << hex(dst->get(i)) << ", want " << hex(want);
  }
}

TEST_P(Divide, EveryTypeRandom) {
  std::mt19937_64 rng(99);
  for (DataType t : kAllTypes) {
    for (int k : {1, 2, 3, 4, 7, 200, 1000}) {
      for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{1003}}) {
        for (size_t offset : {size_t{0}, size_t{1}}) {
          for (bool inPlace : {false, true}) {
            std::vector<uint64_t> av(n);
            for (auto& v : av) v = randomElem(t, rng);
            checkDivide(t, av, k, offset, inPlace);
            if (HasFatalFailure()) return;
          }
        }
      }
    }
  }
}

TEST_P(Divide, EveryNarrowPattern) {
  for (DataType t : {DataType::kFloat16, DataType::kBfloat16, DataType::kFloat8e4m3, DataType::kFloat8e5m2}) {
    std::vector<uint64_t> av(numCodes(*narrowFormat(t)));
    for (size_t i = 0; i < av.size(); ++i) av[i] = i;
    for (int k : {1, 2, 3, 4}) {
      checkDivide(t, av, k, 0, false);
      if (HasFatalFailure()) return;
    }
  }
}

TEST_P(Divide, KnownCases) {
  auto i32 = [](int32_t v) { return static_cast<uint64_t>(static_cast<uint32_t>(v)); };
  EXPECT_EQ(divideOne(DataType::kInt32, i32(-7), 2), i32(-3));  // truncation toward zero
  EXPECT_EQ(divideOne(DataType::kInt32, i32(-7), 4), i32(-1));
  EXPECT_EQ(divideOne(DataType::kInt32, i32(-1), 3), 0u);
  EXPECT_EQ(divideOne(DataType::kInt32, i32(7), 2), 3u);
  EXPECT_EQ(divideOne(DataType::kInt32, i32(INT32_MIN), 3), i32(INT32_MIN / 3));
  EXPECT_EQ(divideOne(DataType::kUint32, 0xffffffffu, 2), 0x7fffffffu);  // unsigned, not -1/2
  EXPECT_EQ(divideOne(DataType::kInt8, 0x80, 3), static_cast<uint8_t>(-42));
  EXPECT_EQ(divideOne(DataType::kUint8, 0xff, 2), 0x7fu);
  EXPECT_EQ(divideOne(DataType::kInt8, 0x80, 200), 0u);  // n larger than the type
  EXPECT_EQ(divideOne(DataType::kUint8, 0xff, 200), 1u);
  EXPECT_EQ(divideOne(DataType::kInt64, 0x8000000000000000ull, 2), 0xc000000000000000ull);
  EXPECT_EQ(divideOne(DataType::kUint64, 0x8000000000000000ull, 2), 0x4000000000000000ull);
  EXPECT_EQ(divideOne(DataType::kFloat16, 0x3c00, 3), 0x3555u);  // 1/3
  EXPECT_EQ(divideOne(DataType::kBfloat16, 0x3f80, 3), 0x3eabu);
  EXPECT_EQ(divideOne(DataType::kFloat16, 0x0001, 2), 0x0000u);  // tie -> even
  EXPECT_EQ(divideOne(DataType::kFloat16, 0x0003, 2), 0x0002u);
  EXPECT_EQ(divideOne(DataType::kFloat16, 0x0005, 2), 0x0002u);
  EXPECT_EQ(divideOne(DataType::kFloat8e4m3, 0x01, 2), 0x00u);
  EXPECT_EQ(divideOne(DataType::kFloat8e4m3, 0x03, 2), 0x02u);
  EXPECT_EQ(divideOne(DataType::kFloat8e4m3, 0xfe, 4), 0xeeu);  // -448 / 4 = -112
  EXPECT_EQ(divideOne(DataType::kFloat32, fbits(1.0f), 3), fbits(1.0f / 3.0f));
  EXPECT_EQ(divideOne(DataType::kFloat64, std::bit_cast<uint64_t>(1.0), 3), std::bit_cast<uint64_t>(1.0 / 3.0));
}

TEST(ReduceTable, ScalarTableIsCompleteAndActive) {
  const detail::KernelTable& s = detail::scalarKernels();
  for (int t = 0; t < kNumDataTypes; ++t) {
    for (int o = 0; o < kNumRedOps; ++o) EXPECT_NE(s.reduce[t][o], nullptr) << t << " " << o;
    EXPECT_NE(s.divide[t], nullptr) << t;
  }
  EXPECT_NE(detail::activeKernels().name, nullptr);
}


INSTANTIATE_TEST_SUITE_P(AllIsas, Reduce, ::testing::ValuesIn(kAllIsas), isaParamName);
INSTANTIATE_TEST_SUITE_P(AllIsas, Divide, ::testing::ValuesIn(kAllIsas), isaParamName);

// ---------------------------------------------------------------------------------------------
// Every SIMD level's table against the scalar table, element for element (NaN results need only
// both be NaN: the payload a NaN-NaN sum keeps is not specified), over every tail length, offsets,
// aliasing, and for the 16-bit formats every code against a set of partners.

std::vector<Isa> supportedSimdIsas() {
  std::vector<Isa> v;
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    if (isaSupported(isa)) v.push_back(isa);
  }
  return v;
}

// Runs `fn` of one table on fresh copies of the inputs; returns dst's elements.
std::vector<uint64_t> runReduce(detail::ReduceFn fn, DataType t, const std::vector<uint64_t>& av,
                                const std::vector<uint64_t>& bv, size_t offset, Alias alias, bool* guardsOk) {
  const size_t n = av.size();
  const size_t es = typeSize(t);
  Buffer a(es, n, offset), b(es, n, offset), d(es, n, offset);
  for (size_t i = 0; i < n; ++i) {
    a.set(i, av[i]);
    b.set(i, alias == Alias::kAll ? av[i] : bv[i]);
  }
  Buffer* dst = &d;
  if (alias == Alias::kDstIsA || alias == Alias::kAll) dst = &a;
  if (alias == Alias::kDstIsB) dst = &b;
  Buffer* second = alias == Alias::kAll ? &a : &b;
  fn(dst->data(), a.data(), second->data(), n);
  *guardsOk = a.guardsIntact() && b.guardsIntact() && d.guardsIntact();
  if (alias == Alias::kNone) {
    for (size_t i = 0; i < n; ++i) *guardsOk = *guardsOk && a.get(i) == av[i] && b.get(i) == bv[i];
  }
  std::vector<uint64_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = dst->get(i);
  return out;
}

void compareReduce(Isa isa, DataType t, RedOp op, const std::vector<uint64_t>& av, const std::vector<uint64_t>& bv,
                   size_t offset, Alias alias) {
  const int ti = static_cast<int>(t), oi = static_cast<int>(op);
  bool okSimd = false, okScalar = false;
  const auto got = runReduce(detail::kernelsFor(isa)->reduce[ti][oi], t, av, bv, offset, alias, &okSimd);
  const auto want = runReduce(detail::scalarKernels().reduce[ti][oi], t, av, bv, offset, alias, &okScalar);
  ASSERT_TRUE(okSimd && okScalar) << isaName(isa) << " " << typeName(t) << " " << opName(op) << " n=" << av.size()
                                  << " " << aliasName(alias) << ": wrote outside dst";
  for (size_t i = 0; i < av.size(); ++i) {
    ASSERT_TRUE(sameResult(t, got[i], want[i]))
        << isaName(isa) << " " << typeName(t) << " " << opName(op) << " n=" << av.size() << " offset=" << offset
        << " " << aliasName(alias) << " i=" << i << ": " << hex(av[i]) << " op "
        << hex(alias == Alias::kAll ? av[i] : bv[i]) << " = " << hex(got[i]) << ", scalar " << hex(want[i]);
  }
}

TEST(ReduceSimd, MatchesScalarEveryTypeOpTailOffsetAlias) {
  std::vector<size_t> sizes;
  for (size_t n = 0; n <= 140; ++n) sizes.push_back(n);
  for (size_t n : {255, 256, 257, 1000, 4099}) sizes.push_back(n);
  for (Isa isa : supportedSimdIsas()) {
    std::mt19937_64 rng(1234);
    for (DataType t : kAllTypes) {
      for (RedOp op : kAllOps) {
        for (size_t n : sizes) {
          for (size_t offset : {size_t{0}, size_t{1}, size_t{3}}) {
            for (Alias alias : {Alias::kNone, Alias::kDstIsA, Alias::kDstIsB, Alias::kAll}) {
              std::vector<uint64_t> av(n), bv(n);
              for (size_t i = 0; i < n; ++i) {
                av[i] = randomElem(t, rng);
                bv[i] = randomElem(t, rng);
              }
              compareReduce(isa, t, op, av, bv, offset, alias);
              if (HasFatalFailure()) return;
            }
          }
        }
      }
    }
  }
}

TEST(ReduceSimd, Every16BitCodeAgainstPartners) {
  struct Case {
    DataType t;
    std::vector<uint64_t> partners;
  };
  const Case cases[] = {
      // fp16: denormals, +-0, 1, 0.5, 1.5, max, min normal, inf, NaN, a negative
      {DataType::kFloat16, {0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x0400, 0x3c00, 0x3800, 0x3e00, 0x7bff, 0xfbff,
                            0x7c00, 0xfc00, 0x7e00, 0x7c01, 0xc500, 0x1000, 0x5bff}},
      // bf16 the same; products of denormals with 0.5 / 1.5 land on fp32 denormals (ties included)
      {DataType::kBfloat16, {0x0000, 0x8000, 0x0001, 0x8001, 0x007f, 0x0080, 0x3f80, 0x3f00, 0x3fc0, 0x7f7f, 0xff7f,
                             0x7f80, 0xff80, 0x7fc0, 0x7f81, 0xc0a0, 0x0d00, 0x4b00}},
  };
  for (Isa isa : supportedSimdIsas()) {
    for (const Case& c : cases) {
      std::vector<uint64_t> av, bv;
      for (uint64_t p : c.partners) {
        for (uint64_t x = 0; x < 65536; ++x) {
          av.push_back(x);
          bv.push_back(p);
        }
      }
      for (RedOp op : kAllOps) {
        compareReduce(isa, c.t, op, av, bv, 0, Alias::kNone);
        compareReduce(isa, c.t, op, bv, av, 1, Alias::kNone);  // partner first
        if (HasFatalFailure()) return;
      }
      compareReduce(isa, c.t, RedOp::kSum, av, av, 0, Alias::kAll);
      compareReduce(isa, c.t, RedOp::kMax, av, av, 0, Alias::kAll);
      if (HasFatalFailure()) return;
    }
  }
}

TEST(ReduceSimd, Fp8AllPairsMatchScalar) {
  for (Isa isa : supportedSimdIsas()) {
    for (DataType t : {DataType::kFloat8e4m3, DataType::kFloat8e5m2}) {
      std::vector<uint64_t> av, bv;
      for (uint64_t x = 0; x < 256; ++x) {
        for (uint64_t y = 0; y < 256; ++y) {
          av.push_back(x);
          bv.push_back(y);
        }
      }
      for (RedOp op : kAllOps) {
        compareReduce(isa, t, op, av, bv, 1, Alias::kNone);
        if (HasFatalFailure()) return;
      }
    }
  }
}

std::vector<uint64_t> runDivide(detail::DivideFn fn, DataType t, const std::vector<uint64_t>& av, int k,
                                size_t offset, bool inPlace, bool* guardsOk) {
  const size_t n = av.size();
  const size_t es = typeSize(t);
  Buffer s(es, n, offset), d(es, n, offset);
  for (size_t i = 0; i < n; ++i) s.set(i, av[i]);
  Buffer* dst = inPlace ? &s : &d;
  fn(dst->data(), s.data(), n, k);
  *guardsOk = s.guardsIntact() && d.guardsIntact();
  std::vector<uint64_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = dst->get(i);
  return out;
}

TEST(ReduceSimd, DivideMatchesScalar) {
  std::vector<size_t> sizes;
  for (size_t n = 0; n <= 70; ++n) sizes.push_back(n);
  sizes.push_back(1029);
  const int ks[] = {1, 2, 3, 7, 128, 200, 255, 256, 1000, 65537, (1 << 24) + 1, 2147483647};
  for (Isa isa : supportedSimdIsas()) {
    std::mt19937_64 rng(55);
    for (DataType t : kAllTypes) {
      const int ti = static_cast<int>(t);
      for (int k : ks) {
        for (size_t n : sizes) {
          for (size_t offset : {size_t{0}, size_t{1}}) {
            for (bool inPlace : {false, true}) {
              std::vector<uint64_t> av(n);
              for (auto& v : av) v = randomElem(t, rng);
              bool okSimd = false, okScalar = false;
              const auto got = runDivide(detail::kernelsFor(isa)->divide[ti], t, av, k, offset, inPlace, &okSimd);
              const auto want = runDivide(detail::scalarKernels().divide[ti], t, av, k, offset, inPlace, &okScalar);
              ASSERT_TRUE(okSimd && okScalar) << isaName(isa) << " " << typeName(t) << " divide wrote outside";
              for (size_t i = 0; i < n; ++i) {
                ASSERT_TRUE(sameResult(t, got[i], want[i]))
                    << isaName(isa) << " " << typeName(t) << " n=" << n << " offset=" << offset
                    << (inPlace ? " in place" : "") << " i=" << i << ": " << hex(av[i]) << " / " << k << " = "
                    << hex(got[i]) << ", scalar " << hex(want[i]);
              }
            }
          }
        }
      }
    }
  }
}

// Integer divide through floating point: the extremes of every 8- and 32-bit type.
TEST(ReduceSimd, IntegerDivideExtremes) {
  for (Isa isa : supportedSimdIsas()) {
    for (DataType t : {DataType::kInt8, DataType::kUint8, DataType::kInt32, DataType::kUint32}) {
      const uint64_t m = mask(t);
      std::vector<uint64_t> av;
      for (uint64_t v : {uint64_t{0}, uint64_t{1}, m, m - 1, m >> 1, (m >> 1) + 1, (m >> 1) - 1, (m >> 1) + 2}) av.push_back(v);
      for (int k = 1; k <= 300; ++k) {
        for (int kk : {k, 2147483647 - k, (1 << 24) - 150 + k}) {
          bool guardsOk = false;
          const auto got = runDivide(detail::kernelsFor(isa)->divide[static_cast<int>(t)], t, av, kk, 0, false, &guardsOk);
          ASSERT_TRUE(guardsOk);
          for (size_t i = 0; i < av.size(); ++i) {
            ASSERT_EQ(got[i], refDivide(t, av[i], kk)) << isaName(isa) << " " << typeName(t) << " " << hex(av[i]) << " / " << kk;
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Choosing the level.

TEST(ReduceIsaChoice, NamesAndSupport) {
  EXPECT_STREQ(isaName(Isa::kPortable), "portable");
  EXPECT_STREQ(isaName(Isa::kAvx2), "avx2");
  EXPECT_STREQ(isaName(Isa::kAvx512), "avx512");
  EXPECT_TRUE(isaSupported(Isa::kPortable));
  EXPECT_FALSE(isaSupported(static_cast<Isa>(7)));
  EXPECT_FALSE(setIsaForTesting(static_cast<Isa>(7)));
  if (isaSupported(Isa::kAvx512)) {
    EXPECT_TRUE(isaSupported(Isa::kAvx2));
  }
  std::string levels;
  for (Isa isa : kAllIsas) {
    if (isaSupported(isa)) levels += std::string(levels.empty() ? "" : " ") + isaName(isa);
    const detail::KernelTable* k = detail::kernelsFor(isa);
    EXPECT_EQ(k != nullptr, isaSupported(isa));
    if (k == nullptr) continue;
    EXPECT_STREQ(k->name, isa == Isa::kPortable ? "scalar" : isaName(isa));
    for (int t = 0; t < kNumDataTypes; ++t) {
      for (int o = 0; o < kNumRedOps; ++o) EXPECT_NE(k->reduce[t][o], nullptr) << isaName(isa) << " " << t << " " << o;
      EXPECT_NE(k->divide[t], nullptr) << isaName(isa) << " " << t;
    }
  }
  RecordProperty("supported_isas", levels);
  std::printf("supported ISA levels here: %s (active: %s)\n", levels.c_str(), isaName(activeIsa()));
}

TEST(ReduceIsaChoice, ForcingSwitchesTheActiveTable) {
  const Isa saved = activeIsa();
  for (Isa isa : kAllIsas) {
    if (!isaSupported(isa)) continue;
    ASSERT_TRUE(setIsaForTesting(isa));
    EXPECT_EQ(activeIsa(), isa);
    EXPECT_EQ(&detail::activeKernels(), detail::kernelsFor(isa));
    // And reduce() goes through it: 1 + 2 = 3 in fp32.
    EXPECT_EQ(reduceOne(DataType::kFloat32, RedOp::kSum, fbits(1.0f), fbits(2.0f)), fbits(3.0f));
  }
  setIsaForTesting(saved);
}

Isa bestIsa() {
  if (isaSupported(Isa::kAvx512)) return Isa::kAvx512;
  if (isaSupported(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kPortable;
}

TEST(ReduceIsaChoice, ResolveRequest) {
  const Isa best = bestIsa();
  EXPECT_EQ(detail::resolveIsa(""), best);
  EXPECT_EQ(detail::resolveIsa(nullptr), best);
  EXPECT_EQ(detail::resolveIsa("auto"), best);
  EXPECT_EQ(detail::resolveIsa("portable"), Isa::kPortable);
  EXPECT_EQ(detail::resolveIsa(" PORTABLE "), Isa::kPortable);
  EXPECT_EQ(detail::resolveIsa("avx2"), isaSupported(Isa::kAvx2) ? Isa::kAvx2 : Isa::kPortable);
  EXPECT_EQ(detail::resolveIsa("AVX512"), best);  // the best level is at most avx512
  EXPECT_EQ(detail::resolveIsa("sse9"), best);     // unknown: warns, automatic
}

// The variable is in the env table, and a fresh process obeys it (the choice is made once, at the
// first call, so each case runs in a re-executed child).
TEST(ReduceIsaChoice, EnvironmentVariableChoosesTheLevel) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  ASSERT_EQ(setenv("WEFT_CPU_ISA", "portable", 1), 0);
  EXPECT_EQ(config::getString("WEFT_CPU_ISA"), "portable");
  for (Isa isa : kAllIsas) {
    if (!isaSupported(isa)) continue;
    ASSERT_EQ(setenv("WEFT_CPU_ISA", isaName(isa), 1), 0);
    EXPECT_EXIT(std::exit(10 + static_cast<int>(activeIsa())), ::testing::ExitedWithCode(10 + static_cast<int>(isa)), "")
        << isaName(isa);
  }
  ASSERT_EQ(setenv("WEFT_CPU_ISA", "bogus", 1), 0);
  EXPECT_EXIT(std::exit(10 + static_cast<int>(activeIsa())), ::testing::ExitedWithCode(10 + static_cast<int>(bestIsa())),
              "WEFT_CPU_ISA=bogus");
  ASSERT_EQ(unsetenv("WEFT_CPU_ISA"), 0);
  EXPECT_EQ(config::getString("WEFT_CPU_ISA"), "");
  EXPECT_EXIT(std::exit(10 + static_cast<int>(activeIsa())), ::testing::ExitedWithCode(10 + static_cast<int>(bestIsa())), "");
}

}  // namespace
}  // namespace weft::reduce
