// Per-environment state of the addon: the dispatcher that delivers results on the JS thread,
// the JS factory for typed errors, the constructors of the wrapped classes and the clusters
// still open (closed at exit by shutdownAll() or the environment's cleanup hook).
#pragma once

#include <napi.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "runtime.h"

namespace ephemera_rbd {

class ClusterRes;

struct Instance {
  Dispatcher* dispatcher = nullptr;  // never freed, see Dispatcher::Close
  Napi::FunctionReference make_error;
  Napi::FunctionReference cluster_ctor;
  Napi::FunctionReference ioctx_ctor;
  Napi::FunctionReference image_ctor;
  std::shared_ptr<std::atomic<bool>> exiting = std::make_shared<std::atomic<bool>>(false);
  std::mutex reg_mu;
  std::vector<std::weak_ptr<ClusterRes>> clusters;  // under reg_mu
  // Connects inside rados_create2()..rados_connect() (under reg_mu): shutdownAll waits for them,
  // since a client still running when the process tears down librados crashes it. Once
  // `closing` is set, a connect that finishes shuts its client down itself.
  int connecting = 0;
  bool closing = false;
  std::condition_variable reg_cv;
};

inline Instance* GetInstance(Napi::Env env) { return env.GetInstanceData<Instance>(); }

}  // namespace ephemera_rbd
