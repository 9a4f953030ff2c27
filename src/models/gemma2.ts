// Gemma 2 (Google): RMSNorm with (1 + w), embeddings scaled by √hidden, GeGLU with the tanh GELU, norms
// before and after both attention and MLP, attention and final-logit soft-capping, the attention scale
// query_pre_attn_scalar^−½, and sliding-window attention on every even layer.
// Reference: huggingface/transformers 6acd5aec src/transformers/models/gemma2/modeling_gemma2.py
// (../shared/golden-gemma2). HF's HybridCache keeps a rolling window for the sliding layers; the full
// cache with the window in the mask (as Mistral) gives the same numbers, so the standard cache serves.
//
// Shapes: b batch, s new tokens, S = past + s keys, h hidden, n query heads, g kv heads, d head dim.
import * as torch from "../torch/index.js";
import {
  Embedding,
  Linear,
  Module,
  ModuleList,
  OffsetRMSNorm,
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
import { ConfigError, readNumber, readOptionalInt } from "./config-json.js";
import { llamaConfigFromJson, type LlamaConfig } from "./llama.js";
import { qwenWindows } from "./qwen2.js";
import { HeadsKVCache } from "./kv-cache.js";
import { f32, u32, type GgufLayout, type GgufTensorSpec } from "./gguf-layout.js";
import { registerArchitecture } from "./registry.js";

// ---------------------------------------------------------------------------------------------
// 1. Config: Gemma2Config's keys on top of LLaMA's shared ones (configuration_gemma2.py)

export interface Gemma2Config extends LlamaConfig {
  query_pre_attn_scalar: number;
  attn_logit_softcapping: number | null;
  final_logit_softcapping: number | null;
  /** Each layer's window: layer_types where given, else every even layer slides (HF's is_sliding). */
  windows: Array<number | null>;
}

const DEFAULTS = {
  vocab_size: 256000,
  hidden_size: 2304,
  intermediate_size: 9216,
  num_hidden_layers: 26,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  head_dim: 256,
  max_position_embeddings: 8192,
  rms_norm_eps: 1e-6,
  tie_word_embeddings: true,
  pad_token_id: 0,
  eos_token_id: 1,
  bos_token_id: 2,
  query_pre_attn_scalar: 256,
  sliding_window: 4096,
  final_logit_softcapping: 30.0,
  attn_logit_softcapping: 50.0,
  hidden_act: "silu",
};

function optionalNumber(json: Record<string, unknown>, file: string, key: string): number | null {
  if (json[key] === null) return null;
  const v = readNumber(json, file, key, 0);
  if (v <= 0) throw new ConfigError(file, key, `expected a positive number or null, got ${v}`);
  return v;
}

export function gemma2ConfigFromJson(json: Record<string, unknown>, file = "config.json"): Gemma2Config {
  const merged: Record<string, unknown> = { ...DEFAULTS, ...json };
  const activation = merged.hidden_activation ?? "gelu_pytorch_tanh";
  if (activation !== "gelu_pytorch_tanh" && activation !== "gelu_tanh") {
    throw new ConfigError(
      file,
      "hidden_activation",
      `'${String(activation)}' is not supported; Gemma 2's MLP is GeGLU with the tanh GELU`,
    );
  }
  // LLaMA's reader checks the shared keys (heads, kv heads, head_dim, rope); its SwiGLU check is not Gemma's.
  const base = llamaConfigFromJson({ ...merged, hidden_act: "silu" }, file);
  const layers = base.num_hidden_layers;
  const window = readOptionalInt(merged, file, "sliding_window", 4096);
  if (window !== null && window < 1)
    throw new ConfigError(file, "sliding_window", `must be a positive integer or null, got ${window}`);
  const windows = Array.isArray(json.layer_types)
    ? qwenWindows({ ...merged, use_sliding_window: true }, file, layers)
    : Array.from({ length: layers }, (_, i) => (i % 2 === 0 ? window : null));
  return {
    ...base,
    model_type: "gemma2",
    raw: { ...json },
    windows,
    query_pre_attn_scalar: readNumber(merged, file, "query_pre_attn_scalar", 256),
    attn_logit_softcapping: optionalNumber(merged, file, "attn_logit_softcapping"),
    final_logit_softcapping: optionalNumber(merged, file, "final_logit_softcapping"),
  };
}

// ---------------------------------------------------------------------------------------------
// 2. Layers, as Gemma2Attention / Gemma2MLP / Gemma2DecoderLayer

class Gemma2Attention extends Module {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly o_proj: Linear;

  constructor(
    private readonly cfg: Gemma2Config,
    o: LayerInit,
  ) {
    super();
    const { hidden_size: h, num_attention_heads: n, num_key_value_heads: g, head_dim: d } = cfg;
    const lo = { ...o, bias: cfg.attention_bias };
    this.q_proj = this.child("q_proj", new Linear(h, n * d, lo));
    this.k_proj = this.child("k_proj", new Linear(h, g * d, lo));
    this.v_proj = this.child("v_proj", new Linear(h, g * d, lo));
    this.o_proj = this.child("o_proj", new Linear(n * d, h, lo));
  }

  forward(
    x: torch.Tensor,
    mask: LayerMask,
    rope: RotaryTables,
    cache: { cache: HeadsKVCache; layer: number } | undefined,
    wantProbs: boolean,
  ): BlockOutput {
    const [b, s] = x.shape as [number, number];
    const { num_attention_heads: n, num_key_value_heads: g, head_dim: d } = this.cfg;
    const heads = (t: torch.Tensor, count: number) => t.view([b, s, count, d]).transpose(1, 2);
    const q = applyRotary(heads(this.q_proj.forward(x), n), rope.cos, rope.sin);
    let k = applyRotary(heads(this.k_proj.forward(x), g), rope.cos, rope.sin);
    let v = heads(this.v_proj.forward(x), g);
    if (cache) ({ keys: k, values: v } = cache.cache.append(cache.layer, k, v));
    const { context, probs } = attention(q, k, v, {
      hidden: mask.hidden,
      causal: mask.causal,
      scale: this.cfg.query_pre_attn_scalar ** -0.5,
      softcap: this.cfg.attn_logit_softcapping,
      dropout: this.cfg.attention_dropout,
      training: this.training,
      wantProbs,
    });
    return { out: this.o_proj.forward(context), ...(probs ? { probs } : {}) };
  }
}

class Gemma2MLP extends Module {
  readonly gate_proj: Linear;
  readonly up_proj: Linear;
  readonly down_proj: Linear;
  constructor(cfg: Gemma2Config, o: LayerInit) {
    super();
    const lo = { ...o, bias: false };
    this.gate_proj = this.child("gate_proj", new Linear(cfg.hidden_size, cfg.intermediate_size, lo));
    this.up_proj = this.child("up_proj", new Linear(cfg.hidden_size, cfg.intermediate_size, lo));
    this.down_proj = this.child("down_proj", new Linear(cfg.intermediate_size, cfg.hidden_size, lo));
  }
  forward(x: torch.Tensor): torch.Tensor {
    return this.down_proj.forward(this.gate_proj.forward(x).gelu("tanh").mul(this.up_proj.forward(x)));
  }
}

class Gemma2DecoderLayer extends Module {
  readonly self_attn: Gemma2Attention;
  readonly mlp: Gemma2MLP;
  readonly input_layernorm: OffsetRMSNorm;
  readonly post_attention_layernorm: OffsetRMSNorm;
  readonly pre_feedforward_layernorm: OffsetRMSNorm;
  readonly post_feedforward_layernorm: OffsetRMSNorm;
  constructor(cfg: Gemma2Config, o: LayerInit) {
    super();
    const norm = () => new OffsetRMSNorm(cfg.hidden_size, cfg.rms_norm_eps, o);
    this.self_attn = this.child("self_attn", new Gemma2Attention(cfg, o));
    this.mlp = this.child("mlp", new Gemma2MLP(cfg, o));
    this.input_layernorm = this.child("input_layernorm", norm());
    this.post_attention_layernorm = this.child("post_attention_layernorm", norm());
    this.pre_feedforward_layernorm = this.child("pre_feedforward_layernorm", norm());
    this.post_feedforward_layernorm = this.child("post_feedforward_layernorm", norm());
  }
  forward(
    x: torch.Tensor,
    mask: LayerMask,
    rope: RotaryTables,
    cache: { cache: HeadsKVCache; layer: number } | undefined,
    wantProbs: boolean,
  ): BlockOutput {
    // The post-norms apply to each branch's output before its residual add, not to the stream.
    const attn = this.self_attn.forward(this.input_layernorm.forward(x), mask, rope, cache, wantProbs);
    const mid = x.add(this.post_attention_layernorm.forward(attn.out));
    const out = mid.add(
      this.post_feedforward_layernorm.forward(this.mlp.forward(this.pre_feedforward_layernorm.forward(mid))),
    );
    return { out, ...(attn.probs ? { probs: attn.probs } : {}) };
  }
}

// ---------------------------------------------------------------------------------------------
// 3. The model

class Gemma2Model extends Module {
  readonly embed_tokens: Embedding;
  readonly layers: ModuleList<Gemma2DecoderLayer>;
  readonly norm: OffsetRMSNorm;
  constructor(cfg: Gemma2Config, o: LayerInit) {
    super();
    this.embed_tokens = this.child("embed_tokens", new Embedding(cfg.vocab_size, cfg.hidden_size, o));
    this.layers = this.child(
      "layers",
      new ModuleList(Array.from({ length: cfg.num_hidden_layers }, () => new Gemma2DecoderLayer(cfg, o))),
    );
    this.norm = this.child("norm", new OffsetRMSNorm(cfg.hidden_size, cfg.rms_norm_eps, o));
    if (cfg.pad_token_id !== null && cfg.pad_token_id < cfg.vocab_size && o.init === "normal") {
      torch.noGrad(() => torch.scope(() => this.embed_tokens.weight.narrow(0, cfg.pad_token_id!, 1).zero_()));
    }
  }
}

interface Gemma2Shared {
  rope: RotaryTables;
  masks: Map<number | null, LayerMask>;
}

export class Gemma2ForCausalLM extends CausalLM<Gemma2Shared, HeadsKVCache> {
  readonly config: ModelConfig;
  readonly model: Gemma2Model;
  readonly lm_head: Linear | undefined;
  private readonly rotary: RotaryEmbedding;

  constructor(
    readonly gemmaConfig: Gemma2Config,
    options: ModelOptions = {},
  ) {
    super(options);
    const c = gemmaConfig;
    this.config = {
      modelType: "gemma2",
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
    this.model = this.child("model", new Gemma2Model(c, o));
    this.lm_head = c.tie_word_embeddings
      ? undefined
      : this.child("lm_head", new Linear(c.hidden_size, c.vocab_size, { ...o, bias: false }));
    this.rotary = new RotaryEmbedding(c.head_dim, c.rope_theta, c.rope_scaling, c.max_position_embeddings);
  }

  override fixedCacheExact(capacity: number): boolean {
    return windowsCover(this.gemmaConfig.windows, capacity) && !this.rotary.dependsOnLength(capacity);
  }

  get blocks(): readonly Gemma2DecoderLayer[] {
    return this.model.layers.items;
  }
  get lmHeadWeight(): torch.Tensor {
    return this.lm_head?.weight ?? this.model.embed_tokens.weight;
  }
  override get fp16Advice(): string | null {
    return (
      "Gemma 2 was trained in bf16 and its activations overflow fp16's range (Google and HF advise against fp16); " +
      "--dtype bf16 is the safe choice"
    );
  }
  override get finalLogitSoftcap(): number | null {
    return this.gemmaConfig.final_logit_softcapping;
  }
  configJson(): Record<string, unknown> {
    const { raw, windows: _windows, ...canonical } = this.gemmaConfig;
    const out: Record<string, unknown> = { architectures: ["Gemma2ForCausalLM"], ...raw, ...canonical };
    delete out.hidden_act; // Gemma 2's key is hidden_activation
    if (raw.rope_scaling !== undefined) out.rope_scaling = raw.rope_scaling;
    return out;
  }
  get defaultLoraTargets(): string[] {
    return ["q_proj", "v_proj"];
  }
  newCache(o: NewCacheOptions = {}): HeadsKVCache {
    return new HeadsKVCache(o.capacity ?? 64);
  }

  /** llama.cpp's "gemma2" (convert_hf_to_gguf.py's Gemma2Model): norm weights stored as 1 + w. */
  override ggufLayout(): GgufLayout {
    const c = this.gemmaConfig;
    const plusOne = (t: torch.Tensor) => t.add(1);
    const tensors: GgufTensorSpec[] = [{ name: "token_embd.weight", from: "model.embed_tokens.weight" }];
    for (let i = 0; i < c.num_hidden_layers; i++) {
      const at = `model.layers.${i}`;
      tensors.push(
        { name: `blk.${i}.attn_norm.weight`, from: `${at}.input_layernorm.weight`, transform: plusOne },
        { name: `blk.${i}.attn_q.weight`, from: `${at}.self_attn.q_proj.weight` },
        { name: `blk.${i}.attn_k.weight`, from: `${at}.self_attn.k_proj.weight` },
        { name: `blk.${i}.attn_v.weight`, from: `${at}.self_attn.v_proj.weight` },
        { name: `blk.${i}.attn_output.weight`, from: `${at}.self_attn.o_proj.weight` },
        {
          name: `blk.${i}.post_attention_norm.weight`,
          from: `${at}.post_attention_layernorm.weight`,
          transform: plusOne,
        },
        { name: `blk.${i}.ffn_norm.weight`, from: `${at}.pre_feedforward_layernorm.weight`, transform: plusOne },
        { name: `blk.${i}.ffn_gate.weight`, from: `${at}.mlp.gate_proj.weight` },
        { name: `blk.${i}.ffn_up.weight`, from: `${at}.mlp.up_proj.weight` },
        { name: `blk.${i}.ffn_down.weight`, from: `${at}.mlp.down_proj.weight` },
        { name: `blk.${i}.post_ffw_norm.weight`, from: `${at}.post_feedforward_layernorm.weight`, transform: plusOne },
      );
    }
    tensors.push({ name: "output_norm.weight", from: "model.norm.weight", transform: plusOne });
    if (this.lm_head) tensors.push({ name: "output.weight", from: "lm_head.weight" });
    const window = c.windows.find((w) => w !== null) ?? c.max_position_embeddings;
    return {
      arch: "gemma2",
      metadata: [
        ["gemma2.context_length", u32(c.max_position_embeddings)],
        ["gemma2.embedding_length", u32(c.hidden_size)],
        ["gemma2.block_count", u32(c.num_hidden_layers)],
        ["gemma2.feed_forward_length", u32(c.intermediate_size)],
        ["gemma2.attention.head_count", u32(c.num_attention_heads)],
        ["gemma2.attention.head_count_kv", u32(c.num_key_value_heads)],
        ["gemma2.attention.key_length", u32(c.head_dim)],
        ["gemma2.attention.value_length", u32(c.head_dim)],
        ["gemma2.attention.layer_norm_rms_epsilon", f32(c.rms_norm_eps)],
        ["gemma2.attention.sliding_window", u32(window)],
        ...(c.attn_logit_softcapping
          ? ([["gemma2.attn_logit_softcapping", f32(c.attn_logit_softcapping)]] as Array<
              [string, ReturnType<typeof f32>]
            >)
          : []),
        ...(c.final_logit_softcapping
          ? ([["gemma2.final_logit_softcapping", f32(c.final_logit_softcapping)]] as Array<
              [string, ReturnType<typeof f32>]
            >)
          : []),
        ["gemma2.rope.freq_base", f32(c.rope_theta)],
      ],
      tensors,
    };
  }

  /** Embeddings times √hidden, rounded to the embeddings' dtype first (HF's normalizer tensor). */
  protected embed(inputIds: torch.Tensor): torch.Tensor {
    const x = this.model.embed_tokens.forward(inputIds);
    const normalizer = torch.full([], Math.sqrt(this.gemmaConfig.hidden_size), { dtype: x.dtype, device: x.device });
    return x.mul(normalizer);
  }

  protected prepare(ctx: ForwardContext): Gemma2Shared {
    const rope = this.rotary.tables(ctx.positionIds.narrow(1, ctx.past, ctx.s), ctx.past + ctx.s);
    return { rope, masks: windowedMasks(ctx, this.gemmaConfig.windows, this.device) };
  }

  protected runBlock(
    i: number,
    x: torch.Tensor,
    ctx: ForwardContext,
    shared: Gemma2Shared,
    cache: HeadsKVCache | undefined,
    wantProbs: boolean,
  ): BlockOutput {
    const { rope, masks } = shared;
    const mask = masks.get(this.gemmaConfig.windows[i] ?? null)!;
    return this.blocks[i]!.forward(x, mask, rope, cache && { cache, layer: i }, wantProbs);
  }

  protected finalNorm(x: torch.Tensor): torch.Tensor {
    return this.model.norm.forward(x);
  }
}

// ---------------------------------------------------------------------------------------------
// 4. Registration

registerArchitecture("gemma2", {
  create: (json, file, o) => new Gemma2ForCausalLM(gemma2ConfigFromJson(json, file), o),
  aliases: () => [],
  ignorable: (name, m) => name === "lm_head.weight" && m.config.tieWordEmbeddings,
});
