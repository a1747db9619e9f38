// Node-API binding to libvirt for @ephemera/libvirt-napi.
//
// Threading model
// - Every libvirt call that can block (anything that may do an RPC to libvirtd) runs on the
//   binding's own small pool of native threads (not libuv's 4-thread pool, which fs, dns, zlib,
//   crypto and the RBD binding share: a libvirt call can block for seconds and would starve them).
//   Results travel back to the JS thread through one N-API thread-safe function per environment,
//   which is ref'd only while at least one call is in flight.
// - libvirt errors are thread-local: they are captured on the worker thread right after the
//   failing call and turned into a LibvirtError on the JS thread.
// - virEventRegisterDefaultImpl() is called once per process before any connection is opened, and
//   a dedicated native thread runs virEventRunDefaultImpl() forever. Lifecycle and close callbacks
//   fire on that thread and are marshalled to JS through a per-connection thread-safe function
//   that is unref'd by default, so open connections never keep the process alive.
// - libvirt's default error printing to stderr is disabled (virSetErrorFunc with a no-op).

#include <napi.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <pthread.h>
#include <signal.h>
#include <string.h>

#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------------
// Errors

struct Failure {
  bool failed = false;
  int code = 0;
  int domain = 0;
  int level = 0;
  std::string message;
};

// Copies the calling thread's last libvirt error (must run on the thread that made the call).
void Capture(Failure& f, const char* fallback) {
  f.failed = true;
  virErrorPtr e = virGetLastError();
  if (e != nullptr && e->code != VIR_ERR_OK) {
    f.code = e->code;
    f.domain = e->domain;
    f.level = e->level;
    f.message = e->message != nullptr ? e->message : fallback;
  } else {
    f.code = VIR_ERR_INTERNAL_ERROR;
    f.domain = VIR_FROM_NONE;
    f.level = VIR_ERR_ERROR;
    f.message = fallback;
  }
  virResetLastError();
}

void Fail(Failure& f, int code, const std::string& message) {
  f.failed = true;
  f.code = code;
  f.domain = VIR_FROM_NONE;
  f.level = VIR_ERR_ERROR;
  f.message = message;
}

void NoopErrorFunc(void*, virErrorPtr) {}

void BlockAllSignals() {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
}

// ---------------------------------------------------------------------------------------------
// Worker pool (process-wide, leaked on purpose so no destructor races with exit()).

class Pool {
 public:
  static Pool& Get() {
    static Pool* pool = new Pool();
    return *pool;
  }

  void Post(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(fn));
      if (idle_ < queue_.size() && threads_ < max_) {
        threads_++;
        std::thread([this] { Loop(); }).detach();
      }
    }
    cv_.notify_one();
  }

 private:
  Pool() {
    const char* env = getenv("LIBVIRT_NAPI_THREADS");
    int n = env != nullptr ? atoi(env) : 0;
    max_ = n > 0 && n <= 64 ? static_cast<size_t>(n) : 4;
  }

  void Loop() {
    BlockAllSignals();
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        idle_++;
        cv_.wait(lock, [this] { return !queue_.empty(); });
        idle_--;
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  size_t idle_ = 0;
  size_t threads_ = 0;
  size_t max_ = 4;
};

// ---------------------------------------------------------------------------------------------
// Process-wide libvirt initialisation and the event loop thread.

std::once_flag g_init_once;
bool g_init_ok = false;
std::string g_init_error;

void GlobalInit() {
  std::call_once(g_init_once, [] {
    if (virInitialize() < 0) {
      g_init_error = "virInitialize failed";
      return;
    }
    virSetErrorFunc(nullptr, NoopErrorFunc);
    if (virEventRegisterDefaultImpl() < 0) {
      virErrorPtr e = virGetLastError();
      g_init_error = std::string("virEventRegisterDefaultImpl failed: ") +
                     (e != nullptr && e->message != nullptr ? e->message : "unknown error");
      virResetLastError();
      return;
    }
    std::thread([] {
      BlockAllSignals();
      for (;;) {
        if (virEventRunDefaultImpl() < 0) {
          virResetLastError();
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
      }
    }).detach();
    g_init_ok = true;
  });
}

// ---------------------------------------------------------------------------------------------
// Per-environment state: the completion thread-safe function.

struct Job;

struct EnvState {
  std::mutex mu;
  bool alive = true;              // false once the TSFN was finalized (env teardown)
  napi_threadsafe_function tsfn = nullptr;
  int pending = 0;                // JS thread only
};

struct AddonData {
  std::shared_ptr<EnvState> state;
  Napi::FunctionReference makeError;
};

struct Job {
  virtual ~Job() = default;
  virtual void Execute() = 0;                    // worker thread
  virtual Napi::Value Resolve(Napi::Env env) = 0;  // JS thread, only when !failure.failed
  napi_deferred deferred = nullptr;
  Failure failure;
  std::shared_ptr<EnvState> state;
  std::function<void()> onFailure;  // JS thread, when the call failed
};

template <typename R>
struct FnJob : Job {
  std::function<R(Failure&)> work;
  std::function<Napi::Value(Napi::Env, R&)> done;
  R result{};
  void Execute() override { result = work(failure); }
  Napi::Value Resolve(Napi::Env env) override { return done(env, result); }
};

AddonData* Data(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

Napi::Value MakeError(Napi::Env env, const Failure& f) {
  Napi::Object info = Napi::Object::New(env);
  info.Set("code", Napi::Number::New(env, f.code));
  info.Set("domain", Napi::Number::New(env, f.domain));
  info.Set("level", Napi::Number::New(env, f.level));
  info.Set("message", Napi::String::New(env, f.message));
  AddonData* data = Data(env);
  if (data != nullptr && !data->makeError.IsEmpty()) {
    return data->makeError.Call({info});
  }
  Napi::Error err = Napi::Error::New(env, f.message);
  err.Set("code", info.Get("code"));
  err.Set("domain", info.Get("domain"));
  err.Set("level", info.Get("level"));
  return err.Value();
}

void CompleteJob(napi_env raw_env, napi_value, void*, void* data) {
  Job* job = static_cast<Job*>(data);
  if (raw_env == nullptr) {  // environment torn down with calls in flight
    delete job;
    return;
  }
  Napi::Env env(raw_env);
  Napi::HandleScope scope(env);
  std::shared_ptr<EnvState> state = job->state;
  if (--state->pending == 0) napi_unref_threadsafe_function(raw_env, state->tsfn);
  try {
    if (job->failure.failed) {
      if (job->onFailure) job->onFailure();
      napi_reject_deferred(raw_env, job->deferred, MakeError(env, job->failure));
    } else {
      napi_resolve_deferred(raw_env, job->deferred, job->Resolve(env));
    }
  } catch (const Napi::Error& e) {
    napi_reject_deferred(raw_env, job->deferred, e.Value());
  }
  delete job;
}

void FinalizeEnvState(napi_env, void* finalize_data, void*) {
  auto* holder = static_cast<std::shared_ptr<EnvState>*>(finalize_data);
  {
    std::lock_guard<std::mutex> lock((*holder)->mu);
    (*holder)->alive = false;
  }
  delete holder;
}

// Queues a job; returns its promise.
Napi::Value Submit(Napi::Env env, Job* job) {
  AddonData* data = Data(env);
  job->state = data->state;
  napi_value promise;
  napi_create_promise(env, &job->deferred, &promise);
  if (data->state->pending++ == 0) napi_ref_threadsafe_function(env, data->state->tsfn);
  Pool::Get().Post([job] {
    job->Execute();
    std::shared_ptr<EnvState> state = job->state;
    std::lock_guard<std::mutex> lock(state->mu);
    if (!state->alive ||
        napi_call_threadsafe_function(state->tsfn, job, napi_tsfn_nonblocking) != napi_ok) {
      // The environment is gone: nobody is waiting for this result any more.
      delete job;
    }
  });
  return Napi::Value(env, promise);
}

template <typename R>
Napi::Value Run(Napi::Env env, std::function<R(Failure&)> work,
                std::function<Napi::Value(Napi::Env, R&)> done,
                std::function<void()> onFailure = nullptr) {
  auto* job = new FnJob<R>();
  job->work = std::move(work);
  job->done = std::move(done);
  job->onFailure = std::move(onFailure);
  return Submit(env, job);
}

Napi::Value Rejected(Napi::Env env, int code, const std::string& message) {
  Failure f;
  Fail(f, code, message);
  auto deferred = Napi::Promise::Deferred::New(env);
  deferred.Reject(MakeError(env, f));
  return deferred.Promise();
}

// ---------------------------------------------------------------------------------------------
// Event sink: one per connection, carries lifecycle and close events to JS.

struct EventData {
  enum Kind { kLifecycle, kClose } kind;
  std::string name;
  std::string uuid;
  int event = 0;
  int detail = 0;
  int reason = 0;
};

struct EventSink {
  std::mutex mu;
  bool alive = true;
  napi_threadsafe_function tsfn = nullptr;

  void Emit(EventData* ev) {
    std::lock_guard<std::mutex> lock(mu);
    if (!alive || napi_call_threadsafe_function(tsfn, ev, napi_tsfn_nonblocking) != napi_ok) {
      delete ev;
    }
  }
  // JS thread: stop delivering and drop the JS callback.
  void Shutdown() {
    std::lock_guard<std::mutex> lock(mu);
    if (alive) {
      alive = false;
      napi_release_threadsafe_function(tsfn, napi_tsfn_release);
    }
  }
  void SetRef(napi_env env, bool ref) {
    std::lock_guard<std::mutex> lock(mu);
    if (!alive) return;
    if (ref) {
      napi_ref_threadsafe_function(env, tsfn);
    } else {
      napi_unref_threadsafe_function(env, tsfn);
    }
  }
};

using SinkPtr = std::shared_ptr<EventSink>;

void DeliverEvent(napi_env raw_env, napi_value js_cb, void*, void* data) {
  std::unique_ptr<EventData> ev(static_cast<EventData*>(data));
  if (raw_env == nullptr || js_cb == nullptr) return;
  Napi::Env env(raw_env);
  Napi::HandleScope scope(env);
  Napi::Object payload = Napi::Object::New(env);
  const char* kind;
  if (ev->kind == EventData::kLifecycle) {
    kind = "lifecycle";
    payload.Set("name", ev->name);
    payload.Set("uuid", ev->uuid);
    payload.Set("event", ev->event);
    payload.Set("detail", ev->detail);
  } else {
    kind = "close";
    payload.Set("reason", ev->reason);
  }
  try {
    Napi::Function(env, js_cb).Call({Napi::String::New(env, kind), payload});
  } catch (Napi::Error& e) {
    // A listener threw: surface it as an uncaught exception, like any event listener.
    e.ThrowAsJavaScriptException();
  }
}

void FinalizeSink(napi_env, void* finalize_data, void*) {
  auto* holder = static_cast<SinkPtr*>(finalize_data);
  {
    std::lock_guard<std::mutex> lock((*holder)->mu);
    (*holder)->alive = false;
  }
  delete holder;
}

void FreeSinkOpaque(void* opaque) { delete static_cast<SinkPtr*>(opaque); }

int LifecycleCallback(virConnectPtr, virDomainPtr dom, int event, int detail, void* opaque) {
  auto* ev = new EventData();
  ev->kind = EventData::kLifecycle;
  const char* name = virDomainGetName(dom);
  if (name != nullptr) ev->name = name;
  char uuid[VIR_UUID_STRING_BUFLEN];
  if (virDomainGetUUIDString(dom, uuid) == 0) ev->uuid = uuid;
  ev->event = event;
  ev->detail = detail;
  (*static_cast<SinkPtr*>(opaque))->Emit(ev);
  return 0;
}

void CloseCallback(virConnectPtr, int reason, void* opaque) {
  auto* ev = new EventData();
  ev->kind = EventData::kClose;
  ev->reason = reason;
  (*static_cast<SinkPtr*>(opaque))->Emit(ev);
}

// ---------------------------------------------------------------------------------------------
// Handles: externals with type tags. Libvirt objects are reference counted; a job takes its own
// reference on the JS thread and drops it on the worker, and finalizers free on the worker (the
// last reference to a remote connection closes it with an RPC).

const napi_type_tag kConnTag = {0x6c6962766972745fULL, 0x636f6e6e65637431ULL};
const napi_type_tag kDomTag = {0x6c6962766972745fULL, 0x646f6d61696e3031ULL};
const napi_type_tag kSecretTag = {0x6c6962766972745fULL, 0x7365637265743031ULL};

struct ConnBox {
  virConnectPtr conn = nullptr;  // null once close() was called
  SinkPtr sink;
  int lifecycleId = -1;
  bool closeRegistered = false;
};

struct DomBox {
  virDomainPtr dom = nullptr;
};

struct SecretBox {
  virSecretPtr secret = nullptr;
};

// Deregisters callbacks and drops the connection reference (worker thread).
void TeardownConnection(virConnectPtr conn, int lifecycleId, bool closeRegistered) {
  if (lifecycleId >= 0 && virConnectDomainEventDeregisterAny(conn, lifecycleId) < 0) {
    virResetLastError();
  }
  if (closeRegistered && virConnectUnregisterCloseCallback(conn, CloseCallback) < 0) {
    virResetLastError();
  }
  if (virConnectClose(conn) < 0) virResetLastError();
}

void FinalizeConn(Napi::Env, ConnBox* box) {
  if (box->sink) box->sink->Shutdown();
  if (box->conn != nullptr) {
    virConnectPtr conn = box->conn;
    int id = box->lifecycleId;
    bool closeRegistered = box->closeRegistered;
    Pool::Get().Post([conn, id, closeRegistered] { TeardownConnection(conn, id, closeRegistered); });
  }
  delete box;
}

void FinalizeDom(Napi::Env, DomBox* box) {
  virDomainPtr dom = box->dom;
  delete box;
  if (dom != nullptr) Pool::Get().Post([dom] {
      if (virDomainFree(dom) < 0) virResetLastError();
    });
}

void FinalizeSecret(Napi::Env, SecretBox* box) {
  virSecretPtr secret = box->secret;
  delete box;
  if (secret != nullptr) Pool::Get().Post([secret] {
      if (virSecretFree(secret) < 0) virResetLastError();
    });
}

template <typename T>
T* Unwrap(const Napi::Value& v, const napi_type_tag& tag, const char* what) {
  if (!v.IsExternal()) throw Napi::TypeError::New(v.Env(), std::string("expected a ") + what + " handle");
  Napi::External<T> ext = v.As<Napi::External<T>>();
  if (!ext.CheckTypeTag(&tag)) throw Napi::TypeError::New(v.Env(), std::string("expected a ") + what + " handle");
  return ext.Data();
}

struct DomResult {
  virDomainPtr dom = nullptr;
  std::string name;
  std::string uuid;
};

struct SecretResult {
  virSecretPtr secret = nullptr;
  std::string uuid;
  int usageType = 0;
  std::string usageID;
};

DomResult DescribeDomain(virDomainPtr dom) {
  DomResult r;
  r.dom = dom;
  const char* name = virDomainGetName(dom);
  if (name != nullptr) r.name = name;
  char uuid[VIR_UUID_STRING_BUFLEN];
  if (virDomainGetUUIDString(dom, uuid) == 0) r.uuid = uuid;
  virResetLastError();
  return r;
}

SecretResult DescribeSecret(virSecretPtr secret) {
  SecretResult r;
  r.secret = secret;
  char uuid[VIR_UUID_STRING_BUFLEN];
  if (virSecretGetUUIDString(secret, uuid) == 0) r.uuid = uuid;
  r.usageType = virSecretGetUsageType(secret);
  const char* usage = virSecretGetUsageID(secret);
  if (usage != nullptr) r.usageID = usage;
  virResetLastError();
  return r;
}

Napi::Value WrapDomain(Napi::Env env, DomResult& r) {
  auto* box = new DomBox();
  box->dom = r.dom;
  r.dom = nullptr;
  auto ext = Napi::External<DomBox>::New(env, box, FinalizeDom);
  ext.TypeTag(&kDomTag);
  Napi::Object o = Napi::Object::New(env);
  o.Set("handle", ext);
  o.Set("name", r.name);
  o.Set("uuid", r.uuid);
  return o;
}

Napi::Value WrapSecret(Napi::Env env, SecretResult& r) {
  auto* box = new SecretBox();
  box->secret = r.secret;
  r.secret = nullptr;
  auto ext = Napi::External<SecretBox>::New(env, box, FinalizeSecret);
  ext.TypeTag(&kSecretTag);
  Napi::Object o = Napi::Object::New(env);
  o.Set("handle", ext);
  o.Set("uuid", r.uuid);
  o.Set("usageType", r.usageType);
  o.Set("usageID", r.usageID);
  return o;
}

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (!info[i].IsString()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

unsigned int ArgFlags(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || info[i].IsUndefined()) return 0;
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "flags must be a number");
  int64_t v = info[i].As<Napi::Number>().Int64Value();
  if (v < 0 || v > 0xffffffffLL) throw Napi::RangeError::New(info.Env(), "flags out of range");
  return static_cast<unsigned int>(v);
}

// Returns a referenced connection pointer for a job, or nullptr if the connection was closed.
virConnectPtr RefConn(const Napi::CallbackInfo& info) {
  ConnBox* box = Unwrap<ConnBox>(info[0], kConnTag, "connection");
  if (box->conn == nullptr) return nullptr;
  virConnectRef(box->conn);
  return box->conn;
}

virDomainPtr RefDom(const Napi::CallbackInfo& info) {
  DomBox* box = Unwrap<DomBox>(info[0], kDomTag, "domain");
  virDomainRef(box->dom);
  return box->dom;
}

virSecretPtr RefSecret(const Napi::CallbackInfo& info) {
  SecretBox* box = Unwrap<SecretBox>(info[0], kSecretTag, "secret");
  virSecretRef(box->secret);
  return box->secret;
}

void Unref(virConnectPtr c) {
  if (virConnectClose(c) < 0) virResetLastError();
}
void Unref(virDomainPtr d) {
  if (virDomainFree(d) < 0) virResetLastError();
}
void Unref(virSecretPtr s) {
  if (virSecretFree(s) < 0) virResetLastError();
}

#define CONN_OR_REJECT(var)                                                                 \
  virConnectPtr var = RefConn(info);                                                        \
  if (var == nullptr) return Rejected(info.Env(), VIR_ERR_INVALID_CONN, "connection is closed");

std::string TakeString(char* s) {
  std::string out = s != nullptr ? s : "";
  free(s);
  return out;
}

// Resolvers for common result types.
Napi::Value ResolveUndefined(Napi::Env env, int&) { return env.Undefined(); }
Napi::Value ResolveString(Napi::Env env, std::string& s) { return Napi::String::New(env, s); }
Napi::Value ResolveNumber(Napi::Env env, double& d) { return Napi::Number::New(env, d); }
Napi::Value ResolveBool(Napi::Env env, int& b) { return Napi::Boolean::New(env, b != 0); }

// ---------------------------------------------------------------------------------------------
// Module-level functions

Napi::Value Init(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) throw Napi::TypeError::New(info.Env(), "makeError must be a function");
  Data(info.Env())->makeError = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Value GetVersion(const Napi::CallbackInfo& info) {
  unsigned long v = 0;
  if (virGetVersion(&v, nullptr, nullptr) < 0) {
    Failure f;
    Capture(f, "virGetVersion failed");
    throw Napi::Error(info.Env(), MakeError(info.Env(), f));
  }
  return Napi::Number::New(info.Env(), static_cast<double>(v));
}

struct OpenResult {
  virConnectPtr conn = nullptr;
  int lifecycleId = -1;
  bool closeRegistered = false;
};

// connect(uri, readOnly, emit, keepAliveInterval, keepAliveCount) -> Promise<handle>
Napi::Value Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string uri = ArgString(info, 0, "uri");
  bool readOnly = info[1].ToBoolean();
  if (!info[2].IsFunction()) throw Napi::TypeError::New(env, "emit must be a function");
  int kaInterval = info[3].IsNumber() ? info[3].As<Napi::Number>().Int32Value() : 5;
  int kaCount = info[4].IsNumber() ? info[4].As<Napi::Number>().Int32Value() : 3;

  if (!g_init_ok) return Rejected(env, VIR_ERR_INTERNAL_ERROR, g_init_error);

  auto sink = std::make_shared<EventSink>();
  auto* finalizeHolder = new SinkPtr(sink);
  napi_status st = napi_create_threadsafe_function(
      env, info[2], nullptr, Napi::String::New(env, "libvirt-napi:events"), 0, 1, finalizeHolder,
      FinalizeSink, nullptr, DeliverEvent, &sink->tsfn);
  if (st != napi_ok) {
    delete finalizeHolder;
    throw Napi::Error::New(env, "cannot create the event thread-safe function");
  }
  napi_unref_threadsafe_function(env, sink->tsfn);

  return Run<OpenResult>(
      env,
      [uri, readOnly, kaInterval, kaCount, sink](Failure& f) {
        OpenResult r;
        virConnectPtr c = virConnectOpenAuth(uri.c_str(), nullptr, readOnly ? VIR_CONNECT_RO : 0);
        if (c == nullptr) {
          Capture(f, "cannot open the connection");
          return r;
        }
        if (kaInterval > 0) {
          // Remote drivers only; local drivers (test:///) answer "not supported".
          if (virConnectSetKeepAlive(c, kaInterval, static_cast<unsigned int>(kaCount)) < 0) {
            virResetLastError();
          }
        }
        int id = virConnectDomainEventRegisterAny(c, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                  VIR_DOMAIN_EVENT_CALLBACK(LifecycleCallback),
                                                  new SinkPtr(sink), FreeSinkOpaque);
        if (id < 0) {
          Capture(f, "cannot register for lifecycle events");
          virConnectClose(c);
          return r;
        }
        bool closeRegistered = false;
        if (virConnectRegisterCloseCallback(c, CloseCallback, new SinkPtr(sink), FreeSinkOpaque) == 0) {
          closeRegistered = true;
        } else {
          virResetLastError();
        }
        r.conn = c;
        r.lifecycleId = id;
        r.closeRegistered = closeRegistered;
        return r;
      },
      [sink](Napi::Env env, OpenResult& r) -> Napi::Value {
        auto* box = new ConnBox();
        box->conn = r.conn;
        box->sink = sink;
        box->lifecycleId = r.lifecycleId;
        box->closeRegistered = r.closeRegistered;
        auto ext = Napi::External<ConnBox>::New(env, box, FinalizeConn);
        ext.TypeTag(&kConnTag);
        return ext;
      },
      [sink] { sink->Shutdown(); });
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  ConnBox* box = Unwrap<ConnBox>(info[0], kConnTag, "connection");
  if (box->sink) box->sink->Shutdown();
  if (box->conn == nullptr) {
    auto d = Napi::Promise::Deferred::New(info.Env());
    d.Resolve(info.Env().Undefined());
    return d.Promise();
  }
  virConnectPtr conn = box->conn;
  int id = box->lifecycleId;
  bool closeRegistered = box->closeRegistered;
  box->conn = nullptr;
  return Run<int>(
      info.Env(),
      [conn, id, closeRegistered](Failure&) {
        TeardownConnection(conn, id, closeRegistered);
        return 0;
      },
      ResolveUndefined);
}

Napi::Value SetEventsRef(const Napi::CallbackInfo& info) {
  ConnBox* box = Unwrap<ConnBox>(info[0], kConnTag, "connection");
  if (box->sink) box->sink->SetRef(info.Env(), info[1].ToBoolean());
  return info.Env().Undefined();
}

Napi::Value IsAlive(const Napi::CallbackInfo& info) {
  ConnBox* box = Unwrap<ConnBox>(info[0], kConnTag, "connection");
  if (box->conn == nullptr) return Napi::Boolean::New(info.Env(), false);
  int alive = virConnectIsAlive(box->conn);  // local check, no RPC
  virResetLastError();
  return Napi::Boolean::New(info.Env(), alive == 1);
}

Napi::Value ConnLibVersion(const Napi::CallbackInfo& info) {
  CONN_OR_REJECT(c);
  return Run<double>(
      info.Env(),
      [c](Failure& f) {
        unsigned long v = 0;
        if (virConnectGetLibVersion(c, &v) < 0) Capture(f, "virConnectGetLibVersion failed");
        Unref(c);
        return static_cast<double>(v);
      },
      ResolveNumber);
}

Napi::Value ConnHypervisorVersion(const Napi::CallbackInfo& info) {
  CONN_OR_REJECT(c);
  return Run<double>(
      info.Env(),
      [c](Failure& f) {
        unsigned long v = 0;
        if (virConnectGetVersion(c, &v) < 0) Capture(f, "virConnectGetVersion failed");
        Unref(c);
        return static_cast<double>(v);
      },
      ResolveNumber);
}

Napi::Value ConnHostname(const Napi::CallbackInfo& info) {
  CONN_OR_REJECT(c);
  return Run<std::string>(
      info.Env(),
      [c](Failure& f) {
        char* s = virConnectGetHostname(c);
        if (s == nullptr) Capture(f, "virConnectGetHostname failed");
        Unref(c);
        return TakeString(s);
      },
      ResolveString);
}

Napi::Value ConnCapabilities(const Napi::CallbackInfo& info) {
  CONN_OR_REJECT(c);
  return Run<std::string>(
      info.Env(),
      [c](Failure& f) {
        char* s = virConnectGetCapabilities(c);
        if (s == nullptr) Capture(f, "virConnectGetCapabilities failed");
        Unref(c);
        return TakeString(s);
      },
      ResolveString);
}

struct OptString {
  bool set = false;
  std::string value;
  const char* c_str() const { return set ? value.c_str() : nullptr; }
};

OptString ArgOptString(const Napi::CallbackInfo& info, size_t i) {
  OptString o;
  if (info.Length() > i && info[i].IsString()) {
    o.set = true;
    o.value = info[i].As<Napi::String>().Utf8Value();
  }
  return o;
}

// domainCapabilities(conn, emulatorbin?, arch?, machine?, virttype?, flags)
Napi::Value ConnDomainCapabilities(const Napi::CallbackInfo& info) {
  OptString emulator = ArgOptString(info, 1), arch = ArgOptString(info, 2),
            machine = ArgOptString(info, 3), virttype = ArgOptString(info, 4);
  unsigned int flags = ArgFlags(info, 5);
  CONN_OR_REJECT(c);
  return Run<std::string>(
      info.Env(),
      [c, emulator, arch, machine, virttype, flags](Failure& f) {
        char* s = virConnectGetDomainCapabilities(c, emulator.c_str(), arch.c_str(), machine.c_str(),
                                                  virttype.c_str(), flags);
        if (s == nullptr) Capture(f, "virConnectGetDomainCapabilities failed");
        Unref(c);
        return TakeString(s);
      },
      ResolveString);
}

using DomList = std::vector<DomResult>;

Napi::Value ConnListAllDomains(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  CONN_OR_REJECT(c);
  return Run<DomList>(
      info.Env(),
      [c, flags](Failure& f) {
        DomList out;
        virDomainPtr* doms = nullptr;
        int n = virConnectListAllDomains(c, &doms, flags);
        if (n < 0) {
          Capture(f, "virConnectListAllDomains failed");
        } else {
          for (int i = 0; i < n; i++) out.push_back(DescribeDomain(doms[i]));
          free(doms);
        }
        Unref(c);
        return out;
      },
      [](Napi::Env env, DomList& list) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, list.size());
        for (size_t i = 0; i < list.size(); i++) arr.Set(static_cast<uint32_t>(i), WrapDomain(env, list[i]));
        return arr;
      });
}

// Shared shape: connection + string argument (+ flags) -> domain.
Napi::Value DomainFromConn(const Napi::CallbackInfo& info, const char* what,
                           std::function<virDomainPtr(virConnectPtr, const std::string&, unsigned int)> call) {
  std::string arg = ArgString(info, 1, what);
  unsigned int flags = ArgFlags(info, 2);
  CONN_OR_REJECT(c);
  std::string label = std::string(what);
  return Run<DomResult>(
      info.Env(),
      [c, arg, flags, call, label](Failure& f) {
        DomResult r;
        virDomainPtr d = call(c, arg, flags);
        if (d == nullptr) {
          Capture(f, ("libvirt call failed for " + label).c_str());
        } else {
          r = DescribeDomain(d);
        }
        Unref(c);
        return r;
      },
      WrapDomain);
}

Napi::Value ConnDefineXML(const Napi::CallbackInfo& info) {
  return DomainFromConn(info, "xml", [](virConnectPtr c, const std::string& xml, unsigned int flags) {
    return virDomainDefineXMLFlags(c, xml.c_str(), flags);
  });
}

Napi::Value ConnCreateXML(const Napi::CallbackInfo& info) {
  return DomainFromConn(info, "xml", [](virConnectPtr c, const std::string& xml, unsigned int flags) {
    return virDomainCreateXML(c, xml.c_str(), flags);
  });
}

Napi::Value ConnLookupByName(const Napi::CallbackInfo& info) {
  return DomainFromConn(info, "name", [](virConnectPtr c, const std::string& name, unsigned int) {
    return virDomainLookupByName(c, name.c_str());
  });
}

Napi::Value ConnLookupByUUID(const Napi::CallbackInfo& info) {
  return DomainFromConn(info, "uuid", [](virConnectPtr c, const std::string& uuid, unsigned int) {
    return virDomainLookupByUUIDString(c, uuid.c_str());
  });
}

Napi::Value SecretFromConn(const Napi::CallbackInfo& info, const char* what,
                           std::function<virSecretPtr(virConnectPtr, const std::string&, unsigned int)> call,
                           unsigned int extra) {
  std::string arg = ArgString(info, 1, what);
  CONN_OR_REJECT(c);
  std::string label = what;
  return Run<SecretResult>(
      info.Env(),
      [c, arg, extra, call, label](Failure& f) {
        SecretResult r;
        virSecretPtr s = call(c, arg, extra);
        if (s == nullptr) {
          Capture(f, ("libvirt call failed for secret " + label).c_str());
        } else {
          r = DescribeSecret(s);
        }
        Unref(c);
        return r;
      },
      WrapSecret);
}

Napi::Value ConnDefineSecret(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 2);
  return SecretFromConn(
      info, "xml",
      [](virConnectPtr c, const std::string& xml, unsigned int fl) { return virSecretDefineXML(c, xml.c_str(), fl); },
      flags);
}

// lookupSecretByUsage(conn, usageId, usageType)
Napi::Value ConnLookupSecretByUsage(const Napi::CallbackInfo& info) {
  if (!info[2].IsNumber()) throw Napi::TypeError::New(info.Env(), "usage type must be a number");
  unsigned int type = info[2].As<Napi::Number>().Uint32Value();
  return SecretFromConn(
      info, "usage",
      [](virConnectPtr c, const std::string& usage, unsigned int t) {
        return virSecretLookupByUsage(c, static_cast<int>(t), usage.c_str());
      },
      type);
}

Napi::Value ConnLookupSecretByUUID(const Napi::CallbackInfo& info) {
  return SecretFromConn(
      info, "uuid",
      [](virConnectPtr c, const std::string& uuid, unsigned int) { return virSecretLookupByUUIDString(c, uuid.c_str()); },
      0);
}

using SecretList = std::vector<SecretResult>;

Napi::Value ConnListAllSecrets(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  CONN_OR_REJECT(c);
  return Run<SecretList>(
      info.Env(),
      [c, flags](Failure& f) {
        SecretList out;
        virSecretPtr* secrets = nullptr;
        int n = virConnectListAllSecrets(c, &secrets, flags);
        if (n < 0) {
          Capture(f, "virConnectListAllSecrets failed");
        } else {
          for (int i = 0; i < n; i++) out.push_back(DescribeSecret(secrets[i]));
          free(secrets);
        }
        Unref(c);
        return out;
      },
      [](Napi::Env env, SecretList& list) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, list.size());
        for (size_t i = 0; i < list.size(); i++) arr.Set(static_cast<uint32_t>(i), WrapSecret(env, list[i]));
        return arr;
      });
}

// ---------------------------------------------------------------------------------------------
// Domain functions

// A domain call that returns int status (< 0 on failure).
Napi::Value DomainStatusCall(const Napi::CallbackInfo& info, const char* name,
                             std::function<int(virDomainPtr)> call) {
  virDomainPtr d = RefDom(info);
  std::string label = name;
  return Run<int>(
      info.Env(),
      [d, call, label](Failure& f) {
        if (call(d) < 0) Capture(f, (label + " failed").c_str());
        Unref(d);
        return 0;
      },
      ResolveUndefined);
}

Napi::Value DomCreate(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  return DomainStatusCall(info, "virDomainCreateWithFlags",
                          [flags](virDomainPtr d) { return virDomainCreateWithFlags(d, flags); });
}

Napi::Value DomShutdown(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  return DomainStatusCall(info, "virDomainShutdownFlags",
                          [flags](virDomainPtr d) { return virDomainShutdownFlags(d, flags); });
}

Napi::Value DomDestroy(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  return DomainStatusCall(info, "virDomainDestroyFlags",
                          [flags](virDomainPtr d) { return virDomainDestroyFlags(d, flags); });
}

Napi::Value DomReboot(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  return DomainStatusCall(info, "virDomainReboot", [flags](virDomainPtr d) { return virDomainReboot(d, flags); });
}

Napi::Value DomSuspend(const Napi::CallbackInfo& info) {
  return DomainStatusCall(info, "virDomainSuspend", [](virDomainPtr d) { return virDomainSuspend(d); });
}

Napi::Value DomResume(const Napi::CallbackInfo& info) {
  return DomainStatusCall(info, "virDomainResume", [](virDomainPtr d) { return virDomainResume(d); });
}

Napi::Value DomUndefine(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  return DomainStatusCall(info, "virDomainUndefineFlags",
                          [flags](virDomainPtr d) { return virDomainUndefineFlags(d, flags); });
}

Napi::Value DomAttachDevice(const Napi::CallbackInfo& info) {
  std::string xml = ArgString(info, 1, "xml");
  unsigned int flags = ArgFlags(info, 2);
  return DomainStatusCall(info, "virDomainAttachDeviceFlags", [xml, flags](virDomainPtr d) {
    return virDomainAttachDeviceFlags(d, xml.c_str(), flags);
  });
}

Napi::Value DomDetachDevice(const Napi::CallbackInfo& info) {
  std::string xml = ArgString(info, 1, "xml");
  unsigned int flags = ArgFlags(info, 2);
  return DomainStatusCall(info, "virDomainDetachDeviceFlags", [xml, flags](virDomainPtr d) {
    return virDomainDetachDeviceFlags(d, xml.c_str(), flags);
  });
}

// blockResize(dom, disk, bytes: bigint, flags)
Napi::Value DomBlockResize(const Napi::CallbackInfo& info) {
  std::string disk = ArgString(info, 1, "disk");
  if (!info[2].IsBigInt()) throw Napi::TypeError::New(info.Env(), "size must be a bigint");
  bool lossless = false;
  uint64_t size = info[2].As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) throw Napi::RangeError::New(info.Env(), "size out of range");
  unsigned int flags = ArgFlags(info, 3) | VIR_DOMAIN_BLOCK_RESIZE_BYTES;
  return DomainStatusCall(info, "virDomainBlockResize", [disk, size, flags](virDomainPtr d) {
    return virDomainBlockResize(d, disk.c_str(), size, flags);
  });
}

Napi::Value DomState(const Napi::CallbackInfo& info) {
  virDomainPtr d = RefDom(info);
  using Pair = std::pair<int, int>;
  return Run<Pair>(
      info.Env(),
      [d](Failure& f) {
        int state = 0, reason = 0;
        if (virDomainGetState(d, &state, &reason, 0) < 0) Capture(f, "virDomainGetState failed");
        Unref(d);
        return Pair(state, reason);
      },
      [](Napi::Env env, Pair& p) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, 2);
        a.Set(0u, p.first);
        a.Set(1u, p.second);
        return a;
      });
}

Napi::Value DomInfo(const Napi::CallbackInfo& info) {
  virDomainPtr d = RefDom(info);
  return Run<virDomainInfo>(
      info.Env(),
      [d](Failure& f) {
        virDomainInfo i;
        memset(&i, 0, sizeof(i));
        if (virDomainGetInfo(d, &i) < 0) Capture(f, "virDomainGetInfo failed");
        Unref(d);
        return i;
      },
      [](Napi::Env env, virDomainInfo& i) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("state", static_cast<double>(i.state));
        o.Set("maxMemKiB", static_cast<double>(i.maxMem));
        o.Set("memoryKiB", static_cast<double>(i.memory));
        o.Set("nrVirtCpu", static_cast<double>(i.nrVirtCpu));
        o.Set("cpuTimeNs", Napi::BigInt::New(env, static_cast<uint64_t>(i.cpuTime)));
        return o;
      });
}

Napi::Value DomXML(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  virDomainPtr d = RefDom(info);
  return Run<std::string>(
      info.Env(),
      [d, flags](Failure& f) {
        char* s = virDomainGetXMLDesc(d, flags);
        if (s == nullptr) Capture(f, "virDomainGetXMLDesc failed");
        Unref(d);
        return TakeString(s);
      },
      ResolveString);
}

Napi::Value DomIsActive(const Napi::CallbackInfo& info) {
  virDomainPtr d = RefDom(info);
  return Run<int>(
      info.Env(),
      [d](Failure& f) {
        int r = virDomainIsActive(d);
        if (r < 0) Capture(f, "virDomainIsActive failed");
        Unref(d);
        return r;
      },
      ResolveBool);
}

Napi::Value DomIsPersistent(const Napi::CallbackInfo& info) {
  virDomainPtr d = RefDom(info);
  return Run<int>(
      info.Env(),
      [d](Failure& f) {
        int r = virDomainIsPersistent(d);
        if (r < 0) Capture(f, "virDomainIsPersistent failed");
        Unref(d);
        return r;
      },
      ResolveBool);
}

Napi::Value DomID(const Napi::CallbackInfo& info) {
  // Asks the daemon for the current id (a fresh lookup), since the handle's cached id goes stale.
  virDomainPtr d = RefDom(info);
  return Run<double>(
      info.Env(),
      [d](Failure& f) {
        double out = -1;
        char uuid[VIR_UUID_STRING_BUFLEN];
        virConnectPtr c = virDomainGetConnect(d);
        if (virDomainGetUUIDString(d, uuid) < 0) {
          Capture(f, "virDomainGetUUIDString failed");
        } else {
          virDomainPtr fresh = virDomainLookupByUUIDString(c, uuid);
          if (fresh == nullptr) {
            Capture(f, "virDomainLookupByUUIDString failed");
          } else {
            unsigned int id = virDomainGetID(fresh);
            out = id == static_cast<unsigned int>(-1) ? -1 : static_cast<double>(id);
            virResetLastError();
            Unref(fresh);
          }
        }
        Unref(d);
        return out;
      },
      ResolveNumber);
}

// ---------------------------------------------------------------------------------------------
// Secret functions

// Secret bytes are zeroed as soon as libvirt has them (and on every exit path).
struct SecretBytes {
  std::vector<unsigned char> bytes;
  ~SecretBytes() {
    if (!bytes.empty()) explicit_bzero(bytes.data(), bytes.size());
  }
};

Napi::Value SecretSetValue(const Napi::CallbackInfo& info) {
  if (!info[1].IsTypedArray()) throw Napi::TypeError::New(info.Env(), "value must be a Uint8Array");
  Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_uint8_array) throw Napi::TypeError::New(info.Env(), "value must be a Uint8Array");
  Napi::Uint8Array arr = ta.As<Napi::Uint8Array>();
  auto value = std::make_shared<SecretBytes>();
  value->bytes.assign(arr.Data(), arr.Data() + arr.ByteLength());
  unsigned int flags = ArgFlags(info, 2);
  virSecretPtr s = RefSecret(info);
  return Run<int>(
      info.Env(),
      [s, value, flags](Failure& f) {
        if (virSecretSetValue(s, value->bytes.data(), value->bytes.size(), flags) < 0) {
          Capture(f, "virSecretSetValue failed");
        }
        explicit_bzero(value->bytes.data(), value->bytes.size());
        Unref(s);
        return 0;
      },
      ResolveUndefined);
}

Napi::Value SecretXML(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  virSecretPtr s = RefSecret(info);
  return Run<std::string>(
      info.Env(),
      [s, flags](Failure& f) {
        char* x = virSecretGetXMLDesc(s, flags);
        if (x == nullptr) Capture(f, "virSecretGetXMLDesc failed");
        Unref(s);
        return TakeString(x);
      },
      ResolveString);
}

Napi::Value SecretUndefine(const Napi::CallbackInfo& info) {
  virSecretPtr s = RefSecret(info);
  return Run<int>(
      info.Env(),
      [s](Failure& f) {
        if (virSecretUndefine(s) < 0) Capture(f, "virSecretUndefine failed");
        Unref(s);
        return 0;
      },
      ResolveUndefined);
}

// ---------------------------------------------------------------------------------------------

Napi::Object ModuleInit(Napi::Env env, Napi::Object exports) {
  GlobalInit();

  auto* data = new AddonData();
  data->state = std::make_shared<EnvState>();
  auto* holder = new std::shared_ptr<EnvState>(data->state);
  napi_status st = napi_create_threadsafe_function(
      env, nullptr, nullptr, Napi::String::New(env, "libvirt-napi:completions"), 0, 1, holder,
      FinalizeEnvState, nullptr, CompleteJob, &data->state->tsfn);
  if (st != napi_ok) {
    delete holder;
    delete data;
    throw Napi::Error::New(env, "cannot create the completion thread-safe function");
  }
  napi_unref_threadsafe_function(env, data->state->tsfn);
  env.SetInstanceData<AddonData>(data);

  exports.Set("initOk", Napi::Boolean::New(env, g_init_ok));
  exports.Set("initError", Napi::String::New(env, g_init_error));
  exports.Set("init", Napi::Function::New(env, Init, "init"));
  exports.Set("getVersion", Napi::Function::New(env, GetVersion, "getVersion"));
  exports.Set("connect", Napi::Function::New(env, Connect, "connect"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("setEventsRef", Napi::Function::New(env, SetEventsRef, "setEventsRef"));
  exports.Set("isAlive", Napi::Function::New(env, IsAlive, "isAlive"));
  exports.Set("libVersion", Napi::Function::New(env, ConnLibVersion, "libVersion"));
  exports.Set("hypervisorVersion", Napi::Function::New(env, ConnHypervisorVersion, "hypervisorVersion"));
  exports.Set("hostname", Napi::Function::New(env, ConnHostname, "hostname"));
  exports.Set("capabilities", Napi::Function::New(env, ConnCapabilities, "capabilities"));
  exports.Set("domainCapabilities", Napi::Function::New(env, ConnDomainCapabilities, "domainCapabilities"));
  exports.Set("listAllDomains", Napi::Function::New(env, ConnListAllDomains, "listAllDomains"));
  exports.Set("defineXML", Napi::Function::New(env, ConnDefineXML, "defineXML"));
  exports.Set("createXML", Napi::Function::New(env, ConnCreateXML, "createXML"));
  exports.Set("lookupByName", Napi::Function::New(env, ConnLookupByName, "lookupByName"));
  exports.Set("lookupByUUID", Napi::Function::New(env, ConnLookupByUUID, "lookupByUUID"));
  exports.Set("defineSecret", Napi::Function::New(env, ConnDefineSecret, "defineSecret"));
  exports.Set("lookupSecretByUsage", Napi::Function::New(env, ConnLookupSecretByUsage, "lookupSecretByUsage"));
  exports.Set("lookupSecretByUUID", Napi::Function::New(env, ConnLookupSecretByUUID, "lookupSecretByUUID"));
  exports.Set("listAllSecrets", Napi::Function::New(env, ConnListAllSecrets, "listAllSecrets"));
  exports.Set("domainCreate", Napi::Function::New(env, DomCreate, "domainCreate"));
  exports.Set("domainShutdown", Napi::Function::New(env, DomShutdown, "domainShutdown"));
  exports.Set("domainDestroy", Napi::Function::New(env, DomDestroy, "domainDestroy"));
  exports.Set("domainReboot", Napi::Function::New(env, DomReboot, "domainReboot"));
  exports.Set("domainSuspend", Napi::Function::New(env, DomSuspend, "domainSuspend"));
  exports.Set("domainResume", Napi::Function::New(env, DomResume, "domainResume"));
  exports.Set("domainUndefine", Napi::Function::New(env, DomUndefine, "domainUndefine"));
  exports.Set("domainAttachDevice", Napi::Function::New(env, DomAttachDevice, "domainAttachDevice"));
  exports.Set("domainDetachDevice", Napi::Function::New(env, DomDetachDevice, "domainDetachDevice"));
  exports.Set("domainBlockResize", Napi::Function::New(env, DomBlockResize, "domainBlockResize"));
  exports.Set("domainState", Napi::Function::New(env, DomState, "domainState"));
  exports.Set("domainInfo", Napi::Function::New(env, DomInfo, "domainInfo"));
  exports.Set("domainXML", Napi::Function::New(env, DomXML, "domainXML"));
  exports.Set("domainIsActive", Napi::Function::New(env, DomIsActive, "domainIsActive"));
  exports.Set("domainIsPersistent", Napi::Function::New(env, DomIsPersistent, "domainIsPersistent"));
  exports.Set("domainID", Napi::Function::New(env, DomID, "domainID"));
  exports.Set("secretSetValue", Napi::Function::New(env, SecretSetValue, "secretSetValue"));
  exports.Set("secretXML", Napi::Function::New(env, SecretXML, "secretXML"));
  exports.Set("secretUndefine", Napi::Function::New(env, SecretUndefine, "secretUndefine"));
  return exports;
}

}  // namespace

NODE_API_MODULE(ephemera_libvirt, ModuleInit)
