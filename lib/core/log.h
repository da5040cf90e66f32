// Logging: WEFT_DEBUG=NONE|WARN|INFO|TRACE, WEFT_DEBUG_SUBSYS=INIT,NET,...  Lines look like
//   host:pid:tid weft INFO [NET] message
#pragma once

namespace weft::log {

enum class Level : int { kNone = 0, kWarn = 1, kInfo = 2, kTrace = 3 };

bool enabled(Level level, const char* subsys);
void message(Level level, const char* subsys, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
// Re-read WEFT_DEBUG* (tests change them between forks).
void reload();

// Fork safety (lib/engine/fork_safety.cc): finish the one-time settings load (another thread may
// be inside it), then hold / release the output lock across fork().
void forkPrepareSettings();
void forkLock();
void forkUnlock();

}  // namespace weft::log

#define WEFT_LOG_AT(level, subsys, ...)                              \
  do {                                                               \
    if (::weft::log::enabled(level, #subsys))                        \
      ::weft::log::message(level, #subsys, __VA_ARGS__);             \
  } while (0)
#define WEFT_WARN(subsys, ...) WEFT_LOG_AT(::weft::log::Level::kWarn, subsys, __VA_ARGS__)
#define WEFT_INFO(subsys, ...) WEFT_LOG_AT(::weft::log::Level::kInfo, subsys, __VA_ARGS__)
#define WEFT_TRACE(subsys, ...) WEFT_LOG_AT(::weft::log::Level::kTrace, subsys, __VA_ARGS__)
