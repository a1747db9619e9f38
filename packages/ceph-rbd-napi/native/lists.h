// Copying librados/librbd list results (caller-sized arrays and NUL-separated string buffers that
// answer -ERANGE when too small) into C++ vectors, and those vectors into JS arrays.
#pragma once

#include <napi.h>
#include <sys/types.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include "args.h"

namespace ephemera_rbd {

// Calls `list(entries, &count)` (an rbd_*_list that fills an array of T), growing the array while
// it answers -ERANGE; passes each entry to `copy`, then frees them with `cleanup(entries, count)`.
// 0 or a negative errno.
template <typename T, typename List, typename Copy, typename Cleanup>
int CopyList(size_t max, List list, Copy copy, Cleanup cleanup) {
  std::vector<T> v;
  int rc = GrowLoop(max, [&] {
    v.assign(max, T{});
    size_t m = max;
    int r = list(v.data(), &m);
    if (r == -ERANGE) max = m > max ? m : max * 2;
    else if (r >= 0) {
      for (size_t i = 0; i < m; ++i) copy(v[i]);
      cleanup(v.data(), m);
    }
    return r;
  });
  return rc < 0 ? rc : 0;
}

// A JS array of `items`, each made by `to(env, item)`.
template <typename T, typename To>
Napi::Array ToArray(Napi::Env env, const std::vector<T>& items, To to) {
  Napi::Array a = Napi::Array::New(env, items.size());
  for (size_t i = 0; i < items.size(); ++i) a.Set(i, to(env, items[i]));
  return a;
}

// Splits a NUL-separated list buffer (`len` bytes used) into `n` strings.
inline std::vector<std::string> SplitN(const std::vector<char>& buf, size_t len, size_t n) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (out.size() < n && pos < len) {
    size_t k = strnlen(buf.data() + pos, len - pos);
    out.emplace_back(buf.data() + pos, k);
    pos += k + 1;
  }
  while (out.size() < n) out.emplace_back();
  return out;
}

// The holders of a lock, as rados_list_lockers and rbd_list_lockers report them.
struct LockerList {
  struct Locker {
    std::string client, cookie, address;
  };
  int exclusive = 0;
  std::string tag;
  std::vector<Locker> lockers;
};

// Calls `list(&exclusive, tag, &tag_len, clients, &clients_len, cookies, &cookies_len, addrs,
// &addrs_len)` (the *_list_lockers signature), growing the four buffers while it answers -ERANGE,
// and fills `out`. 0 or the negative errno `list` returned.
template <typename List>
int ListLockersInto(LockerList& out, List list) {
  size_t tl = 256, cl = 1024, kl = 1024, al = 1024;
  for (int tries = 0; tries < 16; ++tries) {
    std::vector<char> tag(tl), clients(cl), cookies(kl), addrs(al);
    size_t t = tl, c = cl, k = kl, a = al;
    ssize_t n = list(&out.exclusive, tag.data(), &t, clients.data(), &c, cookies.data(), &k, addrs.data(), &a);
    if (n == -ERANGE) {
      // The library reports the sizes it needs; the list may grow meanwhile.
      tl = std::max(t, tl * 2);
      cl = std::max(c, cl * 2);
      kl = std::max(k, kl * 2);
      al = std::max(a, al * 2);
      continue;
    }
    if (n < 0) return static_cast<int>(n);
    size_t count = static_cast<size_t>(n);
    out.tag.assign(tag.data(), strnlen(tag.data(), t));
    auto cs = SplitN(clients, c, count), ks = SplitN(cookies, k, count), as = SplitN(addrs, a, count);
    for (size_t i = 0; i < count; ++i) out.lockers.push_back({cs[i], ks[i], as[i]});
    return 0;
  }
  return -ERANGE;
}

// { exclusive, tag, lockers: [{ client, cookie, address }] }
inline Napi::Object LockersToJs(Napi::Env env, const LockerList& l) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("exclusive", Napi::Boolean::New(env, l.exclusive != 0));
  o.Set("tag", Napi::String::New(env, l.tag));
  o.Set("lockers", ToArray(env, l.lockers, [](Napi::Env e, const LockerList::Locker& k) {
          Napi::Object x = Napi::Object::New(e);
          x.Set("client", Napi::String::New(e, k.client));
          x.Set("cookie", Napi::String::New(e, k.cookie));
          x.Set("address", Napi::String::New(e, k.address));
          return x;
        }));
  return o;
}

}  // namespace ephemera_rbd
