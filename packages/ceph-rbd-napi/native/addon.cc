// @ephemera/ceph-rbd-napi: Node-API binding to librados and librbd.
//
// Every call that can block runs on the binding's own WorkerPool (never libuv's pool) and
// resolves a promise through the Dispatcher. Image reads and writes use rbd_aio_* and complete
// from librbd's callback thread. Errors are created by a JS factory (see src/errors.ts) from
// (kind, errno, op, target); nothing secret (keys, option values) is ever put in them.
#include <napi.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <optional>

#include "runtime.h"

namespace ephemera_rbd {

class NCluster;
class NIoCtx;
class NImage;

// ---------------------------------------------------------------------------------------------
// Per-environment state.
class ClusterRes;

struct Instance {
  Dispatcher* dispatcher = nullptr;  // never freed, see Dispatcher::Close
  Napi::FunctionReference make_error;
  Napi::FunctionReference cluster_ctor;
  Napi::FunctionReference ioctx_ctor;
  Napi::FunctionReference image_ctor;
  std::shared_ptr<std::atomic<bool>> exiting = std::make_shared<std::atomic<bool>>(false);
  std::mutex reg_mu;
  std::vector<std::weak_ptr<ClusterRes>> clusters;
};

static Instance* GetInstance(Napi::Env env) { return env.GetInstanceData<Instance>(); }

static std::string ErrnoText(int err) {
  char buf[256];
  buf[0] = 0;
  // GNU strerror_r returns a char* that may or may not point to buf.
  const char* s = strerror_r(err, buf, sizeof buf);
  return s ? std::string(s) : std::string("errno ") + std::to_string(err);
}

// kind: "errno" (a librados/librbd error), "closed" (use of a closed handle).
static Napi::Value MakeError(Napi::Env env, const char* kind, int err, const std::string& op,
                             const std::string& target) {
  Instance* inst = GetInstance(env);
  if (err < 0) err = -err;
  std::string text = ErrnoText(err);
  if (inst && !inst->make_error.IsEmpty()) {
    Napi::Value v = inst->make_error.Call({Napi::String::New(env, kind), Napi::Number::New(env, err),
                                           Napi::String::New(env, op), Napi::String::New(env, target),
                                           Napi::String::New(env, text)});
    if (!env.IsExceptionPending() && !v.IsEmpty()) return v;
    if (env.IsExceptionPending()) env.GetAndClearPendingException();
  }
  Napi::Error e = Napi::Error::New(env, op + " " + target + ": " + text);
  e.Set("errno", Napi::Number::New(env, err));
  return e.Value();
}


// ---------------------------------------------------------------------------------------------
// Argument helpers (the TS layer validates; these keep bad calls from crashing).
static std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsString())
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}
static std::optional<std::string> ArgOptString(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return std::nullopt;
  if (!info[i].IsString()) throw Napi::TypeError::New(info.Env(), "expected a string");
  return info[i].As<Napi::String>().Utf8Value();
}
static uint64_t ToU64(Napi::Env env, Napi::Value v, const char* what) {
  if (v.IsBigInt()) {
    bool lossless = false;
    uint64_t r = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(env, std::string(what) + " out of range");
    return r;
  }
  if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string(what) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || d != static_cast<double>(static_cast<uint64_t>(d)))
    throw Napi::RangeError::New(env, std::string(what) + " must be a non-negative safe integer");
  return static_cast<uint64_t>(d);
}
static uint64_t ArgU64(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i) throw Napi::TypeError::New(info.Env(), std::string(what) + " is required");
  return ToU64(info.Env(), info[i], what);
}
static bool ArgBool(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() > i && info[i].IsBoolean() && info[i].As<Napi::Boolean>().Value();
}
static Napi::Value ArgFnOrNull(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() > i && info[i].IsFunction()) return info[i];
  return Napi::Value();
}
static Napi::Number Num(Napi::Env env, uint64_t v) { return Napi::Number::New(env, static_cast<double>(v)); }
static Napi::Number NumI(Napi::Env env, int64_t v) { return Napi::Number::New(env, static_cast<double>(v)); }

// ---------------------------------------------------------------------------------------------
// Native handles.
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
        rbd_close(i);
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
    if (image) rc = rbd_close(image);
    image = nullptr;
    return rc;
  }
};

// ---------------------------------------------------------------------------------------------
// Progress of a long operation: librbd calls Update() from its threads; the latest value is
// delivered on the JS thread (coalesced: at most one delivery queued), strictly increasing in
// done/total, and a final (total, total) is delivered before the promise resolves.
class Job;

class Progress {
 public:
  Progress(Napi::Env env, Napi::Function fn, Dispatcher* d) : fn_(Napi::Persistent(fn)), dispatcher_(d) {}

  static int Callback(uint64_t offset, uint64_t total, void* arg) {
    static_cast<Progress*>(arg)->Update(offset, total);
    return 0;
  }

  void Update(uint64_t done, uint64_t total) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_ || total == 0) return;
    if (done > total) done = total;
    if (!Greater(done, total, cur_done_, cur_total_)) return;
    cur_done_ = done;
    cur_total_ = total;
    if (queued_) return;
    queued_ = true;
    if (!dispatcher_->Post(new Delivery(this))) queued_ = false;
  }

  // Worker thread, after the blocking call returned: no more deliveries get queued.
  void Finish() {
    std::lock_guard<std::mutex> lock(mu_);
    finished_ = true;
  }

  // JS thread.
  void Deliver(Napi::Env env) {
    uint64_t d, t;
    {
      std::lock_guard<std::mutex> lock(mu_);
      queued_ = false;
      d = cur_done_;
      t = cur_total_;
    }
    if (t == 0 || !Greater(d, t, sent_done_, sent_total_)) return;
    sent_done_ = d;
    sent_total_ = t;
    fn_.Call({Num(env, d), Num(env, t)});
  }
  void DeliverFinal(Napi::Env env) {
    uint64_t t = sent_total_ ? sent_total_ : (cur_total_ ? cur_total_ : 1);
    if (sent_total_ && sent_done_ == sent_total_) return;
    sent_done_ = sent_total_ = t;
    fn_.Call({Num(env, t), Num(env, t)});
  }

 private:
  // d1/t1 > d2/t2 (t2 == 0 means nothing yet).
  static bool Greater(uint64_t d1, uint64_t t1, uint64_t d2, uint64_t t2) {
    if (t2 == 0) return true;
    return static_cast<long double>(d1) * t2 > static_cast<long double>(d2) * t1;
  }
  struct Delivery : Item {
    explicit Delivery(Progress* p) : p(p) {}
    void Run(Napi::Env env) override {
      Progress* self = p;
      delete this;
      self->Deliver(env);
    }
    Progress* p;
  };

  Napi::FunctionReference fn_;
  Dispatcher* dispatcher_;
  std::mutex mu_;
  bool finished_ = false, queued_ = false;
  uint64_t cur_done_ = 0, cur_total_ = 0;  // under mu_
  uint64_t sent_done_ = 0, sent_total_ = 0;  // JS thread
};

// ---------------------------------------------------------------------------------------------
// Job: one blocking call on the WorkerPool, resolved on the JS thread.
class Job : public Item {
 public:
  using Work = std::function<int()>;
  using Done = std::function<Napi::Value(Napi::Env)>;

  Job(Napi::Env env, std::string op, std::string target)
      : inst_(GetInstance(env)), deferred_(Napi::Promise::Deferred::New(env)), op_(std::move(op)),
        target_(std::move(target)) {}

  // Holds `res` for the duration of the call. False (and the job must be dropped) when closed.
  bool Hold(const std::shared_ptr<Res>& res) {
    if (!res->Acquire()) return false;
    holds_.push_back(res);
    return true;
  }
  void WithProgress(Napi::Env env, Napi::Value fn) {
    if (!fn.IsEmpty() && fn.IsFunction())
      progress_ = std::make_unique<Progress>(env, fn.As<Napi::Function>(), inst_->dispatcher);
  }
  Progress* progress() { return progress_.get(); }

  // Submits the job; returns its promise. Takes ownership of `this`.
  Napi::Value Submit(Work work, Done done = nullptr) {
    work_ = std::move(work);
    done_ = std::move(done);
    Napi::Promise promise = deferred_.Promise();
    inst_->dispatcher->AddPending();
    WorkerPool::Get().Post([this] { Execute(); });
    return promise;
  }

  // Rejects as "closed" (after a failed Hold) and deletes the job.
  Napi::Value RejectClosed(Napi::Env env) {
    Napi::Promise p = deferred_.Promise();
    deferred_.Reject(MakeError(env, "closed", EBADF, op_, target_));
    for (auto& r : holds_) r->Release();
    delete this;
    return p;
  }

  void Run(Napi::Env env) override {
    inst_->dispatcher->DonePending();
    if (rc_ < 0) {
      deferred_.Reject(MakeError(env, "errno", rc_, op_, target_));
    } else {
      try {
        if (progress_) progress_->DeliverFinal(env);
        deferred_.Resolve(done_ ? done_(env) : env.Undefined());
      } catch (const Napi::Error& e) {
        deferred_.Reject(e.Value());
      }
    }
    delete this;
  }

 private:
  void Execute() {
    try {
      rc_ = work_();
    } catch (...) {
      rc_ = -EIO;
    }
    if (progress_) progress_->Finish();
    for (auto& r : holds_) r->Release();
    inst_->dispatcher->Post(this);  // when the environment is gone the job is leaked
  }

  Instance* inst_;
  Napi::Promise::Deferred deferred_;
  std::string op_, target_;
  std::vector<std::shared_ptr<Res>> holds_;
  std::unique_ptr<Progress> progress_;
  Work work_;
  Done done_;
  int rc_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Image options (create/clone).
struct ImageOpts {
  std::optional<uint64_t> features, order, stripe_unit, stripe_count, clone_format;
  std::optional<std::string> data_pool;

  static ImageOpts From(Napi::Env env, Napi::Value v) {
    ImageOpts o;
    if (!v.IsObject()) return o;
    Napi::Object obj = v.As<Napi::Object>();
    auto u = [&](const char* k, std::optional<uint64_t>& dst) {
      Napi::Value x = obj.Get(k);
      if (!x.IsUndefined() && !x.IsNull()) dst = ToU64(env, x, k);
    };
    u("features", o.features);
    u("order", o.order);
    u("stripeUnit", o.stripe_unit);
    u("stripeCount", o.stripe_count);
    u("cloneFormat", o.clone_format);
    Napi::Value dp = obj.Get("dataPool");
    if (dp.IsString()) o.data_pool = dp.As<Napi::String>().Utf8Value();
    return o;
  }

  // Fills an rbd_image_options_t (caller destroys it). Returns <0 on a bad option.
  int Apply(rbd_image_options_t opts) const {
    int rc = 0;
    auto set = [&](int k, const std::optional<uint64_t>& v) {
      if (rc >= 0 && v) rc = rbd_image_options_set_uint64(opts, k, *v);
    };
    set(RBD_IMAGE_OPTION_FEATURES, features);
    set(RBD_IMAGE_OPTION_ORDER, order);
    set(RBD_IMAGE_OPTION_STRIPE_UNIT, stripe_unit);
    set(RBD_IMAGE_OPTION_STRIPE_COUNT, stripe_count);
    set(RBD_IMAGE_OPTION_CLONE_FORMAT, clone_format);
    if (rc >= 0 && data_pool) rc = rbd_image_options_set_string(opts, RBD_IMAGE_OPTION_DATA_POOL, data_pool->c_str());
    return rc;
  }
};

struct OptsGuard {
  rbd_image_options_t o;
  OptsGuard() { rbd_image_options_create(&o); }
  ~OptsGuard() { rbd_image_options_destroy(o); }
};

// Calls fn(max) until it stops answering -ERANGE (librbd's "buffer too small" protocol).
template <typename F>
static int GrowLoop(size_t& max, F fn) {
  for (int tries = 0; tries < 16; ++tries) {
    int rc = fn();
    if (rc != -ERANGE) return rc;
    if (max < 16) max = 16;
  }
  return -ERANGE;
}

// ---------------------------------------------------------------------------------------------
// JS wrappers. Each holds a shared_ptr to its Res; GC drops it (the native handle is then
// released on the pool once nothing else, e.g. an open child or an in-flight op, uses it).
// The clones of an image (or of the snapshot its handle is set to), filled by librbd
// (rbd_list_children3) and freed with it.
struct LinkedSpecList {
  std::vector<rbd_linked_image_spec_t> v;
  size_t n = 0;
  ~LinkedSpecList() {
    if (n) rbd_linked_image_spec_list_cleanup(v.data(), n);
  }
  // Lists the children of `image`, growing the array on ERANGE; 0 or a negative errno.
  int Fill(rbd_image_t image) {
    size_t max = 32;
    int rc = GrowLoop(max, [&] {
      v.assign(max, rbd_linked_image_spec_t{});
      size_t m = max;
      int r = rbd_list_children3(image, v.data(), &m);
      if (r == -ERANGE) max = m > max ? m : max * 2;
      else if (r >= 0) n = m;
      return r;
    });
    return rc < 0 ? rc : 0;
  }
};

template <typename T, typename R>
static T* WrapFromExternal(const Napi::CallbackInfo& info, std::shared_ptr<R>& out) {
  if (info.Length() < 1 || !info[0].IsExternal())
    throw Napi::TypeError::New(info.Env(), "not constructible from JavaScript; use connect()");
  auto* sp = info[0].As<Napi::External<std::shared_ptr<R>>>().Data();
  out = *sp;
  return nullptr;
}

class NImage : public Napi::ObjectWrap<NImage> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeImage",
                       {
                           InstanceMethod<&NImage::Close>("close"),
                           InstanceMethod<&NImage::IsClosed>("isClosed"),
                           InstanceMethod<&NImage::Stat>("stat"),
                           InstanceMethod<&NImage::Size>("size"),
                           InstanceMethod<&NImage::Features>("features"),
                           InstanceMethod<&NImage::Resize>("resize"),
                           InstanceMethod<&NImage::Flatten>("flatten"),
                           InstanceMethod<&NImage::Parent>("parent"),
                           InstanceMethod<&NImage::Children>("children"),
                           InstanceMethod<&NImage::SnapCreate>("snapCreate"),
                           InstanceMethod<&NImage::SnapRemove>("snapRemove"),
                           InstanceMethod<&NImage::SnapProtect>("snapProtect"),
                           InstanceMethod<&NImage::SnapUnprotect>("snapUnprotect"),
                           InstanceMethod<&NImage::SnapIsProtected>("snapIsProtected"),
                           InstanceMethod<&NImage::SnapRollback>("snapRollback"),
                           InstanceMethod<&NImage::SnapList>("snapList"),
                           InstanceMethod<&NImage::SnapChildren>("snapChildren"),
                           InstanceMethod<&NImage::SnapRemoveById>("snapRemoveById"),
                           InstanceMethod<&NImage::Read>("read"),
                           InstanceMethod<&NImage::Write>("write"),
                           InstanceMethod<&NImage::Discard>("discard"),
                           InstanceMethod<&NImage::Flush>("flush"),
                           InstanceMethod<&NImage::Watchers>("watchers"),
                           InstanceMethod<&NImage::Lockers>("lockers"),
                       });
  }
  explicit NImage(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NImage>(info) {
    WrapFromExternal<NImage, ImageRes>(info, res_);
  }
  ~NImage() override { res_.reset(); }

 private:
  std::shared_ptr<ImageRes> res_;

  // A job holding the image (and so, through it, its ioctx and cluster).
  Job* NewJob(Napi::Env env, const char* op, const std::string& target = "") {
    return new Job(env, op, target.empty() ? res_->Target() : target);
  }
  template <typename W, typename D>
  Napi::Value Simple(const Napi::CallbackInfo& info, const char* op, W work, D done, Napi::Value progress = Napi::Value(),
                     const std::string& target = "") {
    Napi::Env env = info.Env();
    Job* job = NewJob(env, op, target);
    if (!job->Hold(res_)) return job->RejectClosed(env);
    job->WithProgress(env, progress);
    return job->Submit(work, done);
  }

  Napi::Value IsClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), res_->IsClosed()); }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    res_->MarkClosedTree();
    auto res = res_;
    Job* job = NewJob(env, "image.close");
    return job->Submit([res] { return res->CloseTree(); });
  }

  Napi::Value Stat(const Napi::CallbackInfo& info) {
    struct S {
      rbd_image_info_t info{};
      uint64_t features = 0, stripe_unit = 0, stripe_count = 0, flags = 0, overlap = 0;
      char id[64] = {0};
      int64_t data_pool = -1;
      bool has_overlap = false;
      struct timespec created {};
    };
    auto s = std::make_shared<S>();
    auto res = res_;
    return Simple(
        info, "image.stat",
        [s, res] {
          rbd_image_t im = res->image;
          int rc = rbd_stat(im, &s->info, sizeof s->info);
          if (rc < 0) return rc;
          if ((rc = rbd_get_features(im, &s->features)) < 0) return rc;
          if ((rc = rbd_get_stripe_unit(im, &s->stripe_unit)) < 0) return rc;
          if ((rc = rbd_get_stripe_count(im, &s->stripe_count)) < 0) return rc;
          rbd_get_flags(im, &s->flags);
          rbd_get_id(im, s->id, sizeof s->id);
          s->data_pool = rbd_get_data_pool_id(im);
          s->has_overlap = rbd_get_overlap(im, &s->overlap) >= 0;
          rbd_get_create_timestamp(im, &s->created);
          return 0;
        },
        [s](Napi::Env env) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          o.Set("size", Num(env, s->info.size));
          o.Set("objectSize", Num(env, s->info.obj_size));
          o.Set("numObjects", Num(env, s->info.num_objs));
          o.Set("order", Napi::Number::New(env, s->info.order));
          o.Set("blockNamePrefix", Napi::String::New(env, s->info.block_name_prefix));
          o.Set("id", Napi::String::New(env, s->id));
          o.Set("features", Num(env, s->features));
          o.Set("stripeUnit", Num(env, s->stripe_unit));
          o.Set("stripeCount", Num(env, s->stripe_count));
          o.Set("flags", Num(env, s->flags));
          o.Set("dataPoolId", NumI(env, s->data_pool));
          o.Set("overlap", s->has_overlap ? Num(env, s->overlap).As<Napi::Value>() : env.Null());
          o.Set("createdMs", Napi::Number::New(env, s->created.tv_sec * 1000.0 + s->created.tv_nsec / 1e6));
          return o;
        });
  }

  Napi::Value Size(const Napi::CallbackInfo& info) {
    auto v = std::make_shared<uint64_t>(0);
    auto res = res_;
    return Simple(
        info, "image.size", [v, res] { return rbd_get_size(res->image, v.get()); },
        [v](Napi::Env env) -> Napi::Value { return Num(env, *v); });
  }

  Napi::Value Features(const Napi::CallbackInfo& info) {
    auto v = std::make_shared<uint64_t>(0);
    auto res = res_;
    return Simple(
        info, "image.features", [v, res] { return rbd_get_features(res->image, v.get()); },
        [v](Napi::Env env) -> Napi::Value { return Num(env, *v); });
  }

  // resize(size, allowShrink, onProgress?)
  Napi::Value Resize(const Napi::CallbackInfo& info) {
    uint64_t size = ArgU64(info, 0, "size");
    bool allow_shrink = info.Length() > 1 && info[1].IsBoolean() ? info[1].As<Napi::Boolean>().Value() : true;
    Napi::Env env = info.Env();
    Job* job = NewJob(env, "image.resize");
    if (!job->Hold(res_)) return job->RejectClosed(env);
    job->WithProgress(env, ArgFnOrNull(info, 2));
    auto res = res_;
    Progress* p = job->progress();
    return job->Submit([res, size, allow_shrink, p] {
      return rbd_resize2(res->image, size, allow_shrink, p ? &Progress::Callback : nullptr, p);
    });
  }

  Napi::Value Flatten(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Job* job = NewJob(env, "image.flatten");
    if (!job->Hold(res_)) return job->RejectClosed(env);
    job->WithProgress(env, ArgFnOrNull(info, 0));
    auto res = res_;
    Progress* p = job->progress();
    return job->Submit([res, p] {
      return p ? rbd_flatten_with_progress(res->image, &Progress::Callback, p) : rbd_flatten(res->image);
    });
  }

  static Napi::Object LinkedSpec(Napi::Env env, const rbd_linked_image_spec_t& s) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("poolId", NumI(env, s.pool_id));
    o.Set("pool", Napi::String::New(env, s.pool_name ? s.pool_name : ""));
    o.Set("namespace", Napi::String::New(env, s.pool_namespace ? s.pool_namespace : ""));
    o.Set("imageId", Napi::String::New(env, s.image_id ? s.image_id : ""));
    o.Set("image", Napi::String::New(env, s.image_name ? s.image_name : ""));
    o.Set("trash", Napi::Boolean::New(env, s.trash));
    return o;
  }

  static Napi::Value LinkedSpecs(Napi::Env env, const LinkedSpecList& s) {
    Napi::Array a = Napi::Array::New(env, s.n);
    for (size_t i = 0; i < s.n; ++i) a.Set(i, LinkedSpec(env, s.v[i]));
    return a;
  }

  Napi::Value Parent(const Napi::CallbackInfo& info) {
    struct S {
      rbd_linked_image_spec_t spec{};
      rbd_snap_spec_t snap{};
      bool none = false;
      ~S() {
        if (!none) {
          rbd_linked_image_spec_cleanup(&spec);
          rbd_snap_spec_cleanup(&snap);
        }
      }
    };
    auto s = std::make_shared<S>();
    s->none = true;
    auto res = res_;
    return Simple(
        info, "image.parent",
        [s, res] {
          int rc = rbd_get_parent(res->image, &s->spec, &s->snap);
          if (rc == -ENOENT) return 0;  // no parent
          if (rc >= 0) s->none = false;
          return rc;
        },
        [s](Napi::Env env) -> Napi::Value {
          if (s->none) return env.Null();
          Napi::Object o = LinkedSpec(env, s->spec);
          o.Set("snap", Napi::String::New(env, s->snap.name ? s->snap.name : ""));
          o.Set("snapId", Num(env, s->snap.id));
          return o;
        });
  }

  Napi::Value Children(const Napi::CallbackInfo& info) {
    auto s = std::make_shared<LinkedSpecList>();
    auto res = res_;
    return Simple(
        info, "image.children", [s, res] { return s->Fill(res->image); },
        [s](Napi::Env env) { return LinkedSpecs(env, *s); });
  }

  Napi::Value SnapOp(const Napi::CallbackInfo& info, const char* op, int (*fn)(rbd_image_t, const char*)) {
    std::string name = ArgString(info, 0, "snapshot name");
    auto res = res_;
    return Simple(
        info, op, [res, name, fn] { return fn(res->image, name.c_str()); }, nullptr, Napi::Value(),
        res_->Target() + "@" + name);
  }
  Napi::Value SnapCreate(const Napi::CallbackInfo& info) { return SnapOp(info, "image.snapCreate", rbd_snap_create); }
  Napi::Value SnapRemove(const Napi::CallbackInfo& info) { return SnapOp(info, "image.snapRemove", rbd_snap_remove); }
  Napi::Value SnapProtect(const Napi::CallbackInfo& info) { return SnapOp(info, "image.snapProtect", rbd_snap_protect); }
  Napi::Value SnapUnprotect(const Napi::CallbackInfo& info) {
    return SnapOp(info, "image.snapUnprotect", rbd_snap_unprotect);
  }

  Napi::Value SnapIsProtected(const Napi::CallbackInfo& info) {
    std::string name = ArgString(info, 0, "snapshot name");
    auto v = std::make_shared<int>(0);
    auto res = res_;
    return Simple(
        info, "image.snapIsProtected", [res, name, v] { return rbd_snap_is_protected(res->image, name.c_str(), v.get()); },
        [v](Napi::Env env) -> Napi::Value { return Napi::Boolean::New(env, *v != 0); }, Napi::Value(),
        res_->Target() + "@" + name);
  }

  Napi::Value SnapRollback(const Napi::CallbackInfo& info) {
    std::string name = ArgString(info, 0, "snapshot name");
    Napi::Env env = info.Env();
    Job* job = NewJob(env, "image.snapRollback", res_->Target() + "@" + name);
    if (!job->Hold(res_)) return job->RejectClosed(env);
    job->WithProgress(env, ArgFnOrNull(info, 1));
    auto res = res_;
    Progress* p = job->progress();
    return job->Submit([res, name, p] {
      return p ? rbd_snap_rollback_with_progress(res->image, name.c_str(), &Progress::Callback, p)
               : rbd_snap_rollback(res->image, name.c_str());
    });
  }

  // snapChildren(snapId): clones of the snapshot with this id (any namespace, e.g. a trash
  // snapshot, which has no usable name), through a second read-only handle set at that id.
  Napi::Value SnapChildren(const Napi::CallbackInfo& info) {
    uint64_t snap_id = ArgU64(info, 0, "snapshot id");
    auto s = std::make_shared<LinkedSpecList>();
    auto res = res_;
    return Simple(
        info, "image.snapChildren",
        [s, res, snap_id] {
          char id[128] = {0};
          int rc = rbd_get_id(res->image, id, sizeof(id));
          if (rc < 0) return rc;
          rbd_image_t h = nullptr;
          rc = rbd_open_by_id_read_only(res->ioctx->io, id, &h, nullptr);
          if (rc < 0) return rc;
          rc = rbd_snap_set_by_id(h, snap_id);
          if (rc >= 0) rc = s->Fill(h);
          rbd_close(h);
          return rc < 0 ? rc : 0;
        },
        [s](Napi::Env env) { return LinkedSpecs(env, *s); },
        Napi::Value(), res_->Target() + "@" + std::to_string(snap_id));
  }

  // snapRemoveById(snapId): rbd_snap_remove_by_id, the only way to remove a snapshot of another
  // namespace (a trash snapshot left without children); EBUSY while it has children.
  Napi::Value SnapRemoveById(const Napi::CallbackInfo& info) {
    uint64_t snap_id = ArgU64(info, 0, "snapshot id");
    auto res = res_;
    return Simple(
        info, "image.snapRemoveById", [res, snap_id] { return rbd_snap_remove_by_id(res->image, snap_id); }, nullptr,
        Napi::Value(), res_->Target() + "@" + std::to_string(snap_id));
  }

  Napi::Value SnapList(const Napi::CallbackInfo& info) {
    struct Snap {
      uint64_t id, size;
      std::string name;
      bool is_protected;
      int ns;
      std::string original;
    };
    auto out = std::make_shared<std::vector<Snap>>();
    auto res = res_;
    return Simple(
        info, "image.snapList",
        [out, res] {
          int max = 16;
          std::vector<rbd_snap_info_t> v;
          int rc;
          for (int tries = 0;; ++tries) {
            v.assign(max, rbd_snap_info_t{});
            rc = rbd_snap_list(res->image, v.data(), &max);
            if (rc != -ERANGE || tries > 8) break;
          }
          if (rc < 0) return rc;
          for (int i = 0; i < rc; ++i) {
            int prot = 0;
            rbd_snap_namespace_type_t ns = RBD_SNAP_NAMESPACE_TYPE_USER;
            rbd_snap_get_namespace_type(res->image, v[i].id, &ns);
            if (ns == RBD_SNAP_NAMESPACE_TYPE_USER) rbd_snap_is_protected(res->image, v[i].name, &prot);
            char original[512] = {0};
            if (ns == RBD_SNAP_NAMESPACE_TYPE_TRASH &&
                rbd_snap_get_trash_namespace(res->image, v[i].id, original, sizeof(original)) < 0)
              original[0] = 0;
            out->push_back({v[i].id, v[i].size, v[i].name ? v[i].name : "", prot != 0, static_cast<int>(ns), original});
          }
          rbd_snap_list_end(v.data());
          return 0;
        },
        [out](Napi::Env env) -> Napi::Value {
          Napi::Array a = Napi::Array::New(env, out->size());
          for (size_t i = 0; i < out->size(); ++i) {
            Napi::Object o = Napi::Object::New(env);
            o.Set("id", Num(env, (*out)[i].id));
            o.Set("size", Num(env, (*out)[i].size));
            o.Set("name", Napi::String::New(env, (*out)[i].name));
            o.Set("protected", Napi::Boolean::New(env, (*out)[i].is_protected));
            static const char* names[] = {"user", "group", "trash", "mirror"};
            int ns = (*out)[i].ns;
            o.Set("namespace", Napi::String::New(env, ns >= 0 && ns <= 3 ? names[ns] : "unknown"));
            if (ns == RBD_SNAP_NAMESPACE_TYPE_TRASH) o.Set("originalName", Napi::String::New(env, (*out)[i].original));
            a.Set(i, o);
          }
          return a;
        });
  }

  Napi::Value Watchers(const Napi::CallbackInfo& info) {
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
  Napi::Value Lockers(const Napi::CallbackInfo& info) {
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

  // ----- aio -----
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

  static void BufferArg(const Napi::CallbackInfo& info, size_t i, char** data, size_t* len) {
    if (info.Length() <= i || !info[i].IsTypedArray())
      throw Napi::TypeError::New(info.Env(), "buffer must be a Uint8Array");
    Napi::TypedArray ta = info[i].As<Napi::TypedArray>();
    if (ta.TypedArrayType() != napi_uint8_array) throw Napi::TypeError::New(info.Env(), "buffer must be a Uint8Array");
    Napi::Uint8Array u8 = info[i].As<Napi::Uint8Array>();
    *data = reinterpret_cast<char*>(u8.Data());
    *len = u8.ByteLength();
  }

  // read(offset, buffer) -> bytes read; fills `buffer`.
  Napi::Value Read(const Napi::CallbackInfo& info) {
    uint64_t off = ArgU64(info, 0, "offset");
    char* data;
    size_t len;
    BufferArg(info, 1, &data, &len);
    auto* op = new AioOp(info.Env(), res_, "image.read", info[1]);
    return op->Start(info.Env(), [=](rbd_image_t im, rbd_completion_t c) { return rbd_aio_read(im, off, len, data, c); });
  }

  // write(offset, buffer) -> bytes written.
  Napi::Value Write(const Napi::CallbackInfo& info) {
    uint64_t off = ArgU64(info, 0, "offset");
    char* data;
    size_t len;
    BufferArg(info, 1, &data, &len);
    auto* op = new AioOp(info.Env(), res_, "image.write", info[1]);
    return op->Start(info.Env(), [=](rbd_image_t im, rbd_completion_t c) { return rbd_aio_write(im, off, len, data, c); });
  }

  Napi::Value Discard(const Napi::CallbackInfo& info) {
    uint64_t off = ArgU64(info, 0, "offset");
    uint64_t len = ArgU64(info, 1, "length");
    auto* op = new AioOp(info.Env(), res_, "image.discard", Napi::Value());
    return op->Start(info.Env(), [=](rbd_image_t im, rbd_completion_t c) { return rbd_aio_discard(im, off, len, c); });
  }

  Napi::Value Flush(const Napi::CallbackInfo& info) {
    auto* op = new AioOp(info.Env(), res_, "image.flush", Napi::Value());
    return op->Start(info.Env(), [](rbd_image_t im, rbd_completion_t c) { return rbd_aio_flush(im, c); });
  }
};

class NIoCtx : public Napi::ObjectWrap<NIoCtx> {
 public:
  static Napi::Function Define(Napi::Env env) {
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
  explicit NIoCtx(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NIoCtx>(info) {
    WrapFromExternal<NIoCtx, IoCtxRes>(info, res_);
  }
  ~NIoCtx() override { res_.reset(); }
  const std::shared_ptr<IoCtxRes>& res() const { return res_; }

 private:
  std::shared_ptr<IoCtxRes> res_;

  template <typename W, typename D>
  Napi::Value Simple(const Napi::CallbackInfo& info, const char* op, const std::string& target, W work, D done,
                     Napi::Value progress = Napi::Value()) {
    Napi::Env env = info.Env();
    Job* job = new Job(env, op, target);
    if (!job->Hold(res_)) return job->RejectClosed(env);
    job->WithProgress(env, progress);
    return job->Submit(work, done);
  }

  Napi::Value IsClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), res_->IsClosed()); }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    res_->MarkClosedTree();
    auto res = res_;
    Job* job = new Job(info.Env(), "ioctx.close", res_->Target());
    return job->Submit([res] { return res->CloseTree(); });
  }

  Napi::Value List(const Napi::CallbackInfo& info) {
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
  Napi::Value Create(const Napi::CallbackInfo& info) {
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

  // clone(parentIoCtx, parentName, parentSnap, destName, opts)
  Napi::Value Clone(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "parent ioctx required");
    NIoCtx* parent = NIoCtx::Unwrap(info[0].As<Napi::Object>());
    if (!parent) throw Napi::TypeError::New(env, "parent ioctx must be an IoCtx");
    std::string pname = ArgString(info, 1, "parent image");
    std::string psnap = ArgString(info, 2, "parent snapshot");
    std::string cname = ArgString(info, 3, "clone name");
    ImageOpts o = ImageOpts::From(env, info.Length() > 4 ? info[4] : env.Undefined());
    auto pres = parent->res();
    auto res = res_;
    Job* job = new Job(env, "ioctx.clone", res_->Target(cname));
    if (!job->Hold(res_) || !job->Hold(pres)) return job->RejectClosed(env);
    return job->Submit([res, pres, pname, psnap, cname, o] {
      OptsGuard g;
      int rc = o.Apply(g.o);
      if (rc < 0) return rc;
      return rbd_clone3(pres->io, pname.c_str(), psnap.c_str(), res->io, cname.c_str(), g.o);
    });
  }

  Napi::Value Remove(const Napi::CallbackInfo& info) {
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

  Napi::Value Rename(const Napi::CallbackInfo& info) {
    std::string from = ArgString(info, 0, "source name");
    std::string to = ArgString(info, 1, "destination name");
    auto res = res_;
    return Simple(
        info, "ioctx.rename", res_->Target(from), [res, from, to] { return rbd_rename(res->io, from.c_str(), to.c_str()); },
        nullptr);
  }

  Napi::Value TrashMove(const Napi::CallbackInfo& info) {
    std::string name = ArgString(info, 0, "image name");
    uint64_t delay = info.Length() > 1 ? ArgU64(info, 1, "delay") : 0;
    auto res = res_;
    return Simple(
        info, "ioctx.trashMove", res_->Target(name), [res, name, delay] { return rbd_trash_move(res->io, name.c_str(), delay); },
        nullptr);
  }

  Napi::Value TrashList(const Napi::CallbackInfo& info) {
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
          size_t max = 32;
          std::vector<rbd_trash_image_info_t> v;
          int rc = GrowLoop(max, [&] {
            v.assign(max, rbd_trash_image_info_t{});
            size_t m = max;
            int r = rbd_trash_list(res->io, v.data(), &m);
            if (r == -ERANGE) max = m > max ? m : max * 2;
            else if (r >= 0) {
              for (size_t i = 0; i < m; ++i)
                out->push_back({v[i].id ? v[i].id : "", v[i].name ? v[i].name : "", static_cast<int>(v[i].source),
                                static_cast<int64_t>(v[i].deletion_time), static_cast<int64_t>(v[i].deferment_end_time)});
              rbd_trash_list_cleanup(v.data(), m);
            }
            return r;
          });
          return rc < 0 ? rc : 0;
        },
        [out](Napi::Env env) -> Napi::Value {
          static const char* sources[] = {"user", "mirroring", "migration", "removing", "user_parent"};
          Napi::Array a = Napi::Array::New(env, out->size());
          for (size_t i = 0; i < out->size(); ++i) {
            const T& t = (*out)[i];
            Napi::Object o = Napi::Object::New(env);
            o.Set("id", Napi::String::New(env, t.id));
            o.Set("name", Napi::String::New(env, t.name));
            o.Set("source", Napi::String::New(env, t.source >= 0 && t.source <= 4 ? sources[t.source] : "unknown"));
            o.Set("deletedAtMs", Napi::Number::New(env, t.deleted * 1000.0));
            o.Set("deferredUntilMs", Napi::Number::New(env, t.deferred * 1000.0));
            a.Set(i, o);
          }
          return a;
        });
  }

  Napi::Value TrashRestore(const Napi::CallbackInfo& info) {
    std::string id = ArgString(info, 0, "trash id");
    std::string name = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
    auto res = res_;
    return Simple(
        info, "ioctx.trashRestore", res_->Target(id), [res, id, name] { return rbd_trash_restore(res->io, id.c_str(), name.c_str()); },
        nullptr);
  }

  Napi::Value TrashRemove(const Napi::CallbackInfo& info) {
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

  // open(name, snapshot|null, readOnly)
  Napi::Value Open(const Napi::CallbackInfo& info) {
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
};

class NCluster : public Napi::ObjectWrap<NCluster> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeCluster",
                       {
                           InstanceMethod<&NCluster::Close>("close"),
                           InstanceMethod<&NCluster::IsClosed>("isClosed"),
                           InstanceMethod<&NCluster::Fsid>("fsid"),
                           InstanceMethod<&NCluster::PoolStats>("poolStats"),
                           InstanceMethod<&NCluster::OpenIoCtx>("openIoCtx"),
                           InstanceMethod<&NCluster::MonCommand>("monCommand"),
                           InstanceMethod<&NCluster::InstanceId>("instanceId"),
                       });
  }
  explicit NCluster(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NCluster>(info) {
    WrapFromExternal<NCluster, ClusterRes>(info, res_);
  }
  ~NCluster() override { res_.reset(); }

 private:
  std::shared_ptr<ClusterRes> res_;

  Napi::Value IsClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), res_->IsClosed()); }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    res_->MarkClosedTree();
    auto res = res_;
    Job* job = new Job(info.Env(), "cluster.close", "");
    return job->Submit([res] { return res->CloseTree(); });
  }

  // This client's global id (the `client.<id>` entity of its watches and locks). Synchronous:
  // rados_get_instance_id only reads the connected client's state.
  Napi::Value InstanceId(const Napi::CallbackInfo& info) {
    if (!res_->Acquire()) throw Napi::Error::New(info.Env(), "cluster.instanceId: the cluster is closed");
    uint64_t id = rados_get_instance_id(res_->cluster);
    res_->Release();
    return Num(info.Env(), id);
  }

  Napi::Value Fsid(const Napi::CallbackInfo& info) {
    auto s = std::make_shared<std::string>();
    auto res = res_;
    Napi::Env env = info.Env();
    Job* job = new Job(env, "cluster.fsid", "");
    if (!job->Hold(res_)) return job->RejectClosed(env);
    return job->Submit(
        [s, res] {
          char buf[64] = {0};
          int rc = rados_cluster_fsid(res->cluster, buf, sizeof buf - 1);
          if (rc >= 0) *s = buf;
          return rc < 0 ? rc : 0;
        },
        [s](Napi::Env env) -> Napi::Value { return Napi::String::New(env, *s); });
  }

  Napi::Value PoolStats(const Napi::CallbackInfo& info) {
    std::string pool = ArgString(info, 0, "pool");
    struct S {
      rados_pool_stat_t ps{};
      rados_cluster_stat_t cs{};
      int64_t pool_id = -1;
      uint64_t images = 0, provisioned = 0, max_provisioned = 0, snapshots = 0, trash_images = 0;
    };
    auto s = std::make_shared<S>();
    auto res = res_;
    Napi::Env env = info.Env();
    Job* job = new Job(env, "cluster.poolStats", pool);
    if (!job->Hold(res_)) return job->RejectClosed(env);
    return job->Submit(
        [s, res, pool] {
          rados_ioctx_t io = nullptr;
          int rc = rados_ioctx_create(res->cluster, pool.c_str(), &io);
          if (rc < 0) return rc;
          s->pool_id = rados_ioctx_get_id(io);
          rc = rados_ioctx_pool_stat(io, &s->ps);
          if (rc >= 0) rc = rados_cluster_stat(res->cluster, &s->cs);
          if (rc >= 0) {
            rbd_pool_stats_t st;
            rbd_pool_stats_create(&st);
            rbd_pool_stats_option_add_uint64(st, RBD_POOL_STAT_OPTION_IMAGES, &s->images);
            rbd_pool_stats_option_add_uint64(st, RBD_POOL_STAT_OPTION_IMAGE_PROVISIONED_BYTES, &s->provisioned);
            rbd_pool_stats_option_add_uint64(st, RBD_POOL_STAT_OPTION_IMAGE_MAX_PROVISIONED_BYTES, &s->max_provisioned);
            rbd_pool_stats_option_add_uint64(st, RBD_POOL_STAT_OPTION_IMAGE_SNAPSHOTS, &s->snapshots);
            rbd_pool_stats_option_add_uint64(st, RBD_POOL_STAT_OPTION_TRASH_IMAGES, &s->trash_images);
            rc = rbd_pool_stats_get(io, st);
            rbd_pool_stats_destroy(st);
          }
          rados_ioctx_destroy(io);
          return rc;
        },
        [s, pool](Napi::Env env) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          o.Set("pool", Napi::String::New(env, pool));
          o.Set("poolId", NumI(env, s->pool_id));
          o.Set("bytesUsed", Num(env, s->ps.num_bytes));
          o.Set("objects", Num(env, s->ps.num_objects));
          o.Set("userBytes", Num(env, s->ps.num_user_bytes));
          o.Set("images", Num(env, s->images));
          o.Set("provisionedBytes", Num(env, s->provisioned));
          o.Set("maxProvisionedBytes", Num(env, s->max_provisioned));
          o.Set("snapshots", Num(env, s->snapshots));
          o.Set("trashImages", Num(env, s->trash_images));
          o.Set("clusterTotalBytes", Num(env, s->cs.kb * 1024));
          o.Set("clusterUsedBytes", Num(env, s->cs.kb_used * 1024));
          o.Set("clusterAvailBytes", Num(env, s->cs.kb_avail * 1024));
          return o;
        });
  }

  // monCommand(jsonCommand) -> { out: string, status: string }
  Napi::Value MonCommand(const Napi::CallbackInfo& info) {
    std::string cmd = ArgString(info, 0, "command");
    auto out = std::make_shared<std::pair<std::string, std::string>>();
    auto res = res_;
    Napi::Env env = info.Env();
    Job* job = new Job(env, "cluster.monCommand", "");
    if (!job->Hold(res_)) return job->RejectClosed(env);
    return job->Submit(
        [out, res, cmd] {
          const char* cmds[1] = {cmd.c_str()};
          char* outbuf = nullptr;
          char* outs = nullptr;
          size_t outbuf_len = 0, outs_len = 0;
          int rc = rados_mon_command(res->cluster, cmds, 1, "", 0, &outbuf, &outbuf_len, &outs, &outs_len);
          if (outbuf) out->first.assign(outbuf, outbuf_len);
          if (outs) out->second.assign(outs, outs_len);
          rados_buffer_free(outbuf);
          rados_buffer_free(outs);
          return rc;
        },
        [out](Napi::Env env) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          o.Set("out", Napi::String::New(env, out->first));
          o.Set("status", Napi::String::New(env, out->second));
          return o;
        });
  }

  Napi::Value OpenIoCtx(const Napi::CallbackInfo& info) {
    std::string pool = ArgString(info, 0, "pool");
    std::string ns = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
    auto res = res_;
    auto out = std::make_shared<std::shared_ptr<IoCtxRes>>();
    Napi::Env env = info.Env();
    Job* job = new Job(env, "cluster.openIoCtx", ns.empty() ? pool : pool + "/" + ns);
    if (!job->Hold(res_)) return job->RejectClosed(env);
    return job->Submit(
        [res, pool, ns, out] {
          rados_ioctx_t io = nullptr;
          int rc = rados_ioctx_create(res->cluster, pool.c_str(), &io);
          if (rc < 0) return rc;
          rados_ioctx_set_namespace(io, ns.c_str());
          auto ctx = std::make_shared<IoCtxRes>(res, io, pool, ns);
          if (!res->AddChild(ctx)) {
            ctx->CloseTree();
            return -ESHUTDOWN;
          }
          *out = std::move(ctx);
          return 0;
        },
        [out](Napi::Env env) -> Napi::Value {
          Instance* inst = GetInstance(env);
          auto* sp = new std::shared_ptr<IoCtxRes>(std::move(*out));
          Napi::Object obj = inst->ioctx_ctor.New({Napi::External<std::shared_ptr<IoCtxRes>>::New(env, sp)});
          delete sp;
          return obj;
        });
  }
};

// ---------------------------------------------------------------------------------------------
// Module functions.

// connect({ name, confPath?, keyringPath?, monHost?, timeoutSeconds, options: [[k, v], ...] })
static Napi::Value Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "options object required");
  Napi::Object o = info[0].As<Napi::Object>();
  auto str = [&](const char* k) -> std::optional<std::string> {
    Napi::Value v = o.Get(k);
    if (v.IsString()) return v.As<Napi::String>().Utf8Value();
    return std::nullopt;
  };
  std::string name = str("name").value_or("client.admin");
  auto conf = str("confPath");
  auto keyring = str("keyringPath");
  auto mon_host = str("monHost");
  std::string timeout = str("timeoutSeconds").value_or("30");
  std::vector<std::pair<std::string, std::string>> options;
  Napi::Value ov = o.Get("options");
  if (ov.IsArray()) {
    Napi::Array a = ov.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) {
      Napi::Value e = a.Get(i);
      if (!e.IsArray()) continue;
      Napi::Array kv = e.As<Napi::Array>();
      Napi::Value k = kv.Get(0u), v = kv.Get(1u);
      if (k.IsString() && v.IsString()) options.emplace_back(k.As<Napi::String>().Utf8Value(), v.As<Napi::String>().Utf8Value());
    }
  }
  Instance* inst = GetInstance(env);
  auto out = std::make_shared<std::shared_ptr<ClusterRes>>();
  auto stage = std::make_shared<std::string>("connect");
  auto exiting = inst->exiting;
  Job* job = new Job(env, "connect", name);
  return job->Submit(
      [=] {
        rados_t c = nullptr;
        int rc = rados_create2(&c, "ceph", name.c_str(), 0);
        if (rc < 0) return rc;
        auto fail = [&](int r) {
          rados_shutdown(c);
          return r;
        };
        if (conf) {
          if ((rc = rados_conf_read_file(c, conf->c_str())) < 0) return fail(rc);
        } else if (!mon_host) {
          rados_conf_read_file(c, nullptr);  // default search path; absence is reported by connect
        }
        if (keyring && (rc = rados_conf_set(c, "keyring", keyring->c_str())) < 0) return fail(rc);
        if (mon_host && (rc = rados_conf_set(c, "mon_host", mon_host->c_str())) < 0) return fail(rc);
        for (const char* k : {"client_mount_timeout", "rados_mon_op_timeout", "rados_osd_op_timeout"})
          if ((rc = rados_conf_set(c, k, timeout.c_str())) < 0) return fail(rc);
        for (auto& kv : options)
          if ((rc = rados_conf_set(c, kv.first.c_str(), kv.second.c_str())) < 0) return fail(rc);
        if ((rc = rados_connect(c)) < 0) return fail(rc);
        *out = std::make_shared<ClusterRes>(exiting, c);
        return 0;
      },
      [out](Napi::Env env) -> Napi::Value {
        Instance* inst = GetInstance(env);
        {
          std::lock_guard<std::mutex> lock(inst->reg_mu);
          std::vector<std::weak_ptr<ClusterRes>> live;
          for (auto& w : inst->clusters)
            if (!w.expired()) live.push_back(std::move(w));
          live.push_back(*out);
          inst->clusters.swap(live);
        }
        auto* sp = new std::shared_ptr<ClusterRes>(std::move(*out));
        Napi::Object obj = inst->cluster_ctor.New({Napi::External<std::shared_ptr<ClusterRes>>::New(env, sp)});
        delete sp;
        return obj;
      });
}

// Closes every open cluster of this environment (and their ioctxs and images), waiting at most
// timeoutMs. Used at process exit so images are unwatched cleanly; returns how many were closed
// in time.
static int ShutdownAllImpl(Instance* inst, double timeout_ms) {
  std::vector<std::shared_ptr<ClusterRes>> live;
  {
    std::lock_guard<std::mutex> lock(inst->reg_mu);
    for (auto& w : inst->clusters)
      if (auto c = w.lock()) live.push_back(std::move(c));
    inst->clusters.clear();
  }
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    int done = 0;
  };
  auto sh = std::make_shared<Shared>();
  for (auto& c : live) {
    c->MarkClosedTree();
    std::thread([c, sh] {
      c->CloseTree();
      std::lock_guard<std::mutex> lock(sh->mu);
      ++sh->done;
      sh->cv.notify_all();
    }).detach();
  }
  std::unique_lock<std::mutex> lock(sh->mu);
  sh->cv.wait_for(lock, std::chrono::duration<double, std::milli>(timeout_ms),
                  [&] { return sh->done == static_cast<int>(live.size()); });
  return sh->done;
}

static Napi::Value ShutdownAll(const Napi::CallbackInfo& info) {
  double t = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 5000;
  Instance* inst = GetInstance(info.Env());
  int n = ShutdownAllImpl(inst, t);
  inst->exiting->store(true);
  return Napi::Number::New(info.Env(), n);
}

static Napi::Value Init(const Napi::CallbackInfo& info) {
  Instance* inst = GetInstance(info.Env());
  if (info.Length() > 0 && info[0].IsFunction()) inst->make_error = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

static Napi::Value Version(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int a, b, c;
  Napi::Object o = Napi::Object::New(env);
  rbd_version(&a, &b, &c);
  o.Set("librbd", Napi::String::New(env, std::to_string(a) + "." + std::to_string(b) + "." + std::to_string(c)));
  rados_version(&a, &b, &c);
  o.Set("librados", Napi::String::New(env, std::to_string(a) + "." + std::to_string(b) + "." + std::to_string(c)));
  return o;
}

static Napi::Value SetWorkerThreads(const Napi::CallbackInfo& info) {
  uint64_t n = ArgU64(info, 0, "threads");
  if (n < 1 || n > 1024) throw Napi::RangeError::New(info.Env(), "threads must be 1..1024");
  WorkerPool::Get().SetSize(static_cast<unsigned>(n));
  return info.Env().Undefined();
}

static Napi::Value GetWorkerThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), WorkerPool::Get().Size());
}

static Napi::Value PendingOps(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), GetInstance(info.Env())->dispatcher->Pending());
}

static void Cleanup(void* arg) {
  auto* inst = static_cast<Instance*>(arg);
  ShutdownAllImpl(inst, 5000);
  inst->exiting->store(true);
  inst->dispatcher->Close();
}

static void KeepInstance(Napi::Env, Instance*) {}

static Napi::Object ModuleInit(Napi::Env env, Napi::Object exports) {
  auto* inst = new Instance();
  inst->dispatcher = new Dispatcher(env);
  inst->cluster_ctor = Napi::Persistent(NCluster::Define(env));
  inst->ioctx_ctor = Napi::Persistent(NIoCtx::Define(env));
  inst->image_ctor = Napi::Persistent(NImage::Define(env));
  // The instance outlives the env's finalizers on purpose (jobs may reference it): the
  // cleanup hook only closes handles and the dispatcher.
  env.SetInstanceData<Instance, KeepInstance>(inst);
  napi_add_env_cleanup_hook(env, Cleanup, inst);
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("connect", Napi::Function::New(env, Connect));
  exports.Set("version", Napi::Function::New(env, Version));
  exports.Set("setWorkerThreads", Napi::Function::New(env, SetWorkerThreads));
  exports.Set("workerThreads", Napi::Function::New(env, GetWorkerThreads));
  exports.Set("pendingOps", Napi::Function::New(env, PendingOps));
  exports.Set("shutdownAll", Napi::Function::New(env, ShutdownAll));
  exports.Set("NativeCluster", inst->cluster_ctor.Value());
  exports.Set("NativeIoCtx", inst->ioctx_ctor.Value());
  exports.Set("NativeImage", inst->image_ctor.Value());
  return exports;
}

}  // namespace ephemera_rbd

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return ephemera_rbd::ModuleInit(env, exports); }

NODE_API_MODULE(ceph_rbd_napi, InitAddon)
