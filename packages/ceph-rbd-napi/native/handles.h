// The native handles behind the JS objects (a cluster, an ioctx, an image), with the lifetime
// rules of Res (runtime.h): children closed before their parent, release at GC on the pool.
#pragma once

#include <napi.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

#include <atomic>
#include <memory>
#include <string>

#include "runtime.h"

namespace ephemera_rbd {

class ClusterRes : public Res {
 public:
  ClusterRes(std::shared_ptr<std::atomic<bool>> exiting, rados_t c) : Res(std::move(exiting)), cluster(c) {}
  ~ClusterRes() override {
    if (cluster && !Destroyed()) {
      rados_t c = cluster;
      PostDetached(exiting(), [c] { rados_shutdown(c); });
    }
  }
  rados_t cluster;

 protected:
  int DestroyNative() override {
    if (cluster) rados_shutdown(cluster);
    cluster = nullptr;
    return 0;
  }
};

class IoCtxRes : public Res {
 public:
  IoCtxRes(std::shared_ptr<ClusterRes> parent, rados_ioctx_t i, std::string p, std::string n)
      : Res(parent->exiting()), cluster(std::move(parent)), io(i), pool(std::move(p)), ns(std::move(n)) {}
  // Released at GC: destroyed on the pool, with the cluster pinned so a concurrent
  // cluster.close() waits for it (if the cluster is already going down, rados_shutdown frees it).
  ~IoCtxRes() override {
    if (io && !Destroyed() && !(exiting() && exiting()->load()) && cluster->TryPin()) {
      rados_ioctx_t i = io;
      PostDetached(nullptr, [i, parent = std::move(cluster)]() mutable {
        rados_ioctx_destroy(i);
        parent->Release();
        parent.reset();  // drops the cluster (possibly the last reference) on this worker
      });
    }
  }
  std::shared_ptr<ClusterRes> cluster;
  rados_ioctx_t io;
  std::string pool;
  std::string ns;
  std::string Target(const std::string& name = "") const {
    std::string t = pool;
    if (!ns.empty()) t += "/" + ns;
    if (!name.empty()) t += "/" + name;
    return t;
  }

 protected:
  int DestroyNative() override {
    if (io) rados_ioctx_destroy(io);
    io = nullptr;
    return 0;
  }
};

// Implements rados_aio_flush_async() as a barrier, then rbd_close().
// librbd 16.2 finishes an image open inside a librados callback: it wakes the opener, then
// re-locks the image's ImageState mutex. A close that frees the image before that callback
// returns makes the callback lock freed memory (SIGABRT, known failure 13; docs/ceph-client.md).
// A client's callbacks run one at a time (librados' finish strand), so the callback of a no-op
// flush issued here runs only after that one has returned.
inline int CloseImage(rados_ioctx_t io, rbd_image_t image) {
  rados_completion_t c = nullptr;
  if (rados_aio_create_completion2(nullptr, [](rados_completion_t, void*) {}, &c) == 0) {
    if (rados_aio_flush_async(io, c) == 0) rados_aio_wait_for_complete_and_cb(c);
    rados_aio_release(c);
  }
  return rbd_close(image);
}

class ImageRes : public Res {
 public:
  ImageRes(std::shared_ptr<IoCtxRes> parent, rbd_image_t i, std::string n, std::string s)
      : Res(parent->exiting()), ioctx(std::move(parent)), image(i), name(std::move(n)), snap(std::move(s)) {}
  // Released at GC: closed on the pool with the ioctx pinned (see ~IoCtxRes). If the ioctx is
  // already being destroyed the handle is left alone (its cluster's shutdown drops it).
  ~ImageRes() override {
    if (image && !Destroyed() && !(exiting() && exiting()->load()) && ioctx->TryPin()) {
      rbd_image_t i = image;
      PostDetached(nullptr, [i, parent = std::move(ioctx)]() mutable {
        CloseImage(parent->io, i);
        parent->Release();
        parent.reset();
      });
    }
  }
  std::shared_ptr<IoCtxRes> ioctx;
  rbd_image_t image;
  std::string name;
  std::string snap;
  std::string Target() const { return ioctx->Target(name) + (snap.empty() ? "" : "@" + snap); }

 protected:
  int DestroyNative() override {
    int rc = 0;
    if (image) rc = CloseImage(ioctx->io, image);
    image = nullptr;
    return rc;
  }
};

// The JS classes are constructed by the addon only, from an External holding the handle.
template <typename T, typename R>
T* WrapFromExternal(const Napi::CallbackInfo& info, std::shared_ptr<R>& out) {
  if (info.Length() < 1 || !info[0].IsExternal())
    throw Napi::TypeError::New(info.Env(), "not constructible from JavaScript; use connect()");
  auto* sp = info[0].As<Napi::External<std::shared_ptr<R>>>().Data();
  out = *sp;
  return nullptr;
}

}  // namespace ephemera_rbd
