// Qwen3 (Alibaba): Qwen2's graph with an RMSNorm over each head's q and k (q_norm, k_norm) before the
// rotary, an explicit head_dim (not hidden/heads), and biases only where attention_bias says.
// Reference: huggingface/transformers 6acd5aec src/transformers/models/qwen3/modeling_qwen3.py
// (../shared/golden-qwen3). The layers are LLaMA's (llama.ts) with the variant's q/k norms.
import { LlamaForCausalLM, llamaConfigFromJson } from "./llama.js";
import { QWEN_FP16, qwenWindows } from "./qwen2.js";
import { registerArchitecture } from "./registry.js";

/** HF Qwen3Config's defaults where they differ from LlamaConfig's (Qwen3-8B). */
const DEFAULTS = {
  vocab_size: 151936,
  hidden_size: 4096,
  intermediate_size: 22016,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 32,
  head_dim: 128,
  max_position_embeddings: 32768,
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  tie_word_embeddings: false,
  bos_token_id: null,
  eos_token_id: null,
};

registerArchitecture("qwen3", {
  create: (json, file, o) => {
    const config = llamaConfigFromJson({ ...DEFAULTS, ...json }, file);
    config.model_type = "qwen3";
    config.raw = { ...json };
    return new LlamaForCausalLM(config, o, {
      architecture: "Qwen3ForCausalLM",
      loraTargets: ["q_proj", "v_proj"],
      qkvBias: config.attention_bias,
      oBias: config.attention_bias,
      qkNorm: true,
      gguf: "qwen3",
      fp16Advice: QWEN_FP16,
      windows: qwenWindows({ sliding_window: null, ...json }, file, config.num_hidden_layers),
    });
  },
  aliases: () => [],
  ignorable: (name, m) =>
    /\.self_attn\.rotary_emb\.inv_freq$/.test(name) || (name === "lm_head.weight" && m.config.tieWordEmbeddings),
});
