// Event sink: one per connection, carries lifecycle and close events from libvirt's event loop
// thread to JS through a thread-safe function that is unref'd by default.
#pragma once

#include <napi.h>
#include <libvirt/libvirt.h>

#include <memory>
#include <mutex>
#include <string>

namespace ephemera_libvirt {

struct EventData {
  enum Kind { kLifecycle, kClose } kind;
  std::string name;
  std::string uuid;
  int event = 0;
  int detail = 0;
  int reason = 0;
};

struct EventSink {
  std::mutex mu;
  bool alive = true;
  napi_threadsafe_function tsfn = nullptr;

  void Emit(EventData* ev) {
    std::lock_guard<std::mutex> lock(mu);
    if (!alive || napi_call_threadsafe_function(tsfn, ev, napi_tsfn_nonblocking) != napi_ok) {
      delete ev;
    }
  }
  // JS thread: stop delivering and drop the JS callback.
  void Shutdown() {
    std::lock_guard<std::mutex> lock(mu);
    if (alive) {
      alive = false;
      napi_release_threadsafe_function(tsfn, napi_tsfn_release);
    }
  }
  void SetRef(napi_env env, bool ref) {
    std::lock_guard<std::mutex> lock(mu);
    if (!alive) return;
    if (ref) {
      napi_ref_threadsafe_function(env, tsfn);
    } else {
      napi_unref_threadsafe_function(env, tsfn);
    }
  }
};

using SinkPtr = std::shared_ptr<EventSink>;

// The TSFN's call_js: builds the event payload and calls the connection's emit().
void DeliverEvent(napi_env raw_env, napi_value js_cb, void*, void* data);
// The TSFN's finalizer: no more deliveries.
void FinalizeSink(napi_env, void* finalize_data, void*);
// Frees the SinkPtr given to libvirt as a callback's opaque.
void FreeSinkOpaque(void* opaque);
// libvirt callbacks (event loop thread).
int LifecycleCallback(virConnectPtr, virDomainPtr dom, int event, int detail, void* opaque);
void CloseCallback(virConnectPtr, int reason, void* opaque);

}  // namespace ephemera_libvirt
