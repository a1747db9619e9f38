// Typed parameters (see typedparams.h).
#include "typedparams.h"

#include <cmath>
#include <limits>

namespace ephemera_libvirt {

namespace {

// 64-bit integers from a bigint or a safe-integer number; *lossless false when out of range.
int64_t ArgInt64(const Napi::Value& v, bool* lossless) {
  if (v.IsBigInt()) return v.As<Napi::BigInt>().Int64Value(lossless);
  double d = v.As<Napi::Number>().DoubleValue();
  *lossless = std::isfinite(d) && std::trunc(d) == d && std::fabs(d) <= 9007199254740991.0;
  return static_cast<int64_t>(d);
}

uint64_t ArgUint64(const Napi::Value& v, bool* lossless) {
  if (v.IsBigInt()) return v.As<Napi::BigInt>().Uint64Value(lossless);
  double d = v.As<Napi::Number>().DoubleValue();
  *lossless = std::isfinite(d) && std::trunc(d) == d && d >= 0 && d <= 9007199254740991.0;
  return static_cast<uint64_t>(d);
}

}  // namespace

std::vector<TypedParam> ArgTypedParams(const Napi::CallbackInfo& info, size_t i) {
  Napi::Env env = info.Env();
  std::vector<TypedParam> out;
  if (info.Length() <= i || info[i].IsUndefined()) return out;
  if (!info[i].IsArray()) throw Napi::TypeError::New(env, "params must be an array");
  Napi::Array arr = info[i].As<Napi::Array>();
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Napi::Value e = arr.Get(k);
    if (!e.IsArray() || e.As<Napi::Array>().Length() != 3) throw Napi::TypeError::New(env, "a param must be [name, type, value]");
    Napi::Array t = e.As<Napi::Array>();
    Napi::Value name = t.Get(0u), type = t.Get(1u), value = t.Get(2u);
    if (!name.IsString() || !type.IsNumber()) throw Napi::TypeError::New(env, "a param must be [name, type, value]");
    TypedParam p;
    p.name = name.As<Napi::String>().Utf8Value();
    // libvirt's field names are fixed-size char arrays (VIR_TYPED_PARAM_FIELD_LENGTH with the NUL).
    if (p.name.empty() || p.name.size() >= VIR_TYPED_PARAM_FIELD_LENGTH) throw Napi::RangeError::New(env, "param name length out of range");
    p.type = type.As<Napi::Number>().Int32Value();
    bool ok = true;
    switch (p.type) {
      case VIR_TYPED_PARAM_INT:
      case VIR_TYPED_PARAM_LLONG:
        if (!value.IsNumber() && !value.IsBigInt()) throw Napi::TypeError::New(env, p.name + " must be an integer");
        p.i = ArgInt64(value, &ok);
        if (p.type == VIR_TYPED_PARAM_INT && (p.i < INT32_MIN || p.i > INT32_MAX)) ok = false;
        break;
      case VIR_TYPED_PARAM_UINT:
      case VIR_TYPED_PARAM_ULLONG:
        if (!value.IsNumber() && !value.IsBigInt()) throw Napi::TypeError::New(env, p.name + " must be an integer");
        p.u = ArgUint64(value, &ok);
        if (p.type == VIR_TYPED_PARAM_UINT && p.u > UINT32_MAX) ok = false;
        break;
      case VIR_TYPED_PARAM_DOUBLE:
        if (!value.IsNumber()) throw Napi::TypeError::New(env, p.name + " must be a number");
        p.d = value.As<Napi::Number>().DoubleValue();
        break;
      case VIR_TYPED_PARAM_BOOLEAN:
        if (!value.IsBoolean()) throw Napi::TypeError::New(env, p.name + " must be a boolean");
        p.b = value.As<Napi::Boolean>().Value();
        break;
      case VIR_TYPED_PARAM_STRING:
        if (!value.IsString()) throw Napi::TypeError::New(env, p.name + " must be a string");
        p.s = value.As<Napi::String>().Utf8Value();
        break;
      default:
        throw Napi::RangeError::New(env, "unknown typed param type for " + p.name);
    }
    if (!ok) throw Napi::RangeError::New(env, p.name + " out of range");
    out.push_back(std::move(p));
  }
  return out;
}

bool TypedParamArray::Build(const std::vector<TypedParam>& in) {
  for (const TypedParam& p : in) {
    const char* n = p.name.c_str();
    int r = -1;
    switch (p.type) {
      case VIR_TYPED_PARAM_INT: r = virTypedParamsAddInt(&params_, &n_, &max_, n, static_cast<int>(p.i)); break;
      case VIR_TYPED_PARAM_UINT: r = virTypedParamsAddUInt(&params_, &n_, &max_, n, static_cast<unsigned int>(p.u)); break;
      case VIR_TYPED_PARAM_LLONG: r = virTypedParamsAddLLong(&params_, &n_, &max_, n, p.i); break;
      case VIR_TYPED_PARAM_ULLONG: r = virTypedParamsAddULLong(&params_, &n_, &max_, n, p.u); break;
      case VIR_TYPED_PARAM_DOUBLE: r = virTypedParamsAddDouble(&params_, &n_, &max_, n, p.d); break;
      case VIR_TYPED_PARAM_BOOLEAN: r = virTypedParamsAddBoolean(&params_, &n_, &max_, n, p.b ? 1 : 0); break;
      case VIR_TYPED_PARAM_STRING: r = virTypedParamsAddString(&params_, &n_, &max_, n, p.s.c_str()); break;
    }
    if (r < 0) return false;
  }
  return true;
}

std::vector<TypedParam> CopyTypedParams(virTypedParameterPtr params, int n) {
  std::vector<TypedParam> out;
  for (int k = 0; k < n; k++) {
    const virTypedParameter& src = params[k];
    TypedParam p;
    p.name = src.field;
    p.type = src.type;
    switch (src.type) {
      case VIR_TYPED_PARAM_INT: p.i = src.value.i; break;
      case VIR_TYPED_PARAM_UINT: p.u = src.value.ui; break;
      case VIR_TYPED_PARAM_LLONG: p.i = src.value.l; break;
      case VIR_TYPED_PARAM_ULLONG: p.u = src.value.ul; break;
      case VIR_TYPED_PARAM_DOUBLE: p.d = src.value.d; break;
      case VIR_TYPED_PARAM_BOOLEAN: p.b = src.value.b != 0; break;
      case VIR_TYPED_PARAM_STRING: p.s = src.value.s != nullptr ? src.value.s : ""; break;
      default: continue;  // a type newer than this binding: nothing safe to read
    }
    out.push_back(std::move(p));
  }
  return out;
}

Napi::Object TypedParamsToObject(Napi::Env env, const std::vector<TypedParam>& params) {
  Napi::Object o = Napi::Object::New(env);
  for (const TypedParam& p : params) {
    switch (p.type) {
      case VIR_TYPED_PARAM_INT: o.Set(p.name, Napi::Number::New(env, static_cast<double>(p.i))); break;
      case VIR_TYPED_PARAM_UINT: o.Set(p.name, Napi::Number::New(env, static_cast<double>(p.u))); break;
      case VIR_TYPED_PARAM_LLONG: o.Set(p.name, Napi::BigInt::New(env, p.i)); break;
      case VIR_TYPED_PARAM_ULLONG: o.Set(p.name, Napi::BigInt::New(env, p.u)); break;
      case VIR_TYPED_PARAM_DOUBLE: o.Set(p.name, Napi::Number::New(env, p.d)); break;
      case VIR_TYPED_PARAM_BOOLEAN: o.Set(p.name, Napi::Boolean::New(env, p.b)); break;
      case VIR_TYPED_PARAM_STRING: o.Set(p.name, Napi::String::New(env, p.s)); break;
    }
  }
  return o;
}

}  // namespace ephemera_libvirt
