// weft-topo: what weft sees on this node.
//   weft-topo show [--json] [--sysfs-root DIR] [--hwloc-xml FILE] [--topo-file FILE]
//                  [--gpus BUSID,...] [--ib-hca SPEC] [--dump FILE]
// Options default to the WEFT_* variables (WEFT_SYSFS_ROOT, WEFT_HWLOC_XML, WEFT_TOPO_FILE, ...).
//   weft-topo plan [--nodes N] [--gpus G] [--rails R] [--nic-gbps X] [--topo FILE] [--json]
//                  [--ring-channels C] [--tree-channels C]
// Builds the rings and trees of a synthetic fabric (or N copies of a topology file), runs the
// checker, and prints the predicted all-reduce time and busbw per size for ring and tree.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <string>
#include <vector>

#include "lib/core/config.h"
#include "lib/plan/collective_plan.h"
#include "lib/plan/cost_model.h"
#include "lib/plan/synthetic_fabric.h"
#include "lib/topo/topo.h"
#include "lib/topo/topo_file.h"
#include "lib/topo/topo_show.h"

namespace {

void usage(FILE* f) {
  std::fprintf(f,
               "usage: weft-topo show [options]\n"
               "       weft-topo plan [plan options]\n"
               "  --json               machine-readable output\n"
               "  --sysfs-root DIR     read NICs/GIDs from DIR instead of /sys (WEFT_SYSFS_ROOT)\n"
               "  --hwloc-xml FILE     PCI tree and NUMA from an hwloc XML (WEFT_HWLOC_XML)\n"
               "  --topo-file FILE     show a topology file instead of discovering (WEFT_TOPO_FILE)\n"
               "  --gpus ID,ID,...     GPU PCI bus ids (WEFT_GPU_BUS_IDS)\n"
               "  --ib-hca SPEC        port selection, NCCL syntax (WEFT_IB_HCA)\n"
               "  --gid-index SPEC     GID index override (WEFT_IB_GID_INDEX)\n"
               "  --dump FILE          also write the topology file (WEFT_TOPO_DUMP_FILE)\n"
               "plan options (rings, trees, checker, predicted all-reduce per size):\n"
               "  --nodes N            nodes in the fabric (default 2)\n"
               "  --gpus G             GPUs (ranks) per synthetic node (default 8)\n"
               "  --rails R            rails (RDMA ports) per synthetic node (default 8)\n"
               "  --nic-gbps X         port speed in Gb/s of the synthetic node (default 400)\n"
               "  --topo FILE          N copies of this node topology file instead (WEFT_TOPO_DUMP_FILE output)\n"
               "  --ring-channels C    ring channels (default: one per rail)\n"
               "  --tree-channels C    tree channels (default: two per rail)\n"
               "  --json               machine-readable output\n");
}

int show(int argc, char** argv) {
  weft::topo::DiscoveryOptions opt = weft::topo::DiscoveryOptions::fromEnv();
  std::string topoFile = weft::config::getString("WEFT_TOPO_FILE");
  std::string dumpFile = weft::config::getString("WEFT_TOPO_DUMP_FILE");
  bool json = false;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "weft-topo: %s needs a value\n", a.c_str());
        return false;
      }
      *out = argv[++i];
      return true;
    };
    std::string v;
    if (a == "--json") {
      json = true;
    } else if (a == "--sysfs-root") {
      if (!value(&opt.sysfsRoot)) return 2;
    } else if (a == "--hwloc-xml") {
      if (!value(&opt.hwlocXml)) return 2;
    } else if (a == "--topo-file") {
      if (!value(&topoFile)) return 2;
    } else if (a == "--dump") {
      if (!value(&dumpFile)) return 2;
    } else if (a == "--ib-hca") {
      if (!value(&opt.ibHca)) return 2;
    } else if (a == "--gid-index") {
      if (!value(&opt.gidIndex)) return 2;
    } else if (a == "--gpus") {
      if (!value(&v)) return 2;
      opt.gpuBusIds.clear();
      size_t pos = 0;
      while (pos <= v.size()) {
        size_t c = v.find(',', pos);
        if (c == std::string::npos) c = v.size();
        if (c > pos) opt.gpuBusIds.push_back(v.substr(pos, c - pos));
        pos = c + 1;
      }
    } else if (a == "-h" || a == "--help") {
      usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "weft-topo: unknown option %s\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  weft::topo::NodeTopology topo;
  weft::Status s = weft::topo::loadNodeTopology(opt, topoFile, dumpFile, &topo);
  if (!s) {
    std::fprintf(stderr, "weft-topo: %s\n", s.message().c_str());
    return 1;
  }
  std::string out = json ? weft::topo::renderTopologyJson(topo) : weft::topo::renderTopologyText(topo);
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

bool parseCount(const char* opt, const std::string& v, long lo, long hi, long* out) {
  char* end = nullptr;
  long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || x < lo || x > hi) {
    std::fprintf(stderr, "weft-topo: %s %s is not a number from %ld to %ld\n", opt, v.c_str(), lo, hi);
    return false;
  }
  *out = x;
  return true;
}

std::string sizeText(size_t b) {
  char buf[32];
  if (b >= (size_t{1} << 30)) std::snprintf(buf, sizeof buf, "%zu GiB", b >> 30);
  else if (b >= (size_t{1} << 20)) std::snprintf(buf, sizeof buf, "%zu MiB", b >> 20);
  else if (b >= (size_t{1} << 10)) std::snprintf(buf, sizeof buf, "%zu KiB", b >> 10);
  else std::snprintf(buf, sizeof buf, "%zu B", b);
  return buf;
}

int plan(int argc, char** argv) {
  long nodes = 2, gpus = 8, rails = 8, nicGbps = 400, ringCh = 0, treeCh = 0;
  std::string topoFile;
  bool json = false;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    std::string v;
    auto value = [&]() {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "weft-topo: %s needs a value\n", a.c_str());
        return false;
      }
      v = argv[++i];
      return true;
    };
    if (a == "--json") {
      json = true;
    } else if (a == "--nodes") {
      if (!value() || !parseCount("--nodes", v, 1, 1 << 20, &nodes)) return 2;
    } else if (a == "--gpus") {
      if (!value() || !parseCount("--gpus", v, 0, 64, &gpus)) return 2;
    } else if (a == "--rails") {
      if (!value() || !parseCount("--rails", v, 0, 64, &rails)) return 2;
    } else if (a == "--nic-gbps") {
      if (!value() || !parseCount("--nic-gbps", v, 1, 4000, &nicGbps)) return 2;
    } else if (a == "--ring-channels") {
      if (!value() || !parseCount("--ring-channels", v, 0, 1024, &ringCh)) return 2;
    } else if (a == "--tree-channels") {
      if (!value() || !parseCount("--tree-channels", v, 0, 1024, &treeCh)) return 2;
    } else if (a == "--topo") {
      if (!value()) return 2;
      topoFile = v;
    } else if (a == "-h" || a == "--help") {
      usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "weft-topo: unknown plan option %s\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  weft::plan::FabricInput in;
  weft::Status s;
  std::string source;
  if (!topoFile.empty()) {
    weft::topo::NodeTopology node;
    s = weft::topo::readTopologyFile(topoFile, &node);
    if (s) s = weft::plan::replicateFabric(weft::topo::compactTopology(node), static_cast<int>(nodes), &in);
    source = topoFile;
  } else {
    if (static_cast<long long>(nodes) * (gpus > 0 ? gpus : 1) > (1LL << 24)) {
      std::fprintf(stderr, "weft-topo: %ld nodes x %ld GPUs is more than 16M ranks\n", nodes, gpus);
      return 2;
    }
    s = weft::plan::syntheticFabric(static_cast<int>(nodes), static_cast<int>(gpus), static_cast<int>(rails),
                                    static_cast<uint32_t>(nicGbps * 1000), &in);
    source = "synthetic";
  }
  if (!s) {
    std::fprintf(stderr, "weft-topo: %s\n", s.message().c_str());
    return 1;
  }
  using Clock = std::chrono::steady_clock;
  weft::plan::PlanOptions opt;
  opt.ringChannels = static_cast<int>(ringCh);
  opt.treeChannels = static_cast<int>(treeCh);
  weft::plan::CollectivePlan p;
  auto t0 = Clock::now();
  s = weft::plan::buildCollectivePlan(in, opt, &p);
  auto t1 = Clock::now();
  if (!s) {
    std::fprintf(stderr, "weft-topo: %s\n", s.message().c_str());
    return 1;
  }
  weft::plan::CheckSummary sum;
  weft::Status check = weft::plan::checkCollectivePlan(p, &sum);
  auto t2 = Clock::now();
  weft::plan::CostModel model(p.graph, p.rings, p.trees);
  const double buildMs = std::chrono::duration<double, std::milli>(t1 - t0).count();
  const double checkMs = std::chrono::duration<double, std::milli>(t2 - t1).count();
  const auto& g = p.graph;
  const char* transport = weft::plan::transportName(g.interTransport());
  const int depth = std::max(p.trees.trees[0].depth, p.trees.trees[1].depth);
  const weft::plan::TunerConfig tuner;
  if (json) {
    std::printf("{\"format\": \"weft-plan\", \"source\": \"%s\", \"nodes\": %d, \"ranks\": %d, \"ranksPerNode\": %d, "
                "\"rails\": %d, \"transport\": \"%s\", \"interGBps\": %.3f, \"intraGBps\": %.3f,\n",
                source.c_str(), g.nNodes(), g.nRanks(), g.maxRanksPerNode(), g.nRails(), transport,
                model.interGBps(), model.intraGBps());
    std::printf(" \"ringChannels\": %zu, \"treeChannels\": %zu, \"treeConstruction\": \"shifted in-order double binary tree\", "
                "\"treeDepth\": %d, \"buildMs\": %.3f, \"checkMs\": %.3f, \"planBytes\": %zu,\n",
                p.rings.channels.size(), p.trees.channels.size(), depth, buildMs, checkMs, p.memoryBytes());
    std::printf(" \"check\": {\"ok\": %s, \"message\": \"%s\"},\n \"allreduce\": [\n", check ? "true" : "false",
                check ? "" : check.message().c_str());
    for (size_t b = 8; b <= (size_t{1} << 30); b *= 2) {
      auto r = model.predict(weft::plan::Algo::kRing, weft::CollType::kAllReduce, b);
      auto t = model.predict(weft::plan::Algo::kTree, weft::CollType::kAllReduce, b);
      auto pick = weft::plan::choosePlanFromModel(tuner, model, weft::CollType::kAllReduce, b);
      std::printf("  {\"bytes\": %zu, \"ring\": {\"us\": %.3f, \"busbw\": %.3f}, \"tree\": {\"us\": %.3f, \"busbw\": %.3f}, "
                  "\"pick\": \"%s\", \"channels\": %d}%s\n",
                  b, r.timeUs, r.busbwGBps, t.timeUs, t.busbwGBps, weft::plan::algoName(pick.algo), pick.nchannels,
                  b == (size_t{1} << 30) ? "" : ",");
    }
    std::printf(" ]}\n");
  } else {
    std::printf("fabric: %d nodes x %d ranks = %d ranks, %d rails, inter-node %s (%.1f GB/s over the rails), "
                "intra-node %.1f GB/s per rank; source %s\n",
                g.nNodes(), g.maxRanksPerNode(), g.nRanks(), g.nRails(), transport, model.interGBps(),
                model.intraGBps(), source.c_str());
    for (const std::string& n : g.notes()) std::printf("note: %s\n", n.c_str());
    std::printf("rings: %zu channels (rail c mod %d, each entering and leaving every node on its rail)\n",
                p.rings.channels.size(), g.nRails());
    std::printf("trees: %zu channels, shifted in-order double binary tree over nodes (depth %d, roots %d and %d), "
                "%s inside nodes\n",
                p.trees.channels.size(), depth, p.trees.trees[0].root, p.trees.trees[1].root,
                weft::plan::intraShapeName(p.trees.intra));
    std::printf("built in %.2f ms, %.2f MiB; ", buildMs, static_cast<double>(p.memoryBytes()) / (1 << 20));
    if (check)
      std::printf("checker: ok in %.2f ms (%lld ring and %lld tree inter-node edges rail-local, %lld rank visits)\n",
                  checkMs, static_cast<long long>(sum.ringInterNodeEdges),
                  static_cast<long long>(sum.treeInterNodeEdges), static_cast<long long>(sum.rankVisits));
    else
      std::printf("checker: FAILED: %s\n", check.message().c_str());
    std::printf("predicted all-reduce (alpha + bytes/beta per hop):\n");
    std::printf("%10s %14s %12s %14s %12s  %s\n", "size", "ring us", "ring busbw", "tree us", "tree busbw", "tuner picks");
    for (size_t b = 8; b <= (size_t{1} << 30); b *= 2) {
      auto r = model.predict(weft::plan::Algo::kRing, weft::CollType::kAllReduce, b);
      auto t = model.predict(weft::plan::Algo::kTree, weft::CollType::kAllReduce, b);
      auto pick = weft::plan::choosePlanFromModel(tuner, model, weft::CollType::kAllReduce, b);
      std::printf("%10s %14.2f %12.2f %14.2f %12.2f  %s (%d channels)\n", sizeText(b).c_str(), r.timeUs, r.busbwGBps,
                  t.timeUs, t.busbwGBps, weft::plan::algoName(pick.algo), pick.nchannels);
    }
  }
  return check ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "--help") == 0) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (std::strcmp(argv[1], "show") == 0) return show(argc - 2, argv + 2);
  if (std::strcmp(argv[1], "plan") == 0) return plan(argc - 2, argv + 2);
  std::fprintf(stderr, "weft-topo: unknown command %s\n", argv[1]);
  usage(stderr);
  return 2;
}
