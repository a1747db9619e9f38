// NativeImage: image metadata (rbd_metadata_*), the key/value pairs librbd keeps in the image
// header's omap. They belong to the image, not to a snapshot: an image opened at a snapshot reads
// the head's pairs, and a read-only or snapshot open refuses changes with EROFS.
#include <napi.h>
#include <rbd/librbd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "args.h"
#include "image.h"

namespace ephemera_rbd {

namespace {

// Keys and values are C strings for librbd: an embedded NUL would silently cut them.
std::string ArgCString(const Napi::CallbackInfo& info, size_t i, const char* what) {
  std::string s = ArgString(info, i, what);
  if (s.find('\0') != std::string::npos) throw Napi::RangeError::New(info.Env(), std::string(what) + " must not contain NUL");
  return s;
}

// Pairs per rbd_metadata_list call: bounds the buffers of one call, whatever the image holds.
constexpr uint64_t kListPage = 64;

// Splits librbd's NUL-separated list buffer (`len` bytes used) into its strings.
std::vector<std::string> SplitNul(const std::vector<char>& buf, size_t len) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < len) {
    const char* s = buf.data() + pos;
    size_t n = strnlen(s, len - pos);
    out.emplace_back(s, n);
    pos += n + 1;
  }
  return out;
}

}  // namespace

// metadataGet(key): the value, or undefined when the key is not set.
// Implements rbd_metadata_get().
Napi::Value NImage::MetadataGet(const Napi::CallbackInfo& info) {
  std::string key = ArgCString(info, 0, "key");
  struct R {
    bool found = false;
    std::string value;
  };
  auto r = std::make_shared<R>();
  auto res = res_;
  return Simple(
      info, "image.metadataGet",
      [res, key, r] {
        std::vector<char> buf;
        size_t len = 4096;
        int rc = -ERANGE;
        // On ERANGE librbd reports the size it needs (value + NUL); the value may grow meanwhile.
        for (int tries = 0; tries < 16 && rc == -ERANGE; ++tries) {
          buf.assign(len, 0);
          size_t want = len;
          rc = rbd_metadata_get(res->image, key.c_str(), buf.data(), &want);
          if (rc == -ERANGE) len = std::max(want, len * 2);
        }
        if (rc == -ENOENT) return 0;  // not set: an answer, not a failure
        if (rc < 0) return rc;
        r->found = true;
        r->value.assign(buf.data(), strnlen(buf.data(), buf.size()));
        return 0;
      },
      [r](Napi::Env env) -> Napi::Value {
        return r->found ? Napi::String::New(env, r->value).As<Napi::Value>() : env.Undefined();
      });
}

// metadataSet(key, value)
// Implements rbd_metadata_set().
Napi::Value NImage::MetadataSet(const Napi::CallbackInfo& info) {
  std::string key = ArgCString(info, 0, "key");
  std::string value = ArgCString(info, 1, "value");
  auto res = res_;
  return Simple(info, "image.metadataSet",
                [res, key, value] { return rbd_metadata_set(res->image, key.c_str(), value.c_str()); }, nullptr);
}

// metadataRemove(key): true when removed, false when the key was not set.
// Implements rbd_metadata_remove().
Napi::Value NImage::MetadataRemove(const Napi::CallbackInfo& info) {
  std::string key = ArgCString(info, 0, "key");
  auto removed = std::make_shared<bool>(false);
  auto res = res_;
  return Simple(
      info, "image.metadataRemove",
      [res, key, removed] {
        int rc = rbd_metadata_remove(res->image, key.c_str());
        if (rc == -ENOENT) return 0;
        if (rc < 0) return rc;
        *removed = true;
        return 0;
      },
      [removed](Napi::Env env) -> Napi::Value { return Napi::Boolean::New(env, *removed); });
}

// metadataList(start, max): the [key, value] pairs after `start` (exclusive; "" = from the first
// key) in key order, at most `max` of them (0 = all), fetched page by page in one worker job.
// Implements rbd_metadata_list().
Napi::Value NImage::MetadataList(const Napi::CallbackInfo& info) {
  std::string start = ArgCString(info, 0, "start");
  uint64_t max = ArgU64(info, 1, "max");
  using Pairs = std::vector<std::pair<std::string, std::string>>;
  auto out = std::make_shared<Pairs>();
  auto res = res_;
  return Simple(
      info, "image.metadataList",
      [res, start, max, out] {
        std::vector<char> keys(4096), vals(16384);
        std::string after = start;
        for (;;) {
          uint64_t want = max == 0 ? kListPage : std::min<uint64_t>(kListPage, max - out->size());
          size_t klen = 0, vlen = 0;
          int rc = -ERANGE;
          // On ERANGE librbd reports the total sizes this page needs.
          for (int tries = 0; tries < 16 && rc == -ERANGE; ++tries) {
            klen = keys.size();
            vlen = vals.size();
            rc = rbd_metadata_list(res->image, after.c_str(), want, keys.data(), &klen, vals.data(), &vlen);
            if (rc == -ERANGE) {
              keys.resize(std::max(klen, keys.size() * 2));
              vals.resize(std::max(vlen, vals.size() * 2));
            }
          }
          if (rc < 0) return rc;
          std::vector<std::string> ks = SplitNul(keys, klen), vs = SplitNul(vals, vlen);
          // A value holding a NUL (written through another API) would misalign the pairs.
          if (ks.size() != vs.size()) return -EBADMSG;
          for (size_t i = 0; i < ks.size(); ++i) out->emplace_back(std::move(ks[i]), std::move(vs[i]));
          if (ks.size() < want || (max != 0 && out->size() >= max)) return 0;
          after = out->back().first;
        }
      },
      [out](Napi::Env env) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, out->size());
        for (size_t i = 0; i < out->size(); ++i) {
          Napi::Array pair = Napi::Array::New(env, 2);
          pair.Set(uint32_t{0}, Napi::String::New(env, (*out)[i].first));
          pair.Set(uint32_t{1}, Napi::String::New(env, (*out)[i].second));
          a.Set(i, pair);
        }
        return a;
      });
}

}  // namespace ephemera_rbd
