// The README is part of the interface: it lists every WEFT_* variable of the env table (and no
// other), and holds the exact setup and test commands that CI (.ci/run) runs.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "lib/core/config.h"

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(Readme, ListsExactlyTheEnvTable) {
  std::string readme = slurp(std::string(WEFT_SOURCE_DIR) + "/README.md");
  ASSERT_FALSE(readme.empty());
  size_t start = readme.find("## Environment variables");
  ASSERT_NE(start, std::string::npos);
  size_t end = readme.find("\n## ", start + 1);
  std::string section = readme.substr(start, end == std::string::npos ? std::string::npos : end - start);
  std::set<std::string> listed;
  std::regex row(R"(\n\| `(WEFT_[A-Z0-9_]+)` \|)");
  for (std::sregex_iterator it(section.begin(), section.end(), row), e; it != e; ++it) listed.insert((*it)[1]);
  std::set<std::string> table;
  for (const auto& v : weft::config::table()) {
    table.insert(v.name);
    EXPECT_TRUE(std::string(v.name).rfind("WEFT_", 0) == 0) << v.name;
    EXPECT_GT(std::string(v.meaning).size(), 10u) << v.name << " needs a meaning";
  }
  for (const auto& n : table) EXPECT_TRUE(listed.count(n)) << n << " is in the env table but not in the README";
  for (const auto& n : listed) EXPECT_TRUE(table.count(n)) << n << " is in the README but not in the env table";
}

TEST(Readme, HoldsTheCommandsCiRuns) {
  std::string readme = slurp(std::string(WEFT_SOURCE_DIR) + "/README.md");
  std::string ci = slurp(std::string(WEFT_SOURCE_DIR) + "/.ci/run");
  ASSERT_FALSE(ci.empty());
  int commands = 0;
  std::istringstream lines(ci);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#' || line.rfind("set ", 0) == 0 || line.rfind("cd ", 0) == 0) continue;
    ++commands;
    EXPECT_NE(readme.find("\n" + line + "\n"), std::string::npos) << "CI runs `" << line << "` but the README does not say it";
  }
  EXPECT_EQ(commands, 2) << "CI runs the README's setup command and its test command";
}

TEST(Config, TableNamesAreUniqueAndIntegerDefaultsParse) {
  std::set<std::string> seen;
  for (const auto& v : weft::config::table()) EXPECT_TRUE(seen.insert(v.name).second) << v.name << " twice";
  EXPECT_TRUE(weft::config::validate().isOk());
}

}  // namespace
