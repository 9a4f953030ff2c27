// LLaMA (Meta): LLaMA 1/2, and OA's llama-* SFT models. RMSNorm before each sublayer, rotary
// embeddings on every head dim (rope_theta, linear or dynamic rope_scaling), SwiGLU MLP, separate
// q/k/v projections with grouped-query attention (num_key_value_heads), no biases.
// Reference: huggingface/transformers 07360b6c src/transformers/models/llama/modeling_llama.py
// (../shared/golden-llama-gqa; ../shared/golden-llama is its LLaMA-1 parent). Module fields carry
// HF's state-dict names. Weights in HF layout go with the half-split rotary (rotate_half).
//
// Shapes: b batch, s new tokens, S = past + s keys, h hidden, n query heads, g kv heads (n % g = 0),
// d head dim (h = n·d), i intermediate, v vocab.
import * as torch from "../torch/index.js";
import {
  Embedding,
  Linear,
  Module,
  ModuleList,
  RMSNorm,
  RotaryEmbedding,
  applyRotary,
  attention,
  windowedMasks,
  type LayerMask,
  type LayerInit,
  type RotaryTables,
} from "../nn/index.js";
import {
  CausalLM,
  type BlockOutput,
  type ForwardContext,
  type ModelConfig,
  type ModelOptions,
  type NewCacheOptions,
} from "./causal-lm.js";
import {
  ConfigError,
  readBool,
  readInt,
  readNumber,
  readOptionalInt,
  readRopeScaling,
  type RopeScalingConfig,
} from "./config-json.js";
import { HeadsKVCache } from "./kv-cache.js";
import {
  f32,
  interleaveRotaryHalves,
  llama3RopeFactors,
  ropeScalingKeys,
  u32,
  type GgufLayout,
  type GgufTensorSpec,
} from "./gguf-layout.js";
import { registerArchitecture } from "./registry.js";

// ---------------------------------------------------------------------------------------------
// 1. Config: HF config.json keys and defaults (configuration_llama.py)

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
      `num_attention_heads=${cfg.num_attention_heads} is not divisible by num_key_value_heads=${cfg.num_key_value_heads}`,
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

// ---------------------------------------------------------------------------------------------
// 2. Layers (leaf → block), as LlamaAttention / LlamaMLP / LlamaDecoderLayer

class LlamaAttention extends Module {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly o_proj: Linear;
  readonly q_norm: RMSNorm | undefined;
  readonly k_norm: RMSNorm | undefined;
  private readonly n: number;
  private readonly g: number;
  private readonly d: number;

  constructor(
    private readonly cfg: LlamaConfig,
    v: LlamaVariant,
    o: LayerInit,
  ) {
    super();
    const h = cfg.hidden_size;
    this.n = cfg.num_attention_heads;
    this.g = cfg.num_key_value_heads;
    this.d = cfg.head_dim;
    const qkv = { ...o, bias: v.qkvBias };
    this.q_proj = this.child("q_proj", new Linear(h, this.n * this.d, qkv));
    this.k_proj = this.child("k_proj", new Linear(h, this.g * this.d, qkv));
    this.v_proj = this.child("v_proj", new Linear(h, this.g * this.d, qkv));
    this.o_proj = this.child("o_proj", new Linear(this.n * this.d, h, { ...o, bias: v.oBias }));
    this.q_norm = v.qkNorm ? this.child("q_norm", new RMSNorm(this.d, cfg.rms_norm_eps, o)) : undefined;
    this.k_norm = v.qkNorm ? this.child("k_norm", new RMSNorm(this.d, cfg.rms_norm_eps, o)) : undefined;
  }

  forward(
    x: torch.Tensor,
    mask: LayerMask,
    rope: RotaryTables,
    cache: { cache: HeadsKVCache; layer: number } | undefined,
    wantProbs: boolean,
  ): BlockOutput {
    const [b, s] = x.shape as [number, number];
    const { n, g, d } = this;
    // Head-major projections [b, s, heads, d] (Qwen3: each head RMS-normed) → [b, heads, s, d], then rotary.
    const heads = (t: torch.Tensor, count: number, norm: RMSNorm | undefined) => {
      const split = t.view([b, s, count, d]);
      return (norm ? norm.forward(split) : split).transpose(1, 2);
    };
    const q = applyRotary(heads(this.q_proj.forward(x), n, this.q_norm), rope.cos, rope.sin);
    let k = applyRotary(heads(this.k_proj.forward(x), g, this.k_norm), rope.cos, rope.sin);
    let v = heads(this.v_proj.forward(x), g, undefined);
    // The cache holds the g kv heads after rotary, before they are repeated for the query heads.
    if (cache) ({ keys: k, values: v } = cache.cache.append(cache.layer, k, v));
    const { context, probs } = attention(q, k, v, {
      hidden: mask.hidden,
      causal: mask.causal,
      scale: 1 / Math.sqrt(d),
      dropout: this.cfg.attention_dropout,
      training: this.training,
      wantProbs,
    });
    return { out: this.o_proj.forward(context), ...(probs ? { probs } : {}) };
  }
}

class LlamaMLP extends Module {
  readonly gate_proj: Linear;
  readonly up_proj: Linear;
  readonly down_proj: Linear;
  constructor(cfg: LlamaConfig, o: LayerInit) {
    super();
    const lo = { ...o, bias: cfg.mlp_bias };
    this.gate_proj = this.child("gate_proj", new Linear(cfg.hidden_size, cfg.intermediate_size, lo));
    this.up_proj = this.child("up_proj", new Linear(cfg.hidden_size, cfg.intermediate_size, lo));
    this.down_proj = this.child("down_proj", new Linear(cfg.intermediate_size, cfg.hidden_size, lo));
  }
  forward(x: torch.Tensor): torch.Tensor {
    // SwiGLU: down(silu(gate(x)) · up(x)); swapping gate and up changes the result.
    return this.down_proj.forward(this.gate_proj.forward(x).silu().mul(this.up_proj.forward(x)));
  }
}

class LlamaDecoderLayer extends Module {
  readonly self_attn: LlamaAttention;
  readonly mlp: LlamaMLP;
  readonly input_layernorm: RMSNorm;
  readonly post_attention_layernorm: RMSNorm;
  constructor(cfg: LlamaConfig, v: LlamaVariant, o: LayerInit) {
    super();
    this.self_attn = this.child("self_attn", new LlamaAttention(cfg, v, o));
    this.mlp = this.child("mlp", new LlamaMLP(cfg, o));
    this.input_layernorm = this.child("input_layernorm", new RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, o));
    this.post_attention_layernorm = this.child(
      "post_attention_layernorm",
      new RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, o),
    );
  }
  forward(
    x: torch.Tensor,
    mask: LayerMask,
    rope: RotaryTables,
    cache: { cache: HeadsKVCache; layer: number } | undefined,
    wantProbs: boolean,
  ): BlockOutput {
    const attn = this.self_attn.forward(this.input_layernorm.forward(x), mask, rope, cache, wantProbs);
    const mid = x.add(attn.out);
    const out = mid.add(this.mlp.forward(this.post_attention_layernorm.forward(mid)));
    return { out, ...(attn.probs ? { probs: attn.probs } : {}) };
  }
}

// ---------------------------------------------------------------------------------------------
// 3. The model

interface LlamaShared {
  rope: RotaryTables;
  masks: Map<number | null, LayerMask>;
}

class LlamaModel extends Module {
  readonly embed_tokens: Embedding;
  readonly layers: ModuleList<LlamaDecoderLayer>;
  readonly norm: RMSNorm;
  constructor(cfg: LlamaConfig, v: LlamaVariant, o: LayerInit) {
    super();
    this.embed_tokens = this.child("embed_tokens", new Embedding(cfg.vocab_size, cfg.hidden_size, o));
    this.layers = this.child(
      "layers",
      new ModuleList(Array.from({ length: cfg.num_hidden_layers }, () => new LlamaDecoderLayer(cfg, v, o))),
    );
    this.norm = this.child("norm", new RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, o));
    // HF zeroes the padding_idx row at init; a fresh model matches that (a loaded one keeps its file's row).
    if (cfg.pad_token_id !== null && cfg.pad_token_id < cfg.vocab_size && o.init === "normal") {
      torch.noGrad(() => torch.scope(() => this.embed_tokens.weight.narrow(0, cfg.pad_token_id!, 1).zero_()));
    }
  }
}

export class LlamaForCausalLM extends CausalLM<LlamaShared, HeadsKVCache> {
  readonly config: ModelConfig;
  readonly model: LlamaModel;
  /** The output projection (no bias); absent when tie_word_embeddings shares embed_tokens. */
  readonly lm_head: Linear | undefined;
  private readonly rotary: RotaryEmbedding;

  constructor(
    readonly llamaConfig: LlamaConfig,
    options: ModelOptions = {},
    readonly variant: LlamaVariant = llamaVariant(llamaConfig),
  ) {
    super(options);
    const c = llamaConfig;
    this.config = {
      modelType: c.model_type,
      vocabSize: c.vocab_size,
      hiddenSize: c.hidden_size,
      numLayers: c.num_hidden_layers,
      numHeads: c.num_attention_heads,
      bosTokenId: c.bos_token_id,
      eosTokenId: c.eos_token_id,
      padTokenId: c.pad_token_id,
      maxPositions: c.max_position_embeddings,
      tieWordEmbeddings: c.tie_word_embeddings,
    };
    const o: LayerInit = {
      dtype: this.dtype,
      device: this.device,
      init: options.init ?? "normal",
      std: c.initializer_range,
    };
    this.model = this.child("model", new LlamaModel(c, variant, o));
    this.lm_head = c.tie_word_embeddings
      ? undefined
      : this.child("lm_head", new Linear(c.hidden_size, c.vocab_size, { ...o, bias: false }));
    this.rotary = new RotaryEmbedding(c.head_dim, c.rope_theta, c.rope_scaling, c.max_position_embeddings);
  }

  get blocks(): readonly LlamaDecoderLayer[] {
    return this.model.layers.items;
  }

  get lmHeadWeight(): torch.Tensor {
    return this.lm_head?.weight ?? this.model.embed_tokens.weight;
  }

  configJson(): Record<string, unknown> {
    return llamaConfigToJson(this.llamaConfig, this.variant.architecture);
  }

  override get fp16Advice(): string | null {
    return this.variant.fp16Advice ?? null;
  }

  get defaultLoraTargets(): string[] {
    return this.variant.loraTargets ?? ["q_proj", "k_proj", "v_proj", "o_proj"];
  }

  newCache(o: NewCacheOptions = {}): HeadsKVCache {
    return new HeadsKVCache(o.capacity ?? 64);
  }

  /**
   * llama.cpp's layout for this family (convert_hf_to_gguf.py): "llama" (LLaMA, Mistral) takes q/k rows
   * back in RoPE's pair order; "qwen2" and "qwen3" keep HF's half-split order (llama.cpp's NEOX rope).
   */
  override ggufLayout(): GgufLayout {
    const c = this.llamaConfig;
    const arch = this.variant.gguf;
    const pairOrder = arch === "llama";
    const q = pairOrder ? (t: torch.Tensor) => interleaveRotaryHalves(t, c.num_attention_heads) : undefined;
    const k = pairOrder ? (t: torch.Tensor) => interleaveRotaryHalves(t, c.num_key_value_heads) : undefined;
    const tensors: GgufTensorSpec[] = [{ name: "token_embd.weight", from: "model.embed_tokens.weight" }];
    const own = new Set(this.namedParameters().map(([n]) => n));
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
    if (this.lm_head) tensors.push({ name: "output.weight", from: "lm_head.weight" });
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

  protected embed(inputIds: torch.Tensor): torch.Tensor {
    return this.model.embed_tokens.forward(inputIds);
  }

  /** The rotary tables, and one mask per distinct sliding window (made once per forward). */
  protected prepare(ctx: ForwardContext): LlamaShared {
    const rope = this.rotary.tables(ctx.positionIds.narrow(1, ctx.past, ctx.s), ctx.past + ctx.s);
    return { rope, masks: windowedMasks(ctx, this.variant.windows, this.device) };
  }

  protected runBlock(
    i: number,
    x: torch.Tensor,
    ctx: ForwardContext,
    shared: LlamaShared,
    cache: HeadsKVCache | undefined,
    wantProbs: boolean,
  ): BlockOutput {
    const { rope, masks } = shared;
    const mask = masks.get(this.variant.windows[i] ?? null)!;
    return this.blocks[i]!.forward(x, mask, rope, cache && { cache, layer: i }, wantProbs);
  }

  protected finalNorm(x: torch.Tensor): torch.Tensor {
    return this.model.norm.forward(x);
  }
}

// ---------------------------------------------------------------------------------------------
// 4. Registration

registerArchitecture("llama", {
  create: (json, file, o) => new LlamaForCausalLM(llamaConfigFromJson(json, file), o),
  aliases: () => [],
  // The rotary frequencies were a persistent buffer in mid-2023 checkpoints: recomputed here.
  ignorable: (name, m) =>
    /\.self_attn\.rotary_emb\.inv_freq$/.test(name) || (name === "lm_head.weight" && m.config.tieWordEmbeddings),
});
