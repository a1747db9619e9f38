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
        size_t max = 8;
        std::vector<rbd_image_watcher_t> v;
        int rc = GrowLoop(max, [&] {
          v.assign(max, rbd_image_watcher_t{});
          size_t m = max;
          int r = rbd_watchers_list(res->image, v.data(), &m);
          if (r == -ERANGE) max = m > max ? m : max * 2;
          else if (r >= 0) {
            for (size_t i = 0; i < m; ++i) out->push_back({v[i].addr ? v[i].addr : "", v[i].id, v[i].cookie});
            rbd_watchers_list_cleanup(v.data(), m);
          }
          return r;
        });
        return rc < 0 ? rc : 0;
      },
      [out](Napi::Env env) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, out->size());
        for (size_t i = 0; i < out->size(); ++i) {
          Napi::Object o = Napi::Object::New(env);
          o.Set("address", Napi::String::New(env, (*out)[i].addr));
          o.Set("id", NumI(env, (*out)[i].id));
          o.Set("cookie", Num(env, (*out)[i].cookie));
          a.Set(i, o);
        }
        return a;
      });
}

// lockers() -> { exclusive, tag, lockers: [{ client, cookie, address }] } (rbd_list_lockers:
// the header's lock, which is also the exclusive lock of the exclusive-lock feature).
// Implements rbd_list_lockers().
Napi::Value NImage::Lockers(const Napi::CallbackInfo& info) {
  struct L {
    std::string client, cookie, addr;
  };
  struct Out {
    int exclusive = 0;
    std::string tag;
    std::vector<L> lockers;
  };
  auto out = std::make_shared<Out>();
  auto res = res_;
  return Simple(
      info, "image.lockers",
      [out, res] {
        size_t tag_len = 256, clients_len = 1024, cookies_len = 1024, addrs_len = 1024;
        for (int attempt = 0; attempt < 8; ++attempt) {
          std::vector<char> tag(tag_len), clients(clients_len), cookies(cookies_len), addrs(addrs_len);
          size_t tl = tag_len, cl = clients_len, kl = cookies_len, al = addrs_len;
          ssize_t n = rbd_list_lockers(res->image, &out->exclusive, tag.data(), &tl, clients.data(), &cl, cookies.data(), &kl,
                                       addrs.data(), &al);
          if (n == -ERANGE) {
            tag_len = std::max(tl, tag_len * 2);
            clients_len = std::max(cl, clients_len * 2);
            cookies_len = std::max(kl, cookies_len * 2);
            addrs_len = std::max(al, addrs_len * 2);
            continue;
          }
          if (n < 0) return static_cast<int>(n);
          out->tag.assign(tag.data(), strnlen(tag.data(), tl));
          // Each list holds `n` NUL-terminated strings.
          const char* c = clients.data();
          const char* k = cookies.data();
          const char* a = addrs.data();
          for (ssize_t i = 0; i < n; ++i) {
            out->lockers.push_back({c, k, a});
            c += strlen(c) + 1;
            k += strlen(k) + 1;
            a += strlen(a) + 1;
          }
          return 0;
        }
        return -ERANGE;
      },
      [out](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("exclusive", Napi::Boolean::New(env, out->exclusive != 0));
        o.Set("tag", Napi::String::New(env, out->tag));
        Napi::Array a = Napi::Array::New(env, out->lockers.size());
        for (size_t i = 0; i < out->lockers.size(); ++i) {
          Napi::Object l = Napi::Object::New(env);
          l.Set("client", Napi::String::New(env, out->lockers[i].client));
          l.Set("cookie", Napi::String::New(env, out->lockers[i].cookie));
          l.Set("address", Napi::String::New(env, out->lockers[i].addr));
          a.Set(i, l);
        }
        o.Set("lockers", a);
        return o;
      });
}

}  // namespace ephemera_rbd
