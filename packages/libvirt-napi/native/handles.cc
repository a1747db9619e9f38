// Handles for connections, domains and secrets (see handles.h).
#include "handles.h"

#include <cstdlib>

#include "runtime.h"

namespace ephemera_libvirt {

// Deregisters callbacks and drops the connection reference (worker thread).
void TeardownConnection(virConnectPtr conn, int lifecycleId, bool closeRegistered) {
  if (lifecycleId >= 0 && virConnectDomainEventDeregisterAny(conn, lifecycleId) < 0) {
    virResetLastError();
  }
  if (closeRegistered && virConnectUnregisterCloseCallback(conn, CloseCallback) < 0) {
    virResetLastError();
  }
  if (virConnectClose(conn) < 0) virResetLastError();
}

void FinalizeConn(Napi::Env, ConnBox* box) {
  if (box->sink) box->sink->Shutdown();
  if (box->conn != nullptr) {
    virConnectPtr conn = box->conn;
    int id = box->lifecycleId;
    bool closeRegistered = box->closeRegistered;
    Pool::Get().Post([conn, id, closeRegistered] { TeardownConnection(conn, id, closeRegistered); });
  }
  delete box;
}

void FinalizeDom(Napi::Env, DomBox* box) {
  virDomainPtr dom = box->dom;
  delete box;
  if (dom != nullptr) Pool::Get().Post([dom] {
      if (virDomainFree(dom) < 0) virResetLastError();
    });
}

void FinalizeSecret(Napi::Env, SecretBox* box) {
  virSecretPtr secret = box->secret;
  delete box;
  if (secret != nullptr) Pool::Get().Post([secret] {
      if (virSecretFree(secret) < 0) virResetLastError();
    });
}

DomResult DescribeDomain(virDomainPtr dom) {
  DomResult r;
  r.dom = dom;
  const char* name = virDomainGetName(dom);
  if (name != nullptr) r.name = name;
  char uuid[VIR_UUID_STRING_BUFLEN];
  if (virDomainGetUUIDString(dom, uuid) == 0) r.uuid = uuid;
  virResetLastError();
  return r;
}

SecretResult DescribeSecret(virSecretPtr secret) {
  SecretResult r;
  r.secret = secret;
  char uuid[VIR_UUID_STRING_BUFLEN];
  if (virSecretGetUUIDString(secret, uuid) == 0) r.uuid = uuid;
  r.usageType = virSecretGetUsageType(secret);
  const char* usage = virSecretGetUsageID(secret);
  if (usage != nullptr) r.usageID = usage;
  virResetLastError();
  return r;
}

Napi::Value WrapDomain(Napi::Env env, DomResult& r) {
  auto* box = new DomBox();
  box->dom = r.dom;
  r.dom = nullptr;
  auto ext = Napi::External<DomBox>::New(env, box, FinalizeDom);
  ext.TypeTag(&kDomTag);
  Napi::Object o = Napi::Object::New(env);
  o.Set("handle", ext);
  o.Set("name", r.name);
  o.Set("uuid", r.uuid);
  return o;
}

Napi::Value WrapSecret(Napi::Env env, SecretResult& r) {
  auto* box = new SecretBox();
  box->secret = r.secret;
  r.secret = nullptr;
  auto ext = Napi::External<SecretBox>::New(env, box, FinalizeSecret);
  ext.TypeTag(&kSecretTag);
  Napi::Object o = Napi::Object::New(env);
  o.Set("handle", ext);
  o.Set("uuid", r.uuid);
  o.Set("usageType", r.usageType);
  o.Set("usageID", r.usageID);
  return o;
}

// Returns a referenced connection pointer for a job, or nullptr if the connection was closed.
virConnectPtr RefConn(const Napi::CallbackInfo& info) {
  ConnBox* box = Unwrap<ConnBox>(info[0], kConnTag, "connection");
  if (box->conn == nullptr) return nullptr;
  virConnectRef(box->conn);
  return box->conn;
}

virDomainPtr RefDom(const Napi::CallbackInfo& info) {
  DomBox* box = Unwrap<DomBox>(info[0], kDomTag, "domain");
  virDomainRef(box->dom);
  return box->dom;
}

virSecretPtr RefSecret(const Napi::CallbackInfo& info) {
  SecretBox* box = Unwrap<SecretBox>(info[0], kSecretTag, "secret");
  virSecretRef(box->secret);
  return box->secret;
}

void Unref(virConnectPtr c) {
  if (virConnectClose(c) < 0) virResetLastError();
}
void Unref(virDomainPtr d) {
  if (virDomainFree(d) < 0) virResetLastError();
}
void Unref(virSecretPtr s) {
  if (virSecretFree(s) < 0) virResetLastError();
}

std::string TakeString(char* s) {
  std::string out = s != nullptr ? s : "";
  free(s);
  return out;
}

}  // namespace ephemera_libvirt
