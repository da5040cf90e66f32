// Small utilities: clocks, randomness, hashing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "lib/core/status.h"

namespace weft {

// Monotonic nanoseconds.
uint64_t nowNs();
inline uint64_t nowUs() { return nowNs() / 1000; }
inline uint64_t nowMs() { return nowNs() / 1000000; }

// One spin-wait hint (PAUSE / YIELD): lets the sibling hyperthread run while this one polls.
inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Cryptographic-quality random bytes (getrandom(2)).
Status randomBytes(void* out, size_t n);

// 64-bit FNV-1a.
uint64_t hash64(const void* data, size_t n, uint64_t seed = 0xcbf29ce484222325ull);

// Read a small text file (sysfs/procfs); trailing newline stripped.
Status readTextFile(const std::string& path, std::string* out);

std::string hexString(const void* data, size_t n);

}  // namespace weft
