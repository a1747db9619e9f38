// NativeIoCtx: an I/O context on a pool (and RADOS namespace). Its methods live in ioctx.cc
// (images of the pool), clone.cc (clone), trash.cc (the pool's trash)
// and lock.cc (RADOS object locks with a lease).
#pragma once

#include <napi.h>

#include <memory>
#include <string>

#include "handles.h"
#include "job.h"

namespace ephemera_rbd {

class NIoCtx : public Napi::ObjectWrap<NIoCtx> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit NIoCtx(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NIoCtx>(info) {
    WrapFromExternal<NIoCtx, IoCtxRes>(info, res_);
  }
  ~NIoCtx() override { res_.reset(); }
  const std::shared_ptr<IoCtxRes>& res() const { return res_; }

 private:
  std::shared_ptr<IoCtxRes> res_;

  template <typename W, typename D>
  Napi::Value Simple(const Napi::CallbackInfo& info, const char* op, const std::string& target, W work, D done,
                     Napi::Value progress = Napi::Value()) {
    Napi::Env env = info.Env();
    Job* job = new Job(env, op, target);
    if (!job->Hold(res_)) return job->RejectClosed(env);
    job->WithProgress(env, progress);
    return job->Submit(work, done);
  }
  // ioctx.cc
  Napi::Value IsClosed(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value List(const Napi::CallbackInfo& info);
  Napi::Value ListPrefixed(const Napi::CallbackInfo& info);
  Napi::Value Create(const Napi::CallbackInfo& info);
  Napi::Value Remove(const Napi::CallbackInfo& info);
  Napi::Value Rename(const Napi::CallbackInfo& info);
  Napi::Value Open(const Napi::CallbackInfo& info);
  // clone.cc
  Napi::Value Clone(const Napi::CallbackInfo& info);
  // trash.cc
  Napi::Value TrashMove(const Napi::CallbackInfo& info);
  Napi::Value TrashList(const Napi::CallbackInfo& info);
  Napi::Value TrashRestore(const Napi::CallbackInfo& info);
  Napi::Value TrashRemove(const Napi::CallbackInfo& info);
  // lock.cc
  Napi::Value LockExclusive(const Napi::CallbackInfo& info);
  Napi::Value Unlock(const Napi::CallbackInfo& info);
  Napi::Value BreakLock(const Napi::CallbackInfo& info);
  Napi::Value ListLockers(const Napi::CallbackInfo& info);
};

}  // namespace ephemera_rbd
