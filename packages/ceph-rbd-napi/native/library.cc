// Module functions: library versions and the binding's runtime (see library.h).
#include "library.h"

#include <rados/librados.h>
#include <rbd/librbd.h>

#include <string>

#include "args.h"
#include "instance.h"
#include "runtime.h"

namespace ephemera_rbd {

// Implements rbd_version() and rados_version().
Napi::Value Version(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int a, b, c;
  Napi::Object o = Napi::Object::New(env);
  rbd_version(&a, &b, &c);
  o.Set("librbd", Napi::String::New(env, std::to_string(a) + "." + std::to_string(b) + "." + std::to_string(c)));
  rados_version(&a, &b, &c);
  o.Set("librados", Napi::String::New(env, std::to_string(a) + "." + std::to_string(b) + "." + std::to_string(c)));
  return o;
}

// Binding only: resizes the WorkerPool that runs the blocking calls.
Napi::Value SetWorkerThreads(const Napi::CallbackInfo& info) {
  uint64_t n = ArgU64(info, 0, "threads");
  if (n < 1 || n > 1024) throw Napi::RangeError::New(info.Env(), "threads must be 1..1024");
  WorkerPool::Get().SetSize(static_cast<unsigned>(n));
  return info.Env().Undefined();
}

// Binding only: the WorkerPool size.
Napi::Value GetWorkerThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), WorkerPool::Get().Size());
}

// Binding only: operations started and not yet settled in this environment.
Napi::Value PendingOps(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), GetInstance(info.Env())->dispatcher->Pending());
}

}  // namespace ephemera_rbd
