// Runtime pieces of the binding that do not depend on librbd:
//  - WorkerPool: the binding's own threads for blocking librados/librbd calls, so libuv's
//    4-thread pool (fs, dns, zlib, crypto) is never occupied by Ceph.
//  - Dispatcher: hands results from any thread back to the JS thread (uv_async + a queue),
//    keeps the event loop alive only while operations are pending, and is safe to post to
//    after its environment is gone (posts are dropped, never a use-after-free).
//  - Res: the lifetime of a native handle (cluster, ioctx, image): in-flight counting,
//    close-once, children closed before their parent, release at GC off the JS thread.
#pragma once

#include <napi.h>
#include <uv.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ephemera_rbd {

// ---------------------------------------------------------------------------------------------
// WorkerPool: a process-wide FIFO pool of detached std::threads. Never destroyed (threads may
// still sit inside librados when the process exits; destroying the pool then would race).
class WorkerPool {
 public:
  static WorkerPool& Get() {
    static WorkerPool* pool = new WorkerPool();  // intentionally leaked
    return *pool;
  }

  // Sets the number of threads. Growing starts threads now; shrinking lets idle ones exit.
  void SetSize(unsigned n) {
    if (n < 1) n = 1;
    std::lock_guard<std::mutex> lock(mu_);
    target_ = n;
    while (threads_ < target_) Spawn();
    cv_.notify_all();
  }

  unsigned Size() {
    std::lock_guard<std::mutex> lock(mu_);
    return target_;
  }

  void Post(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mu_);
    while (threads_ < target_) Spawn();
    queue_.push_back(std::move(fn));
    cv_.notify_one();
  }

 private:
  WorkerPool() {
    unsigned n = 8;
    if (const char* env = std::getenv("EPHEMERA_RBD_THREADS")) {
      long v = std::strtol(env, nullptr, 10);
      if (v >= 1 && v <= 1024) n = static_cast<unsigned>(v);
    }
    target_ = n;
  }

  void Spawn() {  // mu_ held
    ++threads_;
    std::thread([this] { Loop(); }).detach();
  }

  void Loop() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return !queue_.empty() || threads_ > target_; });
        if (queue_.empty()) {  // shrinking
          --threads_;
          return;
        }
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  unsigned threads_ = 0;
  unsigned target_;
};

// Runs fn on the pool unless the owning environment is exiting (then the native resource is
// deliberately left to the OS instead of racing the process teardown).
inline void PostDetached(const std::shared_ptr<std::atomic<bool>>& exiting, std::function<void()> fn) {
  if (exiting && exiting->load()) return;
  WorkerPool::Get().Post(std::move(fn));
}

// ---------------------------------------------------------------------------------------------
// Items delivered on the JS thread.
struct Item {
  virtual ~Item() = default;
  // Runs on the JS thread inside a HandleScope and a callback scope; owns `this` (deletes it).
  virtual void Run(Napi::Env env) = 0;
};

class Dispatcher {
 public:
  explicit Dispatcher(napi_env env) : env_(env) {
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      Napi::Error::New(env, "ceph-rbd-napi: no libuv loop").ThrowAsJavaScriptException();
      return;
    }
    async_ = new uv_async_t;
    async_->data = this;
    uv_async_init(loop, async_, &Dispatcher::OnAsync);
    uv_unref(reinterpret_cast<uv_handle_t*>(async_));
    Napi::Env e(env);
    Napi::Object resource = Napi::Object::New(e);
    napi_async_init(env, resource, Napi::String::New(e, "ephemera:ceph-rbd"), &async_context_);
  }

  // Any thread. Returns false once the environment is gone (the item is then leaked: it may
  // hold JS references that can only be released on a live JS thread).
  bool Post(Item* item) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return false;
    queue_.push_back(item);
    uv_async_send(async_);
    return true;
  }

  // JS thread: an operation started / finished. The loop is kept alive only while one is pending.
  void AddPending() {
    if (pending_++ == 0 && async_) uv_ref(reinterpret_cast<uv_handle_t*>(async_));
  }
  void DonePending() {
    if (--pending_ == 0 && async_) uv_unref(reinterpret_cast<uv_handle_t*>(async_));
  }
  int Pending() const { return pending_; }

  // JS thread, at environment cleanup. The Dispatcher itself is never freed: worker threads may
  // still call Post() and must find `closed_` set.
  void Close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return;
      closed_ = true;
      queue_.clear();  // leaked on purpose, see Post()
    }
    if (async_context_) napi_async_destroy(env_, async_context_);
    async_context_ = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(async_), [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
  }

 private:
  static void OnAsync(uv_async_t* handle) {
    auto* self = static_cast<Dispatcher*>(handle->data);
    std::deque<Item*> batch;
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      if (self->closed_) return;
      batch.swap(self->queue_);
    }
    Napi::Env env(self->env_);
    Napi::HandleScope scope(env);
    Napi::Object resource = Napi::Object::New(env);
    napi_callback_scope cb_scope = nullptr;
    // The callback scope makes Node run the microtask queue (promise continuations) when closed.
    napi_open_callback_scope(self->env_, resource, self->async_context_, &cb_scope);
    for (Item* item : batch) {
      try {
        item->Run(env);
      } catch (const Napi::Error& e) {
        napi_fatal_exception(self->env_, e.Value());
      } catch (const std::exception& e) {
        napi_fatal_exception(self->env_, Napi::Error::New(env, e.what()).Value());
      }
      if (env.IsExceptionPending()) {
        Napi::Error e = env.GetAndClearPendingException();
        napi_fatal_exception(self->env_, e.Value());
      }
    }
    if (cb_scope) napi_close_callback_scope(self->env_, cb_scope);
  }

  napi_env env_;
  uv_async_t* async_ = nullptr;
  napi_async_context async_context_ = nullptr;
  std::mutex mu_;
  std::deque<Item*> queue_;
  bool closed_ = false;
  int pending_ = 0;  // JS thread only
};

// ---------------------------------------------------------------------------------------------
// Res: one native handle. States: open -> closed (no new operations) -> destroyed (native
// handle released, exactly once, after in-flight operations and children are done).
class Res {
 public:
  explicit Res(std::shared_ptr<std::atomic<bool>> exiting) : exiting_(std::move(exiting)) {}
  virtual ~Res() = default;
  Res(const Res&) = delete;
  Res& operator=(const Res&) = delete;

  // Begins an operation. False when the handle is closed.
  bool Acquire() {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return false;
    ++inflight_;
    return true;
  }
  // Keeps the native handle from being destroyed (a child's release at GC runs on the pool and
  // needs its parent alive). False once destruction has begun: the caller must then not touch it.
  bool TryPin() {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ != kOpen) return false;
    ++inflight_;
    return true;
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    if (--inflight_ == 0) cv_.notify_all();
  }
  bool IsClosed() {
    std::lock_guard<std::mutex> lock(mu_);
    return closed_;
  }

  // Registers a child (an ioctx of a cluster, an image of an ioctx). False when closed.
  bool AddChild(const std::shared_ptr<Res>& child) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return false;
    std::vector<std::weak_ptr<Res>> live;
    for (auto& w : children_)
      if (!w.expired()) live.push_back(std::move(w));
    live.push_back(child);
    children_.swap(live);
    return true;
  }

  // Any thread, non-blocking: no new operations on this handle and its descendants.
  void MarkClosedTree() {
    std::vector<std::shared_ptr<Res>> kids;
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      for (auto& w : children_)
        if (auto c = w.lock()) kids.push_back(std::move(c));
    }
    for (auto& c : kids) c->MarkClosedTree();
  }

  // Worker thread, blocking: waits for in-flight operations, closes the children, then releases
  // the native handle. Idempotent and safe to call concurrently. Returns the release's result.
  int CloseTree() {
    MarkClosedTree();
    std::vector<std::shared_ptr<Res>> kids;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return inflight_ == 0; });
      if (state_ == kDestroying) {
        cv_.wait(lock, [this] { return state_ == kDestroyed; });
        return destroy_rc_;
      }
      if (state_ == kDestroyed) return destroy_rc_;
      state_ = kDestroying;
      for (auto& w : children_)
        if (auto c = w.lock()) kids.push_back(std::move(c));
      children_.clear();
    }
    for (auto& c : kids) c->CloseTree();
    int rc = DestroyNative();
    {
      std::lock_guard<std::mutex> lock(mu_);
      destroy_rc_ = rc;
      state_ = kDestroyed;
      cv_.notify_all();
    }
    return rc;
  }

  const std::shared_ptr<std::atomic<bool>>& exiting() const { return exiting_; }

 protected:
  // Releases the native handle; called once, with no operation in flight and no open child.
  virtual int DestroyNative() = 0;
  bool Destroyed() {
    std::lock_guard<std::mutex> lock(mu_);
    return state_ != kOpen;
  }

 private:
  enum State { kOpen, kDestroying, kDestroyed };
  std::shared_ptr<std::atomic<bool>> exiting_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool closed_ = false;
  int inflight_ = 0;
  State state_ = kOpen;
  int destroy_rc_ = 0;
  std::vector<std::weak_ptr<Res>> children_;
};

}  // namespace ephemera_rbd
