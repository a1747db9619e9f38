// Handles: externals with type tags. Libvirt objects are reference counted; a job takes its own
// reference on the JS thread and drops it on the worker, and finalizers free on the worker (the
// last reference to a remote connection closes it with an RPC).
#pragma once

#include <napi.h>
#include <libvirt/libvirt.h>

#include <string>

#include "errors.h"
#include "events.h"

namespace ephemera_libvirt {

inline const napi_type_tag kConnTag = {0x6c6962766972745fULL, 0x636f6e6e65637431ULL};
inline const napi_type_tag kDomTag = {0x6c6962766972745fULL, 0x646f6d61696e3031ULL};
inline const napi_type_tag kSecretTag = {0x6c6962766972745fULL, 0x7365637265743031ULL};

struct ConnBox {
  virConnectPtr conn = nullptr;  // null once close() was called
  SinkPtr sink;
  int lifecycleId = -1;
  bool closeRegistered = false;
};

struct DomBox {
  virDomainPtr dom = nullptr;
};

struct SecretBox {
  virSecretPtr secret = nullptr;
};

// Deregisters callbacks and drops the connection reference (worker thread).
void TeardownConnection(virConnectPtr conn, int lifecycleId, bool closeRegistered);
void FinalizeConn(Napi::Env, ConnBox* box);
void FinalizeDom(Napi::Env, DomBox* box);
void FinalizeSecret(Napi::Env, SecretBox* box);

template <typename T>
T* Unwrap(const Napi::Value& v, const napi_type_tag& tag, const char* what) {
  if (!v.IsExternal()) throw Napi::TypeError::New(v.Env(), std::string("expected a ") + what + " handle");
  Napi::External<T> ext = v.As<Napi::External<T>>();
  if (!ext.CheckTypeTag(&tag)) throw Napi::TypeError::New(v.Env(), std::string("expected a ") + what + " handle");
  return ext.Data();
}

struct DomResult {
  virDomainPtr dom = nullptr;
  std::string name;
  std::string uuid;
};

struct SecretResult {
  virSecretPtr secret = nullptr;
  std::string uuid;
  int usageType = 0;
  std::string usageID;
};

DomResult DescribeDomain(virDomainPtr dom);
SecretResult DescribeSecret(virSecretPtr secret);
// The JS object for a domain/secret: { handle, name, uuid } / { handle, uuid, usageType, usageID }.
Napi::Value WrapDomain(Napi::Env env, DomResult& r);
Napi::Value WrapSecret(Napi::Env env, SecretResult& r);

// Returns a referenced connection pointer for a job, or nullptr if the connection was closed.
virConnectPtr RefConn(const Napi::CallbackInfo& info);
virDomainPtr RefDom(const Napi::CallbackInfo& info);
virSecretPtr RefSecret(const Napi::CallbackInfo& info);
void Unref(virConnectPtr c);
void Unref(virDomainPtr d);
void Unref(virSecretPtr s);

#define CONN_OR_REJECT(var)                                                                 \
  virConnectPtr var = RefConn(info);                                                        \
  if (var == nullptr) return Rejected(info.Env(), VIR_ERR_INVALID_CONN, "connection is closed");

// A string libvirt allocated, copied and freed.
std::string TakeString(char* s);

}  // namespace ephemera_libvirt
