// Connections: open (with its event callbacks), close, and what a connection reports about the
// library, the hypervisor and the host.
#include <napi.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "args.h"
#include "errors.h"
#include "functions.h"
#include "handles.h"
#include "job.h"
#include "events.h"
#include "runtime.h"

namespace ephemera_libvirt {

namespace {

struct OpenResult {
  virConnectPtr conn = nullptr;
  int lifecycleId = -1;
  bool closeRegistered = false;
};

}  // namespace

// Implements virGetVersion().
Napi::Value GetVersion(const Napi::CallbackInfo& info) {
  unsigned long v = 0;
  if (virGetVersion(&v, nullptr, nullptr) < 0) {
    Failure f;
    Capture(f, "virGetVersion failed");
    throw Napi::Error(info.Env(), MakeError(info.Env(), f));
  }
  return Napi::Number::New(info.Env(), static_cast<double>(v));
}

// connect(uri, readOnly, emit, keepAliveInterval, keepAliveCount) -> Promise<handle>
// Implements virConnectOpenAuth(), virConnectSetKeepAlive(), virConnectDomainEventRegisterAny() and virConnectRegisterCloseCallback().
Napi::Value Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string uri = ArgString(info, 0, "uri");
  bool readOnly = info[1].ToBoolean();
  if (!info[2].IsFunction()) throw Napi::TypeError::New(env, "emit must be a function");
  int kaInterval = info[3].IsNumber() ? info[3].As<Napi::Number>().Int32Value() : 5;
  int kaCount = info[4].IsNumber() ? info[4].As<Napi::Number>().Int32Value() : 3;

  if (!g_init_ok) return Rejected(env, VIR_ERR_INTERNAL_ERROR, g_init_error);

  auto sink = std::make_shared<EventSink>();
  auto* finalizeHolder = new SinkPtr(sink);
  napi_status st = napi_create_threadsafe_function(
      env, info[2], nullptr, Napi::String::New(env, "libvirt-napi:events"), 0, 1, finalizeHolder,
      FinalizeSink, nullptr, DeliverEvent, &sink->tsfn);
  if (st != napi_ok) {
    delete finalizeHolder;
    throw Napi::Error::New(env, "cannot create the event thread-safe function");
  }
  napi_unref_threadsafe_function(env, sink->tsfn);

  return Run<OpenResult>(
      env,
      [uri, readOnly, kaInterval, kaCount, sink](Failure& f) {
        OpenResult r;
        virConnectPtr c = virConnectOpenAuth(uri.c_str(), nullptr, readOnly ? VIR_CONNECT_RO : 0);
        if (c == nullptr) {
          Capture(f, "cannot open the connection");
          return r;
        }
        if (kaInterval > 0) {
          // Remote drivers only; local drivers (test:///) answer "not supported".
          if (virConnectSetKeepAlive(c, kaInterval, static_cast<unsigned int>(kaCount)) < 0) {
            virResetLastError();
          }
        }
        int id = virConnectDomainEventRegisterAny(c, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                  VIR_DOMAIN_EVENT_CALLBACK(LifecycleCallback),
                                                  new SinkPtr(sink), FreeSinkOpaque);
        if (id < 0) {
          Capture(f, "cannot register for lifecycle events");
          virConnectClose(c);
          return r;
        }
        bool closeRegistered = false;
        if (virConnectRegisterCloseCallback(c, CloseCallback, new SinkPtr(sink), FreeSinkOpaque) == 0) {
          closeRegistered = true;
        } else {
          virResetLastError();
        }
        r.conn = c;
        r.lifecycleId = id;
        r.closeRegistered = closeRegistered;
        return r;
      },
      [sink](Napi::Env env, OpenResult& r) -> Napi::Value {
        auto* box = new ConnBox();
        box->conn = r.conn;
        box->sink = sink;
        box->lifecycleId = r.lifecycleId;
        box->closeRegistered = r.closeRegistered;
        auto ext = Napi::External<ConnBox>::New(env, box, FinalizeConn);
        ext.TypeTag(&kConnTag);
        return ext;
      },
      [sink] { sink->Shutdown(); });
}

// Implements virConnectClose(), after virConnectDomainEventDeregisterAny() and virConnectUnregisterCloseCallback().
Napi::Value Close(const Napi::CallbackInfo& info) {
  ConnBox* box = Unwrap<ConnBox>(info[0], kConnTag, "connection");
  if (box->sink) box->sink->Shutdown();
  if (box->conn == nullptr) {
    auto d = Napi::Promise::Deferred::New(info.Env());
    d.Resolve(info.Env().Undefined());
    return d.Promise();
  }
  virConnectPtr conn = box->conn;
  int id = box->lifecycleId;
  bool closeRegistered = box->closeRegistered;
  box->conn = nullptr;
  return Run<int>(
      info.Env(),
      [conn, id, closeRegistered](Failure&) {
        TeardownConnection(conn, id, closeRegistered);
        return 0;
      },
      ResolveUndefined);
}

// Binding only: refs or unrefs the connection's event thread-safe function.
Napi::Value SetEventsRef(const Napi::CallbackInfo& info) {
  ConnBox* box = Unwrap<ConnBox>(info[0], kConnTag, "connection");
  if (box->sink) box->sink->SetRef(info.Env(), info[1].ToBoolean());
  return info.Env().Undefined();
}

// Implements virConnectIsAlive().
Napi::Value IsAlive(const Napi::CallbackInfo& info) {
  ConnBox* box = Unwrap<ConnBox>(info[0], kConnTag, "connection");
  if (box->conn == nullptr) return Napi::Boolean::New(info.Env(), false);
  int alive = virConnectIsAlive(box->conn);  // local check, no RPC
  virResetLastError();
  return Napi::Boolean::New(info.Env(), alive == 1);
}

// Implements virConnectGetLibVersion().
Napi::Value ConnLibVersion(const Napi::CallbackInfo& info) {
  CONN_OR_REJECT(c);
  return Run<double>(
      info.Env(),
      [c](Failure& f) {
        unsigned long v = 0;
        if (virConnectGetLibVersion(c, &v) < 0) Capture(f, "virConnectGetLibVersion failed");
        Unref(c);
        return static_cast<double>(v);
      },
      ResolveNumber);
}

// Implements virConnectGetVersion().
Napi::Value ConnHypervisorVersion(const Napi::CallbackInfo& info) {
  CONN_OR_REJECT(c);
  return Run<double>(
      info.Env(),
      [c](Failure& f) {
        unsigned long v = 0;
        if (virConnectGetVersion(c, &v) < 0) Capture(f, "virConnectGetVersion failed");
        Unref(c);
        return static_cast<double>(v);
      },
      ResolveNumber);
}

// Implements virConnectGetHostname().
Napi::Value ConnHostname(const Napi::CallbackInfo& info) {
  CONN_OR_REJECT(c);
  return Run<std::string>(
      info.Env(),
      [c](Failure& f) {
        char* s = virConnectGetHostname(c);
        if (s == nullptr) Capture(f, "virConnectGetHostname failed");
        Unref(c);
        return TakeString(s);
      },
      ResolveString);
}

// Implements virConnectGetCapabilities().
Napi::Value ConnCapabilities(const Napi::CallbackInfo& info) {
  CONN_OR_REJECT(c);
  return Run<std::string>(
      info.Env(),
      [c](Failure& f) {
        char* s = virConnectGetCapabilities(c);
        if (s == nullptr) Capture(f, "virConnectGetCapabilities failed");
        Unref(c);
        return TakeString(s);
      },
      ResolveString);
}

// domainCapabilities(conn, emulatorbin?, arch?, machine?, virttype?, flags)
// Implements virConnectGetDomainCapabilities().
Napi::Value ConnDomainCapabilities(const Napi::CallbackInfo& info) {
  OptString emulator = ArgOptString(info, 1), arch = ArgOptString(info, 2),
            machine = ArgOptString(info, 3), virttype = ArgOptString(info, 4);
  unsigned int flags = ArgFlags(info, 5);
  CONN_OR_REJECT(c);
  return Run<std::string>(
      info.Env(),
      [c, emulator, arch, machine, virttype, flags](Failure& f) {
        char* s = virConnectGetDomainCapabilities(c, emulator.c_str(), arch.c_str(), machine.c_str(),
                                                  virttype.c_str(), flags);
        if (s == nullptr) Capture(f, "virConnectGetDomainCapabilities failed");
        Unref(c);
        return TakeString(s);
      },
      ResolveString);
}

}  // namespace ephemera_libvirt
