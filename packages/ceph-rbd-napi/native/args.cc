// Argument and result helpers (see args.h).
#include "args.h"

namespace ephemera_rbd {

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsString())
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}
std::optional<std::string> ArgOptString(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return std::nullopt;
  if (!info[i].IsString()) throw Napi::TypeError::New(info.Env(), "expected a string");
  return info[i].As<Napi::String>().Utf8Value();
}
uint64_t ToU64(Napi::Env env, Napi::Value v, const char* what) {
  if (v.IsBigInt()) {
    bool lossless = false;
    uint64_t r = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(env, std::string(what) + " out of range");
    return r;
  }
  if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string(what) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || d != static_cast<double>(static_cast<uint64_t>(d)))
    throw Napi::RangeError::New(env, std::string(what) + " must be a non-negative safe integer");
  return static_cast<uint64_t>(d);
}
uint64_t ArgU64(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i) throw Napi::TypeError::New(info.Env(), std::string(what) + " is required");
  return ToU64(info.Env(), info[i], what);
}
bool ArgBool(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() > i && info[i].IsBoolean() && info[i].As<Napi::Boolean>().Value();
}
Napi::Value ArgFnOrNull(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() > i && info[i].IsFunction()) return info[i];
  return Napi::Value();
}
Napi::Number Num(Napi::Env env, uint64_t v) { return Napi::Number::New(env, static_cast<double>(v)); }
Napi::Number NumI(Napi::Env env, int64_t v) { return Napi::Number::New(env, static_cast<double>(v)); }

void BufferArg(const Napi::CallbackInfo& info, size_t i, char** data, size_t* len) {
  if (info.Length() <= i || !info[i].IsTypedArray())
    throw Napi::TypeError::New(info.Env(), "buffer must be a Uint8Array");
  Napi::TypedArray ta = info[i].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_uint8_array) throw Napi::TypeError::New(info.Env(), "buffer must be a Uint8Array");
  Napi::Uint8Array u8 = info[i].As<Napi::Uint8Array>();
  *data = reinterpret_cast<char*>(u8.Data());
  *len = u8.ByteLength();
}

}  // namespace ephemera_rbd
