// How an architecture appears in a GGUF file for llama.cpp: its LLM_ARCH name, its hyperparameter keys
// and its tensor names and layouts, as llama.cpp's convert_hf_to_gguf.py writes them. Each model file
// provides its layout (CausalLM.ggufLayout); src/export writes the file without knowing architectures.
import * as torch from "../torch/index.js";
import type { RopeScalingConfig } from "./config-json.js";

/** A GGUF metadata value with its GGUF type (the types llama.cpp's gguf_writer uses for each key). */
export type GgufValue =
  | { type: "u32"; value: number }
  | { type: "i32"; value: number }
  | { type: "f32"; value: number }
  | { type: "bool"; value: boolean }
  | { type: "str"; value: string }
  | { type: "arr-str"; value: string[] }
  | { type: "arr-i32"; value: number[] }
  | { type: "arr-f32"; value: number[] };

export interface GgufTensorSpec {
  /** llama.cpp's name, e.g. "blk.0.attn_qkv.weight". */
  name: string;
  /** The model's parameter (its checkpoint name) it comes from; or `value` for a tensor made from the config. */
  from: string;
  /** A tensor llama.cpp needs that the model has no parameter for (Llama 3's rope_freqs). */
  value?: () => torch.Tensor;
  /** Reorders the tensor into llama.cpp's layout (same shape); omitted: taken as it is. */
  transform?: (t: torch.Tensor) => torch.Tensor;
}

export interface GgufLayout {
  /** llama.cpp's architecture name (general.architecture, and the prefix of the keys below). */
  arch: string;
  /** The architecture's keys, full names ("bloom.block_count"). */
  metadata: Array<[string, GgufValue]>;
  tensors: GgufTensorSpec[];
}

/**
 * A layer's weight and bias, named "<gguf>.weight"/".bias" from "<hf>.weight"/".bias", both reordered by `transform`.
 */
export function weightAndBias(
  gguf: string,
  hf: string,
  transform?: (t: torch.Tensor) => torch.Tensor,
): GgufTensorSpec[] {
  return ["weight", "bias"].map((w) => ({
    name: `${gguf}.${w}`,
    from: `${hf}.${w}`,
    ...(transform ? { transform } : {}),
  }));
}

export const u32 = (value: number): GgufValue => ({ type: "u32", value });
export const f32 = (value: number): GgufValue => ({ type: "f32", value });
export const bool = (value: boolean): GgufValue => ({ type: "bool", value });
export const str = (value: string): GgufValue => ({ type: "str", value });

/**
 * A per-head fused QKV (BLOOM, GPT-NeoX: rows ordered head, then q/k/v, then dim) regrouped as
 * llama.cpp's fused QKV wants it: all query rows, then all key rows, then all value rows.
 * weight [3·n_h·d, h] or bias [3·n_h·d].
 */
export function regroupFusedQkv(t: torch.Tensor, nHead: number): torch.Tensor {
  const rows = t.size(0);
  const d = rows / (3 * nHead);
  const rest = t.shape.slice(1);
  return t
    .reshape([nHead, 3, d, ...rest])
    .transpose(0, 1)
    .contiguous()
    .reshape(t.shape);
}

/**
 * HF's LLaMA q/k projections order each head's rows as two halves (rotate_half RoPE); llama.cpp
 * rotates adjacent pairs, as Meta's original weights. This interleaves the halves back:
 * rows [heads, 2, d/2] → [heads, d/2, 2].
 */
export function interleaveRotaryHalves(t: torch.Tensor, heads: number): torch.Tensor {
  const rows = t.size(0);
  const rest = t.shape.slice(1);
  return t
    .reshape([heads, 2, rows / heads / 2, ...rest])
    .transpose(1, 2)
    .contiguous()
    .reshape(t.shape);
}

/** llama.cpp's rope scaling keys: linear scaling has them; dynamic NTK scaling has no GGUF form. */
export function ropeScalingKeys(arch: string, scaling: RopeScalingConfig | null): Array<[string, GgufValue]> {
  if (!scaling) return [];
  // llama3: no keys; the per-frequency factors go in the rope_freqs tensor (llama3RopeFactors).
  if (scaling.type === "llama3") return [];
  if (scaling.type !== "linear")
    throw new Error(
      `rope_scaling type ${scaling.type}: llama.cpp has no such scaling; this model cannot be exported to GGUF`,
    );
  return [
    [`${arch}.rope.scaling.type`, str("linear")],
    [`${arch}.rope.scaling.factor`, f32(scaling.factor)],
  ];
}

/**
 * Llama 3.1's scaling as llama.cpp takes it (convert_hf_to_gguf.py's rope_freqs tensor): one factor per
 * frequency that llama.cpp divides the frequency by: 1 for short wavelengths, `factor` for long ones,
 * and the interpolated band's 1 / ((1 − s)/factor + s) between, the same bands as src/nn/rotary.ts.
 */
export function llama3RopeFactors(
  headDim: number,
  theta: number,
  s: Extract<RopeScalingConfig, { type: "llama3" }>,
): torch.Tensor {
  const low = s.originalMaxPositions / s.lowFreqFactor;
  const high = s.originalMaxPositions / s.highFreqFactor;
  const factors = Array.from({ length: headDim / 2 }, (_, j) => {
    const wavelen = (2 * Math.PI) / (1 / theta ** ((2 * j) / headDim));
    if (wavelen < high) return 1;
    if (wavelen > low) return s.factor;
    const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return 1 / ((1 - smooth) / s.factor + smooth);
  });
  return torch.tensor(factors, { dtype: "float32" });
}
