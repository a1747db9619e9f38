// Domains: listing, defining, creating and looking up (on a connection), and the calls on a
// domain (start, stop, devices, state, XML).
#include <napi.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "args.h"
#include "errors.h"
#include "functions.h"
#include "handles.h"
#include "job.h"

namespace ephemera_libvirt {

namespace {

using DomList = std::vector<DomResult>;

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

}  // namespace

// Implements virConnectListAllDomains().
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

// Implements virDomainDefineXMLFlags().
Napi::Value ConnDefineXML(const Napi::CallbackInfo& info) {
  return DomainFromConn(info, "xml", [](virConnectPtr c, const std::string& xml, unsigned int flags) {
    return virDomainDefineXMLFlags(c, xml.c_str(), flags);
  });
}

// Implements virDomainCreateXML().
Napi::Value ConnCreateXML(const Napi::CallbackInfo& info) {
  return DomainFromConn(info, "xml", [](virConnectPtr c, const std::string& xml, unsigned int flags) {
    return virDomainCreateXML(c, xml.c_str(), flags);
  });
}

// Implements virDomainLookupByName().
Napi::Value ConnLookupByName(const Napi::CallbackInfo& info) {
  return DomainFromConn(info, "name", [](virConnectPtr c, const std::string& name, unsigned int) {
    return virDomainLookupByName(c, name.c_str());
  });
}

// Implements virDomainLookupByUUIDString().
Napi::Value ConnLookupByUUID(const Napi::CallbackInfo& info) {
  return DomainFromConn(info, "uuid", [](virConnectPtr c, const std::string& uuid, unsigned int) {
    return virDomainLookupByUUIDString(c, uuid.c_str());
  });
}

// Implements virDomainCreateWithFlags().
Napi::Value DomCreate(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  return DomainStatusCall(info, "virDomainCreateWithFlags",
                          [flags](virDomainPtr d) { return virDomainCreateWithFlags(d, flags); });
}

// Implements virDomainShutdownFlags().
Napi::Value DomShutdown(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  return DomainStatusCall(info, "virDomainShutdownFlags",
                          [flags](virDomainPtr d) { return virDomainShutdownFlags(d, flags); });
}

// Implements virDomainDestroyFlags().
Napi::Value DomDestroy(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  return DomainStatusCall(info, "virDomainDestroyFlags",
                          [flags](virDomainPtr d) { return virDomainDestroyFlags(d, flags); });
}

// Implements virDomainReboot().
Napi::Value DomReboot(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  return DomainStatusCall(info, "virDomainReboot", [flags](virDomainPtr d) { return virDomainReboot(d, flags); });
}

// Implements virDomainSuspend().
Napi::Value DomSuspend(const Napi::CallbackInfo& info) {
  return DomainStatusCall(info, "virDomainSuspend", [](virDomainPtr d) { return virDomainSuspend(d); });
}

// Implements virDomainResume().
Napi::Value DomResume(const Napi::CallbackInfo& info) {
  return DomainStatusCall(info, "virDomainResume", [](virDomainPtr d) { return virDomainResume(d); });
}

// Implements virDomainUndefineFlags().
Napi::Value DomUndefine(const Napi::CallbackInfo& info) {
  unsigned int flags = ArgFlags(info, 1);
  return DomainStatusCall(info, "virDomainUndefineFlags",
                          [flags](virDomainPtr d) { return virDomainUndefineFlags(d, flags); });
}

// Implements virDomainAttachDeviceFlags().
Napi::Value DomAttachDevice(const Napi::CallbackInfo& info) {
  std::string xml = ArgString(info, 1, "xml");
  unsigned int flags = ArgFlags(info, 2);
  return DomainStatusCall(info, "virDomainAttachDeviceFlags", [xml, flags](virDomainPtr d) {
    return virDomainAttachDeviceFlags(d, xml.c_str(), flags);
  });
}

// Implements virDomainDetachDeviceFlags().
Napi::Value DomDetachDevice(const Napi::CallbackInfo& info) {
  std::string xml = ArgString(info, 1, "xml");
  unsigned int flags = ArgFlags(info, 2);
  return DomainStatusCall(info, "virDomainDetachDeviceFlags", [xml, flags](virDomainPtr d) {
    return virDomainDetachDeviceFlags(d, xml.c_str(), flags);
  });
}

// blockResize(dom, disk, bytes: bigint, flags)
// Implements virDomainBlockResize().
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

// Implements virDomainGetState().
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

// Implements virDomainGetInfo().
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

// Implements virDomainGetXMLDesc().
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

// Implements virDomainIsActive().
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

// Implements virDomainIsPersistent().
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

// Implements virDomainGetID() on a fresh virDomainLookupByUUIDString().
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

}  // namespace ephemera_libvirt
