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
  windowsCover,
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
import { HeadsKVCache } from "./kv-cache.js";
import type { GgufLayout } from "./gguf-layout.js";
import { llamaGgufLayout } from "./llama-gguf.js";
import { registerArchitecture } from "./registry.js";
import {
  llamaConfigFromJson,
  llamaConfigToJson,
  llamaVariant,
  type LlamaConfig,
  type LlamaVariant,
} from "./llama-config.js";

export {
  llamaConfigFromJson,
  llamaConfigToJson,
  llamaVariant,
  type LlamaConfig,
  type LlamaVariant,
} from "./llama-config.js";

// ---------------------------------------------------------------------------------------------
// 1. Layers (leaf → block), as LlamaAttention / LlamaMLP / LlamaDecoderLayer

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
// 2. The model

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

  override fixedCacheExact(capacity: number): boolean {
    return windowsCover(this.variant.windows, capacity) && !this.rotary.dependsOnLength(capacity);
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

  /** llama.cpp's layout for this family (llama-gguf.ts). */
  override ggufLayout(): GgufLayout {
    return llamaGgufLayout(this.llamaConfig, this.variant.gguf, new Set(this.namedParameters().map(([n]) => n)));
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
// 3. Registration

registerArchitecture("llama", {
  create: (json, file, o) => new LlamaForCausalLM(llamaConfigFromJson(json, file), o),
  aliases: () => [],
  // The rotary frequencies were a persistent buffer in mid-2023 checkpoints: recomputed here.
  ignorable: (name, m) =>
    /\.self_attn\.rotary_emb\.inv_freq$/.test(name) || (name === "lm_head.weight" && m.config.tieWordEmbeddings),
});
