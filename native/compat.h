// The few libtorch C++ APIs that differ between 1.13 (Debian, CI) and 2.x (pip wheels, CUDA).
// Everything else the addon calls is the same in both.
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#define OASFT_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace oasft {

// Autocast setters were per-device functions until 2.3 and take a device type from 2.4 on.
inline bool autocastEnabled(bool cuda) {
#if OASFT_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(cuda ? at::kCUDA : at::kCPU);
#else
  return cuda ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

inline void setAutocast(bool cuda, bool enabled, at::ScalarType dtype) {
#if OASFT_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(cuda ? at::kCUDA : at::kCPU, enabled);
  at::autocast::set_autocast_dtype(cuda ? at::kCUDA : at::kCPU, dtype);
#else
  if (cuda) {
    at::autocast::set_enabled(enabled);
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
}

inline at::ScalarType autocastDtype(bool cuda) {
#if OASFT_TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(cuda ? at::kCUDA : at::kCPU);
#else
  return cuda ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
#endif
}

}  // namespace oasft
