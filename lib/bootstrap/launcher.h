// Launcher environments: rank, size and local rank, the rendezvous address and the job secret from
// WEFT_* variables, Open MPI, Slurm or torchrun (weftCommInitFromEnv).
#pragma once

#include <string>

#include "lib/bootstrap/unique_id.h"
#include "lib/core/net.h"
#include "lib/core/status.h"

namespace weft::bootstrap {

struct LaunchInfo {
  int rank = -1;
  int nranks = -1;
  int localRank = -1;
  std::string launcher;     // "WEFT_*", "Open MPI", "Slurm", "torchrun"
  net::SockAddr root;
  std::string rootSource;   // which variable named the rendezvous
  unsigned char secret[kSecretBytes] = {};
  std::string secretSource;
};

Status launchInfoFromEnv(LaunchInfo* out);

// "host:port", "[v6]:port"; the host resolved with getaddrinfo.
Status parseHostPort(const std::string& s, net::SockAddr* out);
// The first host of a Slurm node list: "node[01-04,07],gpu5" -> "node01".
std::string firstSlurmHost(const std::string& nodelist);

}  // namespace weft::bootstrap
