// Gradient utilities: the global L2 norm over all parameters, clipping to a maximum norm (as
// torch.nn.utils.clip_grad_norm_), unscaling and the overflow check for fp16 loss scaling.
import * as torch from "../torch/index.js";

/** √(Σ‖g‖²) over every parameter that has a gradient, in float64 on the host. */
export function globalGradNorm(params: torch.Tensor[]): number {
  return torch.noGrad(() =>
    torch.scope(() => {
      // One host sync: the per-tensor norms are stacked and reduced on the device.
      const norms = params.flatMap((p) => (p.grad ? [p.grad.to("float32").norm(2)] : []));
      return norms.length ? torch.stack(norms).norm(2).item() : 0;
    }),
  );
}

/** Multiplies every gradient by `factor` in place. */
export function scaleGrads(params: torch.Tensor[], factor: number): void {
  if (factor === 1) return;
  torch.noGrad(() =>
    torch.scope(() => {
      for (const p of params) p.grad?.mul_(factor);
    }),
  );
}

/**
 * Clips gradients to `maxNorm` (global norm; coefficient maxNorm / (norm + 1e-6), applied only when
 * below 1, as torch). Returns the norm before clipping; a non-finite norm is returned unclipped.
 */
export function clipGradNorm(params: torch.Tensor[], maxNorm: number): number {
  const norm = globalGradNorm(params);
  if (Number.isFinite(norm) && maxNorm > 0) {
    const coef = maxNorm / (norm + 1e-6);
    if (coef < 1) scaleGrads(params, coef);
  }
  return norm;
}
