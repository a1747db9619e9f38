// libvirt errors (see errors.h) and init(), which registers the JS error factory.
#include "errors.h"

#include "functions.h"
#include "job.h"

namespace ephemera_libvirt {

// Copies the calling thread's last libvirt error (must run on the thread that made the call).
void Capture(Failure& f, const char* fallback) {
  f.failed = true;
  virErrorPtr e = virGetLastError();
  if (e != nullptr && e->code != VIR_ERR_OK) {
    f.code = e->code;
    f.domain = e->domain;
    f.level = e->level;
    f.message = e->message != nullptr ? e->message : fallback;
  } else {
    f.code = VIR_ERR_INTERNAL_ERROR;
    f.domain = VIR_FROM_NONE;
    f.level = VIR_ERR_ERROR;
    f.message = fallback;
  }
  virResetLastError();
}

void Fail(Failure& f, int code, const std::string& message) {
  f.failed = true;
  f.code = code;
  f.domain = VIR_FROM_NONE;
  f.level = VIR_ERR_ERROR;
  f.message = message;
}

void NoopErrorFunc(void*, virErrorPtr) {}

Napi::Value MakeError(Napi::Env env, const Failure& f) {
  Napi::Object info = Napi::Object::New(env);
  info.Set("code", Napi::Number::New(env, f.code));
  info.Set("domain", Napi::Number::New(env, f.domain));
  info.Set("level", Napi::Number::New(env, f.level));
  info.Set("message", Napi::String::New(env, f.message));
  AddonData* data = Data(env);
  if (data != nullptr && !data->makeError.IsEmpty()) {
    return data->makeError.Call({info});
  }
  Napi::Error err = Napi::Error::New(env, f.message);
  err.Set("code", info.Get("code"));
  err.Set("domain", info.Get("domain"));
  err.Set("level", info.Get("level"));
  return err.Value();
}

Napi::Value Rejected(Napi::Env env, int code, const std::string& message) {
  Failure f;
  Fail(f, code, message);
  auto deferred = Napi::Promise::Deferred::New(env);
  deferred.Reject(MakeError(env, f));
  return deferred.Promise();
}

// Binding only: registers the JS factory that builds LibvirtError (src/errors.ts).
Napi::Value Init(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) throw Napi::TypeError::New(info.Env(), "makeError must be a function");
  Data(info.Env())->makeError = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

}  // namespace ephemera_libvirt
