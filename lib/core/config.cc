#include "lib/core/config.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "lib/core/log.h"

namespace weft::config {

namespace {
const std::vector<Var> kTable = {
#define X(name, def, meaning) Var{name, def, meaning},
#include "lib/core/config_vars_core.inc"
#if __has_include("lib/core/config_vars_topo.inc")
#include "lib/core/config_vars_topo.inc"
#endif
#if __has_include("lib/core/config_vars_cpu.inc")
#include "lib/core/config_vars_cpu.inc"
#endif
#if __has_include("lib/core/config_vars_cuda.inc")
#include "lib/core/config_vars_cuda.inc"
#endif
#if __has_include("lib/core/config_vars_ib.inc")
#include "lib/core/config_vars_ib.inc"
#endif
#undef X
};

const Var& lookup(const char* name) {
  for (const Var& v : kTable)
    if (std::strcmp(v.name, name) == 0) return v;
  std::fprintf(stderr, "weft: internal error: config variable %s is not in the env table\n", name);
  std::abort();
}

bool looksInteger(const char* def) {
  if (!*def) return false;
  const char* p = def;
  if (*p == '-') ++p;
  for (; *p; ++p)
    if (*p < '0' || *p > '9') return false;
  return true;
}
}  // namespace

const std::vector<Var>& table() { return kTable; }

std::optional<std::string> rawEnv(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

bool isSet(const char* name) {
  lookup(name);
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0';
}

std::string getString(const char* name) {
  const Var& var = lookup(name);
  const char* v = std::getenv(name);
  if (v != nullptr && *v != '\0') return v;
  return var.defaultValue;
}

Status parseInt(const char* name, int64_t* out) {
  std::string s = getString(name);
  const char* p = s.c_str();
  while (*p == ' ') ++p;
  if (*p == '\0') {
    *out = 0;
    return Status::ok();
  }
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(p, &end, 0);
  while (end && *end == ' ') ++end;
  if (errno != 0 || end == p || *end != '\0') {
    return invalidArgument(std::string(name) + "=\"" + s +
                           "\" is not an integer; unset it or give a number (default " +
                           lookup(name).defaultValue + ")");
  }
  *out = v;
  return Status::ok();
}

int64_t getInt(const char* name) {
  int64_t v = 0;
  Status s = parseInt(name, &v);
  if (!s) {
    WEFT_WARN(ENV, "%s; using the default", s.message().c_str());
    std::string d = lookup(name).defaultValue;
    return d.empty() ? 0 : std::strtoll(d.c_str(), nullptr, 0);
  }
  return v;
}

Status validate() {
  for (const Var& v : kTable) {
    if (!looksInteger(v.defaultValue)) continue;
    int64_t x;
    WEFT_TRY(parseInt(v.name, &x));
  }
  return Status::ok();
}

}  // namespace weft::config
