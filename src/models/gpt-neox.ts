// GPT-NeoX (EleutherAI): Pythia, RedPajama-INCITE, OA's pythia-* SFT models. Rotary embeddings on
// the first rotary_pct of each head, per-head fused QKV, parallel (Pythia) or sequential residual,
// exact erf GELU, untied output projection.
// Reference: huggingface/transformers c965d302 src/transformers/models/gpt_neox/modeling_gpt_neox.py
// (the code ../shared/golden-neox was produced with). Module fields carry HF's state-dict names.
//
// Shapes: b batch, s new tokens, S = past + s keys, h hidden, n heads, d head dim (h = n·d),
// r rotary dims (r = ⌊d · rotary_pct⌋), i intermediate, v vocab.
import * as torch from "../torch/index.js";
import {
  Embedding,
  LayerNorm,
  Linear,
  Module,
  ModuleList,
  RotaryEmbedding,
  applyRotary,
  attention,
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
import {
  bool,
  f32,
  regroupFusedQkv,
  ropeScalingKeys,
  u32,
  weightAndBias,
  type GgufLayout,
  type GgufTensorSpec,
} from "./gguf-layout.js";
import { registerArchitecture } from "./registry.js";
import { GELU_KINDS, gptNeoXConfigFromJson, gptNeoXConfigToJson, type GPTNeoXConfig } from "./gpt-neox-config.js";

export { gptNeoXConfigFromJson, gptNeoXConfigToJson, type GPTNeoXConfig } from "./gpt-neox-config.js";

// ---------------------------------------------------------------------------------------------
// 1. Layers (leaf → block), as GPTNeoXAttention / GPTNeoXMLP / GPTNeoXLayer

class GPTNeoXAttention extends Module {
  readonly query_key_value: Linear;
  readonly dense: Linear;
  private readonly n: number;
  private readonly d: number;

  constructor(
    private readonly cfg: GPTNeoXConfig,
    o: LayerInit,
  ) {
    super();
    const h = cfg.hidden_size;
    this.n = cfg.num_attention_heads;
    this.d = h / this.n;
    this.query_key_value = this.child("query_key_value", new Linear(h, 3 * h, o));
    this.dense = this.child("dense", new Linear(h, h, o));
  }

  forward(
    x: torch.Tensor,
    ctx: ForwardContext,
    rope: RotaryTables,
    cache: { cache: HeadsKVCache; layer: number } | undefined,
    wantProbs: boolean,
  ): BlockOutput {
    const [b, s] = x.shape as [number, number];
    const { n, d } = this;
    // Per-head interleaved, as BLOOM: [b, s, n, 3·d] → q, k, v [b, n, s, d].
    const [fq, fk, fv] = this.query_key_value.forward(x).view([b, s, n, 3, d]).unbind(3) as [
      torch.Tensor,
      torch.Tensor,
      torch.Tensor,
    ];
    const q = applyRotary(fq.transpose(1, 2), rope.cos, rope.sin);
    let k = applyRotary(fk.transpose(1, 2), rope.cos, rope.sin);
    let v = fv.transpose(1, 2);
    // The cache stores keys after rotary: a past key keeps the rotation of its own position.
    if (cache) ({ keys: k, values: v } = cache.cache.append(cache.layer, k, v));
    const { context, probs } = attention(q, k, v, {
      hidden: ctx.hidden,
      causal: ctx.causal,
      scale: 1 / Math.sqrt(d),
      dropout: this.cfg.attention_dropout,
      training: this.training,
      wantProbs,
    });
    return { out: this.dense.forward(context), ...(probs ? { probs } : {}) };
  }
}

class GPTNeoXMLP extends Module {
  readonly dense_h_to_4h: Linear;
  readonly dense_4h_to_h: Linear;
  private readonly gelu: "none" | "tanh";
  constructor(cfg: GPTNeoXConfig, o: LayerInit) {
    super();
    this.dense_h_to_4h = this.child("dense_h_to_4h", new Linear(cfg.hidden_size, cfg.intermediate_size, o));
    this.dense_4h_to_h = this.child("dense_4h_to_h", new Linear(cfg.intermediate_size, cfg.hidden_size, o));
    this.gelu = GELU_KINDS[cfg.hidden_act]!;
  }
  forward(x: torch.Tensor): torch.Tensor {
    return this.dense_4h_to_h.forward(this.dense_h_to_4h.forward(x).gelu(this.gelu));
  }
}

class GPTNeoXLayer extends Module {
  readonly input_layernorm: LayerNorm;
  readonly post_attention_layernorm: LayerNorm;
  readonly attention: GPTNeoXAttention;
  readonly mlp: GPTNeoXMLP;
  constructor(
    private readonly cfg: GPTNeoXConfig,
    o: LayerInit,
  ) {
    super();
    const h = cfg.hidden_size;
    this.input_layernorm = this.child("input_layernorm", new LayerNorm(h, cfg.layer_norm_eps, o));
    this.post_attention_layernorm = this.child("post_attention_layernorm", new LayerNorm(h, cfg.layer_norm_eps, o));
    this.attention = this.child("attention", new GPTNeoXAttention(cfg, o));
    this.mlp = this.child("mlp", new GPTNeoXMLP(cfg, o));
  }
  forward(
    x: torch.Tensor,
    ctx: ForwardContext,
    rope: RotaryTables,
    cache: { cache: HeadsKVCache; layer: number } | undefined,
    wantProbs: boolean,
  ): BlockOutput {
    const p = this.cfg.hidden_dropout;
    const drop = (t: torch.Tensor) => (this.training && p > 0 ? torch.dropout(t, p, true) : t);
    const attn = this.attention.forward(this.input_layernorm.forward(x), ctx, rope, cache, wantProbs);
    const a = drop(attn.out);
    let out: torch.Tensor;
    if (this.cfg.use_parallel_residual) {
      // x + attn(ln1(x)) + mlp(ln2(x)): both norms read the block input (HF sums mlp + attn + x).
      out = drop(this.mlp.forward(this.post_attention_layernorm.forward(x)))
        .add(a)
        .add(x);
    } else {
      const mid = a.add(x);
      out = drop(this.mlp.forward(this.post_attention_layernorm.forward(mid))).add(mid);
    }
    return { out, ...(attn.probs ? { probs: attn.probs } : {}) };
  }
}

// ---------------------------------------------------------------------------------------------
// 2. The model

class GPTNeoXModel extends Module {
  readonly embed_in: Embedding;
  readonly layers: ModuleList<GPTNeoXLayer>;
  readonly final_layer_norm: LayerNorm;
  constructor(cfg: GPTNeoXConfig, o: LayerInit) {
    super();
    this.embed_in = this.child("embed_in", new Embedding(cfg.vocab_size, cfg.hidden_size, o));
    this.layers = this.child(
      "layers",
      new ModuleList(Array.from({ length: cfg.num_hidden_layers }, () => new GPTNeoXLayer(cfg, o))),
    );
    this.final_layer_norm = this.child("final_layer_norm", new LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, o));
  }
}

export class GPTNeoXForCausalLM extends CausalLM<RotaryTables, HeadsKVCache> {
  readonly config: ModelConfig;
  readonly gpt_neox: GPTNeoXModel;
  /** The output projection (no bias); absent when tie_word_embeddings shares embed_in. */
  readonly embed_out: Linear | undefined;
  private readonly rotary: RotaryEmbedding;

  constructor(
    readonly neoxConfig: GPTNeoXConfig,
    options: ModelOptions = {},
  ) {
    super(options);
    const c = neoxConfig;
    this.config = {
      modelType: "gpt_neox",
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
    this.gpt_neox = this.child("gpt_neox", new GPTNeoXModel(c, o));
    this.embed_out = c.tie_word_embeddings
      ? undefined
      : this.child("embed_out", new Linear(c.hidden_size, c.vocab_size, { ...o, bias: false }));
    const d = c.hidden_size / c.num_attention_heads;
    this.rotary = new RotaryEmbedding(
      Math.trunc(d * c.rotary_pct),
      c.rotary_emb_base,
      c.rope_scaling,
      c.max_position_embeddings,
    );
  }

  override fixedCacheExact(capacity: number): boolean {
    return !this.rotary.dependsOnLength(capacity);
  }

  get blocks(): readonly GPTNeoXLayer[] {
    return this.gpt_neox.layers.items;
  }

  get lmHeadWeight(): torch.Tensor {
    return this.embed_out?.weight ?? this.gpt_neox.embed_in.weight;
  }

  configJson(): Record<string, unknown> {
    return gptNeoXConfigToJson(this.neoxConfig);
  }

  get defaultLoraTargets(): string[] {
    return ["query_key_value"];
  }

  newCache(o: NewCacheOptions = {}): HeadsKVCache {
    return new HeadsKVCache(o.capacity ?? 64);
  }

  /**
   * llama.cpp's "gptneox" (convert_hf_to_gguf.py's GPTNeoXModel): QKV regrouped, NeoX-style rotary on
   * the first rotary_pct of each head. llama.cpp's GELU is the tanh approximation whatever hidden_act
   * says (Pythia's exact GELU differs by < 1e-3 per activation).
   */
  override ggufLayout(): GgufLayout {
    const c = this.neoxConfig;
    const qkv = (t: torch.Tensor) => regroupFusedQkv(t, c.num_attention_heads);
    const tensors: GgufTensorSpec[] = [{ name: "token_embd.weight", from: "gpt_neox.embed_in.weight" }];
    for (let i = 0; i < c.num_hidden_layers; i++) {
      const at = `gpt_neox.layers.${i}`;
      tensors.push(
        ...weightAndBias(`blk.${i}.attn_norm`, `${at}.input_layernorm`),
        ...weightAndBias(`blk.${i}.attn_qkv`, `${at}.attention.query_key_value`, qkv),
        ...weightAndBias(`blk.${i}.attn_output`, `${at}.attention.dense`),
        ...weightAndBias(`blk.${i}.ffn_norm`, `${at}.post_attention_layernorm`),
        ...weightAndBias(`blk.${i}.ffn_up`, `${at}.mlp.dense_h_to_4h`),
        ...weightAndBias(`blk.${i}.ffn_down`, `${at}.mlp.dense_4h_to_h`),
      );
    }
    // llama.cpp's GPT-NeoX always reads output.weight: a tied model writes its embedding there too.
    tensors.push(...weightAndBias("output_norm", "gpt_neox.final_layer_norm"), {
      name: "output.weight",
      from: this.embed_out ? "embed_out.weight" : "gpt_neox.embed_in.weight",
    });
    const d = c.hidden_size / c.num_attention_heads;
    return {
      arch: "gptneox",
      metadata: [
        ["gptneox.context_length", u32(c.max_position_embeddings)],
        ["gptneox.embedding_length", u32(c.hidden_size)],
        ["gptneox.block_count", u32(c.num_hidden_layers)],
        ["gptneox.feed_forward_length", u32(c.intermediate_size)],
        ["gptneox.rope.dimension_count", u32(Math.trunc(c.rotary_pct * d))],
        ["gptneox.rope.freq_base", f32(c.rotary_emb_base)],
        ...ropeScalingKeys("gptneox", c.rope_scaling),
        ["gptneox.attention.head_count", u32(c.num_attention_heads)],
        ["gptneox.use_parallel_residual", bool(c.use_parallel_residual)],
        ["gptneox.attention.layer_norm_epsilon", f32(c.layer_norm_eps)],
      ],
      tensors,
    };
  }

  protected embed(inputIds: torch.Tensor): torch.Tensor {
    return this.gpt_neox.embed_in.forward(inputIds);
  }

  protected prepare(ctx: ForwardContext): RotaryTables {
    const positions = ctx.positionIds.narrow(1, ctx.past, ctx.s); // the new tokens' positions [b, s]
    return this.rotary.tables(positions, ctx.past + ctx.s);
  }

  protected runBlock(
    i: number,
    x: torch.Tensor,
    ctx: ForwardContext,
    shared: RotaryTables,
    cache: HeadsKVCache | undefined,
    wantProbs: boolean,
  ): BlockOutput {
    return this.blocks[i]!.forward(x, ctx, shared, cache && { cache, layer: i }, wantProbs);
  }

  protected finalNorm(x: torch.Tensor): torch.Tensor {
    return this.gpt_neox.final_layer_norm.forward(x);
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Registration

registerArchitecture("gpt_neox", {
  create: (json, file, o) => new GPTNeoXForCausalLM(gptNeoXConfigFromJson(json, file), o),
  aliases: () => [],
  // Buffers older checkpoints carry (the rotary frequencies and causal-mask tables): recomputed here.
  ignorable: (name, m) =>
    /\.attention\.(rotary_emb\.inv_freq|bias|masked_bias)$/.test(name) ||
    (name === "embed_out.weight" && m.config.tieWordEmbeddings),
});
