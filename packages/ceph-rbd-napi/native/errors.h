// Errors the addon hands to JavaScript: built by the JS factory registered with init() (see
// src/errors.ts) from (kind, errno, op, target); never holds a key or an option value.
#pragma once

#include <napi.h>

#include <string>

namespace ephemera_rbd {

// strerror_r's text for a positive errno.
std::string ErrnoText(int err);

// kind: "errno" (a librados/librbd error), "closed" (use of a closed handle).
Napi::Value MakeError(Napi::Env env, const char* kind, int err, const std::string& op, const std::string& target);

// init(makeError): registers the JS error factory.
Napi::Value Init(const Napi::CallbackInfo& info);

}  // namespace ephemera_rbd
