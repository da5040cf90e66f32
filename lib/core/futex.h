// Process-shared futex waits on 32-bit words in a MAP_SHARED mapping. The calls use the plain
// (shared) futex operations, never FUTEX_PRIVATE_FLAG: a private futex is keyed on the address in
// this process's mm and would never be woken by another process.
#pragma once

#include <atomic>
#include <cstdint>

namespace weft::futex {

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t) && std::atomic<uint32_t>::is_always_lock_free,
              "futex words are plain 32-bit atomics");

// Sleeps while *word == expected, for at most timeoutNs (relative). Returns at once if *word !=
// expected; may return early (spurious wake-up, signal). The caller re-checks its condition.
void wait(std::atomic<uint32_t>* word, uint32_t expected, uint64_t timeoutNs);
// Wakes every process sleeping on word.
void wakeAll(std::atomic<uint32_t>* word);

}  // namespace weft::futex
