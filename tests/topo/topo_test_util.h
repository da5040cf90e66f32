// Helpers for the topology tests: fixture paths and writable copies of fixtures.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "lib/topo/gid.h"
#include "lib/topo/topo.h"

namespace weft::topo::testing {

inline std::string fixtureDir(const std::string& name) {
  return std::string(WEFT_TOPO_FIXTURES) + "/" + name;
}

// Options that read a fixture and nothing from the environment.
inline DiscoveryOptions fixtureOptions(const std::string& name) {
  DiscoveryOptions o;
  o.sysfsRoot = fixtureDir(name) + "/sys";
  o.hwlocXml = fixtureDir(name) + "/topology.xml";
  return o;
}

// A scratch directory removed at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "weft-topo-XXXXXX").string();
    char* p = mkdtemp(tmpl.data());
    path_ = p ? p : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A writable copy of a fixture (symlinks kept as symlinks) under dir; returns options for it.
inline DiscoveryOptions copyFixture(const std::string& name, const TempDir& dir) {
  namespace fs = std::filesystem;
  fs::copy(fixtureDir(name), dir.path() + "/" + name,
           fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  DiscoveryOptions o;
  o.sysfsRoot = dir.path() + "/" + name + "/sys";
  o.hwlocXml = dir.path() + "/" + name + "/topology.xml";
  return o;
}

inline std::string formatGidForTest(const Gid& g) { return formatGid(g); }

inline void writeFile(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::trunc);
  f << text;
}

}  // namespace weft::topo::testing
