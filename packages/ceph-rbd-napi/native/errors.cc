// Typed errors for JavaScript (see errors.h).
#include "errors.h"

#include <cstring>

#include "instance.h"

namespace ephemera_rbd {

std::string ErrnoText(int err) {
  char buf[256];
  buf[0] = 0;
  // GNU strerror_r returns a char* that may or may not point to buf.
  const char* s = strerror_r(err, buf, sizeof buf);
  return s ? std::string(s) : std::string("errno ") + std::to_string(err);
}

Napi::Value MakeError(Napi::Env env, const char* kind, int err, const std::string& op,
                             const std::string& target) {
  Instance* inst = GetInstance(env);
  if (err < 0) err = -err;
  std::string text = ErrnoText(err);
  if (inst && !inst->make_error.IsEmpty()) {
    Napi::Value v = inst->make_error.Call({Napi::String::New(env, kind), Napi::Number::New(env, err),
                                           Napi::String::New(env, op), Napi::String::New(env, target),
                                           Napi::String::New(env, text)});
    if (!env.IsExceptionPending() && !v.IsEmpty()) return v;
    if (env.IsExceptionPending()) env.GetAndClearPendingException();
  }
  Napi::Error e = Napi::Error::New(env, op + " " + target + ": " + text);
  e.Set("errno", Napi::Number::New(env, err));
  return e.Value();
}

// Binding only: registers the JS factory that builds the typed errors (src/errors.ts).
Napi::Value Init(const Napi::CallbackInfo& info) {
  Instance* inst = GetInstance(info.Env());
  if (info.Length() > 0 && info[0].IsFunction()) inst->make_error = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

}  // namespace ephemera_rbd
