// LLaMA's config.json: HF's keys and defaults (configuration_llama.py), and the variants the families
// built on LLaMA's modules set (Mistral's sliding window, Qwen's biases and norms, their GGUF names).
import {
  ConfigError,
  readBool,
  readInt,
  readNumber,
  readOptionalInt,
  readRopeScaling,
  type RopeScalingConfig,
} from "./config-json.js";

export interface LlamaConfig {
  /** "llama", or the family whose file reads its config onto this shape (mistral, qwen2, qwen3). */
  model_type: string;
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  /** Per-head dim; HF's explicit head_dim (Qwen3, Llama 3), else hidden_size / num_attention_heads. */
  head_dim: number;
  /** Biases on q/k/v and o_proj (HF LlamaConfig.attention_bias). */
  attention_bias: boolean;
  /** Biases on the three MLP projections. */
  mlp_bias: boolean;
  hidden_act: string;
  max_position_embeddings: number;
  rms_norm_eps: number;
  rope_theta: number;
  rope_scaling: RopeScalingConfig | null;
  initializer_range: number;
  attention_dropout: number;
  tie_word_embeddings: boolean;
  bos_token_id: number | null;
  eos_token_id: number | null;
  pad_token_id: number | null;
  /** Every key of the original config.json, written back unchanged when the model is saved. */
  raw: Record<string, unknown>;
}

export function llamaConfigFromJson(json: Record<string, unknown>, file = "config.json"): LlamaConfig {
  const heads = readInt(json, file, "num_attention_heads", 32);
  const cfg: LlamaConfig = {
    model_type: "llama",
    vocab_size: readInt(json, file, "vocab_size", 32000),
    hidden_size: readInt(json, file, "hidden_size", 4096),
    intermediate_size: readInt(json, file, "intermediate_size", 11008),
    num_hidden_layers: readInt(json, file, "num_hidden_layers", 32),
    num_attention_heads: heads,
    // Absent (LLaMA 1 files): one kv head per query head, as HF.
    num_key_value_heads: json.num_key_value_heads === null ? heads : readInt(json, file, "num_key_value_heads", heads),
    head_dim: json.head_dim === null ? 0 : readInt(json, file, "head_dim", 0),
    attention_bias: readBool(json, file, "attention_bias", false),
    mlp_bias: readBool(json, file, "mlp_bias", false),
    hidden_act: typeof json.hidden_act === "string" ? json.hidden_act : "silu",
    max_position_embeddings: readInt(json, file, "max_position_embeddings", 2048),
    rms_norm_eps: readNumber(json, file, "rms_norm_eps", 1e-6),
    rope_theta: readNumber(json, file, "rope_theta", 10000),
    rope_scaling: readRopeScaling(json, file),
    initializer_range: readNumber(json, file, "initializer_range", 0.02),
    attention_dropout: readNumber(json, file, "attention_dropout", 0),
    tie_word_embeddings: readBool(json, file, "tie_word_embeddings", false),
    bos_token_id: readOptionalInt(json, file, "bos_token_id", 1),
    eos_token_id: readOptionalInt(json, file, "eos_token_id", 2),
    pad_token_id: readOptionalInt(json, file, "pad_token_id", null),
    raw: { ...json },
  };
  const positive = [
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
  ] as const;
  for (const key of positive)
    if (cfg[key] < 1) throw new ConfigError(file, key, `must be a positive integer, got ${cfg[key]}`);
  if (cfg.head_dim === 0) {
    if (cfg.hidden_size % cfg.num_attention_heads !== 0) {
      throw new ConfigError(
        file,
        "hidden_size",
        `${cfg.hidden_size} is not divisible by num_attention_heads=${cfg.num_attention_heads}`,
      );
    }
    cfg.head_dim = cfg.hidden_size / cfg.num_attention_heads;
  }
  if (cfg.num_attention_heads % cfg.num_key_value_heads !== 0) {
    throw new ConfigError(
      file,
      "num_key_value_heads",
      `num_attention_heads=${cfg.num_attention_heads} is not divisible by ` +
        `num_key_value_heads=${cfg.num_key_value_heads}`,
    );
  }
  if (cfg.head_dim % 2 !== 0) {
    const key = json.head_dim === undefined ? "hidden_size" : "head_dim";
    throw new ConfigError(file, key, `head dim ${cfg.head_dim} must be even for rotary embeddings`);
  }
  if (cfg.hidden_act !== "silu")
    throw new ConfigError(file, "hidden_act", `'${cfg.hidden_act}' is not supported; LLaMA's MLP is SwiGLU ("silu")`);
  return cfg;
}

/** The config.json to save: the original keys plus the canonical ones (head_dim only where the file had it). */
export function llamaConfigToJson(cfg: LlamaConfig, architecture = "LlamaForCausalLM"): Record<string, unknown> {
  const { raw, ...canonical } = cfg;
  const out: Record<string, unknown> = { architectures: [architecture], ...raw, ...canonical };
  // Keys LlamaConfig reads with defaults are written back only where the file had them (Qwen2's and
  // Mistral's configs have no attention_bias, and their biases are the variant's, not this key's).
  for (const key of ["head_dim", "attention_bias", "mlp_bias"] as const) if (raw[key] === undefined) delete out[key];
  // rope_scaling stays in HF's spelling (llama3's keys are snake_case there, camelCase here).
  if (raw.rope_scaling !== undefined) out.rope_scaling = raw.rope_scaling;
  return out;
}

/**
 * What sets the LLaMA-shaped families apart. LLaMA's own comes from its config; mistral.ts, qwen2.ts and
 * qwen3.ts each read their config.json onto LlamaConfig and give their variant (HF's "Copied from Llama").
 */
export interface LlamaVariant {
  /** HF's class name, written to config.json's architectures. */
  architecture: string;
  qkvBias: boolean;
  oBias: boolean;
  /** Qwen3: RMSNorm over each head's q and k (q_norm, k_norm) before the rotary. */
  qkNorm: boolean;
  /** Each layer's sliding window (a query sees itself and the window − 1 keys before it), or null. */
  windows: Array<number | null>;
  /** llama.cpp's architecture for GGUF export. */
  gguf: "llama" | "qwen2" | "qwen3";
  /** CausalLM.fp16Advice for the family, if any. */
  fp16Advice?: string;
  /** PEFT's default LoRA targets for the family, where they differ from LLaMA's. */
  loraTargets?: string[];
}

export function llamaVariant(c: LlamaConfig): LlamaVariant {
  return {
    architecture: "LlamaForCausalLM",
    qkvBias: c.attention_bias,
    oBias: c.attention_bias,
    qkNorm: false,
    windows: new Array<number | null>(c.num_hidden_layers).fill(null),
    gguf: "llama",
  };
}
