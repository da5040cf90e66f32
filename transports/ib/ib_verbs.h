// The verbs entry points weft uses, looked up at run time (dlopen + dlvsym with rdma-core's symbol
// versions) from WEFT_IBVERBS_LIB, so the library has no link-time dependency on libibverbs. The data
// path (post_send, post_recv, poll_cq, req_notify_cq) goes through the context's ops as verbs.h's
// inline functions do, and needs no symbol.
#pragma once

#include <infiniband/verbs.h>

#include <string>

#include "lib/core/status.h"

namespace weft::transport::ib {

struct VerbsApi {
  void* lib = nullptr;
  std::string path;
  ibv_device** (*getDeviceList)(int*) = nullptr;
  void (*freeDeviceList)(ibv_device**) = nullptr;
  const char* (*getDeviceName)(ibv_device*) = nullptr;
  ibv_context* (*openDevice)(ibv_device*) = nullptr;
  int (*closeDevice)(ibv_context*) = nullptr;
  int (*queryDevice)(ibv_context*, ibv_device_attr*) = nullptr;
  int (*queryPortCompat)(ibv_context*, uint8_t, ibv_port_attr*) = nullptr;  // the 1.1 symbol
  int (*queryGid)(ibv_context*, uint8_t, int, ibv_gid*) = nullptr;
  ibv_pd* (*allocPd)(ibv_context*) = nullptr;
  int (*deallocPd)(ibv_pd*) = nullptr;
  ibv_mr* (*regMr)(ibv_pd*, void*, size_t, int) = nullptr;
  int (*deregMr)(ibv_mr*) = nullptr;
  ibv_comp_channel* (*createCompChannel)(ibv_context*) = nullptr;
  int (*destroyCompChannel)(ibv_comp_channel*) = nullptr;
  ibv_cq* (*createCq)(ibv_context*, int, void*, ibv_comp_channel*, int) = nullptr;
  int (*destroyCq)(ibv_cq*) = nullptr;
  int (*getCqEvent)(ibv_comp_channel*, ibv_cq**, void**) = nullptr;
  void (*ackCqEvents)(ibv_cq*, unsigned) = nullptr;
  ibv_qp* (*createQp)(ibv_pd*, ibv_qp_init_attr*) = nullptr;
  int (*modifyQp)(ibv_qp*, ibv_qp_attr*, int) = nullptr;
  int (*destroyQp)(ibv_qp*) = nullptr;
  const char* (*wcStatusStr)(ibv_wc_status) = nullptr;
  // Optional (rdma-core 34 and later): null when the library lacks it.
  ibv_mr* (*regDmabufMr)(ibv_pd*, uint64_t, size_t, uint64_t, int, int) = nullptr;

  // Port query the way verbs.h does it: the context's extended op, else the compat symbol.
  int queryPort(ibv_context* ctx, uint8_t port, ibv_port_attr* attr) const;
};

// Load the library (path: WEFT_IBVERBS_LIB) and every symbol; an error names what is missing.
// The returned table lives for the rest of the process (the library is never unloaded).
Status loadVerbs(const std::string& path, const VerbsApi** out);
// Fork safety: hold / release loadVerbs's lock across fork().
void forkLock();
void forkUnlock();

}  // namespace weft::transport::ib
