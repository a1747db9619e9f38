// The process-wide libvirt initialisation and event loop thread (see runtime.h).
#include "runtime.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <pthread.h>
#include <signal.h>

#include <chrono>

#include "errors.h"

namespace ephemera_libvirt {

void BlockAllSignals() {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
}

// ---------------------------------------------------------------------------------------------
// Process-wide libvirt initialisation and the event loop thread.

static std::once_flag g_init_once;
bool g_init_ok = false;
std::string g_init_error;

void GlobalInit() {
  std::call_once(g_init_once, [] {
    if (virInitialize() < 0) {
      g_init_error = "virInitialize failed";
      return;
    }
    virSetErrorFunc(nullptr, NoopErrorFunc);
    if (virEventRegisterDefaultImpl() < 0) {
      virErrorPtr e = virGetLastError();
      g_init_error = std::string("virEventRegisterDefaultImpl failed: ") +
                     (e != nullptr && e->message != nullptr ? e->message : "unknown error");
      virResetLastError();
      return;
    }
    std::thread([] {
      BlockAllSignals();
      for (;;) {
        if (virEventRunDefaultImpl() < 0) {
          virResetLastError();
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
      }
    }).detach();
    g_init_ok = true;
  });
}

}  // namespace ephemera_libvirt
