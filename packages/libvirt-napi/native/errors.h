// libvirt errors: captured on the thread that made the failing call (libvirt keeps them
// thread-local) and turned into a LibvirtError on the JS thread by the factory given to init().
#pragma once

#include <napi.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <string>

namespace ephemera_libvirt {

struct Failure {
  bool failed = false;
  int code = 0;
  int domain = 0;
  int level = 0;
  std::string message;
};

// Copies the calling thread's last libvirt error (must run on the thread that made the call).
void Capture(Failure& f, const char* fallback);
void Fail(Failure& f, int code, const std::string& message);
// Installed with virSetErrorFunc: libvirt's default prints every error to stderr.
void NoopErrorFunc(void*, virErrorPtr);
Napi::Value MakeError(Napi::Env env, const Failure& f);
// A promise already rejected with a LibvirtError (code, message).
Napi::Value Rejected(Napi::Env env, int code, const std::string& message);

}  // namespace ephemera_libvirt
