// Module functions about the libraries and the binding's own runtime (worker threads, pending
// operations).
#pragma once

#include <napi.h>

namespace ephemera_rbd {

Napi::Value Version(const Napi::CallbackInfo& info);
Napi::Value SetWorkerThreads(const Napi::CallbackInfo& info);
Napi::Value GetWorkerThreads(const Napi::CallbackInfo& info);
Napi::Value PendingOps(const Napi::CallbackInfo& info);

}  // namespace ephemera_rbd
