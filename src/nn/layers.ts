// The layers shared by every architecture: Linear, LayerNorm, RMSNorm, Embedding.
// Parameters start as HF's _init_weights leaves them: Linear/Embedding weights ~ N(0, std), biases 0,
// LayerNorm weight 1 and bias 0. Pass init: "empty" when a checkpoint will overwrite them anyway.
import * as torch from "../torch/index.js";
import { Module, type ModuleOptions } from "./module.js";

export type InitMode = "normal" | "empty";
export interface LayerOptions extends ModuleOptions {
  init?: InitMode;
  /** Standard deviation of the normal init (HF's `initializer_range`). */
  std?: number;
}

/** What a model file hands each of its layers: where, in which dtype, and how to initialise. */
export interface LayerInit {
  dtype: torch.DType;
  device: string;
  init: InitMode;
  /** HF's initializer_range. */
  std: number;
}

function weight(shape: number[], o: LayerOptions): torch.Tensor {
  const t = torch.empty(shape, o);
  if ((o.init ?? "normal") === "normal") t.normal_(0, o.std ?? 0.02);
  return t;
}

/** A low-rank adapter on a Linear layer (LoRA, Hu et al. 2021, as PEFT computes it). */
export interface LoraOptions {
  r: number;
  alpha: number;
  dropout: number;
  /** The adapters' dtype (float32 by default, whatever the base layer's). */
  dtype?: torch.DType;
}

/**
 * y = x Wᵀ + b, W: [out, in] (PyTorch layout). With a LoRA adapter attached:
 * y = x Wᵀ + b + (α/r) · B(A(dropout(x))), A: [r, in] (PEFT's "lora_A"), B: [out, r] ("lora_B").
 */
export class Linear extends Module {
  readonly weight: torch.Tensor;
  readonly bias: torch.Tensor | undefined;
  private lora: { A: Linear; B: Linear; scaling: number; dropout: number } | undefined;
  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    o: LayerOptions & { bias?: boolean } = {},
  ) {
    super();
    this.weight = this.param("weight", weight([outFeatures, inFeatures], o));
    this.bias = o.bias === false ? undefined : this.param("bias", torch.zeros([outFeatures], o));
  }

  get hasLora(): boolean {
    return this.lora !== undefined;
  }

  /**
   * Attaches an adapter as PEFT initialises it: A ~ kaiming_uniform(a=√5), i.e. U(−1/√in, 1/√in), and
   * B = 0, so the adapted layer starts out equal to the base layer.
   */
  addLora(o: LoraOptions): void {
    if (this.lora) throw new Error("this layer already has a LoRA adapter");
    const lo = { dtype: o.dtype ?? "float32", device: this.weight.device, bias: false, init: "empty" as const };
    const A = this.child("lora_A", new Linear(this.inFeatures, o.r, lo));
    const B = this.child("lora_B", new Linear(o.r, this.outFeatures, lo));
    torch.noGrad(() => {
      const bound = 1 / Math.sqrt(this.inFeatures);
      A.weight.uniform_(-bound, bound);
      B.weight.zero_();
    });
    this.lora = { A, B, scaling: o.alpha / o.r, dropout: o.dropout };
  }

  /** Folds the adapter into the weight (W += (α/r)·B·A) and removes it: a plain layer again. */
  mergeLora(): void {
    const l = this.lora;
    if (!l) return;
    torch.noGrad(() =>
      torch.scope(() => {
        const delta = l.B.weight.to("float32").matmul(l.A.weight.to("float32")).mul(l.scaling);
        this.weight.add_(delta.to(this.weight.dtype));
      }),
    );
    this.removeChild("lora_A");
    this.removeChild("lora_B");
    this.lora = undefined;
  }

  forward(x: torch.Tensor): torch.Tensor {
    const y = torch.linear(x, this.weight, this.bias);
    const l = this.lora;
    if (!l) return y;
    let h = x.dtype === l.A.weight.dtype ? x : x.to(l.A.weight.dtype);
    if (this.training && l.dropout > 0) h = torch.dropout(h, l.dropout, true);
    const delta = l.B.forward(l.A.forward(h)).mul(l.scaling);
    return y.add(delta.dtype === y.dtype ? delta : delta.to(y.dtype));
  }
}

/**
 * The normalisation layers (LayerNorm, RMSNorm): their weights take no weight decay in AdamW's
 * groups (HF's ALL_LAYERNORM_LAYERS), which is decided by this type, not by parameter names.
 */
export abstract class Norm extends Module {}

export class LayerNorm extends Norm {
  readonly weight: torch.Tensor;
  readonly bias: torch.Tensor;
  constructor(
    readonly dim: number,
    readonly eps: number,
    o: ModuleOptions = {},
  ) {
    super();
    this.weight = this.param("weight", torch.ones([dim], o));
    this.bias = this.param("bias", torch.zeros([dim], o));
  }
  forward(x: torch.Tensor): torch.Tensor {
    return torch.layerNorm(x, [this.dim], this.weight, this.bias, this.eps);
  }
}

/**
 * RMSNorm (LLaMA): weight · x / √(mean(x²) + eps), the mean in float32 whatever the compute dtype; no
 * mean subtraction and no bias.
 */
export class RMSNorm extends Norm {
  readonly weight: torch.Tensor;
  constructor(
    readonly dim: number,
    readonly eps: number,
    o: ModuleOptions = {},
  ) {
    super();
    this.weight = this.param("weight", torch.ones([dim], o));
  }
  forward(x: torch.Tensor): torch.Tensor {
    const normed = rmsNormalized(x, this.eps);
    return this.weight.mul(normed.dtype === x.dtype ? normed : normed.to(x.dtype));
  }
}

/**
 * Gemma's RMSNorm: x̂·(1 + w), computed in float32 (the weight included) and cast back, with w stored
 * as HF stores it (zeros at init).
 */
export class OffsetRMSNorm extends Norm {
  readonly weight: torch.Tensor;
  constructor(
    readonly dim: number,
    readonly eps: number,
    o: ModuleOptions = {},
  ) {
    super();
    this.weight = this.param("weight", torch.zeros([dim], o));
  }
  forward(x: torch.Tensor): torch.Tensor {
    const w = this.weight.dtype === "float32" ? this.weight : this.weight.to("float32");
    const out = rmsNormalized(x, this.eps).mul(w.add(1));
    return out.dtype === x.dtype ? out : out.to(x.dtype);
  }
}

/** x / √(mean(x²) + eps) over the last dim, in float32 (both RMSNorms' shared step). */
function rmsNormalized(x: torch.Tensor, eps: number): torch.Tensor {
  const x32 = x.dtype === "float32" ? x : x.to("float32");
  return x32.mul(x32.pow(2).mean([-1], true).add(eps).rsqrt());
}

export class Embedding extends Module {
  readonly weight: torch.Tensor;
  constructor(
    readonly num: number,
    readonly dim: number,
    o: LayerOptions = {},
  ) {
    super();
    this.weight = this.param("weight", weight([num, dim], o));
  }
  forward(ids: torch.Tensor): torch.Tensor {
    return torch.embedding(this.weight, ids);
  }
}
