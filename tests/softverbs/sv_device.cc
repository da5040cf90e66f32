// softverbs: devices from a sysfs-format tree, contexts, queries, strings, async events.
#include <arpa/inet.h>
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>

#include "sv.h"

#undef ibv_query_port

namespace sv {

Global& G() {
  static Global* g = new Global();  // never destroyed: the progress thread may outlive statics
  return *g;
}

int64_t nowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void logf(const char* fmt, ...) {
  if (!G().cfg.debug) return;
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fprintf(stderr, "softverbs[%d]: %s\n", int(getpid()), buf);
}

static const char* envStr(const char* name) {
  const char* v = getenv(name);
  return (v && *v) ? v : nullptr;
}

void loadConfigLocked() {
  Global& g = G();
  if (g.cfgLoaded) return;
  g.cfgLoaded = true;
  Config& c = g.cfg;
  if (const char* v = envStr("SOFTVERBS_SYSFS_ROOT")) c.sysfsRoot = v;
  if (const char* v = envStr("SOFTVERBS_RUN_DIR")) c.runDir = v;
  if (const char* v = envStr("SOFTVERBS_DELAY_US")) c.delayUs = std::max(0, atoi(v));
  if (const char* v = envStr("SOFTVERBS_DMABUF")) c.dmabuf = atoi(v) != 0;
  if (const char* v = envStr("SOFTVERBS_DEBUG")) c.debug = atoi(v) != 0;
  if (const char* v = envStr("SOFTVERBS_SEED")) c.seed = strtoull(v, nullptr, 0);
  g.rng = c.seed ? c.seed : (uint64_t(nowNs()) ^ (uint64_t(getpid()) << 32));
  if (!g.rng) g.rng = 0x9e3779b97f4a7c15ull;
}

uint64_t randU64Locked() {
  uint64_t& x = G().rng;  // xorshift64*
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  return x * 2685821657736338717ull;
}

// ---------------------------------------------------------------------------------------------
// sysfs reading
static bool readFile(const std::string& path, std::string* out) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n < 0) return false;
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) --n;
  out->assign(buf, size_t(n));
  return true;
}

static std::vector<std::string> listDir(const std::string& path) {
  std::vector<std::string> names;
  DIR* d = opendir(path.c_str());
  if (!d) return names;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    names.push_back(e->d_name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

static uint64_t parseGuid(const std::string& s) {  // "0002:c903:0031:7a10"
  uint64_t v = 0;
  int digits = 0;
  for (char ch : s) {
    int x;
    if (ch >= '0' && ch <= '9') x = ch - '0';
    else if (ch >= 'a' && ch <= 'f') x = ch - 'a' + 10;
    else if (ch >= 'A' && ch <= 'F') x = ch - 'A' + 10;
    else continue;
    v = (v << 4) | uint64_t(x);
    ++digits;
  }
  return digits ? v : 0;
}

static bool parseGid(const std::string& s, ibv_gid* gid) {  // 8 groups of 4 hex digits
  unsigned g[8];
  if (sscanf(s.c_str(), "%x:%x:%x:%x:%x:%x:%x:%x", &g[0], &g[1], &g[2], &g[3], &g[4], &g[5],
             &g[6], &g[7]) != 8)
    return false;
  for (int i = 0; i < 8; ++i) {
    gid->raw[2 * i] = uint8_t(g[i] >> 8);
    gid->raw[2 * i + 1] = uint8_t(g[i]);
  }
  return true;
}

static ibv_mtu mtuFromNetdev(int mtu) {
  static const int sizes[] = {4096, 2048, 1024, 512, 256};
  static const ibv_mtu enums[] = {IBV_MTU_4096, IBV_MTU_2048, IBV_MTU_1024, IBV_MTU_512,
                                  IBV_MTU_256};
  for (int i = 0; i < 5; ++i)
    if (mtu - 78 >= sizes[i]) return enums[i];
  return IBV_MTU_256;
}

static void parseRate(const std::string& rate, PortInfo* p) {  // "100 Gb/sec (4X EDR)"
  size_t lp = rate.find('(');
  if (lp == std::string::npos) return;
  std::string inner = rate.substr(lp + 1);
  int w = atoi(inner.c_str());
  switch (w) {
    case 1: p->width = 1; break;
    case 4: p->width = 2; break;
    case 8: p->width = 4; break;
    case 12: p->width = 8; break;
    case 2: p->width = 16; break;
    default: break;
  }
  static const struct { const char* n; uint8_t s; } speeds[] = {
      {"FDR10", 8}, {"SDR", 1}, {"DDR", 2}, {"QDR", 4}, {"FDR", 16},
      {"EDR", 32},  {"HDR", 64}, {"NDR", 128}};
  for (auto& s : speeds)
    if (inner.find(s.n) != std::string::npos) {
      p->speed = s.s;
      break;
    }
}

static void fillIbdev(Device* d, const std::string& ibdevPath) {
  memset(&d->ibdev, 0, sizeof d->ibdev);
  d->ibdev.node_type = IBV_NODE_CA;
  d->ibdev.transport_type = IBV_TRANSPORT_IB;
  snprintf(d->ibdev.name, sizeof d->ibdev.name, "%s", d->name.c_str());
  snprintf(d->ibdev.dev_name, sizeof d->ibdev.dev_name, "uverbs%d", d->index);
  snprintf(d->ibdev.dev_path, sizeof d->ibdev.dev_path, "/sys/class/infiniband_verbs/uverbs%d",
           d->index);
  snprintf(d->ibdev.ibdev_path, sizeof d->ibdev.ibdev_path, "%s", ibdevPath.c_str());
}

static Device* makeDefaultDevice(int index) {
  Device* d = new Device();
  d->name = "softverbs0";
  d->index = index;
  d->nodeGuid = 0x0002c90300a1b2c0ull;
  d->sysGuid = d->nodeGuid;
  d->fwVer = "1.0.0";
  PortInfo p;
  GidEnt ge;
  ge.valid = true;
  ge.gid.global.subnet_prefix = htobe64(0xfe80000000000000ull);
  ge.gid.global.interface_id = htobe64(d->nodeGuid | 1);
  p.gids.push_back(ge);
  p.gids.resize(16);
  p.pkeys.push_back(0xffff);
  d->ports.push_back(p);
  fillIbdev(d, "/sys/class/infiniband/softverbs0");
  return d;
}

static Device* readDevice(const std::string& root, const std::string& name, int index) {
  std::string dir = root + "/class/infiniband/" + name;
  Device* d = new Device();
  d->name = name;
  d->index = index;
  std::string s;
  if (readFile(dir + "/node_guid", &s)) d->nodeGuid = parseGuid(s);
  d->sysGuid = d->nodeGuid;
  if (readFile(dir + "/sys_image_guid", &s)) d->sysGuid = parseGuid(s);
  if (readFile(dir + "/fw_ver", &s)) d->fwVer = s;
  if (readFile(dir + "/device/vendor", &s)) d->vendorId = uint32_t(strtoul(s.c_str(), nullptr, 0));
  if (readFile(dir + "/device/device", &s)) d->partId = uint32_t(strtoul(s.c_str(), nullptr, 0));
  if (readFile(dir + "/hw_rev", &s)) d->hwVer = uint32_t(strtoul(s.c_str(), nullptr, 0));
  std::vector<int> portNums;
  for (const std::string& pn : listDir(dir + "/ports"))
    if (atoi(pn.c_str()) > 0) portNums.push_back(atoi(pn.c_str()));
  std::sort(portNums.begin(), portNums.end());
  for (int pn : portNums) {
    std::string pd = dir + "/ports/" + std::to_string(pn);
    PortInfo p;
    if (readFile(pd + "/state", &s)) p.state = atoi(s.c_str());
    if (readFile(pd + "/phys_state", &s)) p.physState = atoi(s.c_str());
    if (readFile(pd + "/link_layer", &s))
      p.linkLayer = s == "Ethernet" ? IBV_LINK_LAYER_ETHERNET : IBV_LINK_LAYER_INFINIBAND;
    if (readFile(pd + "/lid", &s)) p.lid = uint16_t(strtoul(s.c_str(), nullptr, 0));
    if (readFile(pd + "/sm_lid", &s)) p.smLid = uint16_t(strtoul(s.c_str(), nullptr, 0));
    if (readFile(pd + "/lid_mask_count", &s)) p.lmc = uint8_t(atoi(s.c_str()));
    if (readFile(pd + "/cap_mask", &s)) p.capMask = uint32_t(strtoul(s.c_str(), nullptr, 0));
    if (readFile(pd + "/rate", &s)) parseRate(s, &p);
    if (p.linkLayer == IBV_LINK_LAYER_ETHERNET) {
      p.lid = 0;
      p.smLid = 0;
      p.activeMtu = IBV_MTU_1024;
    }
    size_t nGids = 0;
    for (const std::string& gi : listDir(pd + "/gids"))
      nGids = std::max(nGids, size_t(atoi(gi.c_str())) + 1);
    p.gids.resize(nGids);
    for (size_t i = 0; i < nGids; ++i) {
      GidEnt& ge = p.gids[i];
      if (!readFile(pd + "/gids/" + std::to_string(i), &s) || !parseGid(s, &ge.gid)) continue;
      bool zero = true;
      for (uint8_t b : ge.gid.raw) zero = zero && b == 0;
      ge.valid = !zero;
      if (readFile(pd + "/gid_attrs/types/" + std::to_string(i), &s) && s == "RoCE v2") ge.type = 1;
      if (readFile(pd + "/gid_attrs/ndevs/" + std::to_string(i), &s)) {
        ge.ndev = s;
        if (readFile(root + "/class/net/" + s + "/ifindex", &s)) ge.ifindex = atoi(s.c_str());
        if (p.linkLayer == IBV_LINK_LAYER_ETHERNET &&
            readFile(root + "/class/net/" + ge.ndev + "/mtu", &s))
          p.activeMtu = mtuFromNetdev(atoi(s.c_str()));
      }
    }
    for (const std::string& pk : listDir(pd + "/pkeys")) {
      size_t i = size_t(atoi(pk.c_str()));
      if (p.pkeys.size() <= i) p.pkeys.resize(i + 1);
      if (readFile(pd + "/pkeys/" + pk, &s)) p.pkeys[i] = uint16_t(strtoul(s.c_str(), nullptr, 0));
    }
    if (p.pkeys.empty()) p.pkeys.push_back(0xffff);
    d->ports.push_back(p);
  }
  fillIbdev(d, dir);
  return d;
}

const PortInfo* devicePort(const Device* d, int port) {
  if (port < 1 || size_t(port) > d->ports.size()) return nullptr;
  return &d->ports[size_t(port - 1)];
}

// All devices ever listed stay allocated: contexts point at them.
static std::vector<Device*>& deviceCache() {
  static auto* v = new std::vector<Device*>();
  return *v;
}
static std::string& cachedRoot() {
  static auto* s = new std::string("\x01");
  return *s;
}

Context* ctxOf(ibv_context* c) {
  return reinterpret_cast<Context*>(reinterpret_cast<char*>(c) - offsetof(verbs_context, context));
}

void pushAsync(Context* ctx, const ibv_async_event& ev) {
  if (!ctx->alive) return;
  ctx->asyncQueue.push_back(ev);
  uint64_t one = 1;
  ssize_t r = write(ctx->asyncFd, &one, sizeof one);
  (void)r;
}

}  // namespace sv

using namespace sv;

// ---------------------------------------------------------------------------------------------
// Device list
SV_EXPORT ibv_device** ibv_get_device_list(int* num) {
  Global& g = G();
  std::lock_guard<std::mutex> lk(g.mu);
  loadConfigLocked();
  // The root is re-read on every call so a test process may switch fixtures.
  const char* env = getenv("SOFTVERBS_SYSFS_ROOT");
  std::string root = (env && *env) ? env : "";
  std::vector<Device*>& cache = deviceCache();
  static std::vector<Device*>* current = new std::vector<Device*>();
  if (root != cachedRoot()) {
    cachedRoot() = root;
    current->clear();
    if (root.empty()) {
      Device* d = makeDefaultDevice(0);
      cache.push_back(d);
      current->push_back(d);
    } else {
      int idx = 0;
      for (const std::string& name : listDir(root + "/class/infiniband")) {
        Device* d = readDevice(root, name, idx++);
        cache.push_back(d);
        current->push_back(d);
      }
    }
  }
  auto** list = static_cast<ibv_device**>(calloc(current->size() + 1, sizeof(ibv_device*)));
  if (!list) {
    errno = ENOMEM;
    return nullptr;
  }
  for (size_t i = 0; i < current->size(); ++i) list[i] = &(*current)[i]->ibdev;
  if (num) *num = int(current->size());
  return list;
}

SV_EXPORT void ibv_free_device_list(ibv_device** list) { free(list); }

SV_EXPORT const char* ibv_get_device_name(ibv_device* device) { return device->name; }

SV_EXPORT __be64 ibv_get_device_guid(ibv_device* device) {
  return htobe64(reinterpret_cast<Device*>(device)->nodeGuid);
}

SV_EXPORT int ibv_get_device_index(ibv_device* device) {
  return reinterpret_cast<Device*>(device)->index;
}

// ---------------------------------------------------------------------------------------------
// Queries
static int queryPortImpl(ibv_context* context, uint8_t portNum, ibv_port_attr* out, size_t size) {
  Context* ctx = ctxOf(context);
  const PortInfo* p = devicePort(ctx->dev, portNum);
  if (!p) {
    errno = EINVAL;
    return EINVAL;
  }
  ibv_port_attr a;
  memset(&a, 0, sizeof a);
  a.state = ibv_port_state(p->state);
  a.max_mtu = p->linkLayer == IBV_LINK_LAYER_ETHERNET ? IBV_MTU_4096 : p->maxMtu;
  a.active_mtu = p->activeMtu;
  a.gid_tbl_len = int(p->gids.size());
  a.port_cap_flags = p->capMask;
  a.max_msg_sz = 0x40000000;
  a.bad_pkey_cntr = 0;
  a.qkey_viol_cntr = 0;
  a.pkey_tbl_len = uint16_t(p->pkeys.size());
  a.lid = p->lid;
  a.sm_lid = p->smLid;
  a.lmc = p->lmc;
  a.max_vl_num = 4;
  a.sm_sl = 0;
  a.subnet_timeout = 18;
  a.init_type_reply = 0;
  a.active_width = p->width;
  a.active_speed = p->speed;
  a.phys_state = uint8_t(p->physState);
  a.link_layer = uint8_t(p->linkLayer);
  a.flags = 0;
  a.port_cap_flags2 = 0;
  memcpy(out, &a, std::min(size, sizeof a));
  return 0;
}

static int vctxQueryPort(ibv_context* context, uint8_t portNum, ibv_port_attr* attr,
                         size_t size) {
  return queryPortImpl(context, portNum, attr, size);
}

// The exported symbol keeps the compat semantics: it writes only up to `flags`.
SV_EXPORT int ibv_query_port(ibv_context* context, uint8_t portNum,
                             struct _compat_ibv_port_attr* attr) {
  return queryPortImpl(context, portNum, reinterpret_cast<ibv_port_attr*>(attr),
                       offsetof(ibv_port_attr, port_cap_flags2));
}

SV_EXPORT int ibv_query_device(ibv_context* context, ibv_device_attr* a) {
  Context* ctx = ctxOf(context);
  Device* d = ctx->dev;
  memset(a, 0, sizeof *a);
  snprintf(a->fw_ver, sizeof a->fw_ver, "%s", d->fwVer.c_str());
  a->node_guid = htobe64(d->nodeGuid);
  a->sys_image_guid = htobe64(d->sysGuid);
  a->max_mr_size = ~0ull;
  a->page_size_cap = 0xfffff000;
  a->vendor_id = d->vendorId;
  a->vendor_part_id = d->partId;
  a->hw_ver = d->hwVer;
  a->max_qp = 65472;
  a->max_qp_wr = 32768;
  a->device_cap_flags = IBV_DEVICE_RC_RNR_NAK_GEN | IBV_DEVICE_SYS_IMAGE_GUID |
                        IBV_DEVICE_PORT_ACTIVE_EVENT | IBV_DEVICE_CURR_QP_STATE_MOD;
  a->max_sge = 16;
  a->max_sge_rd = 16;
  a->max_cq = 65536;
  a->max_cqe = 4194303;
  a->max_mr = 1 << 24;
  a->max_pd = 1 << 24;
  a->max_qp_rd_atom = 16;
  a->max_ee_rd_atom = 0;
  a->max_res_rd_atom = 16 * 65472;
  a->max_qp_init_rd_atom = 16;
  a->atomic_cap = IBV_ATOMIC_NONE;
  a->max_pkeys = d->ports.empty() ? 1 : uint16_t(d->ports[0].pkeys.size());
  a->local_ca_ack_delay = 16;
  a->phys_port_cnt = uint8_t(d->ports.size());
  return 0;
}

SV_EXPORT int ibv_query_gid(ibv_context* context, uint8_t portNum, int index, ibv_gid* gid) {
  const PortInfo* p = devicePort(ctxOf(context)->dev, portNum);
  if (!p || index < 0 || size_t(index) >= p->gids.size()) {
    errno = EINVAL;
    return -1;
  }
  *gid = p->gids[size_t(index)].gid;  // empty entries read as zero
  return 0;
}

static void fillGidEntry(const PortInfo* p, uint32_t port, uint32_t idx, ibv_gid_entry* e) {
  const GidEnt& ge = p->gids[idx];
  memset(e, 0, sizeof *e);
  e->gid = ge.gid;
  e->gid_index = idx;
  e->port_num = port;
  if (p->linkLayer == IBV_LINK_LAYER_INFINIBAND) e->gid_type = IBV_GID_TYPE_IB;
  else e->gid_type = ge.type ? IBV_GID_TYPE_ROCE_V2 : IBV_GID_TYPE_ROCE_V1;
  e->ndev_ifindex = uint32_t(ge.ifindex);
}

SV_EXPORT int _ibv_query_gid_ex(ibv_context* context, uint32_t portNum, uint32_t gidIndex,
                                ibv_gid_entry* entry, uint32_t flags, size_t entrySize) {
  if (flags || entrySize < sizeof(ibv_gid_entry)) return EINVAL;
  const PortInfo* p = devicePort(ctxOf(context)->dev, int(portNum));
  if (!p || gidIndex >= p->gids.size()) return EINVAL;
  if (!p->gids[gidIndex].valid) return ENODATA;
  fillGidEntry(p, portNum, gidIndex, entry);
  return 0;
}

SV_EXPORT ssize_t _ibv_query_gid_table(ibv_context* context, ibv_gid_entry* entries,
                                       size_t maxEntries, uint32_t flags, size_t entrySize) {
  if (flags || entrySize < sizeof(ibv_gid_entry)) return -EINVAL;
  Device* d = ctxOf(context)->dev;
  size_t n = 0;
  for (size_t pi = 0; pi < d->ports.size(); ++pi)
    for (size_t i = 0; i < d->ports[pi].gids.size(); ++i) {
      if (!d->ports[pi].gids[i].valid) continue;
      if (n >= maxEntries) return -EINVAL;
      fillGidEntry(&d->ports[pi], uint32_t(pi + 1), uint32_t(i),
                   reinterpret_cast<ibv_gid_entry*>(reinterpret_cast<char*>(entries) +
                                                    n * entrySize));
      ++n;
    }
  return ssize_t(n);
}

// IBVERBS_PRIVATE_34 (ibv_devinfo imports it): 0 = "IB/RoCE v1", 1 = "RoCE v2".
SV_EXPORT int ibv_query_gid_type(ibv_context* context, uint8_t portNum, unsigned int index,
                                 int* type) {
  const PortInfo* p = devicePort(ctxOf(context)->dev, portNum);
  if (!p || index >= p->gids.size()) {
    errno = EINVAL;
    return -1;
  }
  *type = p->gids[index].type;
  return 0;
}

SV_EXPORT int ibv_query_pkey(ibv_context* context, uint8_t portNum, int index, __be16* pkey) {
  const PortInfo* p = devicePort(ctxOf(context)->dev, portNum);
  if (!p || index < 0 || size_t(index) >= p->pkeys.size()) {
    errno = EINVAL;
    return -1;
  }
  *pkey = htobe16(p->pkeys[size_t(index)]);
  return 0;
}

SV_EXPORT int ibv_get_pkey_index(ibv_context* context, uint8_t portNum, __be16 pkey) {
  const PortInfo* p = devicePort(ctxOf(context)->dev, portNum);
  if (!p) return -1;
  for (size_t i = 0; i < p->pkeys.size(); ++i)
    if (htobe16(p->pkeys[i]) == pkey) return int(i);
  return -1;
}

// ---------------------------------------------------------------------------------------------
// Contexts
extern "C" int sv_poll_cq(ibv_cq*, int, ibv_wc*);
extern "C" int sv_req_notify_cq(ibv_cq*, int);
extern "C" int sv_post_send(ibv_qp*, ibv_send_wr*, ibv_send_wr**);
extern "C" int sv_post_recv(ibv_qp*, ibv_recv_wr*, ibv_recv_wr**);

SV_EXPORT ibv_context* ibv_open_device(ibv_device* device) {
  Global& g = G();
  Context* ctx = new Context();
  memset(&ctx->vctx, 0, sizeof ctx->vctx);
  ctx->dev = reinterpret_cast<Device*>(device);
  ctx->asyncFd = eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
  if (ctx->asyncFd < 0) {
    delete ctx;
    return nullptr;
  }
  verbs_context& v = ctx->vctx;
  v.sz = sizeof(verbs_context);
  v.query_port = vctxQueryPort;
  ibv_context& c = v.context;
  c.device = device;
  c.cmd_fd = -1;
  c.async_fd = ctx->asyncFd;
  c.num_comp_vectors = 1;
  pthread_mutex_init(&c.mutex, nullptr);
  c.abi_compat = __VERBS_ABI_IS_EXTENDED;
  c.ops.poll_cq = sv_poll_cq;
  c.ops.req_notify_cq = sv_req_notify_cq;
  c.ops.post_send = sv_post_send;
  c.ops.post_recv = sv_post_recv;
  {
    std::lock_guard<std::mutex> lk(g.mu);
    loadConfigLocked();
    g.ctxs.push_back(ctx);
  }
  engineAcquire();
  return &c;
}

SV_EXPORT int ibv_close_device(ibv_context* context) {
  Global& g = G();
  Context* ctx = ctxOf(context);
  {
    std::lock_guard<std::mutex> lk(g.mu);
    auto it = std::find(g.ctxs.begin(), g.ctxs.end(), ctx);
    if (it == g.ctxs.end()) {
      errno = EINVAL;
      return -1;
    }
    g.ctxs.erase(it);
    ctx->alive = false;
    // Objects the application did not destroy stop being reachable from the wire (their memory
    // is left alone: the application still holds the pointers).
    for (auto q = g.qps.begin(); q != g.qps.end();) {
      if (q->second->ctx == ctx) {
        registryFree(q->first);
        q = g.qps.erase(q);
      } else {
        ++q;
      }
    }
    for (auto m = g.mrs.begin(); m != g.mrs.end();) {
      if (m->second->pd->ctx == ctx) m = g.mrs.erase(m);
      else ++m;
    }
  }
  engineRelease();
  close(ctx->asyncFd);
  pthread_mutex_destroy(&context->mutex);
  delete ctx;
  return 0;
}

SV_EXPORT int ibv_get_async_event(ibv_context* context, ibv_async_event* event) {
  Context* ctx = ctxOf(context);
  uint64_t v;
  ssize_t n = read(ctx->asyncFd, &v, sizeof v);  // blocks unless the caller set O_NONBLOCK
  if (n != sizeof v) return -1;
  std::lock_guard<std::mutex> lk(G().mu);
  if (ctx->asyncQueue.empty()) {
    errno = EAGAIN;
    return -1;
  }
  *event = ctx->asyncQueue.front();
  ctx->asyncQueue.pop_front();
  return 0;
}

SV_EXPORT void ibv_ack_async_event(ibv_async_event* event) {
  switch (event->event_type) {
    case IBV_EVENT_CQ_ERR:
      if (event->element.cq) {
        pthread_mutex_lock(&event->element.cq->mutex);
        ++event->element.cq->async_events_completed;
        pthread_mutex_unlock(&event->element.cq->mutex);
      }
      break;
    case IBV_EVENT_QP_FATAL:
    case IBV_EVENT_QP_REQ_ERR:
    case IBV_EVENT_QP_ACCESS_ERR:
    case IBV_EVENT_COMM_EST:
    case IBV_EVENT_SQ_DRAINED:
    case IBV_EVENT_PATH_MIG:
    case IBV_EVENT_PATH_MIG_ERR:
    case IBV_EVENT_QP_LAST_WQE_REACHED:
      if (event->element.qp) {
        pthread_mutex_lock(&event->element.qp->mutex);
        ++event->element.qp->events_completed;
        pthread_mutex_unlock(&event->element.qp->mutex);
      }
      break;
    default: break;
  }
}

// ---------------------------------------------------------------------------------------------
// sysfs helpers some utilities import
SV_EXPORT const char* ibv_get_sysfs_path(void) {
  const char* env = getenv("SOFTVERBS_SYSFS_ROOT");
  return (env && *env) ? env : "/sys";
}

SV_EXPORT int ibv_read_sysfs_file(const char* dir, const char* file, char* buf, size_t size) {
  std::string path = std::string(dir) + "/" + file;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, size);
  close(fd);
  if (n <= 0) return -1;
  if (size_t(n) < size) buf[n] = '\0';
  if (n > 0 && buf[n - 1] == '\n') buf[--n] = '\0';
  return int(n);
}

// ---------------------------------------------------------------------------------------------
// Strings and rate conversions
SV_EXPORT const char* ibv_node_type_str(enum ibv_node_type t) {
  switch (t) {
    case IBV_NODE_CA: return "InfiniBand channel adapter";
    case IBV_NODE_SWITCH: return "InfiniBand switch";
    case IBV_NODE_ROUTER: return "InfiniBand router";
    case IBV_NODE_RNIC: return "iWARP NIC";
    case IBV_NODE_USNIC: return "usNIC";
    case IBV_NODE_USNIC_UDP: return "usNIC UDP";
    case IBV_NODE_UNSPECIFIED: return "unspecified";
    default: return "unknown";
  }
}

SV_EXPORT const char* ibv_port_state_str(enum ibv_port_state s) {
  switch (s) {
    case IBV_PORT_NOP: return "no state change (NOP)";
    case IBV_PORT_DOWN: return "down";
    case IBV_PORT_INIT: return "init";
    case IBV_PORT_ARMED: return "armed";
    case IBV_PORT_ACTIVE: return "active";
    case IBV_PORT_ACTIVE_DEFER: return "active defer";
    default: return "unknown";
  }
}

SV_EXPORT const char* ibv_event_type_str(enum ibv_event_type e) {
  static const char* const names[] = {
      "CQ error", "local work queue catastrophic error", "invalid request local work queue error",
      "local access violation work queue error", "communication established", "send queue drained",
      "path migrated", "path migration request error", "local catastrophic error", "port active",
      "port error", "LID change", "P_Key change", "SM change", "SRQ catastrophic error",
      "SRQ limit reached", "last WQE reached", "client reregistration", "GID table change",
      "WQ fatal"};
  if (unsigned(e) < sizeof names / sizeof names[0]) return names[e];
  return "unknown";
}

SV_EXPORT const char* ibv_wc_status_str(enum ibv_wc_status s) {
  static const char* const names[] = {"success",
                                      "local length error",
                                      "local QP operation error",
                                      "local EE context operation error",
                                      "local protection error",
                                      "Work Request Flushed Error",
                                      "memory management operation error",
                                      "bad response error",
                                      "local access error",
                                      "remote invalid request error",
                                      "remote access error",
                                      "remote operation error",
                                      "transport retry counter exceeded",
                                      "RNR retry counter exceeded",
                                      "local RDD violation error",
                                      "remote invalid RD request",
                                      "aborted error",
                                      "invalid EE context number",
                                      "invalid EE context state",
                                      "fatal error",
                                      "response timeout error",
                                      "general error",
                                      "TM error",
                                      "TM rendezvous request error"};
  if (unsigned(s) < sizeof names / sizeof names[0]) return names[s];
  return "unknown";
}

SV_EXPORT int ibv_rate_to_mult(enum ibv_rate rate) {
  switch (rate) {
    case IBV_RATE_2_5_GBPS: return 1;
    case IBV_RATE_5_GBPS: return 2;
    case IBV_RATE_10_GBPS: return 4;
    case IBV_RATE_20_GBPS: return 8;
    case IBV_RATE_30_GBPS: return 12;
    case IBV_RATE_40_GBPS: return 16;
    case IBV_RATE_60_GBPS: return 24;
    case IBV_RATE_80_GBPS: return 32;
    case IBV_RATE_120_GBPS: return 48;
    default: return -1;
  }
}

SV_EXPORT enum ibv_rate mult_to_ibv_rate(int mult) {
  switch (mult) {
    case 1: return IBV_RATE_2_5_GBPS;
    case 2: return IBV_RATE_5_GBPS;
    case 4: return IBV_RATE_10_GBPS;
    case 8: return IBV_RATE_20_GBPS;
    case 12: return IBV_RATE_30_GBPS;
    case 16: return IBV_RATE_40_GBPS;
    case 24: return IBV_RATE_60_GBPS;
    case 32: return IBV_RATE_80_GBPS;
    case 48: return IBV_RATE_120_GBPS;
    default: return IBV_RATE_MAX;
  }
}

static const struct { ibv_rate r; int mbps; } kRates[] = {
    {IBV_RATE_2_5_GBPS, 2500},   {IBV_RATE_5_GBPS, 5000},     {IBV_RATE_10_GBPS, 10000},
    {IBV_RATE_20_GBPS, 20000},   {IBV_RATE_30_GBPS, 30000},   {IBV_RATE_40_GBPS, 40000},
    {IBV_RATE_60_GBPS, 60000},   {IBV_RATE_80_GBPS, 80000},   {IBV_RATE_120_GBPS, 120000},
    {IBV_RATE_14_GBPS, 14062},   {IBV_RATE_56_GBPS, 56250},   {IBV_RATE_112_GBPS, 112500},
    {IBV_RATE_168_GBPS, 168750}, {IBV_RATE_25_GBPS, 25781},   {IBV_RATE_100_GBPS, 103125},
    {IBV_RATE_200_GBPS, 206250}, {IBV_RATE_300_GBPS, 309375}, {IBV_RATE_28_GBPS, 28125},
    {IBV_RATE_50_GBPS, 53125},   {IBV_RATE_400_GBPS, 425000}, {IBV_RATE_600_GBPS, 637500}};

SV_EXPORT int ibv_rate_to_mbps(enum ibv_rate rate) {
  for (auto& e : kRates)
    if (e.r == rate) return e.mbps;
  return -1;
}

SV_EXPORT enum ibv_rate mbps_to_ibv_rate(int mbps) {
  for (auto& e : kRates)
    if (e.mbps == mbps) return e.r;
  return IBV_RATE_MAX;
}

// ---------------------------------------------------------------------------------------------
// Fork support, drivers, imports: accepted or refused the way a provider without them would.
SV_EXPORT int ibv_fork_init(void) {
  std::lock_guard<std::mutex> lk(G().mu);
  G().forkInit = true;
  return 0;
}

SV_EXPORT enum ibv_fork_status ibv_is_fork_initialized(void) {
  std::lock_guard<std::mutex> lk(G().mu);
  return G().forkInit ? IBV_FORK_ENABLED : IBV_FORK_DISABLED;
}

SV_EXPORT int ibv_dontfork_range(void*, size_t) { return 0; }
SV_EXPORT int ibv_dofork_range(void*, size_t) { return 0; }
SV_EXPORT void ibv_register_driver(const char*, void*) {}

SV_EXPORT ibv_context* ibv_import_device(int) {
  errno = EOPNOTSUPP;
  return nullptr;
}
SV_EXPORT ibv_pd* ibv_import_pd(ibv_context*, uint32_t) {
  errno = EOPNOTSUPP;
  return nullptr;
}
SV_EXPORT void ibv_unimport_pd(ibv_pd*) {}
SV_EXPORT ibv_mr* ibv_import_mr(ibv_pd*, uint32_t) {
  errno = EOPNOTSUPP;
  return nullptr;
}
SV_EXPORT void ibv_unimport_mr(ibv_mr*) {}
SV_EXPORT ibv_dm* ibv_import_dm(ibv_context*, uint32_t) {
  errno = EOPNOTSUPP;
  return nullptr;
}
SV_EXPORT void ibv_unimport_dm(ibv_dm*) {}

SV_EXPORT int ibv_resolve_eth_l2_from_gid(ibv_context*, ibv_ah_attr*, uint8_t*, uint16_t*) {
  errno = EOPNOTSUPP;
  return -1;
}
