#include "lib/core/futex.h"

#include <climits>
#include <ctime>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace weft::futex {

void wait(std::atomic<uint32_t>* word, uint32_t expected, uint64_t timeoutNs) {
  struct timespec ts;
  ts.tv_sec = static_cast<time_t>(timeoutNs / 1000000000ull);
  ts.tv_nsec = static_cast<long>(timeoutNs % 1000000000ull);
  // FUTEX_WAIT without FUTEX_PRIVATE_FLAG: keyed on the shared page, so a waker in another process
  // that maps the same memory finds us.
  (void)syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void wakeAll(std::atomic<uint32_t>* word) {
  (void)syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

}  // namespace weft::futex
