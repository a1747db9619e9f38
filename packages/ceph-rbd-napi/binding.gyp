{
  "targets": [
    {
      "target_name": "ceph_rbd_napi",
      "sources": [
        "native/addon.cc",
        "native/args.cc",
        "native/errors.cc",
        "native/library.cc",
        "native/cluster.cc",
        "native/ioctx.cc",
        "native/image.cc",
        "native/snapshot.cc",
        "native/clone.cc",
        "native/trash.cc",
        "native/lock.cc",
        "native/watchers.cc",
        "native/aio.cc",
        "native/metadata.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-deprecated-declarations", "<!@(node scripts/ceph-flags.cjs cflags)"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "libraries": ["<!@(node scripts/ceph-flags.cjs libs)", "-lpthread"]
    }
  ]
}
