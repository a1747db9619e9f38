// NativeImage: who holds the image (its watchers and its lockers).
#include <napi.h>
#include <rbd/librbd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "image.h"
#include "lists.h"

namespace ephemera_rbd {

// Implements rbd_watchers_list().
Napi::Value NImage::Watchers(const Napi::CallbackInfo& info) {
  struct W {
    std::string addr;
    int64_t id;
    uint64_t cookie;
  };
  auto out = std::make_shared<std::vector<W>>();
  auto res = res_;
  return Simple(
      info, "image.watchers",
      [out, res] {
        return CopyList<rbd_image_watcher_t>(
            8, [&](rbd_image_watcher_t* v, size_t* m) { return rbd_watchers_list(res->image, v, m); },
            [&](const rbd_image_watcher_t& w) { out->push_back({w.addr ? w.addr : "", w.id, w.cookie}); },
            rbd_watchers_list_cleanup);
      },
      [out](Napi::Env env) -> Napi::Value {
        return ToArray(env, *out, [](Napi::Env e, const W& w) {
          Napi::Object o = Napi::Object::New(e);
          o.Set("address", Napi::String::New(e, w.addr));
          o.Set("id", NumI(e, w.id));
          o.Set("cookie", Num(e, w.cookie));
          return o;
        });
      });
}

// lockers() -> { exclusive, tag, lockers: [{ client, cookie, address }] } (rbd_list_lockers:
// the header's lock, which is also the exclusive lock of the exclusive-lock feature).
// Implements rbd_list_lockers().
Napi::Value NImage::Lockers(const Napi::CallbackInfo& info) {
  auto out = std::make_shared<LockerList>();
  auto res = res_;
  return Simple(
      info, "image.lockers",
      [out, res] {
        return ListLockersInto(*out, [&](auto... args) { return rbd_list_lockers(res->image, args...); });
      },
      [out](Napi::Env env) -> Napi::Value { return LockersToJs(env, *out); });
}

}  // namespace ephemera_rbd
