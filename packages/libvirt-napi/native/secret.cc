// Secrets (e.g. a Ceph key): define, look up and list (on a connection), set the value, read
// the XML, undefine. A secret's value is never read back, logged or put in an error.
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

namespace ephemera_libvirt {

namespace {

Napi::Value SecretFromConn(const Napi::CallbackInfo& info, const char* what,
                           std::function<virSecretPtr(virConnectPtr, const std::string&, unsigned int)> call,
                           unsigned int extra) {
  std::string arg = ArgString(info, 1, what);
  CONN_OR_REJECT(c);
  std::string label = what;
  return Run<SecretResult>(
      info.Env(),
      [c, arg, extra, call, label](Failure& f) {
        SecretResult r;
        virSecretPtr s = call(c, arg, extra);
        if (s == nullptr) {
          Capture(f, ("libvirt call failed for secret " + label).c_str());
        } else {
          r = DescribeSecret(s);
        }
        Unref(c);
        return r;
      },
      WrapSecret);
}

using SecretList = std::vector<SecretResult>;

// Secret bytes are zeroed as soon as libvirt has them (and on every exit path).
struct SecretBytes {
  std::vector<unsigned char> bytes;
  ~SecretBytes() {
    if (!bytes.empty()) explicit_bzero(bytes.data(), bytes.size());
  }
};

}  // namespace

// Implements virSecretDefineXML().
Napi::Value ConnDefineSecret(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 2);
  return SecretFromConn(
      info, "xml",
      [](virConnectPtr c, const std::string& xml, unsigned int fl) { return virSecretDefineXML(c, xml.c_str(), fl); },
      flags);
}

// lookupSecretByUsage(conn, usageId, usageType)
// Implements virSecretLookupByUsage().
Napi::Value ConnLookupSecretByUsage(const Napi::CallbackInfo& info) {
  if (!info[2].IsNumber()) throw Napi::TypeError::New(info.Env(), "usage type must be a number");
  unsigned int type = info[2].As<Napi::Number>().Uint32Value();
  return SecretFromConn(
      info, "usage",
      [](virConnectPtr c, const std::string& usage, unsigned int t) {
        return virSecretLookupByUsage(c, static_cast<int>(t), usage.c_str());
      },
      type);
}

// Implements virSecretLookupByUUIDString().
Napi::Value ConnLookupSecretByUUID(const Napi::CallbackInfo& info) {
  return SecretFromConn(
      info, "uuid",
      [](virConnectPtr c, const std::string& uuid, unsigned int) { return virSecretLookupByUUIDString(c, uuid.c_str()); },
      0);
}

// Implements virConnectListAllSecrets().
Napi::Value ConnListAllSecrets(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  CONN_OR_REJECT(c);
  return Run<SecretList>(
      info.Env(),
      [c, flags](Failure& f) {
        SecretList out;
        virSecretPtr* secrets = nullptr;
        int n = virConnectListAllSecrets(c, &secrets, flags);
        if (n < 0) {
          Capture(f, "virConnectListAllSecrets failed");
        } else {
          for (int i = 0; i < n; i++) out.push_back(DescribeSecret(secrets[i]));
          free(secrets);
        }
        Unref(c);
        return out;
      },
      [](Napi::Env env, SecretList& list) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, list.size());
        for (size_t i = 0; i < list.size(); i++) arr.Set(static_cast<uint32_t>(i), WrapSecret(env, list[i]));
        return arr;
      });
}

// Implements virSecretSetValue().
Napi::Value SecretSetValue(const Napi::CallbackInfo& info) {
  if (!info[1].IsTypedArray()) throw Napi::TypeError::New(info.Env(), "value must be a Uint8Array");
  Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_uint8_array) throw Napi::TypeError::New(info.Env(), "value must be a Uint8Array");
  Napi::Uint8Array arr = ta.As<Napi::Uint8Array>();
  auto value = std::make_shared<SecretBytes>();
  value->bytes.assign(arr.Data(), arr.Data() + arr.ByteLength());
  unsigned int flags = ArgFlags(info, 2);
  virSecretPtr s = RefSecret(info);
  return Run<int>(
      info.Env(),
      [s, value, flags](Failure& f) {
        if (virSecretSetValue(s, value->bytes.data(), value->bytes.size(), flags) < 0) {
          Capture(f, "virSecretSetValue failed");
        }
        explicit_bzero(value->bytes.data(), value->bytes.size());
        Unref(s);
        return 0;
      },
      ResolveUndefined);
}

// Implements virSecretGetXMLDesc().
Napi::Value SecretXML(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  virSecretPtr s = RefSecret(info);
  return Run<std::string>(
      info.Env(),
      [s, flags](Failure& f) {
        char* x = virSecretGetXMLDesc(s, flags);
        if (x == nullptr) Capture(f, "virSecretGetXMLDesc failed");
        Unref(s);
        return TakeString(x);
      },
      ResolveString);
}

// Implements virSecretUndefine().
Napi::Value SecretUndefine(const Napi::CallbackInfo& info) {
  virSecretPtr s = RefSecret(info);
  return Run<int>(
      info.Env(),
      [s](Failure& f) {
        if (virSecretUndefine(s) < 0) Capture(f, "virSecretUndefine failed");
        Unref(s);
        return 0;
      },
      ResolveUndefined);
}

}  // namespace ephemera_libvirt
