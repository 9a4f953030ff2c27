// BLOOM in llama.cpp's terms: "bloom" as convert_hf_to_gguf.py's BloomModel writes it (QKV regrouped
// from per-head to all-q/all-k/all-v, ALiBi implied by the architecture).
import type * as torch from "../torch/index.js";
import type { BloomConfig } from "./bloom-config.js";
import { f32, regroupFusedQkv, u32, weightAndBias, type GgufLayout, type GgufTensorSpec } from "./gguf-layout.js";

export function bloomGgufLayout(c: BloomConfig, untiedHead: boolean): GgufLayout {
  if (c.apply_residual_connection_post_layernorm) {
    throw new Error(
      "llama.cpp's BLOOM has no apply_residual_connection_post_layernorm; this model cannot be exported to GGUF",
    );
  }
  const h = c.hidden_size;
  const qkv = (t: torch.Tensor) => regroupFusedQkv(t, c.n_head);
  const tensors: GgufTensorSpec[] = [
    { name: "token_embd.weight", from: "transformer.word_embeddings.weight" },
    ...weightAndBias("token_embd_norm", "transformer.word_embeddings_layernorm"),
  ];
  for (let i = 0; i < c.n_layer; i++) {
    const at = `transformer.h.${i}`;
    tensors.push(
      ...weightAndBias(`blk.${i}.attn_norm`, `${at}.input_layernorm`),
      ...weightAndBias(`blk.${i}.attn_qkv`, `${at}.self_attention.query_key_value`, qkv),
      ...weightAndBias(`blk.${i}.attn_output`, `${at}.self_attention.dense`),
      ...weightAndBias(`blk.${i}.ffn_norm`, `${at}.post_attention_layernorm`),
      ...weightAndBias(`blk.${i}.ffn_up`, `${at}.mlp.dense_h_to_4h`),
      ...weightAndBias(`blk.${i}.ffn_down`, `${at}.mlp.dense_4h_to_h`),
    );
  }
  tensors.push(...weightAndBias("output_norm", "transformer.ln_f"));
  // llama.cpp's converter writes the output projection even when tied (a copy of the embeddings):
  // older llama.cpp, ollama and LM Studio builds refuse a BLOOM file without it.
  tensors.push({
    name: "output.weight",
    from: untiedHead ? "lm_head.weight" : "transformer.word_embeddings.weight",
  });
  return {
    arch: "bloom",
    metadata: [
      // BLOOM (ALiBi) has no trained context length: llama.cpp's converter writes seq_length, else
      // the hidden size, and so does this export (files compare equal to the converter's).
      ["bloom.context_length", u32(Number(c.raw.seq_length ?? h))],
      ["bloom.embedding_length", u32(h)],
      ["bloom.feed_forward_length", u32(4 * h)],
      ["bloom.block_count", u32(c.n_layer)],
      ["bloom.attention.head_count", u32(c.n_head)],
      ["bloom.attention.head_count_kv", u32(c.n_head)],
      ["bloom.attention.layer_norm_epsilon", f32(c.layer_norm_epsilon)],
    ],
    tensors,
  };
}
