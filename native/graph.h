// CUDA graphs of captured steps. A replayed tape (native/tape.h) still launches one kernel per op from the
// CPU; on a GPU a small model's decode step is then bound by launches, not by the GPU. Where the addon is
// built against a CUDA libtorch, a tape whose outputs live on the GPU is, from its second replay on (the
// first settles the caching allocator), captured once into an at::cuda::CUDAGraph on a side stream and then
// replayed as one graph launch. Every tensor the tape reads already has a fixed address (weights, KV-cache
// buffers, the step's input tensors written in place); what the step allocates comes from the graph's own
// memory pool, and its outputs are the same tensors after every replay, rewritten in place. The plain replay
// stays as the reference (test-gpu/cuda.test.ts: equal bit for bit) and the fallback: a capture that fails
// (an op that syncs with the host) leaves the tape on plain replays, with the reason in tapeInfo.
// OASFT_CUDA_GRAPH=0 keeps plain replays; OASFT_NO_GRAPH (native/build.mjs's first retry) compiles this out.
#pragma once

#include <ATen/ATen.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "compat.h"

#if !defined(OASFT_NO_FAST) && !defined(OASFT_NO_GRAPH) && defined(OASFT_WITH_CUDA_HEADERS) && \
    OASFT_TORCH_AT_LEAST(2, 1) && __has_include(<ATen/cuda/CUDAGraph.h>)
#define OASFT_HAS_CUDA_GRAPH 1
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#else
#define OASFT_HAS_CUDA_GRAPH 0
#endif

namespace oasft::graph {

// Whether tapes on the GPU become graphs (read at each replay: a test compares both in one process).
inline bool enabled() {
  const char* v = std::getenv("OASFT_CUDA_GRAPH");
  return OASFT_HAS_CUDA_GRAPH && !(v && std::strcmp(v, "0") == 0);
}

#if OASFT_HAS_CUDA_GRAPH
struct Graph {
  at::cuda::CUDAGraph graph;
  std::vector<at::Tensor> outputs;  // the graph's own tensors: every replay rewrites them
};

// Captures `run` (one replay of a tape whose tensors are on `device`) and launches the graph once, so the
// outputs hold this step's values. Throws what the capture raised; the stream is usable afterwards.
inline std::shared_ptr<Graph> capture(const std::function<std::vector<at::Tensor>()>& run, c10::DeviceIndex device) {
  auto g = std::make_shared<Graph>();
  c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream(device);
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, device);
  current.synchronize();  // the inputs written in place before this step are on the GPU
  {
    c10::cuda::CUDAStreamGuard guard(side);  // capture cannot run on the legacy default stream
    g->graph.capture_begin();
    try {
      g->outputs = run();
    } catch (...) {
      try {
        g->graph.capture_end();
      } catch (...) {
      }
      throw;
    }
    g->graph.capture_end();
    side.synchronize();
  }
  g->graph.replay();  // on the current stream, as every later step
  return g;
}

inline void replay(Graph& g) { g.graph.replay(); }
#endif

}  // namespace oasft::graph
