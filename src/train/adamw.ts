// AdamW (Loshchilov & Hutter), step for step as torch.optim.AdamW's single-tensor path in torch 1.13:
//   p ← p·(1 − lr·wd);  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
//   p ← p − (lr / (1−β1ᵗ)) · m / (√v / √(1−β2ᵗ) + ε)
// The state (m, v, t) belongs to the optimizer and is freed by dispose().
import * as torch from "../torch/index.js";

export interface AdamWOptions {
  lr: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  /**
   * Use the one-pass native kernel for contiguous float32 CPU parameters, and libtorch's multi-tensor
   * kernel for float32 CUDA parameters (default true); other parameters, and fused: false, take the
   * composite path below, which is the reference both kernels are tested against.
   */
  fused?: boolean;
}

export interface ParamGroup {
  params: torch.Tensor[];
  /** Overrides the optimizer's weight decay for this group (e.g. 0 for biases and LayerNorm). */
  weightDecay?: number;
}

interface ParamState {
  step: number;
  expAvg: torch.Tensor;
  expAvgSq: torch.Tensor;
}

export class AdamW {
  lr: number;
  readonly betas: [number, number];
  readonly eps: number;
  readonly weightDecay: number;
  readonly fused: boolean;
  readonly groups: ParamGroup[];
  private readonly state = new Map<torch.Tensor, ParamState>();

  constructor(params: torch.Tensor[] | ParamGroup[], o: AdamWOptions) {
    this.lr = o.lr;
    this.betas = o.betas ?? [0.9, 0.999];
    this.eps = o.eps ?? 1e-8;
    this.weightDecay = o.weightDecay ?? 0.01;
    this.fused = o.fused ?? true;
    this.groups =
      params.length > 0 && params[0] instanceof torch.Tensor
        ? [{ params: params as torch.Tensor[] }]
        : (params as ParamGroup[]);
  }

  /**
   * One update from the parameters' current .grad (parameters without a grad are skipped, as torch).
   * On CUDA, each group's float32 parameters at one step count go through libtorch's multi-tensor
   * kernel in one call (torch.optim.AdamW(fused=True)); everything else is updated one by one.
   */
  step(): void {
    torch.noGrad(() => {
      for (const group of this.groups) {
        const o = {
          lr: this.lr,
          betas: this.betas,
          eps: this.eps,
          weightDecay: group.weightDecay ?? this.weightDecay,
          fused: this.fused,
        };
        const batches = new Map<string, FusedBatch>();
        torch.scope(() => {
          // One scope for the group: the gradients' owners must outlive the batched calls below.
          for (const p of group.params) {
            const g = p.grad;
            if (!g) continue;
            const s = this.stateOf(p);
            s.step += 1;
            if (!fusedCuda(p, g, o.fused)) {
              torch.scope(() => adamwUpdate(p, g, s.expAvg, s.expAvgSq, s.step, o));
              continue;
            }
            const key = `${p.device}@${s.step}`;
            const batch = batches.get(key) ?? { step: s.step, p: [], g: [], m: [], v: [] };
            batches.set(key, batch);
            batch.p.push(p);
            batch.g.push(g);
            batch.m.push(s.expAvg);
            batch.v.push(s.expAvgSq);
          }
          for (const b of batches.values()) {
            torch.fusedAdamw_(b.p, b.g, b.m, b.v, hyper(o, b.step));
          }
        });
      }
    });
  }

  private stateOf(p: torch.Tensor): ParamState {
    let s = this.state.get(p);
    if (!s) {
      const zeros = () => torch.zeros(p.shape, { dtype: p.dtype, device: p.device }).keep();
      s = { step: 0, expAvg: zeros(), expAvgSq: zeros() };
      this.state.set(p, s);
    }
    return s;
  }

  /** Drops every gradient (torch's zero_grad(set_to_none=True)): the next backward allocates fresh ones. */
  zeroGrad(): void {
    for (const group of this.groups) for (const p of group.params) p.grad = undefined;
  }

  /** The per-parameter state, for checkpoints: [index in group order, step, m, v]. */
  stateList(): Array<{ index: number; step: number; expAvg: torch.Tensor; expAvgSq: torch.Tensor }> {
    const out: Array<{ index: number; step: number; expAvg: torch.Tensor; expAvgSq: torch.Tensor }> = [];
    let index = 0;
    for (const group of this.groups) {
      for (const p of group.params) {
        const s = this.state.get(p);
        if (s) out.push({ index, ...s });
        index++;
      }
    }
    return out;
  }

  /** Restores state saved by stateList() (tensors are copied; shapes must match the parameters). */
  loadState(list: Array<{ index: number; step: number; expAvg: torch.Tensor; expAvgSq: torch.Tensor }>): void {
    const params = this.groups.flatMap((g) => g.params);
    this.dispose();
    for (const { index, step, expAvg, expAvgSq } of list) {
      const p = params[index];
      if (!p) throw new Error(`optimizer state for parameter ${index}, but the optimizer has ${params.length}`);
      if (expAvg.shape.join() !== p.shape.join())
        throw new Error(`optimizer state ${index}: shape [${expAvg.shape}] ≠ parameter [${p.shape}]`);
      const own = (t: torch.Tensor) => torch.noGrad(() => t.to(p.dtype).toDevice(p.device).clone().keep());
      this.state.set(p, { step, expAvg: own(expAvg), expAvgSq: own(expAvgSq) });
    }
  }

  dispose(): void {
    for (const s of this.state.values()) {
      s.expAvg.dispose();
      s.expAvgSq.dispose();
    }
    this.state.clear();
  }
}

interface FusedBatch {
  step: number;
  p: torch.Tensor[];
  g: torch.Tensor[];
  m: torch.Tensor[];
  v: torch.Tensor[];
}

/** Whether libtorch's fused CUDA kernel takes this parameter (float32 on CUDA, where the addon has it). */
function fusedCuda(p: torch.Tensor, g: torch.Tensor, fused = true): boolean {
  return (
    fused && torch.features.fusedAdamw && p.device.startsWith("cuda") && p.dtype === "float32" && g.dtype === "float32"
  );
}

/**
 * One AdamW update of `p` (in place, with its moments m and v) from gradient `g` at step `step` (1 for
 * the first). The one-pass native kernel takes contiguous float32 CPU tensors; the composite below is
 * its reference and the path for everything else. ZeRO's sharded optimizer calls it on flat shards.
 */
export function adamwUpdate(
  p: torch.Tensor,
  g: torch.Tensor,
  m: torch.Tensor,
  v: torch.Tensor,
  step: number,
  o: AdamWSettings & { fused?: boolean },
): void {
  const [beta1, beta2] = o.betas;
  if (fusedCuda(p, g, o.fused)) return torch.fusedAdamw_([p], [g], [m], [v], hyper(o, step));
  const fast = (o.fused ?? true) && p.dtype === "float32" && p.device === "cpu" && g.dtype === "float32";
  if (fast && g.isContiguous() && p.isContiguous() && m.isContiguous() && v.isContiguous()) {
    torch.adamwStep_(p, g, m, v, hyper(o, step));
    return;
  }
  torch.scope(() => {
    if (o.weightDecay !== 0) p.mul_(1 - o.lr * o.weightDecay);
    m.mul_(beta1).add_(g, 1 - beta1);
    v.mul_(beta2).addcmul_(g, g, 1 - beta2);
    const biasCorrection1 = 1 - beta1 ** step;
    const biasCorrection2 = 1 - beta2 ** step;
    const denom = v.sqrt().div_(Math.sqrt(biasCorrection2)).add_(o.eps);
    p.addcdiv_(m, denom, -o.lr / biasCorrection1);
  });
}

/** AdamW's hyperparameters, as torch.optim.AdamW names them. */
export interface AdamWSettings {
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
}

function hyper(o: AdamWSettings, step: number): torch.AdamWHyper {
  return { lr: o.lr, beta1: o.betas[0], beta2: o.betas[1], eps: o.eps, weightDecay: o.weightDecay, step };
}
