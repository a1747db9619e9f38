{
  "targets": [
    {
      "target_name": "ephemera_libvirt",
      "sources": [
        "native/libvirt_napi.cc",
        "native/runtime.cc",
        "native/job.cc",
        "native/errors.cc",
        "native/args.cc",
        "native/events.cc",
        "native/handles.cc",
        "native/connection.cc",
        "native/domain.cc",
        "native/typedparams.cc",
        "native/migration.cc",
        "native/secret.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "<!@(pkg-config --cflags libvirt)"],
      "libraries": ["<!@(pkg-config --libs libvirt)"]
    }
  ]
}
