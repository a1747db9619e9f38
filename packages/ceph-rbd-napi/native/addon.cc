// @ephemera/ceph-rbd-napi: Node-API binding to librados and librbd.
//
// Every call that can block runs on the binding's own WorkerPool (never libuv's pool) and
// resolves a promise through the Dispatcher. Image reads and writes use rbd_aio_* and complete
// from librbd's callback thread. Errors are created by a JS factory (see src/errors.ts) from
//
// This file is the module init only. The rest, one concept a file: runtime.h (worker pool,
// dispatcher, handle lifetime), instance.h, errors, args, handles.h, job.h, options.h;
// cluster (RADOS connection), ioctx (images of a pool), image, snapshot, clone, trash, lock, watchers,
// aio (reads and writes), library (versions, worker threads).
#include <napi.h>

#include "cluster.h"
#include "errors.h"
#include "image.h"
#include "instance.h"
#include "ioctx.h"
#include "library.h"
#include "runtime.h"

namespace ephemera_rbd {

static void Cleanup(void* arg) {
  auto* inst = static_cast<Instance*>(arg);
  ShutdownAllImpl(inst, 5000);
  inst->exiting->store(true);
  inst->dispatcher->Close();
}

static void KeepInstance(Napi::Env, Instance*) {}

static Napi::Object ModuleInit(Napi::Env env, Napi::Object exports) {
  auto* inst = new Instance();
  inst->dispatcher = new Dispatcher(env);
  inst->cluster_ctor = Napi::Persistent(NCluster::Define(env));
  inst->ioctx_ctor = Napi::Persistent(NIoCtx::Define(env));
  inst->image_ctor = Napi::Persistent(NImage::Define(env));
  // The instance outlives the env's finalizers on purpose (jobs may reference it): the
  // cleanup hook only closes handles and the dispatcher.
  env.SetInstanceData<Instance, KeepInstance>(inst);
  napi_add_env_cleanup_hook(env, Cleanup, inst);
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("connect", Napi::Function::New(env, Connect));
  exports.Set("version", Napi::Function::New(env, Version));
  exports.Set("setWorkerThreads", Napi::Function::New(env, SetWorkerThreads));
  exports.Set("workerThreads", Napi::Function::New(env, GetWorkerThreads));
  exports.Set("pendingOps", Napi::Function::New(env, PendingOps));
  exports.Set("shutdownAll", Napi::Function::New(env, ShutdownAll));
  exports.Set("NativeCluster", inst->cluster_ctor.Value());
  exports.Set("NativeIoCtx", inst->ioctx_ctor.Value());
  exports.Set("NativeImage", inst->image_ctor.Value());
  return exports;
}

}  // namespace ephemera_rbd

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return ephemera_rbd::ModuleInit(env, exports); }

NODE_API_MODULE(ceph_rbd_napi, InitAddon)
