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
  /** The model's parameter (its checkpoint name) it comes from. */
  from: string;
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

/** A layer's weight and bias, named "<gguf>.weight"/".bias" from "<hf>.weight"/".bias", both reordered by `transform`. */
export function weightAndBias(gguf: string, hf: string, transform?: (t: torch.Tensor) => torch.Tensor): GgufTensorSpec[] {
  return ["weight", "bias"].map((w) => ({ name: `${gguf}.${w}`, from: `${hf}.${w}`, ...(transform ? { transform } : {}) }));
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
  return t.reshape([nHead, 3, d, ...rest]).transpose(0, 1).contiguous().reshape(t.shape);
}

/**
 * HF's LLaMA q/k projections order each head's rows as two halves (rotate_half RoPE); llama.cpp
 * rotates adjacent pairs, as Meta's original weights. This interleaves the halves back:
 * rows [heads, 2, d/2] → [heads, d/2, 2].
 */
export function interleaveRotaryHalves(t: torch.Tensor, heads: number): torch.Tensor {
  const rows = t.size(0);
  const rest = t.shape.slice(1);
  return t.reshape([heads, 2, rows / heads / 2, ...rest]).transpose(1, 2).contiguous().reshape(t.shape);
}

/** llama.cpp's rope scaling keys: linear scaling has them; dynamic NTK scaling has no GGUF form. */
export function ropeScalingKeys(arch: string, scaling: RopeScalingConfig | null): Array<[string, GgufValue]> {
  if (!scaling) return [];
  // llama3: llama.cpp's converter writes the scaled frequencies as a rope_freqs tensor; not done here.
  if (scaling.type !== "linear") throw new Error(`rope_scaling type ${scaling.type}: not exported to GGUF by oasft; this model cannot be exported`);
  return [[`${arch}.rope.scaling.type`, str("linear")], [`${arch}.rope.scaling.factor`, f32(scaling.factor)]];
}
