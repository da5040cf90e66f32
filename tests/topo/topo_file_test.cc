#include "lib/topo/topo_file.h"

#include <gtest/gtest.h>

#include <random>

#include "lib/core/util.h"
#include "lib/topo/topo_show.h"
#include "topo/topo_test_util.h"

namespace weft::topo {
namespace {

using testing::fixtureOptions;
using testing::TempDir;
using testing::writeFile;

NodeTopology discover(const DiscoveryOptions& o) {
  NodeTopology t;
  Status s = discoverNode(o, &t);
  EXPECT_TRUE(s) << s.message();
  return t;
}

std::vector<NodeTopology> samples() {
  std::vector<NodeTopology> v;
  v.push_back(discover(fixtureOptions("dgx_h100")));
  v.push_back(discover(fixtureOptions("oci_h100")));
  v.push_back(discover(DiscoveryOptions()));  // this machine
  NodeTopology odd = v[1];
  odd.hostName = "host with spaces = and % and \xc3\xa9";
  odd.notes.push_back("a note with\nnewline");
  v.push_back(odd);
  return v;
}

// Replace the checksum so the parser itself is exercised.
std::string unchecked(std::string text) {
  size_t end = text.rfind("\nend ");
  if (end == std::string::npos) return text;
  return text.substr(0, end + 1) + "end -\n";
}

TEST(TopoFile, TextRoundTrip) {
  for (const NodeTopology& t : samples()) {
    std::string text = formatTopologyText(t);
    NodeTopology back;
    Status s = parseTopologyText(text, &back);
    ASSERT_TRUE(s) << s.message();
    EXPECT_EQ(back, t) << t.hostName;
    EXPECT_EQ(formatTopologyText(back), text);
  }
}

TEST(TopoFile, BinaryRoundTrip) {
  for (const NodeTopology& t : samples()) {
    std::vector<uint8_t> b = serializeTopology(t);
    NodeTopology back;
    Status s = deserializeTopology(b.data(), b.size(), &back);
    ASSERT_TRUE(s) << s.message();
    EXPECT_EQ(back, t);
    EXPECT_LT(b.size(), formatTopologyText(t).size());
  }
}

TEST(TopoFile, CompactFormForTheAllGather) {
  for (const NodeTopology& t : samples()) {
    NodeTopology c = compactTopology(t);
    ASSERT_TRUE(validateTopology(c));
    ASSERT_EQ(c.rails.size(), t.rails.size());
    ASSERT_EQ(c.nics.size(), t.rails.size());
    for (size_t r = 0; r < c.rails.size(); ++r) {
      const NicPort& a = c.railPort(static_cast<int>(r));
      const NicPort& b = t.railPort(static_cast<int>(r));
      EXPECT_EQ(a.device, b.device);
      EXPECT_EQ(a.pciBusId, b.pciBusId);
      EXPECT_EQ(a.port, b.port);
      EXPECT_EQ(a.gidIndex, b.gidIndex);
      EXPECT_EQ(a.gid, b.gid);
      EXPECT_EQ(a.rateMbps, b.rateMbps);
      EXPECT_EQ(a.rail, static_cast<int>(r));
      for (size_t g = 0; g < t.gpus.size(); ++g)
        EXPECT_EQ(c.distance[g][r], t.distance[g][static_cast<size_t>(t.rails[r])]);
    }
    for (size_t g = 0; g < t.gpus.size(); ++g) EXPECT_EQ(c.gpus[g].rails, t.gpus[g].rails);
    std::vector<uint8_t> b = serializeTopology(c);
    NodeTopology back;
    ASSERT_TRUE(deserializeTopology(b.data(), b.size(), &back));
    EXPECT_EQ(back, c);
    EXPECT_EQ(compactTopology(back), c);
    if (t.rails.size() == 16) {
      EXPECT_LT(b.size(), 4000u);  // OCI: 8 GPUs, 16 rails (full binary form: ~9.4 KB)
    }
  }
}

TEST(TopoFile, DumpThenLoadThroughTheEngineEntryPoint) {
  TempDir dir;
  for (const char* fx : {"dgx_h100", "oci_h100"}) {
    std::string path = dir.path() + "/" + fx + ".topo";
    NodeTopology dumped, loaded;
    ASSERT_TRUE(loadNodeTopology(fixtureOptions(fx), "", path, &dumped));
    Status s = loadNodeTopology(DiscoveryOptions(), path, "", &loaded);
    ASSERT_TRUE(s) << s.message();
    EXPECT_EQ(loaded, dumped);
    // The driven GPU must be in the file.
    DiscoveryOptions withGpu;
    withGpu.gpuBusIds = {dumped.gpus[3].pciBusId};
    EXPECT_TRUE(loadNodeTopology(withGpu, path, "", &loaded));
    withGpu.gpuBusIds = {"0000:01:00.0"};
    s = loadNodeTopology(withGpu, path, "", &loaded);
    EXPECT_FALSE(s);
    EXPECT_NE(s.message().find("no GPU 0000:01:00.0"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("WEFT_TOPO_FILE"), std::string::npos) << s.message();
  }
}

TEST(TopoFile, DumpAndLoadThroughTheEnvironment) {
  TempDir dir;
  std::string path = dir.path() + "/node.topo";
  DiscoveryOptions o = fixtureOptions("oci_h100");
  setenv("WEFT_SYSFS_ROOT", o.sysfsRoot.c_str(), 1);
  setenv("WEFT_HWLOC_XML", o.hwlocXml.c_str(), 1);
  setenv("WEFT_TOPO_DUMP_FILE", path.c_str(), 1);
  NodeTopology dumped, loaded;
  ASSERT_TRUE(loadNodeTopologyFromEnv(&dumped));
  unsetenv("WEFT_TOPO_DUMP_FILE");
  unsetenv("WEFT_SYSFS_ROOT");
  unsetenv("WEFT_HWLOC_XML");
  setenv("WEFT_TOPO_FILE", path.c_str(), 1);
  Status s = loadNodeTopologyFromEnv(&loaded);
  unsetenv("WEFT_TOPO_FILE");
  ASSERT_TRUE(s) << s.message();
  EXPECT_EQ(loaded, dumped);
  EXPECT_EQ(loaded.rails.size(), 16u);
}

TEST(TopoFile, RefusesWithAMessageNamingTheProblem) {
  NodeTopology t = discover(fixtureOptions("oci_h100"));
  std::string text = formatTopologyText(t);
  NodeTopology out;
  auto refused = [&](const std::string& input, const char* words) {
    Status s = parseTopologyText(input, &out, "test.topo");
    EXPECT_FALSE(s) << words;
    EXPECT_NE(s.message().find(words), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("test.topo"), std::string::npos) << s.message();
  };
  refused("", "empty");
  refused("hello\n", "does not start with");
  std::string v2 = text;
  v2.replace(0, 15, "weft-topology 2");
  refused(v2, "version 2 is not supported");
  refused(text.substr(0, text.size() / 2), "truncated");
  std::string edited = text;
  edited[edited.find("host ") + 5] ^= 1;
  refused(edited, "checksum mismatch");
  refused(text + "port x 1\n", "after the end line");
  // A hand-edited file with "end -" is accepted when consistent ...
  std::string hand = unchecked(text);
  hand.replace(hand.find("host "), 5, "host X");
  ASSERT_TRUE(parseTopologyText(hand, &out));
  EXPECT_EQ(out.hostName, "Xoci_h100");
  // ... and refused when not.
  std::string badRail = unchecked(text);
  size_t r = badRail.find(" rail=3 ");
  ASSERT_NE(r, std::string::npos);
  badRail.replace(r, 8, " rail=4 ");
  refused(badRail, "rail");
  std::string unknownField = unchecked(text);
  unknownField.replace(unknownField.find(" lid="), 5, " lad=");
  refused(unknownField, "unknown field lad");
  std::string badDist = unchecked(text) ;
  badDist.insert(badDist.find("dist "), "dist 99 0 PIX 4\n");
  refused(badDist, "dist record");
}

TEST(TopoFile, FileErrorsNameTheVariable) {
  NodeTopology out;
  Status s = readTopologyFile("/nonexistent/node.topo", &out);
  EXPECT_FALSE(s);
  EXPECT_NE(s.message().find("WEFT_TOPO_FILE"), std::string::npos);
  s = writeTopologyFile(out, "/nonexistent/dir/node.topo");
  EXPECT_FALSE(s);
  EXPECT_NE(s.message().find("WEFT_TOPO_DUMP_FILE"), std::string::npos);
}

// Random corruptions: never a crash; with the checksum every change is refused; without it the
// parser either refuses or returns a topology that passes validation and round-trips.
std::string mutate(std::string s, std::mt19937& rng) {
  auto pick = [&](size_t n) { return n ? std::uniform_int_distribution<size_t>(0, n - 1)(rng) : 0; };
  int kind = static_cast<int>(pick(7));
  if (s.empty()) return "x";
  switch (kind) {
    case 0: s[pick(s.size())] ^= static_cast<char>(1 << pick(8)); break;          // bit flip
    case 1: s[pick(s.size())] = static_cast<char>(pick(256)); break;               // random byte
    case 2: { size_t a = pick(s.size()); s.erase(a, pick(64) + 1); break; }        // delete a run
    case 3: s.insert(pick(s.size()), std::string(pick(8) + 1, "0 =%:-,\n9x"[pick(10)])); break;
    case 4: s.resize(pick(s.size())); break;                                        // truncate
    case 5: {                                                                       // duplicate a line
      size_t a = s.rfind('\n', pick(s.size()));
      a = a == std::string::npos ? 0 : a + 1;
      size_t b = s.find('\n', a);
      if (b != std::string::npos) s.insert(a, s.substr(a, b - a + 1));
      break;
    }
    default: {                                                                      // digit change
      size_t a = s.find_first_of("0123456789", pick(s.size()));
      if (a != std::string::npos) s[a] = static_cast<char>('0' + pick(10));
      break;
    }
  }
  return s;
}

TEST(TopoFile, FuzzTextReader) {
  std::mt19937 rng(12345);
  std::vector<NodeTopology> ts = samples();
  int refusedChecked = 0, acceptedUnchecked = 0, total = 0;
  for (const NodeTopology& t : ts) {
    std::string good = formatTopologyText(t);
    for (int i = 0; i < 600; ++i) {
      std::string bad = mutate(good, rng);
      if (rng() % 3 == 0) bad = mutate(bad, rng);
      NodeTopology out;
      ++total;
      Status s = parseTopologyText(bad, &out);
      if (bad != good) {
        EXPECT_FALSE(s) << "a corrupted file with a checksum was accepted";
        if (!s) ++refusedChecked;
        EXPECT_FALSE(s.message().empty());
      }
      std::string un = unchecked(bad);
      s = parseTopologyText(un, &out);
      if (s) {
        ++acceptedUnchecked;
        ASSERT_TRUE(validateTopology(out));
        NodeTopology again;
        Status rs = parseTopologyText(formatTopologyText(out), &again);
        ASSERT_TRUE(rs) << rs.message() << "\n" << formatTopologyText(out).substr(0, 3000);
        EXPECT_EQ(again, out);
      } else {
        EXPECT_NE(s.message().find("refused"), std::string::npos) << s.message();
      }
    }
  }
  EXPECT_GT(refusedChecked, total / 2);
  EXPECT_GT(acceptedUnchecked, 0);  // some mutations are harmless (e.g. inside a reason text)
}

TEST(TopoFile, FuzzBinaryReader) {
  std::mt19937 rng(777);
  for (const NodeTopology& t : samples()) {
    std::vector<uint8_t> good = serializeTopology(t);
    for (int i = 0; i < 800; ++i) {
      std::vector<uint8_t> bad = good;
      size_t at = rng() % bad.size();
      switch (rng() % 4) {
        case 0: bad[at] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
        case 1: bad.resize(at); break;
        case 2: bad.insert(bad.begin() + static_cast<long>(at), static_cast<uint8_t>(rng())); break;
        default: bad[at] = static_cast<uint8_t>(rng()); break;
      }
      NodeTopology out;
      Status s = deserializeTopology(bad.data(), bad.size(), &out);
      if (bad != good) {
        EXPECT_FALSE(s);
      }
      // Re-seal the payload (fix length and hash) so the field decoder is exercised too.
      if (bad.size() >= 24 && std::equal(good.begin(), good.begin() + 12, bad.begin())) {
        uint32_t len = static_cast<uint32_t>(bad.size() - 24);
        for (int k = 0; k < 4; ++k) bad[12 + static_cast<size_t>(k)] = static_cast<uint8_t>(len >> (8 * k));
        uint64_t h = hash64(bad.data() + 16, len);
        for (int k = 0; k < 8; ++k) bad[16 + len + static_cast<size_t>(k)] = static_cast<uint8_t>(h >> (8 * k));
        s = deserializeTopology(bad.data(), bad.size(), &out);
        if (s) {
          ASSERT_TRUE(validateTopology(out));
        }
      }
    }
  }
  NodeTopology out;
  EXPECT_FALSE(deserializeTopology(nullptr, 0, &out));
  EXPECT_FALSE(deserializeTopology("WEFTTOPO", 8, &out));
}

TEST(TopoShow, TextAndJsonNameWhatMatters) {
  NodeTopology t = discover(fixtureOptions("oci_h100"));
  std::string text = renderTopologyText(t);
  EXPECT_NE(text.find("RDMA ports: 18, rails: 16"), std::string::npos);
  EXPECT_NE(text.find("GPU0 "), std::string::npos);
  EXPECT_NE(text.find("rail 0 = mlx5_10:1, rail 1 = mlx5_11:1"), std::string::npos) << text;
  EXPECT_NE(text.find("EXCLUDED: farther than the host bridge"), std::string::npos);
  EXPECT_NE(text.find("GID choice: index 5: RoCE v2 IPv4 10.224.3.13 on mv-rdma3"), std::string::npos);
  EXPECT_NE(text.find("PCI distances"), std::string::npos);
  std::string json = renderTopologyJson(t);
  EXPECT_EQ(json.front(), '{');
  EXPECT_NE(json.find("\"busId\": \"0000:16:00.1\""), std::string::npos);
  EXPECT_NE(json.find("\"exclusionReason\": \"farther than the host bridge"), std::string::npos);
  // Balanced brackets outside strings: a cheap well-formedness check.
  int depth = 0;
  bool inStr = false;
  for (size_t i = 0; i < json.size(); ++i) {
    char c = json[i];
    if (inStr) {
      if (c == '\\') ++i;
      else if (c == '"') inStr = false;
      continue;
    }
    if (c == '"') inStr = true;
    if (c == '{' || c == '[') ++depth;
    if (c == '}' || c == ']') --depth;
    ASSERT_GE(depth, 0);
  }
  EXPECT_EQ(depth, 0);
  EXPECT_FALSE(inStr);
  // An empty node renders too.
  NodeTopology empty;
  EXPECT_NE(renderTopologyText(empty).find("GPUs: 0"), std::string::npos);
  EXPECT_NE(renderTopologyJson(empty).find("\"gpus\": []"), std::string::npos);
}

}  // namespace
}  // namespace weft::topo
