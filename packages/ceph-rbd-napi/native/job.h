// Job: one blocking librados/librbd call on the WorkerPool, resolving a promise on the JS thread;
// Progress: the progress callback of a long call (resize, flatten, remove, rollback).
#pragma once

#include <napi.h>

#include <cerrno>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "args.h"
#include "errors.h"
#include "instance.h"
#include "runtime.h"

namespace ephemera_rbd {

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

}  // namespace ephemera_rbd
