// Argument helpers (see args.h).
#include "args.h"

#include <cstdint>

namespace ephemera_libvirt {

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (!info[i].IsString()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

unsigned int ArgFlags(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || info[i].IsUndefined()) return 0;
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "flags must be a number");
  int64_t v = info[i].As<Napi::Number>().Int64Value();
  if (v < 0 || v > 0xffffffffLL) throw Napi::RangeError::New(info.Env(), "flags out of range");
  return static_cast<unsigned int>(v);
}

OptString ArgOptString(const Napi::CallbackInfo& info, size_t i) {
  OptString o;
  if (info.Length() > i && info[i].IsString()) {
    o.set = true;
    o.value = info[i].As<Napi::String>().Utf8Value();
  }
  return o;
}

}  // namespace ephemera_libvirt
