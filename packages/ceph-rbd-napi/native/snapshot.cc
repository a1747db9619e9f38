// NativeImage: snapshots (create, remove, protect, rollback, list).
#include <napi.h>
#include <rbd/librbd.h>

#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "image.h"

namespace ephemera_rbd {

Napi::Value NImage::SnapOp(const Napi::CallbackInfo& info, const char* op, int (*fn)(rbd_image_t, const char*)) {
  std::string name = ArgString(info, 0, "snapshot name");
  auto res = res_;
  return Simple(
      info, op, [res, name, fn] { return fn(res->image, name.c_str()); }, nullptr, Napi::Value(),
      res_->Target() + "@" + name);
}

// Implements rbd_snap_create().
Napi::Value NImage::SnapCreate(const Napi::CallbackInfo& info) { return SnapOp(info, "image.snapCreate", rbd_snap_create); }

// Implements rbd_snap_remove().
Napi::Value NImage::SnapRemove(const Napi::CallbackInfo& info) { return SnapOp(info, "image.snapRemove", rbd_snap_remove); }

// Implements rbd_snap_protect().
Napi::Value NImage::SnapProtect(const Napi::CallbackInfo& info) { return SnapOp(info, "image.snapProtect", rbd_snap_protect); }

// Implements rbd_snap_unprotect().
Napi::Value NImage::SnapUnprotect(const Napi::CallbackInfo& info) {
  return SnapOp(info, "image.snapUnprotect", rbd_snap_unprotect);
}

// Implements rbd_snap_is_protected().
Napi::Value NImage::SnapIsProtected(const Napi::CallbackInfo& info) {
  std::string name = ArgString(info, 0, "snapshot name");
  auto v = std::make_shared<int>(0);
  auto res = res_;
  return Simple(
      info, "image.snapIsProtected", [res, name, v] { return rbd_snap_is_protected(res->image, name.c_str(), v.get()); },
      [v](Napi::Env env) -> Napi::Value { return Napi::Boolean::New(env, *v != 0); }, Napi::Value(),
      res_->Target() + "@" + name);
}

// Implements rbd_snap_rollback() and rbd_snap_rollback_with_progress().
Napi::Value NImage::SnapRollback(const Napi::CallbackInfo& info) {
  std::string name = ArgString(info, 0, "snapshot name");
  Napi::Env env = info.Env();
  Job* job = NewJob(env, "image.snapRollback", res_->Target() + "@" + name);
  if (!job->Hold(res_)) return job->RejectClosed(env);
  job->WithProgress(env, ArgFnOrNull(info, 1));
  auto res = res_;
  Progress* p = job->progress();
  return job->Submit([res, name, p] {
    return p ? rbd_snap_rollback_with_progress(res->image, name.c_str(), &Progress::Callback, p)
             : rbd_snap_rollback(res->image, name.c_str());
  });
}

// snapRemoveById(snapId): rbd_snap_remove_by_id, the only way to remove a snapshot of another
// namespace (a trash snapshot left without children); EBUSY while it has children.
// Implements rbd_snap_remove_by_id().
Napi::Value NImage::SnapRemoveById(const Napi::CallbackInfo& info) {
  uint64_t snap_id = ArgU64(info, 0, "snapshot id");
  auto res = res_;
  return Simple(
      info, "image.snapRemoveById", [res, snap_id] { return rbd_snap_remove_by_id(res->image, snap_id); }, nullptr,
      Napi::Value(), res_->Target() + "@" + std::to_string(snap_id));
}

// Implements rbd_snap_list(), with rbd_snap_get_namespace_type() and rbd_snap_get_trash_namespace().
Napi::Value NImage::SnapList(const Napi::CallbackInfo& info) {
  struct Snap {
    uint64_t id, size;
    std::string name;
    bool is_protected;
    int ns;
    std::string original;
  };
  auto out = std::make_shared<std::vector<Snap>>();
  auto res = res_;
  return Simple(
      info, "image.snapList",
      [out, res] {
        int max = 16;
        std::vector<rbd_snap_info_t> v;
        int rc;
        for (int tries = 0;; ++tries) {
          v.assign(max, rbd_snap_info_t{});
          rc = rbd_snap_list(res->image, v.data(), &max);
          if (rc != -ERANGE || tries > 8) break;
        }
        if (rc < 0) return rc;
        for (int i = 0; i < rc; ++i) {
          int prot = 0;
          rbd_snap_namespace_type_t ns = RBD_SNAP_NAMESPACE_TYPE_USER;
          rbd_snap_get_namespace_type(res->image, v[i].id, &ns);
          if (ns == RBD_SNAP_NAMESPACE_TYPE_USER) rbd_snap_is_protected(res->image, v[i].name, &prot);
          char original[512] = {0};
          if (ns == RBD_SNAP_NAMESPACE_TYPE_TRASH &&
              rbd_snap_get_trash_namespace(res->image, v[i].id, original, sizeof(original)) < 0)
            original[0] = 0;
          out->push_back({v[i].id, v[i].size, v[i].name ? v[i].name : "", prot != 0, static_cast<int>(ns), original});
        }
        rbd_snap_list_end(v.data());
        return 0;
      },
      [out](Napi::Env env) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, out->size());
        for (size_t i = 0; i < out->size(); ++i) {
          Napi::Object o = Napi::Object::New(env);
          o.Set("id", Num(env, (*out)[i].id));
          o.Set("size", Num(env, (*out)[i].size));
          o.Set("name", Napi::String::New(env, (*out)[i].name));
          o.Set("protected", Napi::Boolean::New(env, (*out)[i].is_protected));
          static const char* names[] = {"user", "group", "trash", "mirror"};
          int ns = (*out)[i].ns;
          o.Set("namespace", Napi::String::New(env, ns >= 0 && ns <= 3 ? names[ns] : "unknown"));
          if (ns == RBD_SNAP_NAMESPACE_TYPE_TRASH) o.Set("originalName", Napi::String::New(env, (*out)[i].original));
          a.Set(i, o);
        }
        return a;
      });
}

}  // namespace ephemera_rbd
