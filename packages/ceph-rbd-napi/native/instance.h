// Per-environment state of the addon: the dispatcher that delivers results on the JS thread,
// the JS factory for typed errors, the constructors of the wrapped classes and the clusters
// still open (closed at exit by shutdownAll() or the environment's cleanup hook).
#pragma once

#include <napi.h>

#include <atomic>
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
  std::vector<std::weak_ptr<ClusterRes>> clusters;
};

inline Instance* GetInstance(Napi::Env env) { return env.GetInstanceData<Instance>(); }

}  // namespace ephemera_rbd
