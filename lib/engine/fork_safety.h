// Fork safety: an application may fork() without exec while weft's background threads run (the
// rendezvous root of weftGetUniqueId, bootstrap services, init threads, softverbs); Python's
// multiprocessing does. A child has only the forking thread, so any process-wide lock another
// thread held at fork() -- or a one-time initialisation it was in the middle of -- would stay taken
// in the child forever, and the child's first log line or communicator would hang.
//
// pthread_atfork handlers (installed when the library is loaded, and again idempotently by
// Communicator::create) make fork() wait until no other thread is inside those sections:
// prepare finishes the one-time initialisations (reduction ISA choice, logging settings) and takes
// the process-wide locks outer to inner (node discovery cache, verbs loader, ib registration
// history, device pointer cache/slots, then the log lock, a leaf); parent and child release them.
// Per-communicator locks are not covered: a child cannot use its parent's communicators (their
// threads and connections are the parent's); it makes its own.
#pragma once

namespace weft::engine {

// Registers the handlers once per process (thread-safe; later calls do nothing).
void installForkHandlers();

// The node discovery cache's lock (communicator.cc), for the handlers.
void discoveryForkLock();
void discoveryForkUnlock();

}  // namespace weft::engine
