// Migration and domain jobs: live migration to another host (on a thread of its own, since it
// blocks for the whole migration), and the calls that watch, tune or cancel the running job.
#include <napi.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "args.h"
#include "errors.h"
#include "functions.h"
#include "handles.h"
#include "job.h"
#include "typedparams.h"

namespace ephemera_libvirt {

namespace {

struct JobStats {
  int type = 0;
  std::vector<TypedParam> params;
};

// A non-negative integer argument (number, at most 2^53 - 1).
uint64_t ArgCount(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::trunc(d) != d || d < 0 || d > 9007199254740991.0) {
    throw Napi::RangeError::New(info.Env(), std::string(what) + " out of range");
  }
  return static_cast<uint64_t>(d);
}

}  // namespace

// migrateToURI(dom, dconnuri, params: [name, type, value][], flags)
// Implements virDomainMigrateToURI3().
Napi::Value DomMigrateToURI(const Napi::CallbackInfo& info) {
  std::string dconnuri = ArgString(info, 1, "dconnuri");
  std::vector<TypedParam> params = ArgTypedParams(info, 2);
  unsigned int flags = ArgFlags(info, 3);
  virDomainPtr d = RefDom(info);
  return RunOwnThread<int>(
      info.Env(),
      [d, dconnuri, params, flags](Failure& f) {
        TypedParamArray arr;
        if (!arr.Build(params)) {
          Capture(f, "virTypedParamsAdd failed");
        } else if (virDomainMigrateToURI3(d, dconnuri.c_str(), arr.params(), arr.size(), flags) < 0) {
          Capture(f, "virDomainMigrateToURI3 failed");
        }
        Unref(d);
        return 0;
      },
      ResolveUndefined);
}

// Implements virDomainGetJobStats().
Napi::Value DomGetJobStats(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  virDomainPtr d = RefDom(info);
  return Run<JobStats>(
      info.Env(),
      [d, flags](Failure& f) {
        JobStats out;
        virTypedParameterPtr params = nullptr;
        int n = 0;
        if (virDomainGetJobStats(d, &out.type, &params, &n, flags) < 0) {
          Capture(f, "virDomainGetJobStats failed");
        } else {
          out.params = CopyTypedParams(params, n);
          virTypedParamsFree(params, n);
        }
        Unref(d);
        return out;
      },
      [](Napi::Env env, JobStats& s) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("type", Napi::Number::New(env, s.type));
        o.Set("params", TypedParamsToObject(env, s.params));
        return o;
      });
}

// Implements virDomainAbortJob().
Napi::Value DomAbortJob(const Napi::CallbackInfo& info) {
  virDomainPtr d = RefDom(info);
  return Run<int>(
      info.Env(),
      [d](Failure& f) {
        if (virDomainAbortJob(d) < 0) Capture(f, "virDomainAbortJob failed");
        Unref(d);
        return 0;
      },
      ResolveUndefined);
}

// Implements virDomainAbortJobFlags().
Napi::Value DomAbortJobFlags(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  virDomainPtr d = RefDom(info);
  return Run<int>(
      info.Env(),
      [d, flags](Failure& f) {
        if (virDomainAbortJobFlags(d, flags) < 0) Capture(f, "virDomainAbortJobFlags failed");
        Unref(d);
        return 0;
      },
      ResolveUndefined);
}

// migrateSetMaxDowntime(dom, ms, flags)
// Implements virDomainMigrateSetMaxDowntime().
Napi::Value DomMigrateSetMaxDowntime(const Napi::CallbackInfo& info) {
  uint64_t ms = ArgCount(info, 1, "downtime");
  unsigned int flags = ArgFlags(info, 2);
  virDomainPtr d = RefDom(info);
  return Run<int>(
      info.Env(),
      [d, ms, flags](Failure& f) {
        if (virDomainMigrateSetMaxDowntime(d, ms, flags) < 0) Capture(f, "virDomainMigrateSetMaxDowntime failed");
        Unref(d);
        return 0;
      },
      ResolveUndefined);
}

// Implements virDomainMigrateGetMaxDowntime().
Napi::Value DomMigrateGetMaxDowntime(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  virDomainPtr d = RefDom(info);
  return Run<double>(
      info.Env(),
      [d, flags](Failure& f) {
        unsigned long long ms = 0;
        if (virDomainMigrateGetMaxDowntime(d, &ms, flags) < 0) Capture(f, "virDomainMigrateGetMaxDowntime failed");
        Unref(d);
        return static_cast<double>(ms);
      },
      ResolveNumber);
}

// migrateSetMaxSpeed(dom, mibPerSecond, flags)
// Implements virDomainMigrateSetMaxSpeed().
Napi::Value DomMigrateSetMaxSpeed(const Napi::CallbackInfo& info) {
  uint64_t bandwidth = ArgCount(info, 1, "bandwidth");
  unsigned int flags = ArgFlags(info, 2);
  virDomainPtr d = RefDom(info);
  return Run<int>(
      info.Env(),
      [d, bandwidth, flags](Failure& f) {
        if (virDomainMigrateSetMaxSpeed(d, static_cast<unsigned long>(bandwidth), flags) < 0) {
          Capture(f, "virDomainMigrateSetMaxSpeed failed");
        }
        Unref(d);
        return 0;
      },
      ResolveUndefined);
}

// Implements virDomainMigrateGetMaxSpeed().
Napi::Value DomMigrateGetMaxSpeed(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  virDomainPtr d = RefDom(info);
  return Run<double>(
      info.Env(),
      [d, flags](Failure& f) {
        unsigned long bandwidth = 0;
        if (virDomainMigrateGetMaxSpeed(d, &bandwidth, flags) < 0) Capture(f, "virDomainMigrateGetMaxSpeed failed");
        Unref(d);
        return static_cast<double>(bandwidth);
      },
      ResolveNumber);
}

}  // namespace ephemera_libvirt
