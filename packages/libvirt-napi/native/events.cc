// Lifecycle and close events, from libvirt's event loop thread to JS (see events.h).
#include "events.h"

namespace ephemera_libvirt {

void DeliverEvent(napi_env raw_env, napi_value js_cb, void*, void* data) {
  std::unique_ptr<EventData> ev(static_cast<EventData*>(data));
  if (raw_env == nullptr || js_cb == nullptr) return;
  Napi::Env env(raw_env);
  Napi::HandleScope scope(env);
  Napi::Object payload = Napi::Object::New(env);
  const char* kind;
  if (ev->kind == EventData::kLifecycle) {
    kind = "lifecycle";
    payload.Set("name", ev->name);
    payload.Set("uuid", ev->uuid);
    payload.Set("event", ev->event);
    payload.Set("detail", ev->detail);
  } else {
    kind = "close";
    payload.Set("reason", ev->reason);
  }
  try {
    Napi::Function(env, js_cb).Call({Napi::String::New(env, kind), payload});
  } catch (Napi::Error& e) {
    // A listener threw: surface it as an uncaught exception, like any event listener.
    e.ThrowAsJavaScriptException();
  }
}

void FinalizeSink(napi_env, void* finalize_data, void*) {
  auto* holder = static_cast<SinkPtr*>(finalize_data);
  {
    std::lock_guard<std::mutex> lock((*holder)->mu);
    (*holder)->alive = false;
  }
  delete holder;
}

void FreeSinkOpaque(void* opaque) { delete static_cast<SinkPtr*>(opaque); }

int LifecycleCallback(virConnectPtr, virDomainPtr dom, int event, int detail, void* opaque) {
  auto* ev = new EventData();
  ev->kind = EventData::kLifecycle;
  const char* name = virDomainGetName(dom);
  if (name != nullptr) ev->name = name;
  char uuid[VIR_UUID_STRING_BUFLEN];
  if (virDomainGetUUIDString(dom, uuid) == 0) ev->uuid = uuid;
  ev->event = event;
  ev->detail = detail;
  (*static_cast<SinkPtr*>(opaque))->Emit(ev);
  return 0;
}

void CloseCallback(virConnectPtr, int reason, void* opaque) {
  auto* ev = new EventData();
  ev->kind = EventData::kClose;
  ev->reason = reason;
  (*static_cast<SinkPtr*>(opaque))->Emit(ev);
}

}  // namespace ephemera_libvirt
