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

function weight(shape: number[], o: LayerOptions): torch.Tensor {
  const t = torch.empty(shape, o);
  if ((o.init ?? "normal") === "normal") t.normal_(0, o.std ?? 0.02);
  return t;
}

/** y = x Wᵀ + b, W: [out, in] (PyTorch layout). */
export class Linear extends Module {
  readonly weight: torch.Tensor;
  readonly bias: torch.Tensor | undefined;
  constructor(readonly inFeatures: number, readonly outFeatures: number, o: LayerOptions & { bias?: boolean } = {}) {
    super();
    this.weight = this.param("weight", weight([outFeatures, inFeatures], o));
    this.bias = o.bias === false ? undefined : this.param("bias", torch.zeros([outFeatures], o));
  }
  forward(x: torch.Tensor): torch.Tensor {
    return torch.linear(x, this.weight, this.bias);
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
  constructor(readonly dim: number, readonly eps: number, o: ModuleOptions = {}) {
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
  constructor(readonly dim: number, readonly eps: number, o: ModuleOptions = {}) {
    super();
    this.weight = this.param("weight", torch.ones([dim], o));
  }
  forward(x: torch.Tensor): torch.Tensor {
    const x32 = x.dtype === "float32" ? x : x.to("float32");
    const normed = x32.mul(x32.pow(2).mean([-1], true).add(this.eps).rsqrt());
    return this.weight.mul(normed.dtype === x.dtype ? normed : normed.to(x.dtype));
  }
}

export class Embedding extends Module {
  readonly weight: torch.Tensor;
  constructor(readonly num: number, readonly dim: number, o: LayerOptions = {}) {
    super();
    this.weight = this.param("weight", weight([num, dim], o));
  }
  forward(ids: torch.Tensor): torch.Tensor {
    return torch.embedding(this.weight, ids);
  }
}
