// Argument helpers: the TS layer validates; these keep a bad call from crashing the process.
#pragma once

#include <napi.h>

#include <cstddef>
#include <string>

namespace ephemera_libvirt {

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* what);
// Flags (an unsigned 32-bit number); 0 when absent.
unsigned int ArgFlags(const Napi::CallbackInfo& info, size_t i);

struct OptString {
  bool set = false;
  std::string value;
  const char* c_str() const { return set ? value.c_str() : nullptr; }
};

// A string argument, or unset (null for libvirt) when it is not a string.
OptString ArgOptString(const Napi::CallbackInfo& info, size_t i);

}  // namespace ephemera_libvirt
