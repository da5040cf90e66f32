#include "lib/topo/hca_filter.h"

#include <cctype>

namespace weft::topo {

namespace {
std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}
}  // namespace

Status HcaFilter::parse(const std::string& spec, HcaFilter* out) {
  HcaFilter f;
  f.spec_ = spec;
  std::string s = trim(spec);
  if (s.empty()) {
    *out = f;
    return Status::ok();
  }
  size_t pos = 0;
  if (s[pos] == '^') {
    f.exclude_ = true;
    ++pos;
  }
  if (pos < s.size() && s[pos] == '=') {
    f.exact_ = true;
    ++pos;
  }
  std::string list = s.substr(pos);
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    std::string item = trim(list.substr(start, comma - start));
    start = comma + 1;
    if (item.empty()) {
      if (comma == list.size() && !f.entries_.empty()) break;  // tolerate a trailing comma
      return invalidArgument("WEFT_IB_HCA=\"" + spec +
                             "\" has an empty entry; give a comma list of name[:port], e.g. "
                             "mlx5_0,mlx5_1:1 (prefix ^ excludes, = matches exactly)");
    }
    Entry e;
    size_t colon = item.find(':');
    e.name = trim(item.substr(0, colon));
    if (e.name.empty())
      return invalidArgument("WEFT_IB_HCA=\"" + spec + "\": entry \"" + item +
                             "\" has no device name; write name[:port], e.g. mlx5_0:1");
    for (char c : e.name)
      if (std::isspace(static_cast<unsigned char>(c)) || c == '^' || c == '=')
        return invalidArgument("WEFT_IB_HCA=\"" + spec + "\": device name \"" + e.name +
                               "\" contains '" + std::string(1, c) +
                               "'; ^ and = belong only at the start of the whole list");
    if (colon != std::string::npos) {
      std::string p = trim(item.substr(colon + 1));
      if (p.find(':') != std::string::npos)
        return invalidArgument("WEFT_IB_HCA=\"" + spec + "\": entry \"" + item +
                               "\" has more than name:port (rail/plane fields are not supported); "
                               "rails are assigned from the PCI topology");
      bool digits = !p.empty() && p.size() <= 3;
      for (char c : p) digits = digits && std::isdigit(static_cast<unsigned char>(c));
      if (!digits || std::stoi(p) < 1)
        return invalidArgument("WEFT_IB_HCA=\"" + spec + "\": port \"" + p + "\" in entry \"" +
                               item + "\" is not a port number (ports count from 1)");
      e.port = std::stoi(p);
    }
    f.entries_.push_back(e);
  }
  if (f.entries_.empty())
    return invalidArgument("WEFT_IB_HCA=\"" + spec +
                           "\" names no device; give a comma list of name[:port] or unset it");
  *out = f;
  return Status::ok();
}

bool HcaFilter::names(const std::string& device, int port) const {
  for (const Entry& e : entries_) {
    bool nameOk = exact_ ? device == e.name : device.compare(0, e.name.size(), e.name) == 0;
    if (nameOk && (e.port < 0 || e.port == port)) return true;
  }
  return false;
}

}  // namespace weft::topo
