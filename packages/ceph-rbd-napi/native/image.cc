// NativeImage: the class, and the calls about the image itself (stat, size, features, resize,
// close). The other methods are in snapshot.cc, clone.cc, watchers.cc, aio.cc and metadata.cc.
#include <napi.h>
#include <rbd/librbd.h>

#include <ctime>
#include <memory>

#include "args.h"
#include "image.h"

namespace ephemera_rbd {

Napi::Function NImage::Define(Napi::Env env) {
  return DefineClass(env, "NativeImage",
                     {
                         InstanceMethod<&NImage::Close>("close"),
                         InstanceMethod<&NImage::IsClosed>("isClosed"),
                         InstanceMethod<&NImage::Stat>("stat"),
                         InstanceMethod<&NImage::Size>("size"),
                         InstanceMethod<&NImage::Features>("features"),
                         InstanceMethod<&NImage::Resize>("resize"),
                         InstanceMethod<&NImage::Flatten>("flatten"),
                         InstanceMethod<&NImage::Parent>("parent"),
                         InstanceMethod<&NImage::Children>("children"),
                         InstanceMethod<&NImage::SnapCreate>("snapCreate"),
                         InstanceMethod<&NImage::SnapRemove>("snapRemove"),
                         InstanceMethod<&NImage::SnapProtect>("snapProtect"),
                         InstanceMethod<&NImage::SnapUnprotect>("snapUnprotect"),
                         InstanceMethod<&NImage::SnapIsProtected>("snapIsProtected"),
                         InstanceMethod<&NImage::SnapRollback>("snapRollback"),
                         InstanceMethod<&NImage::SnapList>("snapList"),
                         InstanceMethod<&NImage::SnapChildren>("snapChildren"),
                         InstanceMethod<&NImage::SnapRemoveById>("snapRemoveById"),
                         InstanceMethod<&NImage::Read>("read"),
                         InstanceMethod<&NImage::Write>("write"),
                         InstanceMethod<&NImage::Discard>("discard"),
                         InstanceMethod<&NImage::Flush>("flush"),
                         InstanceMethod<&NImage::Watchers>("watchers"),
                         InstanceMethod<&NImage::Lockers>("lockers"),
                         InstanceMethod<&NImage::MetadataGet>("metadataGet"),
                         InstanceMethod<&NImage::MetadataSet>("metadataSet"),
                         InstanceMethod<&NImage::MetadataRemove>("metadataRemove"),
                         InstanceMethod<&NImage::MetadataList>("metadataList"),
                     });
}

// Binding only: whether close() was called on this image (or its ioctx or cluster).
Napi::Value NImage::IsClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), res_->IsClosed()); }

// Implements rbd_close(), once the in-flight operations are done.
Napi::Value NImage::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  res_->MarkClosedTree();
  auto res = res_;
  Job* job = NewJob(env, "image.close");
  return job->Submit([res] { return res->CloseTree(); });
}

// Implements rbd_stat(), rbd_get_features(), rbd_get_stripe_unit(), rbd_get_stripe_count(), rbd_get_id() and rbd_get_overlap().
Napi::Value NImage::Stat(const Napi::CallbackInfo& info) {
  struct S {
    rbd_image_info_t info{};
    uint64_t features = 0, stripe_unit = 0, stripe_count = 0, flags = 0, overlap = 0;
    char id[64] = {0};
    int64_t data_pool = -1;
    bool has_overlap = false;
    struct timespec created {};
  };
  auto s = std::make_shared<S>();
  auto res = res_;
  return Simple(
      info, "image.stat",
      [s, res] {
        rbd_image_t im = res->image;
        int rc = rbd_stat(im, &s->info, sizeof s->info);
        if (rc < 0) return rc;
        if ((rc = rbd_get_features(im, &s->features)) < 0) return rc;
        if ((rc = rbd_get_stripe_unit(im, &s->stripe_unit)) < 0) return rc;
        if ((rc = rbd_get_stripe_count(im, &s->stripe_count)) < 0) return rc;
        rbd_get_flags(im, &s->flags);
        rbd_get_id(im, s->id, sizeof s->id);
        s->data_pool = rbd_get_data_pool_id(im);
        s->has_overlap = rbd_get_overlap(im, &s->overlap) >= 0;
        rbd_get_create_timestamp(im, &s->created);
        return 0;
      },
      [s](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("size", Num(env, s->info.size));
        o.Set("objectSize", Num(env, s->info.obj_size));
        o.Set("numObjects", Num(env, s->info.num_objs));
        o.Set("order", Napi::Number::New(env, s->info.order));
        o.Set("blockNamePrefix", Napi::String::New(env, s->info.block_name_prefix));
        o.Set("id", Napi::String::New(env, s->id));
        o.Set("features", Num(env, s->features));
        o.Set("stripeUnit", Num(env, s->stripe_unit));
        o.Set("stripeCount", Num(env, s->stripe_count));
        o.Set("flags", Num(env, s->flags));
        o.Set("dataPoolId", NumI(env, s->data_pool));
        o.Set("overlap", s->has_overlap ? Num(env, s->overlap).As<Napi::Value>() : env.Null());
        o.Set("createdMs", Napi::Number::New(env, s->created.tv_sec * 1000.0 + s->created.tv_nsec / 1e6));
        return o;
      });
}

// Implements rbd_get_size().
Napi::Value NImage::Size(const Napi::CallbackInfo& info) {
  auto v = std::make_shared<uint64_t>(0);
  auto res = res_;
  return Simple(
      info, "image.size", [v, res] { return rbd_get_size(res->image, v.get()); },
      [v](Napi::Env env) -> Napi::Value { return Num(env, *v); });
}

// Implements rbd_get_features().
Napi::Value NImage::Features(const Napi::CallbackInfo& info) {
  auto v = std::make_shared<uint64_t>(0);
  auto res = res_;
  return Simple(
      info, "image.features", [v, res] { return rbd_get_features(res->image, v.get()); },
      [v](Napi::Env env) -> Napi::Value { return Num(env, *v); });
}

// rbd_resize2() calls its progress function unconditionally while a shrink trims objects (a
// NULL one crashes the process), so this no-op stands in when the caller gave none.
static int NoProgress(uint64_t, uint64_t, void*) { return 0; }

// resize(size, allowShrink, onProgress?)
// Implements rbd_resize2().
Napi::Value NImage::Resize(const Napi::CallbackInfo& info) {
  uint64_t size = ArgU64(info, 0, "size");
  bool allow_shrink = info.Length() > 1 && info[1].IsBoolean() ? info[1].As<Napi::Boolean>().Value() : true;
  Napi::Env env = info.Env();
  Job* job = NewJob(env, "image.resize");
  if (!job->Hold(res_)) return job->RejectClosed(env);
  job->WithProgress(env, ArgFnOrNull(info, 2));
  auto res = res_;
  Progress* p = job->progress();
  return job->Submit([res, size, allow_shrink, p] {
    return rbd_resize2(res->image, size, allow_shrink, p ? &Progress::Callback : &NoProgress, p);
  });
}

}  // namespace ephemera_rbd
