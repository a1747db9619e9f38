// NativeIoCtx: advisory RADOS object locks (cls_lock) with a lease: take, renew, release, list and
// break. A lock with a duration expires by itself, so a holder that dies frees it after its lease;
// the object is created by the first lock if it does not exist.
#include <napi.h>
#include <rados/librados.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "ioctx.h"
#include "lists.h"

namespace ephemera_rbd {

namespace {

// Names, cookies and descriptions are C strings for librados: an embedded NUL would cut them.
std::string ArgCStr(const Napi::CallbackInfo& info, size_t i, const char* what) {
  std::string s = ArgString(info, i, what);
  if (s.find('\0') != std::string::npos) throw Napi::RangeError::New(info.Env(), std::string(what) + " must not contain NUL");
  return s;
}

}  // namespace

// lockExclusive(oid, name, cookie, description, durationMs, flags): durationMs 0 = no expiry;
// flags: 1 = may renew (LIBRADOS_LOCK_FLAG_MAY_RENEW), 2 = must renew (..._MUST_RENEW).
// Implements rados_lock_exclusive().
Napi::Value NIoCtx::LockExclusive(const Napi::CallbackInfo& info) {
  std::string oid = ArgCStr(info, 0, "object name");
  std::string name = ArgCStr(info, 1, "lock name");
  std::string cookie = ArgCStr(info, 2, "cookie");
  std::string desc = ArgCStr(info, 3, "description");
  uint64_t duration_ms = ArgU64(info, 4, "durationMs");
  uint64_t flags = ArgU64(info, 5, "flags");
  if (flags > 3) throw Napi::RangeError::New(info.Env(), "flags out of range");
  auto res = res_;
  return Simple(
      info, "ioctx.lockExclusive", res_->Target(oid),
      [res, oid, name, cookie, desc, duration_ms, flags] {
        struct timeval tv;
        tv.tv_sec = static_cast<time_t>(duration_ms / 1000);
        tv.tv_usec = static_cast<suseconds_t>((duration_ms % 1000) * 1000);
        return rados_lock_exclusive(res->io, oid.c_str(), name.c_str(), cookie.c_str(), desc.c_str(),
                                    duration_ms ? &tv : nullptr, static_cast<uint8_t>(flags));
      },
      nullptr);
}

// unlock(oid, name, cookie): true when released, false when this client held no such lock.
// Implements rados_unlock().
Napi::Value NIoCtx::Unlock(const Napi::CallbackInfo& info) {
  std::string oid = ArgCStr(info, 0, "object name");
  std::string name = ArgCStr(info, 1, "lock name");
  std::string cookie = ArgCStr(info, 2, "cookie");
  auto released = std::make_shared<bool>(false);
  auto res = res_;
  return Simple(
      info, "ioctx.unlock", res_->Target(oid),
      [res, oid, name, cookie, released] {
        int rc = rados_unlock(res->io, oid.c_str(), name.c_str(), cookie.c_str());
        if (rc == -ENOENT) return 0;  // not held (expired, broken, or never taken): an answer
        if (rc < 0) return rc;
        *released = true;
        return 0;
      },
      [released](Napi::Env env) -> Napi::Value { return Napi::Boolean::New(env, *released); });
}

// breakLock(oid, name, client, cookie): true when broken, false when that holder held no such lock.
// Implements rados_break_lock().
Napi::Value NIoCtx::BreakLock(const Napi::CallbackInfo& info) {
  std::string oid = ArgCStr(info, 0, "object name");
  std::string name = ArgCStr(info, 1, "lock name");
  std::string client = ArgCStr(info, 2, "client");
  std::string cookie = ArgCStr(info, 3, "cookie");
  auto broken = std::make_shared<bool>(false);
  auto res = res_;
  return Simple(
      info, "ioctx.breakLock", res_->Target(oid),
      [res, oid, name, client, cookie, broken] {
        int rc = rados_break_lock(res->io, oid.c_str(), name.c_str(), client.c_str(), cookie.c_str());
        if (rc == -ENOENT) return 0;
        if (rc < 0) return rc;
        *broken = true;
        return 0;
      },
      [broken](Napi::Env env) -> Napi::Value { return Napi::Boolean::New(env, *broken); });
}

// listLockers(oid, name) -> { exclusive, tag, lockers: [{ client, cookie, address }] }; no lockers
// (or no object) -> an empty list.
// Implements rados_list_lockers().
Napi::Value NIoCtx::ListLockers(const Napi::CallbackInfo& info) {
  std::string oid = ArgCStr(info, 0, "object name");
  std::string name = ArgCStr(info, 1, "lock name");
  auto out = std::make_shared<LockerList>();
  auto res = res_;
  return Simple(
      info, "ioctx.listLockers", res_->Target(oid),
      [res, oid, name, out] {
        int rc = ListLockersInto(
            *out, [&](auto... args) { return rados_list_lockers(res->io, oid.c_str(), name.c_str(), args...); });
        return rc == -ENOENT ? 0 : rc;  // no object: nobody holds it
      },
      [out](Napi::Env env) -> Napi::Value { return LockersToJs(env, *out); });
}

}  // namespace ephemera_rbd
