// NativeImage: an open RBD image (rbd_image_t). Its methods live by concept in image.cc (the
// image itself), snapshot.cc, clone.cc (parent and children), watchers.cc (watchers, lockers),
// aio.cc (reads and writes) and metadata.cc (key/value metadata).
#pragma once

#include <napi.h>
#include <rbd/librbd.h>

#include <memory>
#include <string>

#include "handles.h"
#include "job.h"

namespace ephemera_rbd {

// JS wrappers (NImage, NIoCtx, NCluster) each hold a shared_ptr to their Res; GC drops it (the
// native handle is then released on the pool once nothing else, e.g. an open child or an
// in-flight op, uses it).
class NImage : public Napi::ObjectWrap<NImage> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit NImage(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NImage>(info) {
    WrapFromExternal<NImage, ImageRes>(info, res_);
  }
  ~NImage() override { res_.reset(); }

 private:
  std::shared_ptr<ImageRes> res_;

  // A job holding the image (and so, through it, its ioctx and cluster).
  Job* NewJob(Napi::Env env, const char* op, const std::string& target = "") {
    return new Job(env, op, target.empty() ? res_->Target() : target);
  }
  template <typename W, typename D>
  Napi::Value Simple(const Napi::CallbackInfo& info, const char* op, W work, D done, Napi::Value progress = Napi::Value(),
                     const std::string& target = "") {
    Napi::Env env = info.Env();
    Job* job = NewJob(env, op, target);
    if (!job->Hold(res_)) return job->RejectClosed(env);
    job->WithProgress(env, progress);
    return job->Submit(work, done);
  }

  // image.cc
  Napi::Value IsClosed(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Stat(const Napi::CallbackInfo& info);
  Napi::Value Size(const Napi::CallbackInfo& info);
  Napi::Value Features(const Napi::CallbackInfo& info);
  Napi::Value Resize(const Napi::CallbackInfo& info);
  // clone.cc
  Napi::Value Flatten(const Napi::CallbackInfo& info);
  Napi::Value Parent(const Napi::CallbackInfo& info);
  Napi::Value Children(const Napi::CallbackInfo& info);
  Napi::Value SnapChildren(const Napi::CallbackInfo& info);
  // snapshot.cc
  Napi::Value SnapOp(const Napi::CallbackInfo& info, const char* op, int (*fn)(rbd_image_t, const char*));
  Napi::Value SnapCreate(const Napi::CallbackInfo& info);
  Napi::Value SnapRemove(const Napi::CallbackInfo& info);
  Napi::Value SnapProtect(const Napi::CallbackInfo& info);
  Napi::Value SnapUnprotect(const Napi::CallbackInfo& info);
  Napi::Value SnapIsProtected(const Napi::CallbackInfo& info);
  Napi::Value SnapRollback(const Napi::CallbackInfo& info);
  Napi::Value SnapList(const Napi::CallbackInfo& info);
  Napi::Value SnapRemoveById(const Napi::CallbackInfo& info);
  // watchers.cc
  Napi::Value Watchers(const Napi::CallbackInfo& info);
  Napi::Value Lockers(const Napi::CallbackInfo& info);
  // aio.cc
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value Write(const Napi::CallbackInfo& info);
  Napi::Value Discard(const Napi::CallbackInfo& info);
  Napi::Value Flush(const Napi::CallbackInfo& info);
  // metadata.cc
  Napi::Value MetadataGet(const Napi::CallbackInfo& info);
  Napi::Value MetadataSet(const Napi::CallbackInfo& info);
  Napi::Value MetadataRemove(const Napi::CallbackInfo& info);
  Napi::Value MetadataList(const Napi::CallbackInfo& info);
};

}  // namespace ephemera_rbd
