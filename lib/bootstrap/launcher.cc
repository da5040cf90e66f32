#include "lib/bootstrap/launcher.h"

#include <netdb.h>

#include <cstdlib>
#include <cstring>
#include <optional>

#include "lib/core/config.h"
#include "lib/core/util.h"

namespace weft::bootstrap {

namespace {

std::optional<std::string> envAny(const char* name) {
  auto v = config::rawEnv(name);
  if (v && v->empty()) return std::nullopt;
  return v;
}

Status toInt(const char* name, const std::string& v, int* out) {
  char* end = nullptr;
  long x = std::strtol(v.c_str(), &end, 10);
  if (end == v.c_str() || *end != '\0' || x < 0 || x > (1 << 30))
    return invalidArgument(std::string(name) + "=\"" + v + "\" is not a non-negative integer");
  *out = static_cast<int>(x);
  return Status::ok();
}

// The first of several (rank, size, local) triples that is fully set.
Status pickRanks(LaunchInfo* info) {
  struct Source {
    const char* launcher;
    const char* rank;
    const char* size;
    const char* local;
  };
  static const Source kSources[] = {
      {"WEFT_*", "WEFT_RANK", "WEFT_NRANKS", "WEFT_LOCAL_RANK"},
      {"Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
      {"Slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
      {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"},
  };
  for (const Source& s : kSources) {
    bool weft = std::strncmp(s.rank, "WEFT_", 5) == 0;
    auto rank = weft ? (config::isSet(s.rank) ? std::optional<std::string>(config::getString(s.rank)) : std::nullopt)
                     : envAny(s.rank);
    auto size = weft ? (config::isSet(s.size) ? std::optional<std::string>(config::getString(s.size)) : std::nullopt)
                     : envAny(s.size);
    if (!rank || !size) continue;
    WEFT_TRY(toInt(s.rank, *rank, &info->rank));
    WEFT_TRY(toInt(s.size, *size, &info->nranks));
    auto local = weft ? (config::isSet(s.local) ? std::optional<std::string>(config::getString(s.local)) : std::nullopt)
                      : envAny(s.local);
    info->localRank = 0;
    if (local) WEFT_TRY(toInt(s.local, *local, &info->localRank));
    info->launcher = s.launcher;
    if (info->nranks < 1 || info->rank >= info->nranks)
      return invalidArgument(std::string(s.rank) + "=" + *rank + " is not below " + s.size + "=" + *size);
    return Status::ok();
  }
  return invalidArgument(
      "no launcher environment found: set WEFT_RANK and WEFT_NRANKS (and WEFT_COMM_ID=host:port), or run under "
      "mpirun (Open MPI), srun (Slurm) or torchrun");
}

}  // namespace

Status parseHostPort(const std::string& s, net::SockAddr* out) {
  std::string host, port;
  if (!s.empty() && s[0] == '[') {
    size_t close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':')
      return invalidArgument("\"" + s + "\" is not [ipv6]:port");
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    size_t colon = s.rfind(':');
    if (colon == std::string::npos || colon == 0) return invalidArgument("\"" + s + "\" is not host:port");
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  int p = 0;
  if (!toInt("port", port, &p) || p < 1 || p > 65535) return invalidArgument("\"" + s + "\" has no valid port");
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr)
    return invalidArgument("cannot resolve \"" + host + "\": " + gai_strerror(rc));
  addrinfo* pick = res;
  for (addrinfo* a = res; a; a = a->ai_next)
    if (a->ai_family == AF_INET) {
      pick = a;
      break;
    }
  *out = net::SockAddr();
  std::memcpy(&out->ss, pick->ai_addr, pick->ai_addrlen);
  out->len = pick->ai_addrlen;
  out->setPort(static_cast<uint16_t>(p));
  freeaddrinfo(res);
  return Status::ok();
}

std::string firstSlurmHost(const std::string& nodelist) {
  // Up to the first comma outside brackets; a bracket range keeps its first entry.
  std::string first;
  int depth = 0;
  for (char c : nodelist) {
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (c == ',' && depth == 0) break;
    first += c;
  }
  size_t open = first.find('[');
  if (open == std::string::npos) return first;
  std::string prefix = first.substr(0, open);
  std::string inside = first.substr(open + 1);
  size_t end = inside.find_first_of(",-]");
  return prefix + inside.substr(0, end);
}

Status launchInfoFromEnv(LaunchInfo* info) {
  *info = LaunchInfo();
  WEFT_TRY(pickRanks(info));
  if (config::isSet("WEFT_COMM_ID")) {
    WEFT_TRY(parseHostPort(config::getString("WEFT_COMM_ID"), &info->root).withContext("WEFT_COMM_ID"));
    info->rootSource = "WEFT_COMM_ID";
  } else if (auto addr = envAny("MASTER_ADDR")) {
    auto port = envAny("MASTER_PORT");
    int p = 0;
    if (!port || !toInt("MASTER_PORT", *port, &p) || p + 1 > 65535)
      return invalidArgument("MASTER_ADDR is set but MASTER_PORT is missing or invalid; weft uses MASTER_PORT+1");
    WEFT_TRY(parseHostPort(*addr + ":" + std::to_string(p + 1), &info->root).withContext("MASTER_ADDR"));
    info->rootSource = "MASTER_ADDR:MASTER_PORT+1";
  } else if (auto nodes = envAny("SLURM_STEP_NODELIST")) {
    auto job = envAny("SLURM_JOB_ID");
    int id = 0;
    if (job) (void)toInt("SLURM_JOB_ID", *job, &id);
    WEFT_TRY(parseHostPort(firstSlurmHost(*nodes) + ":" + std::to_string(20000 + id % 20000), &info->root)
                 .withContext("SLURM_STEP_NODELIST"));
    info->rootSource = "SLURM_STEP_NODELIST";
  } else {
    return invalidArgument("no rendezvous address: set WEFT_COMM_ID=host:port (the host of rank 0), or MASTER_ADDR "
                           "and MASTER_PORT as torchrun does");
  }
  std::string secret;
  if (config::isSet("WEFT_COMM_SECRET")) {
    secret = config::getString("WEFT_COMM_SECRET");
    info->secretSource = "WEFT_COMM_SECRET";
  } else {
    for (const char* v : {"SLURM_JOB_ID", "OMPI_MCA_ess_base_jobid", "TORCHELASTIC_RUN_ID"})
      if (auto j = envAny(v)) {
        secret = *j;
        info->secretSource = v;
        break;
      }
    if (secret.empty()) {
      secret = info->root.str();
      info->secretSource = "the rendezvous address (no job id found)";
    }
  }
  uint64_t a = hash64(secret.data(), secret.size()), b = hash64(secret.data(), secret.size(), a ^ 0x9e3779b97f4a7c15ull);
  std::memcpy(info->secret, &a, 8);
  std::memcpy(info->secret + 8, &b, 8);
  return Status::ok();
}

}  // namespace weft::bootstrap
