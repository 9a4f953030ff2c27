# Builds native/addon.cc against the libtorch that native/libtorch.mjs finds.
# NAPI_EXPERIMENTAL: tensor handles use "basic" finalizers, which run inside GC. Ordinary finalizers are
# deferred to the event loop, so a synchronous training loop would pile up millions of handles.
# Run through npm (`npm install` / `npm rebuild`), never plain node-gyp: npm supplies the local Node headers.
{
  "targets": [
    {
      "target_name": "oasft_torch",
      "sources": ["native/addon.cc"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(node native/libtorch.mjs include)"
      ],
      "libraries": ["<!@(node native/libtorch.mjs libs)"],
      "defines": [
        "NAPI_EXPERIMENTAL",
        "NAPI_CPP_EXCEPTIONS",
        "_GLIBCXX_USE_CXX11_ABI=<!(node native/libtorch.mjs cxxabi)",
        "<!@(node native/libtorch.mjs defines)"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["<!(node native/libtorch.mjs std)", "-O3", "-fno-math-errno", "<!@(node native/libtorch.mjs openmp)", "-fexceptions", "-frtti", "-Wno-unused-parameter", "-Wno-deprecated-declarations"]
    }
  ]
}
