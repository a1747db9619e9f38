// NativeCluster: a RADOS connection; connect() and shutdownAll().
#include <napi.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "args.h"
#include "cluster.h"
#include "ioctx.h"

namespace ephemera_rbd {

Napi::Function NCluster::Define(Napi::Env env) {
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

// Binding only: whether close() was called on this cluster.
Napi::Value NCluster::IsClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), res_->IsClosed()); }

// Implements rados_shutdown(), after its ioctxs and images are closed.
Napi::Value NCluster::Close(const Napi::CallbackInfo& info) {
  res_->MarkClosedTree();
  auto res = res_;
  Job* job = new Job(info.Env(), "cluster.close", "");
  return job->Submit([res] { return res->CloseTree(); });
}

// This client's global id (the `client.<id>` entity of its watches and locks). Synchronous:
// rados_get_instance_id only reads the connected client's state.
// Implements rados_get_instance_id().
Napi::Value NCluster::InstanceId(const Napi::CallbackInfo& info) {
  if (!res_->Acquire()) throw Napi::Error::New(info.Env(), "cluster.instanceId: the cluster is closed");
  uint64_t id = rados_get_instance_id(res_->cluster);
  res_->Release();
  return Num(info.Env(), id);
}

// Implements rados_cluster_fsid().
Napi::Value NCluster::Fsid(const Napi::CallbackInfo& info) {
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

// Implements rados_ioctx_pool_stat(), rados_cluster_stat() and rbd_pool_stats_get().
Napi::Value NCluster::PoolStats(const Napi::CallbackInfo& info) {
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
// Implements rados_mon_command().
Napi::Value NCluster::MonCommand(const Napi::CallbackInfo& info) {
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

// Implements rados_ioctx_create() and rados_ioctx_set_namespace().
Napi::Value NCluster::OpenIoCtx(const Napi::CallbackInfo& info) {
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

// Implements rados_create2(), rados_conf_read_file(), rados_conf_set() and rados_connect(); on
// success `*out` owns the connected client.
static int ConnectClient(const std::string& name, const std::optional<std::string>& conf,
                         const std::optional<std::string>& keyring, const std::optional<std::string>& mon_host,
                         const std::string& timeout, const std::vector<std::pair<std::string, std::string>>& options,
                         const std::shared_ptr<std::atomic<bool>>& exiting, std::shared_ptr<ClusterRes>* out) {
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
}

// connect({ name, confPath?, keyringPath?, monHost?, timeoutSeconds, options: [[k, v], ...] })
// Implements rados_create2(), rados_conf_read_file(), rados_conf_set() and rados_connect().
Napi::Value Connect(const Napi::CallbackInfo& info) {
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
        {
          std::lock_guard<std::mutex> lock(inst->reg_mu);
          if (inst->closing) return -ESHUTDOWN;
          ++inst->connecting;
        }
        std::shared_ptr<ClusterRes> cl;
        int rc = ConnectClient(name, conf, keyring, mon_host, timeout, options, exiting, &cl);
        if (cl) {
          // Registered here, not on the JS thread: at exit the JS thread never runs again.
          std::lock_guard<std::mutex> lock(inst->reg_mu);
          if (!inst->closing) {
            inst->clusters.erase(std::remove_if(inst->clusters.begin(), inst->clusters.end(),
                                                [](const std::weak_ptr<ClusterRes>& w) { return w.expired(); }),
                                 inst->clusters.end());
            inst->clusters.push_back(cl);
            *out = cl;
          }
        }
        if (cl && !*out) {
          cl->CloseTree();  // shutdownAll began meanwhile: rados_shutdown() now
          rc = -ESHUTDOWN;
        }
        std::lock_guard<std::mutex> lock(inst->reg_mu);
        --inst->connecting;
        inst->reg_cv.notify_all();
        return rc;
      },
      [out](Napi::Env env) -> Napi::Value {
        Instance* inst = GetInstance(env);
        auto* sp = new std::shared_ptr<ClusterRes>(std::move(*out));
        Napi::Object obj = inst->cluster_ctor.New({Napi::External<std::shared_ptr<ClusterRes>>::New(env, sp)});
        delete sp;
        return obj;
      });
}

// Closes every open cluster of this environment (and their ioctxs and images), waiting at most
// timeoutMs. Used at process exit so images are unwatched cleanly; returns how many were closed
// in time.
int ShutdownAllImpl(Instance* inst, double timeout_ms) {
  if (!(timeout_ms >= 0)) timeout_ms = 0;
  if (timeout_ms > 86400000.0) timeout_ms = 86400000.0;  // keeps the deadline representable
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                         std::chrono::duration<double, std::milli>(timeout_ms));
  std::vector<std::shared_ptr<ClusterRes>> live;
  {
    std::unique_lock<std::mutex> lock(inst->reg_mu);
    inst->closing = true;
    // Connects in flight register their client (then closed below) or shut it down themselves.
    inst->reg_cv.wait_until(lock, deadline, [inst] { return inst->connecting == 0; });
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
  sh->cv.wait_until(lock, deadline, [&] { return sh->done == static_cast<int>(live.size()); });
  return sh->done;
}

// See rados_shutdown(): shutdownAll(timeoutMs) closes every cluster still open (at process exit).
Napi::Value ShutdownAll(const Napi::CallbackInfo& info) {
  double t = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 5000;
  Instance* inst = GetInstance(info.Env());
  int n = ShutdownAllImpl(inst, t);
  inst->exiting->store(true);
  return Napi::Number::New(info.Env(), n);
}

}  // namespace ephemera_rbd
