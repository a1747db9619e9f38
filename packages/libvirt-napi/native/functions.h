// The functions the addon exports (registered in libvirt_napi.cc), by file.
#pragma once

#include <napi.h>

namespace ephemera_libvirt {

// errors.cc
Napi::Value Init(const Napi::CallbackInfo& info);
// connection.cc
Napi::Value GetVersion(const Napi::CallbackInfo& info);
Napi::Value Connect(const Napi::CallbackInfo& info);
Napi::Value Close(const Napi::CallbackInfo& info);
Napi::Value SetEventsRef(const Napi::CallbackInfo& info);
Napi::Value IsAlive(const Napi::CallbackInfo& info);
Napi::Value ConnLibVersion(const Napi::CallbackInfo& info);
Napi::Value ConnHypervisorVersion(const Napi::CallbackInfo& info);
Napi::Value ConnHostname(const Napi::CallbackInfo& info);
Napi::Value ConnCapabilities(const Napi::CallbackInfo& info);
Napi::Value ConnDomainCapabilities(const Napi::CallbackInfo& info);
// domain.cc
Napi::Value ConnListAllDomains(const Napi::CallbackInfo& info);
Napi::Value ConnDefineXML(const Napi::CallbackInfo& info);
Napi::Value ConnCreateXML(const Napi::CallbackInfo& info);
Napi::Value ConnLookupByName(const Napi::CallbackInfo& info);
Napi::Value ConnLookupByUUID(const Napi::CallbackInfo& info);
Napi::Value DomCreate(const Napi::CallbackInfo& info);
Napi::Value DomShutdown(const Napi::CallbackInfo& info);
Napi::Value DomDestroy(const Napi::CallbackInfo& info);
Napi::Value DomReboot(const Napi::CallbackInfo& info);
Napi::Value DomSuspend(const Napi::CallbackInfo& info);
Napi::Value DomResume(const Napi::CallbackInfo& info);
Napi::Value DomUndefine(const Napi::CallbackInfo& info);
Napi::Value DomAttachDevice(const Napi::CallbackInfo& info);
Napi::Value DomDetachDevice(const Napi::CallbackInfo& info);
Napi::Value DomBlockResize(const Napi::CallbackInfo& info);
Napi::Value DomState(const Napi::CallbackInfo& info);
Napi::Value DomInfo(const Napi::CallbackInfo& info);
Napi::Value DomXML(const Napi::CallbackInfo& info);
Napi::Value DomIsActive(const Napi::CallbackInfo& info);
Napi::Value DomIsPersistent(const Napi::CallbackInfo& info);
Napi::Value DomID(const Napi::CallbackInfo& info);
// migration.cc
Napi::Value DomMigrateToURI(const Napi::CallbackInfo& info);
Napi::Value DomGetJobStats(const Napi::CallbackInfo& info);
Napi::Value DomAbortJob(const Napi::CallbackInfo& info);
Napi::Value DomAbortJobFlags(const Napi::CallbackInfo& info);
Napi::Value DomMigrateSetMaxDowntime(const Napi::CallbackInfo& info);
Napi::Value DomMigrateGetMaxDowntime(const Napi::CallbackInfo& info);
Napi::Value DomMigrateSetMaxSpeed(const Napi::CallbackInfo& info);
Napi::Value DomMigrateGetMaxSpeed(const Napi::CallbackInfo& info);
// secret.cc
Napi::Value ConnDefineSecret(const Napi::CallbackInfo& info);
Napi::Value ConnLookupSecretByUsage(const Napi::CallbackInfo& info);
Napi::Value ConnLookupSecretByUUID(const Napi::CallbackInfo& info);
Napi::Value ConnListAllSecrets(const Napi::CallbackInfo& info);
Napi::Value SecretSetValue(const Napi::CallbackInfo& info);
Napi::Value SecretXML(const Napi::CallbackInfo& info);
Napi::Value SecretUndefine(const Napi::CallbackInfo& info);

}  // namespace ephemera_libvirt
