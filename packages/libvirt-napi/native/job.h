// Jobs: one blocking libvirt call on the worker pool, whose result (or captured error) settles a
// promise on the JS thread through the environment's completion thread-safe function.
#pragma once

#include <napi.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "errors.h"

namespace ephemera_libvirt {

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

inline AddonData* Data(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

// JS thread: settles the job's promise (the completion TSFN's call_js).
void CompleteJob(napi_env raw_env, napi_value, void*, void* data);
// The completion TSFN's finalizer: marks the environment gone for the workers.
void FinalizeEnvState(napi_env, void* finalize_data, void*);
// Queues a job; returns its promise.
Napi::Value Submit(Napi::Env env, Job* job);
// Runs a job on a thread of its own; returns its promise. For calls that block for their whole
// operation (a migration): on the bounded pool they could take every worker and starve the calls
// that watch or cancel them (getJobStats, abortJob).
Napi::Value SubmitOwnThread(Napi::Env env, Job* job);

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

template <typename R>
Napi::Value RunOwnThread(Napi::Env env, std::function<R(Failure&)> work,
                        std::function<Napi::Value(Napi::Env, R&)> done) {
  auto* job = new FnJob<R>();
  job->work = std::move(work);
  job->done = std::move(done);
  return SubmitOwnThread(env, job);
}

// Resolvers for common result types.
Napi::Value ResolveUndefined(Napi::Env env, int&);
Napi::Value ResolveString(Napi::Env env, std::string& s);
Napi::Value ResolveNumber(Napi::Env env, double& d);
Napi::Value ResolveBool(Napi::Env env, int& b);

}  // namespace ephemera_libvirt
