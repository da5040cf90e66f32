#include "lib/core/log.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "lib/core/config.h"

namespace weft::log {

namespace {

struct State {
  std::once_flag once;
  std::atomic<int> level{static_cast<int>(Level::kWarn)};
  bool all = true;
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  FILE* out = stderr;
  char host[64] = "?";
  std::mutex mu;
};

State& state() {
  static State* s = new State();  // never destroyed: logging works during exit
  return *s;
}

void load(State& s) {
  std::string lv = config::getString("WEFT_DEBUG");
  for (auto& c : lv) c = static_cast<char>(toupper(static_cast<unsigned char>(c)));
  Level level = Level::kWarn;
  if (lv == "NONE") level = Level::kNone;
  else if (lv == "INFO") level = Level::kInfo;
  else if (lv == "TRACE") level = Level::kTrace;
  s.level.store(static_cast<int>(level));
  s.include.clear();
  s.exclude.clear();
  std::string subs = config::getString("WEFT_DEBUG_SUBSYS");
  bool excludeMode = !subs.empty() && subs[0] == '^';
  if (excludeMode) subs.erase(0, 1);
  size_t pos = 0;
  while (pos <= subs.size()) {
    size_t comma = subs.find(',', pos);
    if (comma == std::string::npos) comma = subs.size();
    std::string item = subs.substr(pos, comma - pos);
    for (auto& c : item) c = static_cast<char>(toupper(static_cast<unsigned char>(c)));
    if (!item.empty()) (excludeMode ? s.exclude : s.include).push_back(item);
    pos = comma + 1;
  }
  s.all = excludeMode || s.include.empty();
  for (auto& i : s.include)
    if (i == "ALL") s.all = true;
  gethostname(s.host, sizeof s.host - 1);
  char* dot = std::strchr(s.host, '.');
  if (dot) *dot = '\0';
  std::string file = config::getString("WEFT_DEBUG_FILE");
  if (!file.empty()) {
    std::string path;
    for (size_t i = 0; i < file.size(); ++i) {
      if (file[i] == '%' && i + 1 < file.size()) {
        char k = file[++i];
        if (k == 'h') path += s.host;
        else if (k == 'p') path += std::to_string(getpid());
        else path += k;
      } else {
        path += file[i];
      }
    }
    FILE* f = std::fopen(path.c_str(), "a");
    if (f) s.out = f;
  }
}

}  // namespace

void reload() {
  State& s = state();
  std::call_once(s.once, [] {});
  std::lock_guard<std::mutex> g(s.mu);
  load(s);
}

void forkPrepareSettings() {
  State& s = state();
  std::call_once(s.once, [&] { load(s); });
}
void forkLock() { state().mu.lock(); }
void forkUnlock() { state().mu.unlock(); }

bool enabled(Level level, const char* subsys) {
  State& s = state();
  std::call_once(s.once, [&] { load(s); });
  if (static_cast<int>(level) > s.level.load(std::memory_order_relaxed)) return false;
  for (auto& e : s.exclude)
    if (e == subsys) return false;
  if (s.all) return true;
  for (auto& i : s.include)
    if (i == subsys) return true;
  return false;
}

void message(Level level, const char* subsys, const char* fmt, ...) {
  State& s = state();
  char body[2048];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(body, sizeof body, fmt, ap);
  va_end(ap);
  const char* lname = level == Level::kWarn ? "WARN" : level == Level::kInfo ? "INFO" : "TRACE";
  std::lock_guard<std::mutex> g(s.mu);
  std::fprintf(s.out, "%s:%d:%ld weft %s [%s] %s\n", s.host, static_cast<int>(getpid()),
               static_cast<long>(syscall(SYS_gettid)), lname, subsys, body);
  std::fflush(s.out);
}

}  // namespace weft::log
