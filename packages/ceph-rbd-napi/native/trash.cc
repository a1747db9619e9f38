// NativeIoCtx: the pool's RBD trash (move, list, restore, remove).
#include <napi.h>
#include <rbd/librbd.h>

#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "ioctx.h"
#include "lists.h"

namespace ephemera_rbd {

// Implements rbd_trash_move().
Napi::Value NIoCtx::TrashMove(const Napi::CallbackInfo& info) {
  std::string name = ArgString(info, 0, "image name");
  uint64_t delay = info.Length() > 1 ? ArgU64(info, 1, "delay") : 0;
  auto res = res_;
  return Simple(
      info, "ioctx.trashMove", res_->Target(name), [res, name, delay] { return rbd_trash_move(res->io, name.c_str(), delay); },
      nullptr);
}

// Implements rbd_trash_list().
Napi::Value NIoCtx::TrashList(const Napi::CallbackInfo& info) {
  struct T {
    std::string id, name;
    int source;
    int64_t deleted, deferred;
  };
  auto out = std::make_shared<std::vector<T>>();
  auto res = res_;
  return Simple(
      info, "ioctx.trashList", res_->Target(),
      [out, res] {
        return CopyList<rbd_trash_image_info_t>(
            32, [&](rbd_trash_image_info_t* v, size_t* m) { return rbd_trash_list(res->io, v, m); },
            [&](const rbd_trash_image_info_t& t) {
              out->push_back({t.id ? t.id : "", t.name ? t.name : "", static_cast<int>(t.source),
                              static_cast<int64_t>(t.deletion_time), static_cast<int64_t>(t.deferment_end_time)});
            },
            rbd_trash_list_cleanup);
      },
      [out](Napi::Env env) -> Napi::Value {
        static const char* sources[] = {"user", "mirroring", "migration", "removing", "user_parent"};
        return ToArray(env, *out, [](Napi::Env e, const T& t) {
          Napi::Object o = Napi::Object::New(e);
          o.Set("id", Napi::String::New(e, t.id));
          o.Set("name", Napi::String::New(e, t.name));
          o.Set("source", Napi::String::New(e, t.source >= 0 && t.source <= 4 ? sources[t.source] : "unknown"));
          o.Set("deletedAtMs", Napi::Number::New(e, t.deleted * 1000.0));
          o.Set("deferredUntilMs", Napi::Number::New(e, t.deferred * 1000.0));
          return o;
        });
      });
}

// Implements rbd_trash_restore().
Napi::Value NIoCtx::TrashRestore(const Napi::CallbackInfo& info) {
  std::string id = ArgString(info, 0, "trash id");
  std::string name = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
  auto res = res_;
  return Simple(
      info, "ioctx.trashRestore", res_->Target(id), [res, id, name] { return rbd_trash_restore(res->io, id.c_str(), name.c_str()); },
      nullptr);
}

// Implements rbd_trash_remove() and rbd_trash_remove_with_progress().
Napi::Value NIoCtx::TrashRemove(const Napi::CallbackInfo& info) {
  std::string id = ArgString(info, 0, "trash id");
  bool force = ArgBool(info, 1);
  Napi::Env env = info.Env();
  Job* job = new Job(env, "ioctx.trashRemove", res_->Target(id));
  if (!job->Hold(res_)) return job->RejectClosed(env);
  job->WithProgress(env, ArgFnOrNull(info, 2));
  auto res = res_;
  Progress* p = job->progress();
  return job->Submit([res, id, force, p] {
    return p ? rbd_trash_remove_with_progress(res->io, id.c_str(), force, &Progress::Callback, p)
             : rbd_trash_remove(res->io, id.c_str(), force);
  });
}

}  // namespace ephemera_rbd
