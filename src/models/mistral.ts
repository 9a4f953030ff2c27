// Mistral (Mistral AI): LLaMA's graph with grouped-query attention and sliding-window attention on every
// layer. Reference: huggingface/transformers d6ffe74d src/transformers/models/mistral/modeling_mistral.py
// (../shared/golden-mistral), whose eager path windows through the mask alone, in training, the prefill
// and each cached decode step; the cache keeps every key. The layers are LLaMA's (llama.ts), as HF's
// "Copied from Llama"; this file reads Mistral's config.json and registers the family.
import { ConfigError, readOptionalInt } from "./config-json.js";
import { LlamaForCausalLM, llamaConfigFromJson, type LlamaConfig, type LlamaVariant } from "./llama.js";
import { registerArchitecture } from "./registry.js";

/** HF MistralConfig's defaults where they differ from LlamaConfig's (Mistral-7B-v0.1). */
const DEFAULTS = {
  intermediate_size: 14336,
  num_key_value_heads: 8,
  max_position_embeddings: 4096 * 32,
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  sliding_window: 4096,
};

export function mistralFromJson(
  json: Record<string, unknown>,
  file: string,
): { config: LlamaConfig; variant: LlamaVariant } {
  const config = llamaConfigFromJson({ ...DEFAULTS, ...json }, file);
  config.model_type = "mistral";
  config.raw = { ...json };
  const window = readOptionalInt({ ...DEFAULTS, ...json }, file, "sliding_window", null);
  if (window !== null && window < 1)
    throw new ConfigError(file, "sliding_window", `must be a positive integer or null, got ${window}`);
  return {
    config,
    variant: {
      architecture: "MistralForCausalLM",
      loraTargets: ["q_proj", "v_proj"],
      qkvBias: false,
      oBias: false,
      qkNorm: false,
      gguf: "llama",
      windows: new Array<number | null>(config.num_hidden_layers).fill(window),
    },
  };
}

registerArchitecture("mistral", {
  create: (json, file, o) => {
    const { config, variant } = mistralFromJson(json, file);
    return new LlamaForCausalLM(config, o, variant);
  },
  aliases: () => [],
  ignorable: (name, m) =>
    /\.self_attn\.rotary_emb\.inv_freq$/.test(name) || (name === "lm_head.weight" && m.config.tieWordEmbeddings),
});
