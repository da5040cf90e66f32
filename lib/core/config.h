// The one env table: every WEFT_* variable, its default and its meaning. Nothing else reads getenv.
// The variables live in config_vars_*.inc (X-macro lines, one file per area) and are listed in the
// README; a test checks that the two agree.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "lib/core/status.h"

namespace weft::config {

struct Var {
  const char* name;
  const char* defaultValue;  // "" means unset
  const char* meaning;
};

// Every variable, in table order.
const std::vector<Var>& table();

// The raw value: the environment's if set (and non-empty), else the default. Aborts on a name that
// is not in the table (a programming error caught by every test).
std::string getString(const char* name);
// True if the variable is set in the environment (non-empty).
bool isSet(const char* name);
// Integer value; a malformed value logs a warning and yields the default. Use validate() at init to
// turn malformed values into an error instead.
int64_t getInt(const char* name);
// Integer parse with an error naming the variable.
Status parseInt(const char* name, int64_t* out);
// Check every integer-typed variable parses; the error names the first bad one.
Status validate();

// Non-table environment reads needed by launch-environment detection live here too (e.g. HOME):
std::optional<std::string> rawEnv(const char* name);

}  // namespace weft::config
