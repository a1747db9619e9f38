// NativeImage: reads and writes through librbd's aio API; they complete from librbd's callback
// thread, not the WorkerPool.
#include <napi.h>
#include <rbd/librbd.h>

#include <cerrno>
#include <memory>
#include <string>

#include "args.h"
#include "errors.h"
#include "image.h"
#include "instance.h"

namespace ephemera_rbd {

namespace {

// One aio operation: holds the image (and the caller's buffer) until librbd completes it.
class AioOp : public Item {
 public:
  AioOp(Napi::Env env, std::shared_ptr<ImageRes> res, const char* op, Napi::Value keep)
      : inst_(GetInstance(env)), deferred_(Napi::Promise::Deferred::New(env)), res_(std::move(res)), op_(op) {
    if (!keep.IsEmpty()) keep_ = Napi::Persistent(keep);
  }
  static void Callback(rbd_completion_t c, void* arg) {
    auto* self = static_cast<AioOp*>(arg);
    self->rc_ = rbd_aio_get_return_value(c);
    rbd_aio_release(c);
    self->res_->Release();
    self->inst_->dispatcher->Post(self);
  }
  void Run(Napi::Env env) override {
    inst_->dispatcher->DonePending();
    if (rc_ < 0) deferred_.Reject(MakeError(env, "errno", static_cast<int>(rc_), op_, res_->Target()));
    else deferred_.Resolve(Napi::Number::New(env, static_cast<double>(rc_)));
    delete this;
  }
  // Starts the op with `submit(completion)`; returns the promise. Takes ownership of `this`.
  template <typename F>
  Napi::Value Start(Napi::Env env, F submit) {
    Napi::Promise p = deferred_.Promise();
    if (!res_->Acquire()) {
      deferred_.Reject(MakeError(env, "closed", EBADF, op_, res_->Target()));
      delete this;
      return p;
    }
    rbd_completion_t c = nullptr;
    int rc = rbd_aio_create_completion(this, &AioOp::Callback, &c);
    if (rc >= 0) {
      rc = submit(res_->image, c);
      if (rc < 0) rbd_aio_release(c);
    }
    if (rc < 0) {
      res_->Release();
      deferred_.Reject(MakeError(env, "errno", rc, op_, res_->Target()));
      delete this;
      return p;
    }
    inst_->dispatcher->AddPending();
    return p;
  }

 private:
  Instance* inst_;
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<ImageRes> res_;
  std::string op_;
  Napi::Reference<Napi::Value> keep_;  // the caller's buffer, alive until completion
  ssize_t rc_ = 0;
};

}  // namespace

// read(offset, buffer) -> bytes read; fills `buffer`.
// Implements rbd_aio_read().
Napi::Value NImage::Read(const Napi::CallbackInfo& info) {
  uint64_t off = ArgU64(info, 0, "offset");
  char* data;
  size_t len;
  BufferArg(info, 1, &data, &len);
  auto* op = new AioOp(info.Env(), res_, "image.read", info[1]);
  return op->Start(info.Env(), [=](rbd_image_t im, rbd_completion_t c) { return rbd_aio_read(im, off, len, data, c); });
}

// write(offset, buffer) -> bytes written.
// Implements rbd_aio_write().
Napi::Value NImage::Write(const Napi::CallbackInfo& info) {
  uint64_t off = ArgU64(info, 0, "offset");
  char* data;
  size_t len;
  BufferArg(info, 1, &data, &len);
  auto* op = new AioOp(info.Env(), res_, "image.write", info[1]);
  return op->Start(info.Env(), [=](rbd_image_t im, rbd_completion_t c) { return rbd_aio_write(im, off, len, data, c); });
}

// Implements rbd_aio_discard().
Napi::Value NImage::Discard(const Napi::CallbackInfo& info) {
  uint64_t off = ArgU64(info, 0, "offset");
  uint64_t len = ArgU64(info, 1, "length");
  auto* op = new AioOp(info.Env(), res_, "image.discard", Napi::Value());
  return op->Start(info.Env(), [=](rbd_image_t im, rbd_completion_t c) { return rbd_aio_discard(im, off, len, c); });
}

// Implements rbd_aio_flush().
Napi::Value NImage::Flush(const Napi::CallbackInfo& info) {
  auto* op = new AioOp(info.Env(), res_, "image.flush", Napi::Value());
  return op->Start(info.Env(), [](rbd_image_t im, rbd_completion_t c) { return rbd_aio_flush(im, c); });
}

}  // namespace ephemera_rbd
