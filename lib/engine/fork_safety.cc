// pthread_atfork handlers for the process-wide locks (see fork_safety.h).
#include "lib/engine/fork_safety.h"

#include <pthread.h>

#include <atomic>

#include "collectives/reduce/reduce.h"
#include "lib/core/log.h"
#include "lib/device/device.h"
#ifdef WEFT_HAVE_IB_TRANSPORT
#include "transports/ib/ib_transport.h"
#endif

namespace weft::engine {
namespace {

void prepare() {
  // One-time initialisations first (they may log, so before the log lock): a thread inside one
  // now makes fork() wait for it instead of leaving the child a guard that never opens.
  (void)reduce::activeIsa();
  log::forkPrepareSettings();
  // Process-wide locks, outer to inner (discovery logs and may load verbs; the log lock is a leaf).
  discoveryForkLock();
#ifdef WEFT_HAVE_IB_TRANSPORT
  transport::ibForkLock();
#endif
  device::forkLock();
  log::forkLock();
}

void release(bool inChild) {
  log::forkUnlock();
  device::forkUnlock(inChild);
#ifdef WEFT_HAVE_IB_TRANSPORT
  transport::ibForkUnlock();
#endif
  discoveryForkUnlock();
}
void releaseInParent() { release(false); }
void releaseInChild() { release(true); }

std::atomic<bool> gInstalled{false};

// When the library is loaded (before any of its threads exist).
[[maybe_unused]] const bool kInstalledAtLoad = (installForkHandlers(), true);

}  // namespace

void installForkHandlers() {
  if (gInstalled.exchange(true)) return;
  (void)pthread_atfork(prepare, releaseInParent, releaseInChild);
}

}  // namespace weft::engine
