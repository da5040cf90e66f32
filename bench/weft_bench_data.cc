// weft-bench: verifiable data (see weft_bench_data.h for the construction).
#include "weft_bench_data.h"

#include "weft_bench_numeric.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <vector>

namespace weftbench {

static_assert(std::endian::native == std::endian::little, "weft-bench stores elements little-endian");

namespace {

const TypeDesc kTypes[] = {
    {weftInt8, "int8", 1, Kind::SignedInt, 8, nullptr},
    {weftUint8, "uint8", 1, Kind::UnsignedInt, 8, nullptr},
    {weftInt32, "int32", 4, Kind::SignedInt, 32, nullptr},
    {weftUint32, "uint32", 4, Kind::UnsignedInt, 32, nullptr},
    {weftInt64, "int64", 8, Kind::SignedInt, 64, nullptr},
    {weftUint64, "uint64", 8, Kind::UnsignedInt, 64, nullptr},
    {weftFloat16, "half", 2, Kind::Float, 11, &kFp16},
    {weftFloat32, "float", 4, Kind::Float, 24, nullptr},
    {weftFloat64, "double", 8, Kind::Float, 53, nullptr},
    {weftBfloat16, "bfloat16", 2, Kind::Float, 8, &kBf16},
    {weftFloat8e4m3, "f8e4m3", 1, Kind::Float, 4, &kFp8E4M3},
    {weftFloat8e5m2, "f8e5m2", 1, Kind::Float, 3, &kFp8E5M2},
};

const OpDesc kOps[] = {
    {weftSum, "sum"}, {weftProd, "prod"}, {weftMax, "max"}, {weftMin, "min"}, {weftAvg, "avg"},
};

struct Alias {
  const char* alias;
  const char* name;
};
const Alias kTypeAliases[] = {
    {"char", "int8"},       {"int", "int32"},       {"fp16", "half"},     {"float16", "half"},
    {"fp32", "float"},      {"float32", "float"},   {"fp64", "double"},   {"float64", "double"},
    {"bf16", "bfloat16"},   {"e4m3", "f8e4m3"},     {"fp8e4m3", "f8e4m3"}, {"e5m2", "f8e5m2"},
    {"fp8e5m2", "f8e5m2"},
};

inline uint64_t mix64(uint64_t x) {  // splitmix64 finalizer
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

inline uint64_t widthMask(int bits) { return bits >= 64 ? ~0ull : ((1ull << bits) - 1); }

inline int64_t signExtend(uint64_t v, int bits) {
  if (bits >= 64) return static_cast<int64_t>(v);
  const uint64_t sign = 1ull << (bits - 1);
  v &= widthMask(bits);
  return static_cast<int64_t>((v ^ sign) - sign);
}

inline void storeBits(void* buf, size_t i, size_t size, uint64_t bits) {
  std::memcpy(static_cast<char*>(buf) + i * size, &bits, size);
}

uint64_t encodeValue(const TypeDesc& t, double v) {
  if (t.type == weftFloat64) return std::bit_cast<uint64_t>(v);
  if (t.type == weftFloat32) return std::bit_cast<uint32_t>(static_cast<float>(v));
  return encodeFloat(*t.fmt, v);
}

// Generates the value of (rank, element) for one (type, op, nranks).
class Generator {
 public:
  Generator(const TypeDesc& t, const OpDesc& op, int nranks) : t_(t), op_(op.op), n_(nranks) {
    for (int r = 0; r < nranks; ++r) {
      base_.push_back(mix64((static_cast<uint64_t>(t.type) << 40) ^
                            (static_cast<uint64_t>(op.op) << 32) ^ static_cast<uint64_t>(r) ^
                            0x5745465442454e43ull /* "WEFTBENC" */));
    }
    if (t.kind == Kind::Float) {
      const int p = t.precision;
      if (op_ == weftSum || op_ == weftAvg) {
        k_ = std::min<int64_t>(nranks, int64_t{1} << (p - 1));
        a_ = (int64_t{1} << p) / k_;
      } else if (op_ == weftProd) {
        k_ = std::min(nranks, 4);
      } else {
        a_ = int64_t{1} << std::min(p, 30);
      }
    } else {
      const int w = t.precision;
      if (t.kind == Kind::SignedInt) {
        const uint64_t maxPos = widthMask(w - 1);
        a_ = static_cast<int64_t>(maxPos / static_cast<uint64_t>(nranks));
      } else {
        ua_ = widthMask(w) / static_cast<uint64_t>(nranks);
      }
    }
  }

  uint64_t hash(int rank, size_t i) const { return mix64(base_[rank] + i); }

  // Floats: the exact value.
  double floatValue(int rank, size_t i) const {
    const uint64_t h = hash(rank, i);
    const int scale = static_cast<int>(i % 4) - 2;
    switch (op_) {
      case weftSum:
      case weftAvg: {
        if (!inWindow(rank, i)) return 0.0;
        const int64_t a = static_cast<int64_t>(h % static_cast<uint64_t>(2 * a_ + 1)) - a_;
        return std::ldexp(static_cast<double>(a), scale);
      }
      case weftProd: {
        const double mag = (inWindow(rank, i) && (h & 1)) ? 2.0 : 1.0;
        return ((h >> 1) & 3) == 0 ? -mag : mag;
      }
      default: {  // max, min
        const int64_t a = static_cast<int64_t>(h % static_cast<uint64_t>(2 * a_ + 1)) - a_;
        return std::ldexp(static_cast<double>(a), scale);
      }
    }
  }

  // Integers: the value's bits (masked to the width).
  uint64_t intValue(int rank, size_t i) const {
    const uint64_t h = hash(rank, i);
    const int w = t_.precision;
    uint64_t v;
    switch (op_) {
      case weftProd: {
        const uint64_t m = h % 8;
        v = m < 5 ? 1 : m == 5 ? 2 : m == 6 ? 3 : (t_.kind == Kind::SignedInt ? ~0ull : 1);
        break;
      }
      case weftAvg:
        if (t_.kind == Kind::SignedInt) {
          // [-a, a] in two's complement, computed unsigned (a may be 2^63 - 1 for one rank).
          const uint64_t a = static_cast<uint64_t>(a_);
          v = h % (2 * a + 1) - a;
        } else {
          v = ua_ == ~0ull ? h : h % (ua_ + 1);
        }
        break;
      default:
        v = h;
    }
    return v & widthMask(w);
  }

 private:
  bool inWindow(int rank, size_t i) const {
    const int d = (rank + n_ - static_cast<int>(i % static_cast<size_t>(n_))) % n_;
    return d < k_;
  }

  const TypeDesc& t_;
  weftRedOp_t op_;
  int n_;
  std::vector<uint64_t> base_;
  int64_t k_ = 0;   // non-zero contributors per element
  int64_t a_ = 0;   // magnitude bound
  uint64_t ua_ = 0; // unsigned avg bound
};

}  // namespace

const TypeDesc* allTypes(size_t* n) {
  *n = sizeof(kTypes) / sizeof(kTypes[0]);
  return kTypes;
}

const OpDesc* allOps(size_t* n) {
  *n = sizeof(kOps) / sizeof(kOps[0]);
  return kOps;
}

const TypeDesc* findType(std::string_view name) {
  for (const Alias& a : kTypeAliases) {
    if (name == a.alias) name = a.name;
  }
  for (const TypeDesc& t : kTypes) {
    if (name == t.name) return &t;
  }
  return nullptr;
}

const OpDesc* findOp(std::string_view name) {
  for (const OpDesc& o : kOps) {
    if (name == o.name) return &o;
  }
  return nullptr;
}

const OpDesc& dataOnlyOp() { return kOps[2]; }  // max

void fillInput(void* buf, size_t count, const TypeDesc& t, const OpDesc& op, int rank,
               int nranks) {
  fillInputRange(buf, 0, count, t, op, rank, nranks);
}

void fillExpected(void* buf, size_t count, const TypeDesc& t, const OpDesc& op, int nranks) {
  fillExpectedRange(buf, 0, count, t, op, nranks);
}

void fillInputRange(void* buf, size_t first, size_t count, const TypeDesc& t, const OpDesc& op,
                    int rank, int nranks) {
  Generator g(t, op, nranks);
  if (t.kind == Kind::Float) {
    for (size_t i = 0; i < count; ++i) {
      storeBits(buf, i, t.size, encodeValue(t, g.floatValue(rank, first + i)));
    }
  } else {
    for (size_t i = 0; i < count; ++i) storeBits(buf, i, t.size, g.intValue(rank, first + i));
  }
}

void fillExpectedRange(void* buf, size_t first, size_t count, const TypeDesc& t, const OpDesc& op,
                       int nranks) {
  Generator g(t, op, nranks);
  if (t.kind == Kind::Float) {
    for (size_t k = 0; k < count; ++k) {
      const size_t i = first + k;
      double acc = g.floatValue(0, i);
      for (int r = 1; r < nranks; ++r) {
        const double v = g.floatValue(r, i);
        switch (op.op) {
          case weftSum:
          case weftAvg: acc += v; break;  // exact by construction
          case weftProd: acc *= v; break;
          case weftMax: acc = std::max(acc, v); break;
          case weftMin: acc = std::min(acc, v); break;
          default: break;
        }
      }
      uint64_t bits;
      if (op.op != weftAvg) {
        bits = encodeValue(t, acc);
      } else if (t.type == weftFloat64) {
        bits = std::bit_cast<uint64_t>(acc / static_cast<double>(nranks));
      } else {
        // fp32: divide in fp32. fp16/bf16/fp8: divide in fp32, then round to nearest-even.
        const float q = static_cast<float>(acc) / static_cast<float>(nranks);
        bits = t.type == weftFloat32 ? std::bit_cast<uint32_t>(q) : encodeFloat(*t.fmt, q);
      }
      storeBits(buf, k, t.size, bits);
    }
    return;
  }
  const int w = t.precision;
  const bool isSigned = t.kind == Kind::SignedInt;
  for (size_t k = 0; k < count; ++k) {
    const size_t i = first + k;
    uint64_t acc = g.intValue(0, i);
    for (int r = 1; r < nranks; ++r) {
      const uint64_t v = g.intValue(r, i);
      switch (op.op) {
        case weftSum:
        case weftAvg: acc += v; break;  // unsigned: wraps
        case weftProd: acc *= v; break;
        case weftMax:
          acc = isSigned ? (signExtend(v, w) > signExtend(acc, w) ? v : acc) : std::max(acc, v);
          break;
        case weftMin:
          acc = isSigned ? (signExtend(v, w) < signExtend(acc, w) ? v : acc) : std::min(acc, v);
          break;
        default: break;
      }
      acc &= widthMask(w);
    }
    if (op.op == weftAvg) {
      acc = isSigned ? static_cast<uint64_t>(signExtend(acc, w) / nranks)
                     : acc / static_cast<uint64_t>(nranks);
    }
    storeBits(buf, k, t.size, acc & widthMask(w));
  }
}

size_t countMismatches(const void* got, const void* want, size_t count, size_t typeSize) {
  if (count == 0 || std::memcmp(got, want, count * typeSize) == 0) return 0;
  const char* g = static_cast<const char*>(got);
  const char* w = static_cast<const char*>(want);
  size_t wrong = 0;
  for (size_t i = 0; i < count; ++i) {
    if (std::memcmp(g + i * typeSize, w + i * typeSize, typeSize) != 0) ++wrong;
  }
  return wrong;
}

}  // namespace weftbench
