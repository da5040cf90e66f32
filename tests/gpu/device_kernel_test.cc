// The device reduction kernels element-exact against the host kernels (collectives/reduce) on random
// bit patterns: every type and op, denormals, infinities, signed zeros and NaNs included. NaN results
// must be NaN on both sides (payload bits may differ: the GPU makes a canonical NaN). Aligned (16-byte
// vector) and misaligned (element) paths, odd counts. Prints "SKIP" and exits 77 without a GPU.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "collectives/reduce/reduce.h"
#include "lib/core/types.h"
#include "lib/device/device.h"

namespace {

bool isNan(weft::DataType t, const char* p) {
  using weft::DataType;
  switch (t) {
    case DataType::kFloat16: { uint16_t v; std::memcpy(&v, p, 2); return (v & 0x7fff) > 0x7c00; }
    case DataType::kBfloat16: { uint16_t v; std::memcpy(&v, p, 2); return (v & 0x7fff) > 0x7f80; }
    case DataType::kFloat32: { uint32_t v; std::memcpy(&v, p, 4); return (v & 0x7fffffffu) > 0x7f800000u; }
    case DataType::kFloat64: { uint64_t v; std::memcpy(&v, p, 8); return (v & 0x7fffffffffffffffull) > 0x7ff0000000000000ull; }
    case DataType::kFloat8e4m3: return (static_cast<uint8_t>(*p) & 0x7f) == 0x7f;
    case DataType::kFloat8e5m2: return (static_cast<uint8_t>(*p) & 0x7f) > 0x7c;
    default: return false;
  }
}

}  // namespace

int main() {
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    std::printf("SKIP weft-device-kernel-test: no CUDA device\n");
    return 77;
  }
  std::mt19937_64 rng(12345);
  int failures = 0;
  // 100003 elements; and 4500007, aligned, where the grid is capped and the unrolled loop of
  // reduce2Kernel (four vectors per thread in flight) runs, then its tail.
  for (const size_t count : {static_cast<size_t>(100003), static_cast<size_t>(4500007)})
  for (int t = 0; t < weft::kNumDataTypes; ++t)
    for (int o = 0; o < weft::kNumRedOps; ++o)
      for (int misalign = 0; misalign < (count > 1000000 ? 1 : 2); ++misalign) {
        const auto type = static_cast<weft::DataType>(t);
        const auto op = static_cast<weft::RedOp>(o);
        const size_t es = weft::typeSize(type), bytes = count * es, off = misalign ? es : 0;
        std::vector<char> a(bytes), b(bytes), want(bytes), got(bytes);
        for (size_t i = 0; i < bytes; ++i) {
          a[i] = static_cast<char>(rng());
          b[i] = static_cast<char>(rng());
        }
        // Some equal pairs and signed zeros, so max/min's tie rules are exercised.
        for (size_t i = 0; i + es <= bytes; i += 7 * es) std::memcpy(&b[i], &a[i], es);
        for (size_t i = 3 * es; i + es <= bytes; i += 11 * es) {
          std::memset(&a[i], 0, es);
          std::memset(&b[i], 0, es);
          b[i + es - 1] = static_cast<char>(0x80);  // -0 (little endian: sign in the last byte)
        }
        weft::reduce::reduce(type, op, want.data(), a.data(), b.data(), count);
        char *da, *db, *dd;
        cudaMalloc(&da, bytes + 16);
        cudaMalloc(&db, bytes + 16);
        cudaMalloc(&dd, bytes + 16);
        cudaMemcpy(da + off, a.data(), bytes, cudaMemcpyHostToDevice);
        cudaMemcpy(db + off, b.data(), bytes, cudaMemcpyHostToDevice);
        weft::Status s = weft::device::reduceOnDevice(type, op, dd + off, da + off, db + off, count, nullptr);
        if (!s) {
          std::printf("FAIL %s %s: %s\n", weft::typeName(type), weft::opName(op), s.message().c_str());
          return 1;
        }
        if (cudaDeviceSynchronize() != cudaSuccess) {
          std::printf("FAIL %s %s: kernel error\n", weft::typeName(type), weft::opName(op));
          return 1;
        }
        cudaMemcpy(got.data(), dd + off, bytes, cudaMemcpyDeviceToHost);
        size_t wrong = 0, nans = 0;
        long long first = -1;
        for (size_t i = 0; i < count; ++i) {
          const char* g = &got[i * es];
          const char* w = &want[i * es];
          const bool gn = isNan(type, g), wn = isNan(type, w);
          nans += wn;
          if (gn && wn) continue;
          if (std::memcmp(g, w, es) != 0) {
            if (first < 0) first = static_cast<long long>(i);
            ++wrong;
          }
        }
        if (wrong) {
          ++failures;
          std::printf("FAIL %s %s misaligned=%d count %zu: %zu elements differ, first at %lld\n", weft::typeName(type),
                      weft::opName(op), misalign, count, wrong, first);
        }
        cudaFree(da);
        cudaFree(db);
        cudaFree(dd);
      }
  if (failures) {
    std::printf("weft-device-kernel-test: %d FAILED (type, op, layout) cases\n", failures);
    return 1;
  }
  std::printf("weft-device-kernel-test: 12 types x 5 ops x 2 layouts (100003 elements) and aligned 4500007 elements, element-exact vs the host kernels\n");
  return 0;
}
