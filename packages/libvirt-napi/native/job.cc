// Jobs on the worker pool, settled on the JS thread (see job.h).
#include "job.h"

#include "runtime.h"

#include <system_error>
#include <thread>

namespace ephemera_libvirt {

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

namespace {

// Worker side of a job: runs it, then hands it to the JS thread (or drops it if the env is gone).
void ExecuteAndPost(Job* job) {
  job->Execute();
  std::shared_ptr<EnvState> state = job->state;
  std::lock_guard<std::mutex> lock(state->mu);
  if (!state->alive ||
      napi_call_threadsafe_function(state->tsfn, job, napi_tsfn_nonblocking) != napi_ok) {
    // The environment is gone: nobody is waiting for this result any more.
    delete job;
  }
}

napi_value Prepare(Napi::Env env, Job* job) {
  AddonData* data = Data(env);
  job->state = data->state;
  napi_value promise;
  napi_create_promise(env, &job->deferred, &promise);
  if (data->state->pending++ == 0) napi_ref_threadsafe_function(env, data->state->tsfn);
  return promise;
}

}  // namespace

Napi::Value Submit(Napi::Env env, Job* job) {
  napi_value promise = Prepare(env, job);
  Pool::Get().Post([job] { ExecuteAndPost(job); });
  return Napi::Value(env, promise);
}

Napi::Value SubmitOwnThread(Napi::Env env, Job* job) {
  napi_value promise = Prepare(env, job);
  try {
    std::thread([job] {
      BlockAllSignals();
      ExecuteAndPost(job);
    }).detach();
  } catch (const std::system_error&) {
    Pool::Get().Post([job] { ExecuteAndPost(job); });  // no thread to spare: the pool still works
  }
  return Napi::Value(env, promise);
}

Napi::Value ResolveUndefined(Napi::Env env, int&) { return env.Undefined(); }
Napi::Value ResolveString(Napi::Env env, std::string& s) { return Napi::String::New(env, s); }
Napi::Value ResolveNumber(Napi::Env env, double& d) { return Napi::Number::New(env, d); }
Napi::Value ResolveBool(Napi::Env env, int& b) { return Napi::Boolean::New(env, b != 0); }

}  // namespace ephemera_libvirt
