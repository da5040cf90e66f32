#include "lib/bootstrap/host_id.h"

#include <sys/stat.h>
#include <unistd.h>

#include "lib/core/config.h"
#include "lib/core/util.h"

namespace weft::bootstrap {

uint64_t hostId() {
  if (config::isSet("WEFT_HOST_ID")) {
    std::string s = config::getString("WEFT_HOST_ID");
    return hash64(s.data(), s.size());
  }
  std::string boot;
  if (!readTextFile("/proc/sys/kernel/random/boot_id", &boot)) boot = hostName();
  struct stat st {};
  uint64_t ns = 0;
  if (stat("/proc/self/ns/net", &st) == 0) ns = static_cast<uint64_t>(st.st_ino);
  boot += ":" + std::to_string(ns);
  return hash64(boot.data(), boot.size());
}

std::string hostName() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

}  // namespace weft::bootstrap
