// WEFT_IB_HCA: NCCL's NCCL_IB_HCA syntax. "^" first excludes, "=" first (after any "^") matches
// names exactly instead of by prefix, then a comma list of name[:port].
//   mlx5_0,mlx5_1:1     only those (prefix match: mlx5_1 also matches mlx5_10)
//   =mlx5_1             exactly mlx5_1
//   ^=mlx5_8,mlx5_9     everything except those two
#pragma once

#include <string>
#include <vector>

#include "lib/core/status.h"

namespace weft::topo {

class HcaFilter {
 public:
  struct Entry {
    std::string name;
    int port = -1;  // -1: every port
  };

  // Empty spec = no filter (everything passes).
  static Status parse(const std::string& spec, HcaFilter* out);

  bool empty() const { return entries_.empty(); }
  bool excludeMode() const { return exclude_; }
  bool exactMatch() const { return exact_; }
  const std::vector<Entry>& entries() const { return entries_; }
  const std::string& spec() const { return spec_; }

  // True when the entry list names this port (ignoring the ^).
  bool names(const std::string& device, int port) const;
  // True when the port may be used.
  bool accepts(const std::string& device, int port) const {
    if (empty()) return true;
    return names(device, port) != exclude_;
  }

 private:
  std::string spec_;
  bool exclude_ = false;
  bool exact_ = false;
  std::vector<Entry> entries_;
};

}  // namespace weft::topo
