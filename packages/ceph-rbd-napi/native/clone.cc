// Clones: creating one (NativeIoCtx.clone), and the links between a clone and its parent
// (NativeImage parent, children, snapChildren, flatten).
#include <napi.h>
#include <rbd/librbd.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "image.h"
#include "ioctx.h"
#include "options.h"

namespace ephemera_rbd {

namespace {

// The clones of an image (or of the snapshot its handle is set to), filled by librbd
// (rbd_list_children3) and freed with it.
struct LinkedSpecList {
  std::vector<rbd_linked_image_spec_t> v;
  size_t n = 0;
  ~LinkedSpecList() {
    if (n) rbd_linked_image_spec_list_cleanup(v.data(), n);
  }
  // Lists the children of `image`, growing the array on ERANGE; 0 or a negative errno.
  int Fill(rbd_image_t image) {
    size_t max = 32;
    int rc = GrowLoop(max, [&] {
      v.assign(max, rbd_linked_image_spec_t{});
      size_t m = max;
      int r = rbd_list_children3(image, v.data(), &m);
      if (r == -ERANGE) max = m > max ? m : max * 2;
      else if (r >= 0) n = m;
      return r;
    });
    return rc < 0 ? rc : 0;
  }
};

Napi::Object LinkedSpec(Napi::Env env, const rbd_linked_image_spec_t& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("poolId", NumI(env, s.pool_id));
  o.Set("pool", Napi::String::New(env, s.pool_name ? s.pool_name : ""));
  o.Set("namespace", Napi::String::New(env, s.pool_namespace ? s.pool_namespace : ""));
  o.Set("imageId", Napi::String::New(env, s.image_id ? s.image_id : ""));
  o.Set("image", Napi::String::New(env, s.image_name ? s.image_name : ""));
  o.Set("trash", Napi::Boolean::New(env, s.trash));
  return o;
}

Napi::Value LinkedSpecs(Napi::Env env, const LinkedSpecList& s) {
  Napi::Array a = Napi::Array::New(env, s.n);
  for (size_t i = 0; i < s.n; ++i) a.Set(i, LinkedSpec(env, s.v[i]));
  return a;
}

}  // namespace

// clone(parentIoCtx, parentName, parentSnap, destName, opts)
// Implements rbd_clone3().
Napi::Value NIoCtx::Clone(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "parent ioctx required");
  NIoCtx* parent = NIoCtx::Unwrap(info[0].As<Napi::Object>());
  if (!parent) throw Napi::TypeError::New(env, "parent ioctx must be an IoCtx");
  std::string pname = ArgString(info, 1, "parent image");
  std::string psnap = ArgString(info, 2, "parent snapshot");
  std::string cname = ArgString(info, 3, "clone name");
  ImageOpts o = ImageOpts::From(env, info.Length() > 4 ? info[4] : env.Undefined());
  auto pres = parent->res();
  auto res = res_;
  Job* job = new Job(env, "ioctx.clone", res_->Target(cname));
  if (!job->Hold(res_) || !job->Hold(pres)) return job->RejectClosed(env);
  return job->Submit([res, pres, pname, psnap, cname, o] {
    OptsGuard g;
    int rc = o.Apply(g.o);
    if (rc < 0) return rc;
    return rbd_clone3(pres->io, pname.c_str(), psnap.c_str(), res->io, cname.c_str(), g.o);
  });
}

// Implements rbd_get_parent().
Napi::Value NImage::Parent(const Napi::CallbackInfo& info) {
  struct S {
    rbd_linked_image_spec_t spec{};
    rbd_snap_spec_t snap{};
    bool none = false;
    ~S() {
      if (!none) {
        rbd_linked_image_spec_cleanup(&spec);
        rbd_snap_spec_cleanup(&snap);
      }
    }
  };
  auto s = std::make_shared<S>();
  s->none = true;
  auto res = res_;
  return Simple(
      info, "image.parent",
      [s, res] {
        int rc = rbd_get_parent(res->image, &s->spec, &s->snap);
        if (rc == -ENOENT) return 0;  // no parent
        if (rc >= 0) s->none = false;
        return rc;
      },
      [s](Napi::Env env) -> Napi::Value {
        if (s->none) return env.Null();
        Napi::Object o = LinkedSpec(env, s->spec);
        o.Set("snap", Napi::String::New(env, s->snap.name ? s->snap.name : ""));
        o.Set("snapId", Num(env, s->snap.id));
        return o;
      });
}

// Implements rbd_list_children3().
Napi::Value NImage::Children(const Napi::CallbackInfo& info) {
  auto s = std::make_shared<LinkedSpecList>();
  auto res = res_;
  return Simple(
      info, "image.children", [s, res] { return s->Fill(res->image); },
      [s](Napi::Env env) { return LinkedSpecs(env, *s); });
}

// snapChildren(snapId): clones of the snapshot with this id (any namespace, e.g. a trash
// snapshot, which has no usable name), through a second read-only handle set at that id.
// Implements rbd_list_children3() on a read-only handle set with rbd_snap_set_by_id() (closed with CloseImage()).
Napi::Value NImage::SnapChildren(const Napi::CallbackInfo& info) {
  uint64_t snap_id = ArgU64(info, 0, "snapshot id");
  auto s = std::make_shared<LinkedSpecList>();
  auto res = res_;
  return Simple(
      info, "image.snapChildren",
      [s, res, snap_id] {
        char id[128] = {0};
        int rc = rbd_get_id(res->image, id, sizeof(id));
        if (rc < 0) return rc;
        rbd_image_t h = nullptr;
        rc = rbd_open_by_id_read_only(res->ioctx->io, id, &h, nullptr);
        if (rc < 0) return rc;
        rc = rbd_snap_set_by_id(h, snap_id);
        if (rc >= 0) rc = s->Fill(h);
        CloseImage(res->ioctx->io, h);
        return rc < 0 ? rc : 0;
      },
      [s](Napi::Env env) { return LinkedSpecs(env, *s); },
      Napi::Value(), res_->Target() + "@" + std::to_string(snap_id));
}

// Implements rbd_flatten() and rbd_flatten_with_progress().
Napi::Value NImage::Flatten(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Job* job = NewJob(env, "image.flatten");
  if (!job->Hold(res_)) return job->RejectClosed(env);
  job->WithProgress(env, ArgFnOrNull(info, 0));
  auto res = res_;
  Progress* p = job->progress();
  return job->Submit([res, p] {
    return p ? rbd_flatten_with_progress(res->image, &Progress::Callback, p) : rbd_flatten(res->image);
  });
}

}  // namespace ephemera_rbd
