// NativeIoCtx: the class, and the images of its pool (list, create, remove, rename, open).
#include <napi.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

#include <cerrno>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "args.h"
#include "instance.h"
#include "ioctx.h"
#include "options.h"

namespace ephemera_rbd {

Napi::Function NIoCtx::Define(Napi::Env env) {
  return DefineClass(env, "NativeIoCtx",
                     {
                         InstanceMethod<&NIoCtx::Close>("close"),
                         InstanceMethod<&NIoCtx::IsClosed>("isClosed"),
                         InstanceMethod<&NIoCtx::List>("list"),
                         InstanceMethod<&NIoCtx::Create>("create"),
                         InstanceMethod<&NIoCtx::Clone>("clone"),
                         InstanceMethod<&NIoCtx::Remove>("remove"),
                         InstanceMethod<&NIoCtx::Rename>("rename"),
                         InstanceMethod<&NIoCtx::TrashMove>("trashMove"),
                         InstanceMethod<&NIoCtx::TrashList>("trashList"),
                         InstanceMethod<&NIoCtx::TrashRestore>("trashRestore"),
                         InstanceMethod<&NIoCtx::TrashRemove>("trashRemove"),
                         InstanceMethod<&NIoCtx::Open>("open"),
                     });
}

// Binding only: whether close() was called on this ioctx (or its cluster).
Napi::Value NIoCtx::IsClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), res_->IsClosed()); }

// Implements rados_ioctx_destroy(), after its images are closed and in-flight operations done.
Napi::Value NIoCtx::Close(const Napi::CallbackInfo& info) {
  res_->MarkClosedTree();
  auto res = res_;
  Job* job = new Job(info.Env(), "ioctx.close", res_->Target());
  return job->Submit([res] { return res->CloseTree(); });
}

// Implements rbd_list2().
Napi::Value NIoCtx::List(const Napi::CallbackInfo& info) {
  auto out = std::make_shared<std::vector<std::pair<std::string, std::string>>>();
  auto res = res_;
  return Simple(
      info, "ioctx.list", res_->Target(),
      [out, res] {
        size_t max = 64;
        std::vector<rbd_image_spec_t> v;
        int rc = GrowLoop(max, [&] {
          v.assign(max, rbd_image_spec_t{});
          size_t m = max;
          int r = rbd_list2(res->io, v.data(), &m);
          if (r == -ERANGE) max = m > max ? m : max * 2;
          else if (r >= 0) {
            for (size_t i = 0; i < m; ++i) out->emplace_back(v[i].name ? v[i].name : "", v[i].id ? v[i].id : "");
            rbd_image_spec_list_cleanup(v.data(), m);
          }
          return r;
        });
        return rc < 0 ? rc : 0;
      },
      [out](Napi::Env env) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, out->size());
        for (size_t i = 0; i < out->size(); ++i) {
          Napi::Object o = Napi::Object::New(env);
          o.Set("name", Napi::String::New(env, (*out)[i].first));
          o.Set("id", Napi::String::New(env, (*out)[i].second));
          a.Set(i, o);
        }
        return a;
      });
}

// create(name, size, opts)
// Implements rbd_create4().
Napi::Value NIoCtx::Create(const Napi::CallbackInfo& info) {
  std::string name = ArgString(info, 0, "image name");
  uint64_t size = ArgU64(info, 1, "size");
  ImageOpts o = ImageOpts::From(info.Env(), info.Length() > 2 ? info[2] : info.Env().Undefined());
  auto res = res_;
  return Simple(
      info, "ioctx.create", res_->Target(name),
      [res, name, size, o] {
        OptsGuard g;
        int rc = o.Apply(g.o);
        if (rc < 0) return rc;
        return rbd_create4(res->io, name.c_str(), size, g.o);
      },
      nullptr);
}

// Implements rbd_remove() and rbd_remove_with_progress().
Napi::Value NIoCtx::Remove(const Napi::CallbackInfo& info) {
  std::string name = ArgString(info, 0, "image name");
  Napi::Env env = info.Env();
  Job* job = new Job(env, "ioctx.remove", res_->Target(name));
  if (!job->Hold(res_)) return job->RejectClosed(env);
  job->WithProgress(env, ArgFnOrNull(info, 1));
  auto res = res_;
  Progress* p = job->progress();
  return job->Submit([res, name, p] {
    return p ? rbd_remove_with_progress(res->io, name.c_str(), &Progress::Callback, p)
             : rbd_remove(res->io, name.c_str());
  });
}

// Implements rbd_rename().
Napi::Value NIoCtx::Rename(const Napi::CallbackInfo& info) {
  std::string from = ArgString(info, 0, "source name");
  std::string to = ArgString(info, 1, "destination name");
  auto res = res_;
  return Simple(
      info, "ioctx.rename", res_->Target(from), [res, from, to] { return rbd_rename(res->io, from.c_str(), to.c_str()); },
      nullptr);
}

// open(name, snapshot|null, readOnly)
// Implements rbd_open() and rbd_open_read_only().
Napi::Value NIoCtx::Open(const Napi::CallbackInfo& info) {
  std::string name = ArgString(info, 0, "image name");
  std::optional<std::string> snap = ArgOptString(info, 1);
  bool read_only = ArgBool(info, 2);
  Napi::Env env = info.Env();
  auto res = res_;
  auto out = std::make_shared<std::shared_ptr<ImageRes>>();
  Job* job = new Job(env, "ioctx.open", res_->Target(name) + (snap ? "@" + *snap : ""));
  if (!job->Hold(res_)) return job->RejectClosed(env);
  return job->Submit(
      [res, name, snap, read_only, out] {
        rbd_image_t im = nullptr;
        const char* s = snap ? snap->c_str() : nullptr;
        int rc = read_only ? rbd_open_read_only(res->io, name.c_str(), &im, s) : rbd_open(res->io, name.c_str(), &im, s);
        if (rc < 0) return rc;
        auto img = std::make_shared<ImageRes>(res, im, name, snap ? *snap : "");
        if (!res->AddChild(img)) {  // the ioctx was closed meanwhile
          img->CloseTree();
          return -ESHUTDOWN;
        }
        *out = std::move(img);
        return 0;
      },
      [out](Napi::Env env) -> Napi::Value {
        Instance* inst = GetInstance(env);
        auto* sp = new std::shared_ptr<ImageRes>(std::move(*out));
        Napi::Object obj = inst->image_ctor.New({Napi::External<std::shared_ptr<ImageRes>>::New(env, sp)});
        delete sp;
        return obj;
      });
}

}  // namespace ephemera_rbd
