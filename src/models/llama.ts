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
  Embedding, Linear, Module, ModuleList, RMSNorm, RotaryEmbedding, applyRotary, attention, type LayerInit, type RotaryTables,
} from "../nn/index.js";
import {
  CausalLM, type BlockOutput, type ForwardContext, type KVCache, type ModelConfig, type ModelOptions, type NewCacheOptions,
} from "./causal-lm.js";
import { ConfigError, readBool, readInt, readNumber, readOptionalInt, readRopeScaling, type RopeScalingConfig } from "./config-json.js";
import { HeadsKVCache } from "./kv-cache.js";
import { f32, interleaveRotaryHalves, ropeScalingKeys, u32, type GgufLayout, type GgufTensorSpec } from "./gguf-layout.js";
import { registerArchitecture } from "./registry.js";

// ---------------------------------------------------------------------------------------------
// 1. Config: HF config.json keys and defaults (configuration_llama.py)

export interface LlamaConfig {
  model_type: "llama";
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
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
  const positive = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads"] as const;
  for (const key of positive) if (cfg[key] < 1) throw new ConfigError(file, key, `must be a positive integer, got ${cfg[key]}`);
  if (cfg.hidden_size % cfg.num_attention_heads !== 0) {
    throw new ConfigError(file, "hidden_size", `${cfg.hidden_size} is not divisible by num_attention_heads=${cfg.num_attention_heads}`);
  }
  if (cfg.num_attention_heads % cfg.num_key_value_heads !== 0) {
    throw new ConfigError(file, "num_key_value_heads", `num_attention_heads=${cfg.num_attention_heads} is not divisible by num_key_value_heads=${cfg.num_key_value_heads}`);
  }
  if ((cfg.hidden_size / cfg.num_attention_heads) % 2 !== 0) {
    throw new ConfigError(file, "hidden_size", `head dim ${cfg.hidden_size / cfg.num_attention_heads} must be even for rotary embeddings`);
  }
  if (cfg.hidden_act !== "silu") throw new ConfigError(file, "hidden_act", `'${cfg.hidden_act}' is not supported; LLaMA's MLP is SwiGLU ("silu")`);
  return cfg;
}

export function llamaConfigToJson(cfg: LlamaConfig): Record<string, unknown> {
  const { raw, ...canonical } = cfg;
  return { architectures: ["LlamaForCausalLM"], ...raw, ...canonical };
}

// ---------------------------------------------------------------------------------------------
// 2. Layers (leaf → block), as LlamaAttention / LlamaMLP / LlamaDecoderLayer

class LlamaAttention extends Module {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly o_proj: Linear;
  private readonly n: number;
  private readonly g: number;
  private readonly d: number;

  constructor(private readonly cfg: LlamaConfig, o: LayerInit) {
    super();
    const h = cfg.hidden_size;
    this.n = cfg.num_attention_heads;
    this.g = cfg.num_key_value_heads;
    this.d = h / this.n;
    const lo = { ...o, bias: false };
    this.q_proj = this.child("q_proj", new Linear(h, this.n * this.d, lo));
    this.k_proj = this.child("k_proj", new Linear(h, this.g * this.d, lo));
    this.v_proj = this.child("v_proj", new Linear(h, this.g * this.d, lo));
    this.o_proj = this.child("o_proj", new Linear(this.n * this.d, h, lo));
  }

  forward(x: torch.Tensor, ctx: ForwardContext, rope: RotaryTables, cache: { cache: HeadsKVCache; layer: number } | undefined, wantProbs: boolean): BlockOutput {
    const [b, s] = x.shape as [number, number];
    const { n, g, d } = this;
    // Head-major projections: [b, s, heads, d] → [b, heads, s, d].
    const q = applyRotary(this.q_proj.forward(x).view([b, s, n, d]).transpose(1, 2), rope.cos, rope.sin);
    let k = applyRotary(this.k_proj.forward(x).view([b, s, g, d]).transpose(1, 2), rope.cos, rope.sin);
    let v = this.v_proj.forward(x).view([b, s, g, d]).transpose(1, 2);
    // The cache holds the g kv heads after rotary, before they are repeated for the query heads.
    if (cache) ({ keys: k, values: v } = cache.cache.append(cache.layer, k, v));
    const { context, probs } = attention(q, k, v, {
      hidden: ctx.hidden, causal: ctx.causal, scale: 1 / Math.sqrt(d), dropout: this.cfg.attention_dropout, training: this.training, wantProbs,
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
    const lo = { ...o, bias: false };
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
  constructor(cfg: LlamaConfig, o: LayerInit) {
    super();
    this.self_attn = this.child("self_attn", new LlamaAttention(cfg, o));
    this.mlp = this.child("mlp", new LlamaMLP(cfg, o));
    this.input_layernorm = this.child("input_layernorm", new RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, o));
    this.post_attention_layernorm = this.child("post_attention_layernorm", new RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, o));
  }
  forward(x: torch.Tensor, ctx: ForwardContext, rope: RotaryTables, cache: { cache: HeadsKVCache; layer: number } | undefined, wantProbs: boolean): BlockOutput {
    const attn = this.self_attn.forward(this.input_layernorm.forward(x), ctx, rope, cache, wantProbs);
    const mid = x.add(attn.out);
    const out = mid.add(this.mlp.forward(this.post_attention_layernorm.forward(mid)));
    return { out, ...(attn.probs ? { probs: attn.probs } : {}) };
  }
}

// ---------------------------------------------------------------------------------------------
// 3. The model

class LlamaModel extends Module {
  readonly embed_tokens: Embedding;
  readonly layers: ModuleList<LlamaDecoderLayer>;
  readonly norm: RMSNorm;
  constructor(cfg: LlamaConfig, o: LayerInit) {
    super();
    this.embed_tokens = this.child("embed_tokens", new Embedding(cfg.vocab_size, cfg.hidden_size, o));
    this.layers = this.child("layers", new ModuleList(Array.from({ length: cfg.num_hidden_layers }, () => new LlamaDecoderLayer(cfg, o))));
    this.norm = this.child("norm", new RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, o));
    // HF zeroes the padding_idx row at init; a fresh model matches that (a loaded one keeps its file's row).
    if (cfg.pad_token_id !== null && cfg.pad_token_id < cfg.vocab_size && o.init === "normal") {
      torch.noGrad(() => torch.scope(() => this.embed_tokens.weight.narrow(0, cfg.pad_token_id!, 1).zero_()));
    }
  }
}

export class LlamaForCausalLM extends CausalLM {
  readonly config: ModelConfig;
  readonly model: LlamaModel;
  /** The output projection (no bias); absent when tie_word_embeddings shares embed_tokens. */
  readonly lm_head: Linear | undefined;
  private readonly rotary: RotaryEmbedding;

  constructor(readonly llamaConfig: LlamaConfig, options: ModelOptions = {}) {
    super(options);
    const c = llamaConfig;
    this.config = {
      modelType: "llama", vocabSize: c.vocab_size, hiddenSize: c.hidden_size, numLayers: c.num_hidden_layers,
      numHeads: c.num_attention_heads, bosTokenId: c.bos_token_id, eosTokenId: c.eos_token_id, padTokenId: c.pad_token_id,
      maxPositions: c.max_position_embeddings, tieWordEmbeddings: c.tie_word_embeddings,
    };
    const o: LayerInit = { dtype: this.dtype, device: this.device, init: options.init ?? "normal", std: c.initializer_range };
    this.model = this.child("model", new LlamaModel(c, o));
    this.lm_head = c.tie_word_embeddings ? undefined : this.child("lm_head", new Linear(c.hidden_size, c.vocab_size, { ...o, bias: false }));
    this.rotary = new RotaryEmbedding(c.hidden_size / c.num_attention_heads, c.rope_theta, c.rope_scaling, c.max_position_embeddings);
  }

  get blocks(): readonly LlamaDecoderLayer[] {
    return this.model.layers.items;
  }

  get lmHeadWeight(): torch.Tensor {
    return this.lm_head?.weight ?? this.model.embed_tokens.weight;
  }

  configJson(): Record<string, unknown> {
    return llamaConfigToJson(this.llamaConfig);
  }

  get defaultLoraTargets(): string[] {
    return ["q_proj", "k_proj", "v_proj", "o_proj"];
  }

  newCache(o: NewCacheOptions = {}): HeadsKVCache {
    return new HeadsKVCache(o.capacity ?? 64);
  }

  /** llama.cpp's "llama" (convert_hf_to_gguf.py's LlamaModel): q/k rows back in RoPE's pair order. */
  override ggufLayout(): GgufLayout {
    const c = this.llamaConfig;
    const q = (t: torch.Tensor) => interleaveRotaryHalves(t, c.num_attention_heads);
    const k = (t: torch.Tensor) => interleaveRotaryHalves(t, c.num_key_value_heads);
    const tensors: GgufTensorSpec[] = [{ name: "token_embd.weight", from: "model.embed_tokens.weight" }];
    for (let i = 0; i < c.num_hidden_layers; i++) {
      const at = `model.layers.${i}`;
      tensors.push(
        { name: `blk.${i}.attn_norm.weight`, from: `${at}.input_layernorm.weight` },
        { name: `blk.${i}.attn_q.weight`, from: `${at}.self_attn.q_proj.weight`, transform: q },
        { name: `blk.${i}.attn_k.weight`, from: `${at}.self_attn.k_proj.weight`, transform: k },
        { name: `blk.${i}.attn_v.weight`, from: `${at}.self_attn.v_proj.weight` },
        { name: `blk.${i}.attn_output.weight`, from: `${at}.self_attn.o_proj.weight` },
        { name: `blk.${i}.ffn_norm.weight`, from: `${at}.post_attention_layernorm.weight` },
        { name: `blk.${i}.ffn_gate.weight`, from: `${at}.mlp.gate_proj.weight` },
        { name: `blk.${i}.ffn_up.weight`, from: `${at}.mlp.up_proj.weight` },
        { name: `blk.${i}.ffn_down.weight`, from: `${at}.mlp.down_proj.weight` },
      );
    }
    tensors.push({ name: "output_norm.weight", from: "model.norm.weight" });
    // Tied: llama.cpp takes the output projection from token_embd itself.
    if (this.lm_head) tensors.push({ name: "output.weight", from: "lm_head.weight" });
    const d = c.hidden_size / c.num_attention_heads;
    return {
      arch: "llama",
      metadata: [
        ["llama.context_length", u32(c.max_position_embeddings)],
        ["llama.embedding_length", u32(c.hidden_size)],
        ["llama.block_count", u32(c.num_hidden_layers)],
        ["llama.feed_forward_length", u32(c.intermediate_size)],
        ["llama.attention.head_count", u32(c.num_attention_heads)],
        ["llama.attention.head_count_kv", u32(c.num_key_value_heads)],
        ["llama.rope.freq_base", f32(c.rope_theta)],
        ["llama.rope.dimension_count", u32(d)],
        ...ropeScalingKeys("llama", c.rope_scaling),
        ["llama.attention.layer_norm_rms_epsilon", f32(c.rms_norm_eps)],
        ["llama.vocab_size", u32(c.vocab_size)],
      ],
      tensors,
    };
  }

  protected embed(inputIds: torch.Tensor): torch.Tensor {
    return this.model.embed_tokens.forward(inputIds);
  }

  protected prepare(ctx: ForwardContext): RotaryTables {
    return this.rotary.tables(ctx.positionIds.narrow(1, ctx.past, ctx.s), ctx.past + ctx.s);
  }

  protected runBlock(i: number, x: torch.Tensor, ctx: ForwardContext, shared: unknown, cache: KVCache | undefined, wantProbs: boolean): BlockOutput {
    return this.blocks[i]!.forward(x, ctx, shared as RotaryTables, cache && { cache: cache as HeadsKVCache, layer: i }, wantProbs);
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
  ignorable: (name, m) => /\.self_attn\.rotary_emb\.inv_freq$/.test(name) || (name === "lm_head.weight" && m.config.tieWordEmbeddings),
});
