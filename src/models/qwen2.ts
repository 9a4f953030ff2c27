// Qwen2 and Qwen2.5 (Alibaba): LLaMA's graph with biases on q/k/v (none on o_proj or the MLP), GQA,
// rope_theta, tied or untied embeddings. Reference: huggingface/transformers d6ffe74d
// src/transformers/models/qwen2/modeling_qwen2.py (../shared/golden-qwen2). The layers are LLaMA's
// (llama.ts); this file reads Qwen2's config.json, decides which layers slide, and registers the family.
import { ConfigError, readBool, readInt, readOptionalInt } from "./config-json.js";
import { LlamaForCausalLM, llamaConfigFromJson, type LlamaConfig } from "./llama.js";
import { registerArchitecture } from "./registry.js";

/** Shared by Qwen2 and Qwen3. */
export const QWEN_FP16 =
  "Qwen models were trained in bf16 and their activations are known to overflow fp16 (inf losses, " +
  "skipped steps); --dtype bf16 is the safe choice";

/** HF Qwen2Config's defaults where they differ from LlamaConfig's (Qwen2-7B). */
const DEFAULTS = {
  vocab_size: 151936,
  intermediate_size: 22016,
  num_key_value_heads: 32,
  max_position_embeddings: 32768,
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  tie_word_embeddings: false,
  bos_token_id: null,
  eos_token_id: null,
};

/**
 * Each layer's sliding window as current Hugging Face code decides it: config.json's `layer_types` where
 * present ("sliding_attention" / "full_attention"), else layers from `max_window_layers` on slide when
 * `use_sliding_window` is true. Released Qwen2.5/Qwen3 checkpoints have use_sliding_window false: no
 * window. (The goldens' 2024 HF applied `sliding_window` to every layer whatever use_sliding_window said;
 * their 4096 is longer than any of their sequences, so both rules give the same outputs there.)
 */
export function qwenWindows(json: Record<string, unknown>, file: string, layers: number): Array<number | null> {
  const window = readOptionalInt(json, file, "sliding_window", 4096);
  const use = readBool(json, file, "use_sliding_window", false);
  if (Array.isArray(json.layer_types)) {
    const types = json.layer_types;
    if (types.length !== layers)
      throw new ConfigError(file, "layer_types", `has ${types.length} entries for ${layers} layers`);
    return types.map((t, i) => {
      if (t !== "sliding_attention" && t !== "full_attention")
        throw new ConfigError(file, `layer_types[${i}]`, `unknown layer type ${JSON.stringify(t)}`);
      return t === "sliding_attention" ? window : null;
    });
  }
  const from = readInt(json, file, "max_window_layers", layers);
  return Array.from({ length: layers }, (_, i) => (use && window !== null && i >= from ? window : null));
}

export function qwen2FromJson(json: Record<string, unknown>, file: string): LlamaConfig {
  const config = llamaConfigFromJson({ ...DEFAULTS, ...json }, file);
  config.model_type = "qwen2";
  config.raw = { ...json };
  return config;
}

registerArchitecture("qwen2", {
  create: (json, file, o) => {
    const config = qwen2FromJson(json, file);
    return new LlamaForCausalLM(config, o, {
      architecture: "Qwen2ForCausalLM",
      loraTargets: ["q_proj", "v_proj"],
      qkvBias: true,
      oBias: false,
      qkNorm: false,
      gguf: "qwen2",
      fp16Advice: QWEN_FP16,
      windows: qwenWindows(json, file, config.num_hidden_layers),
    });
  },
  aliases: () => [],
  ignorable: (name, m) =>
    /\.self_attn\.rotary_emb\.inv_freq$/.test(name) || (name === "lm_head.weight" && m.config.tieWordEmbeddings),
});
