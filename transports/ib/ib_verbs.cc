#include "transports/ib/ib_verbs.h"

#include <dlfcn.h>

#include <cstring>
#include <map>
#include <memory>
#include <mutex>

namespace weft::transport::ib {

int VerbsApi::queryPort(ibv_context* ctx, uint8_t port, ibv_port_attr* attr) const {
  std::memset(attr, 0, sizeof *attr);
  verbs_context* vctx = verbs_get_ctx_op(ctx, query_port);
  if (vctx) return vctx->query_port(ctx, port, attr, sizeof *attr);
  return queryPortCompat(ctx, port, attr);
}

namespace {

template <typename F>
bool lookup(void* lib, const char* name, const char* version, F* out, std::string* missing) {
  void* p = dlvsym(lib, name, version);
  if (!p) {
    if (!missing->empty()) *missing += ", ";
    *missing += std::string(name) + "@" + version;
    return false;
  }
  *out = reinterpret_cast<F>(p);
  return true;
}

}  // namespace

// Namespace scope (no function-local static guard a forked child could find taken); the lock is
// held across fork() (forkLock).
std::mutex gLoadMu;
std::map<std::string, std::unique_ptr<VerbsApi>> gLoaded;

void forkLock() { gLoadMu.lock(); }
void forkUnlock() { gLoadMu.unlock(); }

Status loadVerbs(const std::string& path, const VerbsApi** out) {
  auto& loaded = gLoaded;
  std::lock_guard<std::mutex> lock(gLoadMu);
  auto it = loaded.find(path);
  if (it != loaded.end()) {
    *out = it->second.get();
    return Status::ok();
  }
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* e = dlerror();
    return systemError("cannot load the verbs library " + path + " (" + (e ? e : "unknown error") +
                       "): install libibverbs1 (rdma-core) or set WEFT_IBVERBS_LIB");
  }
  auto api = std::make_unique<VerbsApi>();
  api->lib = lib;
  api->path = path;
  std::string missing;
  const char* v10 = "IBVERBS_1.0";
  const char* v11 = "IBVERBS_1.1";
  lookup(lib, "ibv_get_device_list", v11, &api->getDeviceList, &missing);
  lookup(lib, "ibv_free_device_list", v11, &api->freeDeviceList, &missing);
  lookup(lib, "ibv_get_device_name", v11, &api->getDeviceName, &missing);
  lookup(lib, "ibv_open_device", v11, &api->openDevice, &missing);
  lookup(lib, "ibv_close_device", v11, &api->closeDevice, &missing);
  lookup(lib, "ibv_query_device", v11, &api->queryDevice, &missing);
  lookup(lib, "ibv_query_port", v11, &api->queryPortCompat, &missing);
  lookup(lib, "ibv_query_gid", v11, &api->queryGid, &missing);
  lookup(lib, "ibv_alloc_pd", v11, &api->allocPd, &missing);
  lookup(lib, "ibv_dealloc_pd", v11, &api->deallocPd, &missing);
  lookup(lib, "ibv_reg_mr", v11, &api->regMr, &missing);
  lookup(lib, "ibv_dereg_mr", v11, &api->deregMr, &missing);
  lookup(lib, "ibv_create_comp_channel", v10, &api->createCompChannel, &missing);
  lookup(lib, "ibv_destroy_comp_channel", v10, &api->destroyCompChannel, &missing);
  lookup(lib, "ibv_create_cq", v11, &api->createCq, &missing);
  lookup(lib, "ibv_destroy_cq", v11, &api->destroyCq, &missing);
  lookup(lib, "ibv_get_cq_event", v11, &api->getCqEvent, &missing);
  lookup(lib, "ibv_ack_cq_events", v11, &api->ackCqEvents, &missing);
  lookup(lib, "ibv_create_qp", v11, &api->createQp, &missing);
  lookup(lib, "ibv_modify_qp", v11, &api->modifyQp, &missing);
  lookup(lib, "ibv_destroy_qp", v11, &api->destroyQp, &missing);
  lookup(lib, "ibv_wc_status_str", v11, &api->wcStatusStr, &missing);
  std::string optional;
  lookup(lib, "ibv_reg_dmabuf_mr", "IBVERBS_1.12", &api->regDmabufMr, &optional);
  if (!missing.empty()) {
    dlclose(lib);
    return systemError("the verbs library " + path + " lacks " + missing +
                       ": it is not an rdma-core libibverbs.so.1 (set WEFT_IBVERBS_LIB to one)");
  }
  *out = api.get();
  loaded[path] = std::move(api);
  return Status::ok();
}

}  // namespace weft::transport::ib
