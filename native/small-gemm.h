// y = x·wᵀ + b for a few rows of x: the shape of a decode step for a small batch (2-32 sequences).
// OpenBLAS's SGEMM packs both operands into panels tuned for large m and, on the CPUs measured here
// (AMD EPYC, 2 threads), multiplies an 8-row x by a 512x512 weight at ~40 GFLOP/s, no faster than 8
// single rows through GEMV. Here each thread owns a range of weight rows and streams them once: a 4x4
// register block (4 rows of x against 4 rows of w, 16 vector accumulators) does 16 FMAs per 8 loads, so
// the weights are read from memory once per step and the arithmetic runs near the FMA units' rate
// (~200 GFLOP/s with AVX-512, ~85 with AVX2 on the same machine; bench numbers in README).
//
// Exact in what it promises: every output is one dot product over k in a fixed order, computed by one
// thread, so results do not depend on the thread count. They differ from BLAS's order in the last bits;
// at::linear is the reference (test/torch/small-gemm.test.ts compares the two on ragged shapes).
// Chosen at run time by the CPU's features; CPUs with neither AVX2+FMA nor AVX-512F keep at::linear.
//
// bf16 weights (a model loaded with --dtype bf16) stream at 2 bytes per weight, widened to fp32 in registers
// (a bf16 is the top half of an fp32: a shift), with x, the sums and the bias in fp32 and y rounded to bf16
// once, as oneDNN's bf16 GEMM does. For 1-8 rows this replaces that GEMM, which on these CPUs multiplies
// one row at ~half the speed of streaming the fp32 weights (bench: bloom-160m batch-1 bf16 decoding).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "compat.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define OASFT_HAS_SMALL_GEMM 1
#else
#define OASFT_HAS_SMALL_GEMM 0
#endif

namespace oasft::smallgemm {

// The most rows of x this path takes; above it BLAS's blocking for large m wins or ties. For bf16 weights
// oneDNN's GEMM (bf16 dot-product instructions) wins from 16 rows on: 8192x4096, 2 threads, ms per call,
// this kernel / oneDNN: 1 row 1.4 / 2.9, 4 rows 1.7 / 3.2, 8 rows 2.8 / 3.6, 16 rows 5.5 / 4.9.
constexpr int64_t kMaxRows = 32;
constexpr int64_t kMaxBf16Rows = 8;

#if OASFT_HAS_SMALL_GEMM

// Vectors pass between these functions only inside one target-flattened caller (range512, range256).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 on _mm256_undefined_pd in an intrinsic

#define OASFT_AVX512 __attribute__((target("avx512f"))) inline
#define OASFT_AVX2 __attribute__((target("avx2,fma"))) inline

// The sum of 8 lanes, for both widths below (AVX-512F and AVX2 each imply AVX).
__attribute__((target("avx"))) inline float sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// One vector width's operations; the kernel below is written once over them.
struct Avx512 {
  using V = __m512;
  static constexpr int64_t kLanes = 16;
  OASFT_AVX512 static V zero() { return _mm512_setzero_ps(); }
  OASFT_AVX512 static V load(const float* p) { return _mm512_loadu_ps(p); }
  OASFT_AVX512 static V load(const uint16_t* p) {  // 16 bf16 widened: each into the top half of an fp32
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
  OASFT_AVX512 static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  OASFT_AVX512 static V set1(float f) { return _mm512_set1_ps(f); }
  OASFT_AVX512 static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  OASFT_AVX512 static float sum(V v) {  // by halves (_mm512_reduce_add_ps warns on GCC 12)
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    return sum8(_mm256_add_ps(_mm512_castps512_ps256(v), hi));
  }
};

struct Avx2 {
  using V = __m256;
  static constexpr int64_t kLanes = 8;
  OASFT_AVX2 static V zero() { return _mm256_setzero_ps(); }
  OASFT_AVX2 static V load(const float* p) { return _mm256_loadu_ps(p); }
  OASFT_AVX2 static V load(const uint16_t* p) {
    __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  OASFT_AVX2 static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  OASFT_AVX2 static V set1(float f) { return _mm256_set1_ps(f); }
  OASFT_AVX2 static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  OASFT_AVX2 static float sum(V v) { return sum8(v); }
};

// A weight as fp32: itself, or a bf16's bits as the top half of an fp32 (for the tails past the vectors).
inline float widen(float f) { return f; }
inline float widen(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// One call's operands: x [m, k], w [n, k] (fp32, or bf16 as uint16_t), bias [n] or null, y [m, n], all
// contiguous; x, bias and y in fp32.
template <class W>
struct Gemm {
  const float* x;
  const W* w;
  const float* bias;
  float* y;
  int64_t m, k, n;
};

// R rows of x from row r against C rows of w from row j. The tail of k past the last full vector is added
// in scalar order after the vector sum. `next` (the following block's weight rows, or null) is prefetched
// as this block streams: decode steps read each weight once from memory, and without it the loads' misses
// stall the FMAs (1.45x on a 92 MB model's step, measured).
template <class S, int R, int C, class W>
inline void block(const Gemm<W>& g, int64_t r, int64_t j, const W* next) {
  const int64_t k = g.k;
  const float* x = g.x + r * k;
  const W* wj = g.w + j * k;
  typename S::V acc[R][C];
  for (int a = 0; a < R; a++)
    for (int c = 0; c < C; c++) acc[a][c] = S::zero();
  int64_t t = 0;
  for (; t + S::kLanes <= k; t += S::kLanes) {
    typename S::V wv[C];
    for (int c = 0; c < C; c++) wv[c] = S::load(wj + c * k + t);
    if (next)
      for (int c = 0; c < C; c++) _mm_prefetch(reinterpret_cast<const char*>(next + c * k + t), _MM_HINT_T0);
    for (int a = 0; a < R; a++) {
      typename S::V xv = S::load(x + a * k + t);
      for (int c = 0; c < C; c++) acc[a][c] = S::fma(xv, wv[c], acc[a][c]);
    }
  }
  for (int a = 0; a < R; a++)
    for (int c = 0; c < C; c++) {
      float sum = S::sum(acc[a][c]);
      for (int64_t u = t; u < k; u++) sum += x[a * k + u] * widen(wj[c * k + u]);
      g.y[(r + a) * g.n + j + c] = g.bias ? sum + g.bias[j + c] : sum;
    }
}

// Weight rows [j, j + C) for every row of x: 4, then 2, then 1 rows of x at a time. The first pass reads
// the weights from memory (and prefetches the next block's); later passes find them in L1.
template <class S, int C, class W>
inline void columns(const Gemm<W>& g, int64_t j, int64_t j1) {
  const W* next = j + 2 * C <= j1 ? g.w + (j + C) * g.k : nullptr;
  int64_t r = 0;
  for (; r + 4 <= g.m; r += 4, next = nullptr) block<S, 4, C>(g, r, j, next);
  for (; r + 2 <= g.m; r += 2, next = nullptr) block<S, 2, C>(g, r, j, next);
  for (; r < g.m; r++, next = nullptr) block<S, 1, C>(g, r, j, next);
}

template <class S, class W>
inline void range(const Gemm<W>& g, int64_t j0, int64_t j1) {
  int64_t j = j0;
  for (; j + 4 <= j1; j += 4) columns<S, 4>(g, j, j1);
  for (; j < j1; j++) columns<S, 1>(g, j, j1);
}

// One query row against a matrix, per batch entry: out[n] = Σ_k x[k]·M[k, n] for attention in a decode
// step (scores = q·Kᵀ, context = p·V), where BLAS's batched GEMM spends microseconds per tiny product.
// M is read in place through its strides: rows contiguous (M[k, :], e.g. V or BLOOM's pre-transposed keys)
// or columns contiguous (M[:, n], a transposed view of keys stored [S, d]); fp32, or bf16 widened as above.
template <class W>
struct RowMat {
  const float* x;  // [K]
  const W* m;
  int64_t rowStride, colStride;  // of M: between k and between n (one of them is 1)
  float* out;                    // [N]
  int64_t K, N;
};

template <class S, class W>
inline void rowsContiguous(const RowMat<W>& p) {  // vectorized over n, one broadcast x[k] per row of M
  constexpr int64_t L = S::kLanes;
  int64_t n = 0;
  for (; n + 2 * L <= p.N; n += 2 * L) {
    typename S::V a0 = S::zero(), a1 = S::zero();
    for (int64_t k = 0; k < p.K; k++) {
      typename S::V xv = S::set1(p.x[k]);
      a0 = S::fma(xv, S::load(p.m + k * p.rowStride + n), a0);
      a1 = S::fma(xv, S::load(p.m + k * p.rowStride + n + L), a1);
    }
    S::store(p.out + n, a0);
    S::store(p.out + n + L, a1);
  }
  for (; n < p.N; n++) {
    float sum = 0;
    for (int64_t k = 0; k < p.K; k++) sum += p.x[k] * widen(p.m[k * p.rowStride + n]);
    p.out[n] = sum;
  }
}

template <class S, class W>
inline void columnsContiguous(const RowMat<W>& p) {  // one dot product over k per column, 4 columns at a time
  constexpr int64_t L = S::kLanes;
  int64_t n = 0;
  for (; n + 4 <= p.N; n += 4) {
    typename S::V acc[4] = {S::zero(), S::zero(), S::zero(), S::zero()};
    int64_t k = 0;
    for (; k + L <= p.K; k += L) {
      typename S::V xv = S::load(p.x + k);
      for (int c = 0; c < 4; c++) acc[c] = S::fma(xv, S::load(p.m + (n + c) * p.colStride + k), acc[c]);
    }
    for (int c = 0; c < 4; c++) {
      float sum = S::sum(acc[c]);
      for (int64_t u = k; u < p.K; u++) sum += p.x[u] * widen(p.m[(n + c) * p.colStride + u]);
      p.out[n + c] = sum;
    }
  }
  for (; n < p.N; n++) {
    float sum = 0;
    for (int64_t k = 0; k < p.K; k++) sum += p.x[k] * widen(p.m[n * p.colStride + k]);
    p.out[n] = sum;
  }
}

template <class S, class W>
inline void rowMat(const RowMat<W>& p) {
  if (p.colStride == 1) rowsContiguous<S>(p);
  else columnsContiguous<S>(p);
}

// The kernels for one ISA each: `flatten` inlines the templates above into code built for that ISA.
template <class W>
__attribute__((target("avx512f"), flatten)) inline void range512(const Gemm<W>& g, int64_t j0, int64_t j1) {
  range<Avx512>(g, j0, j1);
}

template <class W>
__attribute__((target("avx2,fma"), flatten)) inline void range256(const Gemm<W>& g, int64_t j0, int64_t j1) {
  range<Avx2>(g, j0, j1);
}

template <class W>
__attribute__((target("avx512f"), flatten)) inline void rowMat512(const RowMat<W>& p) {
  rowMat<Avx512>(p);
}
template <class W>
__attribute__((target("avx2,fma"), flatten)) inline void rowMat256(const RowMat<W>& p) {
  rowMat<Avx2>(p);
}

enum class Isa { none, avx2, avx512 };

inline Isa isa() {
  static const Isa found = [] {
    if (const char* off = std::getenv("OASFT_SMALL_GEMM"); off && std::string(off) == "0") return Isa::none;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return Isa::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
    return Isa::none;
  }();
  return found;
}

// The name of the kernel in use, for `oasft info`: "avx512", "avx2" or "" (BLAS only).
inline const char* name() { return isa() == Isa::avx512 ? "avx512" : isa() == Isa::avx2 ? "avx2" : ""; }

// A CPU tensor of this dtype nothing differentiates: what both paths take (they have no backward).
inline bool inferenceOperand(const at::Tensor& t, at::ScalarType dtype = at::kFloat) {
  return t.device().is_cpu() && t.scalar_type() == dtype && !(at::GradMode::is_enabled() && t.requires_grad());
}

// Whether the kernels run here, for operands of this dtype (fp32 or bf16), outside autocast.
inline bool kernelFor(at::ScalarType dtype) {
  return isa() != Isa::none && !autocastEnabled(/*cuda=*/false) && (dtype == at::kFloat || dtype == at::kBFloat16);
}

// Whether linear(x, w, bias) takes this path, nothing to differentiate: float32 CPU tensors and 2..kMaxRows
// rows (one row takes BLAS's GEMV, as fast), or bf16 ones and 1..kMaxBf16Rows rows.
inline bool applies(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias) {
  const at::ScalarType dtype = w.scalar_type();
  if (!kernelFor(dtype) || !inferenceOperand(x, dtype) || !inferenceOperand(w, dtype)) return false;
  if (x.dim() < 1 || w.dim() != 2 || x.size(-1) != w.size(1) || x.size(-1) == 0 || w.size(0) == 0) return false;
  const int64_t m = x.numel() / x.size(-1);
  const bool rows = dtype == at::kFloat ? m >= 2 && m <= kMaxRows : m >= 1 && m <= kMaxBf16Rows;
  return rows && (!bias || (inferenceOperand(*bias, dtype) && bias->dim() == 1 && bias->size(0) == w.size(0)));
}

template <class W>
inline void run(const Gemm<W>& g) {
  const bool wide = isa() == Isa::avx512;
  // Split by blocks of 4 weight rows; a grain of ~64k multiply-adds keeps tiny layers on one thread.
  const int64_t blocks = (g.n + 3) / 4, grain = std::max<int64_t>(1, 65536 / (4 * g.k * g.m));
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    const int64_t j0 = b0 * 4, j1 = std::min(g.n, b1 * 4);
    if (wide) range512(g, j0, j1);
    else range256(g, j0, j1);
  });
}

// x and the bias in fp32 (exact for bf16 values), the weights wc (contiguous) read as they are at wp; y
// computed in fp32 and returned in x's dtype (one rounding for bf16).
template <class W>
inline at::Tensor linearOf(const at::Tensor& x, const at::Tensor& wc, const W* wp,
                           const c10::optional<at::Tensor>& bias) {
  const int64_t k = x.size(-1), n = wc.size(0), m = x.numel() / k;
  at::Tensor xc = x.to(at::kFloat).contiguous();
  at::Tensor bc = bias ? bias->to(at::kFloat).contiguous() : at::Tensor();
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = n;
  at::Tensor y = at::empty(shape, x.options().dtype(at::kFloat));
  run(Gemm<W>{xc.data_ptr<float>(), wp, bias ? bc.data_ptr<float>() : nullptr, y.data_ptr<float>(), m, k, n});
  return y.to(x.scalar_type());
}

inline at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias) {
  at::Tensor wc = w.contiguous();
  if (wc.scalar_type() == at::kBFloat16)
    return linearOf(x, wc, reinterpret_cast<const uint16_t*>(wc.data_ptr<at::BFloat16>()), bias);
  return linearOf(x, wc, wc.data_ptr<float>(), bias);
}

// Whether x·m (x [..., 1, K], m [..., K, N], the same leading sizes, no broadcasting) takes rowMatmul:
// float32 or bf16 CPU tensors, nothing to differentiate, m readable in place (a unit stride on one of its last
// dims). With c, as baddbmm's input: 3-D operands, and c of the same dtype on the CPU too.
inline bool rowMatmulApplies(const at::Tensor& x, const at::Tensor& m, const at::Tensor* c = nullptr) {
  const at::ScalarType dtype = m.scalar_type();
  if (!kernelFor(dtype) || !inferenceOperand(x, dtype) || !inferenceOperand(m, dtype)) return false;
  if (x.dim() < 3 || x.dim() != m.dim() || (c && (x.dim() != 3 || !inferenceOperand(*c, dtype)))) return false;
  if (x.size(-2) != 1 || x.size(-1) != m.size(-2) || x.numel() == 0 || m.numel() == 0) return false;
  for (int64_t i = 0; i < x.dim() - 2; i++)
    if (x.size(i) != m.size(i)) return false;
  return m.stride(-1) == 1 || m.stride(-2) == 1;
}

// beta·c + alpha·(x·m) as baddbmm, or x·m (c null); c broadcasts to the output [..., 1, N] and is not read
// when beta is 0 (libtorch's rule: a NaN there does not propagate). For bf16, x and c in fp32, m read in
// place, the output rounded to bf16 once.
template <class W>
inline at::Tensor rowMatmulOf(const at::Tensor& x, const at::Tensor& m, const W* mp, const at::Tensor* c, double beta,
                              double alpha) {
  const int64_t lead = x.dim() - 2, K = m.size(-2), N = m.size(-1);
  std::vector<int64_t> shape(m.sizes().begin(), m.sizes().end());
  shape[lead] = 1;
  at::Tensor xc = x.to(at::kFloat).contiguous(), out = at::empty(shape, x.options().dtype(at::kFloat));
  at::Tensor cc = c && beta != 0 ? c->expand(shape).to(at::kFloat).contiguous() : at::Tensor();
  const float *xp = xc.data_ptr<float>(), *cp = cc.defined() ? cc.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  const int64_t batches = xc.numel() / K, grain = std::max<int64_t>(1, 32768 / (K * N));
  const bool wide = isa() == Isa::avx512;
  at::parallel_for(0, batches, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) {
      int64_t offset = 0;  // b's entry of m through its leading sizes and strides (m may be a view)
      for (int64_t i = lead - 1, rest = b; i >= 0; rest /= m.size(i), i--) offset += (rest % m.size(i)) * m.stride(i);
      const RowMat<W> p{xp + b * K, mp + offset, m.stride(-2), m.stride(-1), op + b * N, K, N};
      if (wide) rowMat512(p);
      else rowMat256(p);
      if (cp || alpha != 1)
        for (int64_t n = 0; n < N; n++)
          p.out[n] = cp ? static_cast<float>(beta * cp[b * N + n] + alpha * p.out[n]) : static_cast<float>(alpha * p.out[n]);
    }
  });
  return out.to(x.scalar_type());
}

inline at::Tensor rowMatmul(const at::Tensor& x, const at::Tensor& m, const at::Tensor* c = nullptr, double beta = 0,
                            double alpha = 1) {
  if (m.scalar_type() == at::kBFloat16)
    return rowMatmulOf(x, m, reinterpret_cast<const uint16_t*>(m.data_ptr<at::BFloat16>()), c, beta, alpha);
  return rowMatmulOf(x, m, m.data_ptr<float>(), c, beta, alpha);
}

#undef OASFT_AVX512
#undef OASFT_AVX2
#pragma GCC diagnostic pop

#else

inline const char* name() { return ""; }
inline bool applies(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&) { return false; }
inline at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias) {
  return at::linear(x, w, bias);
}
inline bool rowMatmulApplies(const at::Tensor&, const at::Tensor&, const at::Tensor* = nullptr) { return false; }
inline at::Tensor rowMatmul(const at::Tensor& x, const at::Tensor& m, const at::Tensor* = nullptr, double = 0,
                            double = 1) {
  return at::matmul(x, m);
}

#endif

}  // namespace oasft::smallgemm
