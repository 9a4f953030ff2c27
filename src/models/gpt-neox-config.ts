// GPT-NeoX's config.json: HF's keys and defaults (configuration_gpt_neox.py).
import {
  ConfigError,
  readBool,
  readInt,
  readNumber,
  readOptionalInt,
  readRopeScaling,
  type RopeScalingConfig,
} from "./config-json.js";

export interface GPTNeoXConfig {
  model_type: "gpt_neox";
  vocab_size: number;
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  intermediate_size: number;
  hidden_act: string;
  rotary_pct: number;
  rotary_emb_base: number;
  rope_scaling: RopeScalingConfig | null;
  max_position_embeddings: number;
  use_parallel_residual: boolean;
  layer_norm_eps: number;
  initializer_range: number;
  attention_dropout: number;
  hidden_dropout: number;
  tie_word_embeddings: boolean;
  bos_token_id: number | null;
  eos_token_id: number | null;
  pad_token_id: number | null;
  /** Every key of the original config.json, written back unchanged when the model is saved. */
  raw: Record<string, unknown>;
}

/** HF's ACT2FN names this file implements: "gelu" is exact (erf); the others are the tanh form. */
export const GELU_KINDS: Record<string, "none" | "tanh"> = {
  gelu: "none",
  gelu_new: "tanh",
  gelu_fast: "tanh",
  gelu_pytorch_tanh: "tanh",
};

export function gptNeoXConfigFromJson(json: Record<string, unknown>, file = "config.json"): GPTNeoXConfig {
  const hidden = readInt(json, file, "hidden_size", 6144);
  const cfg: GPTNeoXConfig = {
    model_type: "gpt_neox",
    vocab_size: readInt(json, file, "vocab_size", 50432),
    hidden_size: hidden,
    num_hidden_layers: readInt(json, file, "num_hidden_layers", 44),
    num_attention_heads: readInt(json, file, "num_attention_heads", 64),
    intermediate_size: readInt(json, file, "intermediate_size", 4 * hidden),
    hidden_act: typeof json.hidden_act === "string" ? json.hidden_act : "gelu",
    rotary_pct: readNumber(json, file, "rotary_pct", 0.25),
    rotary_emb_base: readNumber(json, file, "rotary_emb_base", 10000),
    rope_scaling: readRopeScaling(json, file),
    max_position_embeddings: readInt(json, file, "max_position_embeddings", 2048),
    use_parallel_residual: readBool(json, file, "use_parallel_residual", true),
    layer_norm_eps: readNumber(json, file, "layer_norm_eps", 1e-5),
    initializer_range: readNumber(json, file, "initializer_range", 0.02),
    attention_dropout: readNumber(json, file, "attention_dropout", 0),
    hidden_dropout: readNumber(json, file, "hidden_dropout", 0),
    tie_word_embeddings: readBool(json, file, "tie_word_embeddings", false),
    bos_token_id: readOptionalInt(json, file, "bos_token_id", 0),
    eos_token_id: readOptionalInt(json, file, "eos_token_id", 2),
    pad_token_id: readOptionalInt(json, file, "pad_token_id", null),
    raw: { ...json },
  };
  for (const key of [
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
  ] as const) {
    if (cfg[key] < 1) throw new ConfigError(file, key, `must be a positive integer, got ${cfg[key]}`);
  }
  if (cfg.hidden_size % cfg.num_attention_heads !== 0) {
    throw new ConfigError(
      file,
      "hidden_size",
      `${cfg.hidden_size} is not divisible by num_attention_heads=${cfg.num_attention_heads}`,
    );
  }
  const rot = Math.trunc((cfg.hidden_size / cfg.num_attention_heads) * cfg.rotary_pct);
  if (cfg.rotary_pct <= 0 || cfg.rotary_pct > 1 || rot % 2 !== 0 || rot === 0) {
    throw new ConfigError(
      file,
      "rotary_pct",
      `${cfg.rotary_pct} gives ${rot} rotary dims per head; expected an even number ≥ 2`,
    );
  }
  if (!(cfg.hidden_act in GELU_KINDS)) {
    throw new ConfigError(
      file,
      "hidden_act",
      `'${cfg.hidden_act}' is not supported; expected one of ${Object.keys(GELU_KINDS).join(", ")}`,
    );
  }
  return cfg;
}

export function gptNeoXConfigToJson(cfg: GPTNeoXConfig): Record<string, unknown> {
  const { raw, ...canonical } = cfg;
  return { architectures: ["GPTNeoXForCausalLM"], ...raw, ...canonical };
}
