// NativeCluster: a RADOS connection (rados_t), and the module functions that open and close
// connections: connect() and shutdownAll().
#pragma once

#include <napi.h>

#include <memory>

#include "handles.h"
#include "instance.h"
#include "job.h"

namespace ephemera_rbd {

class NCluster : public Napi::ObjectWrap<NCluster> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit NCluster(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NCluster>(info) {
    WrapFromExternal<NCluster, ClusterRes>(info, res_);
  }
  ~NCluster() override { res_.reset(); }

 private:
  std::shared_ptr<ClusterRes> res_;

  Napi::Value IsClosed(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value InstanceId(const Napi::CallbackInfo& info);
  Napi::Value Fsid(const Napi::CallbackInfo& info);
  Napi::Value PoolStats(const Napi::CallbackInfo& info);
  Napi::Value MonCommand(const Napi::CallbackInfo& info);
  Napi::Value OpenIoCtx(const Napi::CallbackInfo& info);
};

Napi::Value Connect(const Napi::CallbackInfo& info);
Napi::Value ShutdownAll(const Napi::CallbackInfo& info);
// Closes every open cluster of this environment, waiting at most timeout_ms; returns how many
// closed in time (also the environment's cleanup hook).
int ShutdownAllImpl(Instance* inst, double timeout_ms);

}  // namespace ephemera_rbd
