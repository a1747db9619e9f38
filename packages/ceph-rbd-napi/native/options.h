// Image options of create() and clone(), as librbd's rbd_image_options_t.
#pragma once

#include <napi.h>
#include <rbd/librbd.h>

#include <optional>
#include <string>

#include "args.h"

namespace ephemera_rbd {

// Image options (create/clone).
struct ImageOpts {
  std::optional<uint64_t> features, order, stripe_unit, stripe_count, clone_format;
  std::optional<std::string> data_pool;

  static ImageOpts From(Napi::Env env, Napi::Value v) {
    ImageOpts o;
    if (!v.IsObject()) return o;
    Napi::Object obj = v.As<Napi::Object>();
    auto u = [&](const char* k, std::optional<uint64_t>& dst) {
      Napi::Value x = obj.Get(k);
      if (!x.IsUndefined() && !x.IsNull()) dst = ToU64(env, x, k);
    };
    u("features", o.features);
    u("order", o.order);
    u("stripeUnit", o.stripe_unit);
    u("stripeCount", o.stripe_count);
    u("cloneFormat", o.clone_format);
    Napi::Value dp = obj.Get("dataPool");
    if (dp.IsString()) o.data_pool = dp.As<Napi::String>().Utf8Value();
    return o;
  }

  // Fills an rbd_image_options_t (caller destroys it). Returns <0 on a bad option.
  int Apply(rbd_image_options_t opts) const {
    int rc = 0;
    auto set = [&](int k, const std::optional<uint64_t>& v) {
      if (rc >= 0 && v) rc = rbd_image_options_set_uint64(opts, k, *v);
    };
    set(RBD_IMAGE_OPTION_FEATURES, features);
    set(RBD_IMAGE_OPTION_ORDER, order);
    set(RBD_IMAGE_OPTION_STRIPE_UNIT, stripe_unit);
    set(RBD_IMAGE_OPTION_STRIPE_COUNT, stripe_count);
    set(RBD_IMAGE_OPTION_CLONE_FORMAT, clone_format);
    if (rc >= 0 && data_pool) rc = rbd_image_options_set_string(opts, RBD_IMAGE_OPTION_DATA_POOL, data_pool->c_str());
    return rc;
  }
};

struct OptsGuard {
  rbd_image_options_t o;
  OptsGuard() { rbd_image_options_create(&o); }
  ~OptsGuard() { rbd_image_options_destroy(o); }
};

}  // namespace ephemera_rbd
