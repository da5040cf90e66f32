// weft-topo: what weft sees on this node.
//   weft-topo show [--json] [--sysfs-root DIR] [--hwloc-xml FILE] [--topo-file FILE]
//                  [--gpus BUSID,...] [--ib-hca SPEC] [--dump FILE]
// Options default to the WEFT_* variables (WEFT_SYSFS_ROOT, WEFT_HWLOC_XML, WEFT_TOPO_FILE, ...).
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "lib/core/config.h"
#include "lib/topo/topo.h"
#include "lib/topo/topo_file.h"
#include "lib/topo/topo_show.h"

namespace {

void usage(FILE* f) {
  std::fprintf(f,
               "usage: weft-topo show [options]\n"
               "  --json               machine-readable output\n"
               "  --sysfs-root DIR     read NICs/GIDs from DIR instead of /sys (WEFT_SYSFS_ROOT)\n"
               "  --hwloc-xml FILE     PCI tree and NUMA from an hwloc XML (WEFT_HWLOC_XML)\n"
               "  --topo-file FILE     show a topology file instead of discovering (WEFT_TOPO_FILE)\n"
               "  --gpus ID,ID,...     GPU PCI bus ids (WEFT_GPU_BUS_IDS)\n"
               "  --ib-hca SPEC        port selection, NCCL syntax (WEFT_IB_HCA)\n"
               "  --gid-index SPEC     GID index override (WEFT_IB_GID_INDEX)\n"
               "  --dump FILE          also write the topology file (WEFT_TOPO_DUMP_FILE)\n");
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

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "--help") == 0) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (std::strcmp(argv[1], "show") == 0) return show(argc - 2, argv + 2);
  std::fprintf(stderr, "weft-topo: unknown command %s\n", argv[1]);
  usage(stderr);
  return 2;
}
