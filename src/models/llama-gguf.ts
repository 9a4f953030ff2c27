// LLaMA-family models (LLaMA, Mistral, Qwen2, Qwen3) in llama.cpp's terms (convert_hf_to_gguf.py):
// metadata keys and tensor names, and the q/k row order llama.cpp's RoPE expects.
import type * as torch from "../torch/index.js";
import type { LlamaConfig } from "./llama.js";
import {
  f32,
  interleaveRotaryHalves,
  llama3RopeFactors,
  ropeScalingKeys,
  u32,
  type GgufLayout,
  type GgufTensorSpec,
} from "./gguf-layout.js";

/**
 * "llama" (LLaMA, Mistral) takes q/k rows back in RoPE's pair order; "qwen2" and "qwen3" keep HF's
 * half-split order (llama.cpp's NEOX rope). `own`: the model's parameter names (optional tensors,
 * an untied head).
 */
export function llamaGgufLayout(c: LlamaConfig, arch: string, own: Set<string>): GgufLayout {
  const pairOrder = arch === "llama";
  const q = pairOrder ? (t: torch.Tensor) => interleaveRotaryHalves(t, c.num_attention_heads) : undefined;
  const k = pairOrder ? (t: torch.Tensor) => interleaveRotaryHalves(t, c.num_key_value_heads) : undefined;
  const tensors: GgufTensorSpec[] = [{ name: "token_embd.weight", from: "model.embed_tokens.weight" }];
  const add = (name: string, from: string, transform?: (t: torch.Tensor) => torch.Tensor) => {
    if (own.has(from)) tensors.push({ name, from, ...(transform ? { transform } : {}) });
  };
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const at = `model.layers.${i}`;
    add(`blk.${i}.attn_norm.weight`, `${at}.input_layernorm.weight`);
    for (const [gg, hf, t] of [
      ["attn_q", "q_proj", q],
      ["attn_k", "k_proj", k],
      ["attn_v", "v_proj", undefined],
      ["attn_output", "o_proj", undefined],
    ] as const) {
      add(`blk.${i}.${gg}.weight`, `${at}.self_attn.${hf}.weight`, t);
      add(`blk.${i}.${gg}.bias`, `${at}.self_attn.${hf}.bias`, t); // a bias row follows its weight row
    }
    add(`blk.${i}.attn_q_norm.weight`, `${at}.self_attn.q_norm.weight`);
    add(`blk.${i}.attn_k_norm.weight`, `${at}.self_attn.k_norm.weight`);
    add(`blk.${i}.ffn_norm.weight`, `${at}.post_attention_layernorm.weight`);
    for (const [gg, hf] of [
      ["ffn_gate", "gate_proj"],
      ["ffn_up", "up_proj"],
      ["ffn_down", "down_proj"],
    ] as const) {
      add(`blk.${i}.${gg}.weight`, `${at}.mlp.${hf}.weight`);
      add(`blk.${i}.${gg}.bias`, `${at}.mlp.${hf}.bias`);
    }
  }
  tensors.push({ name: "output_norm.weight", from: "model.norm.weight" });
  // Tied: llama.cpp takes the output projection from token_embd itself.
  if (own.has("lm_head.weight")) tensors.push({ name: "output.weight", from: "lm_head.weight" });
  const scaling = c.rope_scaling;
  if (scaling?.type === "llama3") {
    tensors.push({
      name: "rope_freqs.weight",
      from: "rope_freqs",
      value: () => llama3RopeFactors(c.head_dim, c.rope_theta, scaling),
    });
  }
  const d = c.head_dim;
  const explicitHeadDim = d * c.num_attention_heads !== c.hidden_size;
  return {
    arch,
    metadata: [
      [`${arch}.context_length`, u32(c.max_position_embeddings)],
      [`${arch}.embedding_length`, u32(c.hidden_size)],
      [`${arch}.block_count`, u32(c.num_hidden_layers)],
      [`${arch}.feed_forward_length`, u32(c.intermediate_size)],
      [`${arch}.attention.head_count`, u32(c.num_attention_heads)],
      [`${arch}.attention.head_count_kv`, u32(c.num_key_value_heads)],
      ...(explicitHeadDim
        ? ([
            [`${arch}.attention.key_length`, u32(d)],
            [`${arch}.attention.value_length`, u32(d)],
          ] as Array<[string, ReturnType<typeof u32>]>)
        : []),
      [`${arch}.rope.freq_base`, f32(c.rope_theta)],
      [`${arch}.rope.dimension_count`, u32(d)],
      ...ropeScalingKeys(arch, c.rope_scaling),
      [`${arch}.attention.layer_norm_rms_epsilon`, f32(c.rms_norm_eps)],
      [`${arch}.vocab_size`, u32(c.vocab_size)],
    ],
    tensors,
  };
}
