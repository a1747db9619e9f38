// Argument and result helpers shared by the wrapped classes. The TS layer validates arguments;
// these keep a bad call from crashing the process (a TypeError/RangeError instead).
#pragma once

#include <napi.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace ephemera_rbd {

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* what);
std::optional<std::string> ArgOptString(const Napi::CallbackInfo& info, size_t i);
// A non-negative safe integer (number) or a uint64 (bigint).
uint64_t ToU64(Napi::Env env, Napi::Value v, const char* what);
uint64_t ArgU64(const Napi::CallbackInfo& info, size_t i, const char* what);
bool ArgBool(const Napi::CallbackInfo& info, size_t i);
// The function at `i`, or an empty value.
Napi::Value ArgFnOrNull(const Napi::CallbackInfo& info, size_t i);
// A Uint8Array's bytes (not copied: the caller keeps the array referenced while they are used).
void BufferArg(const Napi::CallbackInfo& info, size_t i, char** data, size_t* len);
Napi::Number Num(Napi::Env env, uint64_t v);
Napi::Number NumI(Napi::Env env, int64_t v);

// Calls fn(max) until it stops answering -ERANGE (librbd's "buffer too small" protocol).
template <typename F>
int GrowLoop(size_t& max, F fn) {
  for (int tries = 0; tries < 16; ++tries) {
    int rc = fn();
    if (rc != -ERANGE) return rc;
    if (max < 16) max = 16;
  }
  return -ERANGE;
}

}  // namespace ephemera_rbd
