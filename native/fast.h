// Fast paths that exist only in newer or CUDA builds of libtorch. Each has a composite reference in
// TypeScript that runs everywhere (src/nn/attention.ts, src/train/adamw.ts), and the GPU tier checks
// the two agree. The addon reports which of these it was built with through features().
//   OASFT_HAS_SDPA         at::scaled_dot_product_attention with an explicit scale (libtorch >= 2.1)
//   OASFT_HAS_FUSED_ADAMW  at::_fused_adamw_ (CUDA kernels from 2.1; CPU from 2.4, not used here)
//   OASFT_HAS_CUDA_ALLOC   the CUDA caching allocator's statistics (needs CUDA's runtime headers)
// OASFT_NO_FAST (set by native/build.mjs when a first build of these failed) compiles them all out.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "compat.h"

#if !defined(OASFT_NO_FAST) && OASFT_TORCH_AT_LEAST(2, 1)
#define OASFT_HAS_SDPA 1
#define OASFT_HAS_FUSED_ADAMW 1
#else
#define OASFT_HAS_SDPA 0
#define OASFT_HAS_FUSED_ADAMW 0
#endif

#if !defined(OASFT_NO_FAST) && defined(OASFT_WITH_CUDA_HEADERS) && OASFT_TORCH_AT_LEAST(2, 1) && \
    __has_include(<c10/cuda/CUDACachingAllocator.h>)
#define OASFT_HAS_CUDA_ALLOC 1
#include <c10/cuda/CUDACachingAllocator.h>
#else
#define OASFT_HAS_CUDA_ALLOC 0
#endif

namespace oasft::fast {

#if OASFT_HAS_SDPA
// softmax(q·kᵀ·scale + mask)·v, mask additive (float) or absent; isCausal hides keys after each query.
inline at::Tensor sdpa(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const c10::optional<at::Tensor>& mask,
                       double dropout, bool isCausal, double scale) {
  return at::scaled_dot_product_attention(q, k, v, mask, dropout, isCausal, scale);
}
#endif

#if OASFT_HAS_FUSED_ADAMW
// One AdamW step over lists of same-device tensors at one step count, in libtorch's multi-tensor kernel
// (torch.optim.AdamW(fused=True)). The kernel reads each tensor's step from state_steps; the one step
// tensor is shared, since every tensor of the call is at the same step.
inline void adamw(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                  const std::vector<at::Tensor>& expAvgs, const std::vector<at::Tensor>& expAvgSqs, double lr, double beta1,
                  double beta2, double eps, double weightDecay, double step) {
  if (params.empty()) return;
  at::Tensor stepTensor = at::full({}, step, at::TensorOptions().dtype(at::kFloat).device(params[0].device()));
  std::vector<at::Tensor> steps(params.size(), stepTensor);
  std::vector<at::Tensor> noMaxExpAvgSqs;  // amsgrad only
  at::_fused_adamw_(params, grads, expAvgs, expAvgSqs, noMaxExpAvgSqs, steps, lr, beta1, beta2, weightDecay, eps,
                    /*amsgrad=*/false, /*maximize=*/false);
}
#endif

#if OASFT_HAS_CUDA_ALLOC
// The caching allocator's bytes in use now and at peak since the last reset (torch.cuda.memory_allocated
// and max_memory_allocated); index 0 of each stat array is the aggregate over pool kinds.
inline std::vector<double> cudaMemory(int device) {
  auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
  return {static_cast<double>(stats.allocated_bytes[0].current), static_cast<double>(stats.allocated_bytes[0].peak),
          static_cast<double>(stats.reserved_bytes[0].current)};
}
inline void cudaResetPeak(int device) {
  c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
}
inline void cudaEmptyCache() { c10::cuda::CUDACachingAllocator::emptyCache(); }
#endif

}  // namespace oasft::fast
