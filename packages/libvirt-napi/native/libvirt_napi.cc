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
//
// This file is the module init only. The rest, one concept a file: runtime (worker pool, libvirt
// init and event loop thread), job (calls on the pool settled on the JS thread), errors, args,
// events (lifecycle/close events), handles (connection/domain/secret externals), typedparams,
// and the exported functions in connection.cc, domain.cc, migration.cc and secret.cc (declared
// in functions.h).

#include <napi.h>

#include <memory>

#include "functions.h"
#include "job.h"
#include "runtime.h"

namespace ephemera_libvirt {

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
  exports.Set("domainMigrateToURI", Napi::Function::New(env, DomMigrateToURI, "domainMigrateToURI"));
  exports.Set("domainGetJobStats", Napi::Function::New(env, DomGetJobStats, "domainGetJobStats"));
  exports.Set("domainAbortJob", Napi::Function::New(env, DomAbortJob, "domainAbortJob"));
  exports.Set("domainAbortJobFlags", Napi::Function::New(env, DomAbortJobFlags, "domainAbortJobFlags"));
  exports.Set("domainMigrateSetMaxDowntime", Napi::Function::New(env, DomMigrateSetMaxDowntime, "domainMigrateSetMaxDowntime"));
  exports.Set("domainMigrateGetMaxDowntime", Napi::Function::New(env, DomMigrateGetMaxDowntime, "domainMigrateGetMaxDowntime"));
  exports.Set("domainMigrateSetMaxSpeed", Napi::Function::New(env, DomMigrateSetMaxSpeed, "domainMigrateSetMaxSpeed"));
  exports.Set("domainMigrateGetMaxSpeed", Napi::Function::New(env, DomMigrateGetMaxSpeed, "domainMigrateGetMaxSpeed"));
  exports.Set("secretSetValue", Napi::Function::New(env, SecretSetValue, "secretSetValue"));
  exports.Set("secretXML", Napi::Function::New(env, SecretXML, "secretXML"));
  exports.Set("secretUndefine", Napi::Function::New(env, SecretUndefine, "secretUndefine"));
  return exports;
}

}  // namespace ephemera_libvirt

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return ephemera_libvirt::ModuleInit(env, exports); }

NODE_API_MODULE(ephemera_libvirt, InitAddon)
