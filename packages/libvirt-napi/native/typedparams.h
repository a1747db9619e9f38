// Typed parameters (virTypedParameter): built from JS entries for calls that take them, and
// turned back into a JS object for calls that return them.
#pragma once

#include <napi.h>
#include <libvirt/libvirt.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ephemera_libvirt {

// One parameter copied off the JS heap, so a worker thread can build the libvirt array.
struct TypedParam {
  std::string name;
  int type = 0;  // VIR_TYPED_PARAM_*
  int64_t i = 0;
  uint64_t u = 0;
  double d = 0;
  bool b = false;
  std::string s;
};

// Reads an array of [name, type, value] entries (type a VIR_TYPED_PARAM_* number; 64-bit
// integers as number or bigint). A name may repeat (libvirt's multi-value string params).
std::vector<TypedParam> ArgTypedParams(const Napi::CallbackInfo& info, size_t i);

// Owns the libvirt array built from TypedParams (worker thread); frees it on destruction.
class TypedParamArray {
 public:
  TypedParamArray() = default;
  TypedParamArray(const TypedParamArray&) = delete;
  TypedParamArray& operator=(const TypedParamArray&) = delete;
  ~TypedParamArray() { virTypedParamsFree(params_, n_); }
  // Appends every entry; false (with libvirt's error set on this thread) on failure.
  bool Build(const std::vector<TypedParam>& in);
  virTypedParameterPtr params() const { return params_; }
  int size() const { return n_; }

 private:
  virTypedParameterPtr params_ = nullptr;
  int n_ = 0;
  int max_ = 0;
};

// Copies a libvirt array into TypedParams (worker thread); the caller frees the array.
std::vector<TypedParam> CopyTypedParams(virTypedParameterPtr params, int n);
// A JS object by name; LLONG/ULLONG become bigint (lossless), the rest number/boolean/string.
Napi::Object TypedParamsToObject(Napi::Env env, const std::vector<TypedParam>& params);

}  // namespace ephemera_libvirt
