// BLOOM's config.json: HF's keys, with HF's aliases and defaults (configuration_bloom.py).
import { ConfigError, readBool, readInt, readNumber, readOptionalInt } from "./config-json.js";

export interface BloomConfig {
  model_type: "bloom";
  vocab_size: number;
  hidden_size: number;
  n_layer: number;
  n_head: number;
  layer_norm_epsilon: number;
  initializer_range: number;
  apply_residual_connection_post_layernorm: boolean;
  tie_word_embeddings: boolean;
  hidden_dropout: number;
  attention_dropout: number;
  bos_token_id: number | null;
  eos_token_id: number | null;
  pad_token_id: number | null;
  /** Every key of the original config.json, written back unchanged when the model is saved. */
  raw: Record<string, unknown>;
}

export function bloomConfigFromJson(json: Record<string, unknown>, file = "config.json"): BloomConfig {
  if (json.model_type !== undefined && json.model_type !== "bloom") {
    throw new ConfigError(file, "model_type", `expected "bloom", got ${JSON.stringify(json.model_type)}`);
  }
  const pick = (...keys: string[]) => keys.find((k) => json[k] !== undefined);
  const cfg: BloomConfig = {
    model_type: "bloom",
    vocab_size: readInt(json, file, "vocab_size", 250880),
    hidden_size: readInt(json, file, pick("hidden_size", "n_embed") ?? "hidden_size", 64),
    n_layer: readInt(json, file, pick("n_layer", "num_hidden_layers") ?? "n_layer", 2),
    n_head: readInt(json, file, pick("n_head", "num_attention_heads") ?? "n_head", 8),
    layer_norm_epsilon: readNumber(json, file, "layer_norm_epsilon", 1e-5),
    initializer_range: readNumber(json, file, "initializer_range", 0.02),
    apply_residual_connection_post_layernorm: readBool(json, file, "apply_residual_connection_post_layernorm", false),
    tie_word_embeddings: readBool(json, file, "tie_word_embeddings", true),
    hidden_dropout: readNumber(json, file, "hidden_dropout", 0),
    attention_dropout: readNumber(json, file, "attention_dropout", 0),
    bos_token_id: readOptionalInt(json, file, "bos_token_id", 1),
    eos_token_id: readOptionalInt(json, file, "eos_token_id", 2),
    pad_token_id: readOptionalInt(json, file, "pad_token_id", 3),
    raw: { ...json },
  };
  for (const key of ["vocab_size", "hidden_size", "n_layer", "n_head"] as const) {
    if (cfg[key] < 1) throw new ConfigError(file, key, `must be a positive integer, got ${cfg[key]}`);
  }
  if (cfg.hidden_size % cfg.n_head !== 0) {
    throw new ConfigError(file, "hidden_size", `${cfg.hidden_size} is not divisible by n_head=${cfg.n_head}`);
  }
  return cfg;
}

/** The config.json to save: the original keys plus the canonical ones HF's BloomConfig writes. */
export function bloomConfigToJson(cfg: BloomConfig): Record<string, unknown> {
  const { raw, ...canonical } = cfg;
  const out: Record<string, unknown> = { architectures: ["BloomForCausalLM"], ...raw, ...canonical };
  delete out.num_hidden_layers; // HF's attribute_map aliases; n_layer/n_head are the stored names
  delete out.num_attention_heads;
  delete out.n_embed;
  return out;
}
