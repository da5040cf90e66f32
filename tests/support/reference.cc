#include "support/reference.h"

#include <cmath>
#include <cstring>

namespace weft::test {

namespace {

struct FloatFormat {
  int expBits, mantBits;
  bool hasInf;      // IEEE-like; e4m3 has no infinities
  double maxFinite;
};

FloatFormat formatOf(weftDataType_t t) {
  switch (t) {
    case weftFloat16: return {5, 10, true, 65504.0};
    case weftBfloat16: return {8, 7, true, std::ldexp(2.0 - std::ldexp(1.0, -7), 127)};
    case weftFloat8e4m3: return {4, 3, false, 448.0};
    case weftFloat8e5m2: return {5, 2, true, 57344.0};
    default: return {0, 0, false, 0};
  }
}

uint32_t encodeSmallFloat(const FloatFormat& f, double v) {
  const int bias = (1 << (f.expBits - 1)) - 1;
  const int emin = 1 - bias;
  const uint32_t signBit = 1u << (f.expBits + f.mantBits);
  const uint32_t expMask = (1u << f.expBits) - 1;
  if (std::isnan(v)) return f.hasInf ? (expMask << f.mantBits) | (1u << (f.mantBits - 1)) : 0x7f;
  uint32_t sign = std::signbit(v) ? signBit : 0;
  double a = std::fabs(v);
  if (a == 0) return sign;
  auto finiteMaxBits = [&] {
    if (f.hasInf) return sign | ((expMask - 1) << f.mantBits) | ((1u << f.mantBits) - 1);
    return sign | 0x7e;  // e4m3: exponent 15, mantissa 110
  };
  auto infBits = [&] { return f.hasInf ? (sign | (expMask << f.mantBits)) : finiteMaxBits(); };
  bool saturate = f.expBits + f.mantBits == 7;  // fp8 formats saturate
  if (std::isinf(a)) return saturate ? finiteMaxBits() : infBits();
  int e;
  std::frexp(a, &e);
  e -= 1;  // a in [2^e, 2^(e+1))
  if (e < emin) e = emin;
  double q = std::ldexp(1.0, e - f.mantBits);
  double r = std::nearbyint(a / q) * q;  // ties to even in the default rounding mode
  if (r > f.maxFinite) return saturate ? finiteMaxBits() : infBits();
  if (r < std::ldexp(1.0, emin)) {
    uint32_t m = static_cast<uint32_t>(r / std::ldexp(1.0, emin - f.mantBits));
    return sign | m;  // subnormal (or min normal reached by rounding: m == 2^mant works out)
  }
  int er;
  std::frexp(r, &er);
  er -= 1;
  uint32_t m = static_cast<uint32_t>(r / std::ldexp(1.0, er - f.mantBits)) - (1u << f.mantBits);
  return sign | (static_cast<uint32_t>(er + bias) << f.mantBits) | m;
}

double decodeSmallFloat(const FloatFormat& f, uint32_t bits) {
  const int bias = (1 << (f.expBits - 1)) - 1;
  const uint32_t expMask = (1u << f.expBits) - 1;
  bool neg = (bits >> (f.expBits + f.mantBits)) & 1;
  uint32_t ex = (bits >> f.mantBits) & expMask;
  uint32_t m = bits & ((1u << f.mantBits) - 1);
  double v;
  if (f.hasInf && ex == expMask) v = m ? NAN : INFINITY;
  else if (!f.hasInf && ex == expMask && m == (1u << f.mantBits) - 1) v = NAN;
  else if (ex == 0) v = std::ldexp(static_cast<double>(m), 1 - bias - f.mantBits);
  else v = std::ldexp(1.0 + std::ldexp(static_cast<double>(m), -f.mantBits), static_cast<int>(ex) - bias);
  return neg ? -v : v;
}

bool isSigned(weftDataType_t t) { return t == weftInt8 || t == weftInt32 || t == weftInt64; }

// Integer values as the type's bit pattern (wrapped), widened to 64 bits.
uint64_t intBits(weftDataType_t t, double v) {
  int64_t x = static_cast<int64_t>(v);
  uint64_t u = static_cast<uint64_t>(x);
  size_t b = typeBytes(t);
  return b == 8 ? u : (u & ((uint64_t{1} << (8 * b)) - 1));
}

int64_t asSigned(weftDataType_t t, uint64_t bits) {
  size_t b = typeBytes(t);
  if (b == 8) return static_cast<int64_t>(bits);
  uint64_t signBit = uint64_t{1} << (8 * b - 1);
  return static_cast<int64_t>((bits ^ signBit) - signBit);
}

}  // namespace

size_t typeBytes(weftDataType_t t) {
  switch (t) {
    case weftInt8: case weftUint8: case weftFloat8e4m3: case weftFloat8e5m2: return 1;
    case weftFloat16: case weftBfloat16: return 2;
    case weftInt32: case weftUint32: case weftFloat32: return 4;
    default: return 8;
  }
}

bool isFloatType(weftDataType_t t) {
  return t == weftFloat16 || t == weftFloat32 || t == weftFloat64 || t == weftBfloat16 || t == weftFloat8e4m3 ||
         t == weftFloat8e5m2;
}

const char* typeLabel(weftDataType_t t) {
  static const char* n[] = {"int8", "uint8", "int32", "uint32", "int64", "uint64", "half", "float", "double", "bfloat16", "f8e4m3", "f8e5m2"};
  return n[t];
}
const char* opLabel(weftRedOp_t op) {
  static const char* n[] = {"sum", "prod", "max", "min", "avg"};
  return n[op];
}

void encodeValue(weftDataType_t t, double v, void* out) {
  switch (t) {
    case weftFloat32: {
      float f = static_cast<float>(v);
      std::memcpy(out, &f, 4);
      return;
    }
    case weftFloat64: std::memcpy(out, &v, 8); return;
    case weftFloat16: case weftBfloat16: {
      uint16_t b = static_cast<uint16_t>(encodeSmallFloat(formatOf(t), v));
      std::memcpy(out, &b, 2);
      return;
    }
    case weftFloat8e4m3: case weftFloat8e5m2: {
      uint8_t b = static_cast<uint8_t>(encodeSmallFloat(formatOf(t), v));
      std::memcpy(out, &b, 1);
      return;
    }
    default: {
      uint64_t b = intBits(t, v);
      std::memcpy(out, &b, typeBytes(t));  // little-endian
      return;
    }
  }
}

double decodeValue(weftDataType_t t, const void* in) {
  switch (t) {
    case weftFloat32: { float f; std::memcpy(&f, in, 4); return f; }
    case weftFloat64: { double d; std::memcpy(&d, in, 8); return d; }
    case weftFloat16: case weftBfloat16: { uint16_t b; std::memcpy(&b, in, 2); return decodeSmallFloat(formatOf(t), b); }
    case weftFloat8e4m3: case weftFloat8e5m2: { uint8_t b; std::memcpy(&b, in, 1); return decodeSmallFloat(formatOf(t), b); }
    default: {
      uint64_t b = 0;
      std::memcpy(&b, in, typeBytes(t));
      return isSigned(t) ? static_cast<double>(asSigned(t, b)) : static_cast<double>(b);
    }
  }
}

double inputValue(weftDataType_t t, weftRedOp_t op, int rank, int nranks, size_t i) {
  if (isFloatType(t)) {
    double scale = std::ldexp(1.0, static_cast<int>(i % 3) - 1);  // 0.5, 1, 2
    if (op == weftProd) {
      static const int kProd[5] = {1, 2, 1, -1, 1};  // |product| <= 2^nranks stays exact
      return kProd[(static_cast<size_t>(rank) * 3 + i) % 5];
    }
    int span = nranks <= 4 ? 2 : 1;  // partial sums stay within 8 * scale: exact in every type
    return scale * static_cast<double>(static_cast<int>((static_cast<size_t>(rank) * 5 + i * 3) % static_cast<size_t>(2 * span + 1)) - span);
  }
  // Integers: small signed values; unsigned types see them wrapped, so sums and products wrap.
  return static_cast<double>(static_cast<int>((static_cast<size_t>(rank) * 7 + i * 3) % 11) - 5);
}

void fillInput(weftDataType_t t, weftRedOp_t op, int rank, int nranks, void* buf, size_t count) {
  auto* p = static_cast<char*>(buf);
  size_t b = typeBytes(t);
  for (size_t i = 0; i < count; ++i) encodeValue(t, inputValue(t, op, rank, nranks, i), p + i * b);
}

void fillExpected(weftDataType_t t, weftRedOp_t op, int nranks, void* buf, size_t count) {
  auto* p = static_cast<char*>(buf);
  size_t b = typeBytes(t);
  for (size_t i = 0; i < count; ++i) {
    if (isFloatType(t)) {
      double acc = inputValue(t, op, 0, nranks, i);
      for (int r = 1; r < nranks; ++r) {
        double v = inputValue(t, op, r, nranks, i);
        switch (op) {
          case weftSum: case weftAvg: acc += v; break;
          case weftProd: acc *= v; break;
          case weftMax: acc = std::fmax(acc, v); break;
          case weftMin: acc = std::fmin(acc, v); break;
          default: break;
        }
      }
      if (op == weftAvg) {
        if (t == weftFloat64) acc = acc / nranks;
        else acc = static_cast<double>(static_cast<float>(acc) / static_cast<float>(nranks));
      }
      encodeValue(t, acc, p + i * b);
    } else {
      uint64_t width = b == 8 ? ~uint64_t{0} : ((uint64_t{1} << (8 * b)) - 1);
      uint64_t acc = intBits(t, inputValue(t, op, 0, nranks, i));
      for (int r = 1; r < nranks; ++r) {
        uint64_t v = intBits(t, inputValue(t, op, r, nranks, i));
        switch (op) {
          case weftSum: case weftAvg: acc = (acc + v) & width; break;
          case weftProd: acc = (acc * v) & width; break;
          case weftMax:
            if (isSigned(t) ? asSigned(t, v) > asSigned(t, acc) : v > acc) acc = v;
            break;
          case weftMin:
            if (isSigned(t) ? asSigned(t, v) < asSigned(t, acc) : v < acc) acc = v;
            break;
          default: break;
        }
      }
      if (op == weftAvg) {
        if (isSigned(t)) acc = static_cast<uint64_t>(asSigned(t, acc) / nranks) & width;
        else acc = acc / static_cast<uint64_t>(nranks);
      }
      std::memcpy(p + i * b, &acc, b);
    }
  }
}

long long firstMismatch(weftDataType_t t, const void* got, const void* want, size_t count, size_t* nwrong) {
  size_t b = typeBytes(t);
  long long first = -1;
  *nwrong = 0;
  for (size_t i = 0; i < count; ++i) {
    if (std::memcmp(static_cast<const char*>(got) + i * b, static_cast<const char*>(want) + i * b, b) != 0) {
      if (first < 0) first = static_cast<long long>(i);
      ++*nwrong;
    }
  }
  return first;
}

}  // namespace weft::test
