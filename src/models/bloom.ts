// BLOOM (BigScience): ALiBi attention, per-head fused QKV, LayerNorm after the embedding, tied LM head.
// Reference: huggingface/transformers c965d302 src/transformers/models/bloom/modeling_bloom.py
// (the code ../shared/golden was produced with). Module fields carry HF's state-dict names, so a
// Hugging Face BLOOM folder loads unchanged and what we save loads in Python.
//
// Shapes: b batch, s new tokens, S = past + s keys, h hidden, n_h heads, d head dim (h = n_h·d), v vocab.
import * as torch from "../torch/index.js";
import { Embedding, LayerNorm, Linear, Module, ModuleList, hiddenBias, useSdpa, type LayerInit } from "../nn/index.js";
import {
  CausalLM,
  type BlockOutput,
  type ForwardContext,
  type KVCache,
  type ModelConfig,
  type ModelOptions,
  type NewCacheOptions,
} from "./causal-lm.js";
import { LayeredKVCache } from "./kv-cache.js";
import { type GgufLayout } from "./gguf-layout.js";
import { registerArchitecture } from "./registry.js";
import { bloomGgufLayout } from "./bloom-gguf.js";
import { bloomConfigFromJson, bloomConfigToJson, type BloomConfig } from "./bloom-config.js";

export { bloomConfigFromJson, bloomConfigToJson, type BloomConfig } from "./bloom-config.js";

// ---------------------------------------------------------------------------------------------
// 1. Helpers: ALiBi and the attention mask

/**
 * ALiBi slopes as HF's build_alibi_tensor computes them: the base is rounded to float32 first and
 * raised with torch's own float32 pow, so 16/32-head slopes match HF to the last bit.
 */
export function alibiSlopes(nHeads: number): torch.Tensor {
  return torch.scope(() => {
    const p = 2 ** Math.floor(Math.log2(nHeads));
    const powered = (base: number, from: number, count: number, step: number) =>
      torch
        .tensor([base])
        .reshape([])
        .pow(torch.arange(from, from + count * step, step, { dtype: "int32" }));
    const slopes = powered(2 ** -(2 ** -(Math.log2(p) - 3)), 1, p, 1);
    if (p === nHeads) return slopes;
    const extra = powered(2 ** -(2 ** -(Math.log2(2 * p) - 3)), 1, Math.min(p, nHeads - p), 2);
    return torch.cat([slopes, extra]);
  });
}

/**
 * The ALiBi bias [b·n_h, 1, S]: slope[h]·pos[key], pos from the forward's positions (by default
 * (cumsum(mask) − 1)·mask, so the first real token of a left-padded row has position 0, as HF; packed
 * rows restart at each sample). It depends on the key only: softmax makes it slope·(key − query).
 */
function alibiBias(slopes: torch.Tensor, positions: torch.Tensor, nHeads: number, dtype: torch.DType): torch.Tensor {
  const [b, S] = positions.shape as [number, number];
  const bias = slopes.unsqueeze(-1).mul(positions.unsqueeze(1)); // [b, n_h, S] float32
  const out = bias.reshape([b * nHeads, 1, S]);
  return dtype === "float32" ? out : out.to(dtype);
}

/** What prepare() makes once per forward: the ALiBi bias, and the fused op's bias where it runs. */
interface BloomBias {
  /** [b·n_h, 1, S] in the forward's dtype (the composite path). */
  alibi: torch.Tensor;
  /** [b, n_h, s, S] (or [b, n_h, 1, S] with nothing hidden): ALiBi plus the mask, in the compute dtype. */
  sdpa?: torch.Tensor;
}

// ---------------------------------------------------------------------------------------------
// 2. KV cache: preallocated per layer, grown by doubling, views handed to attention

/**
 * Keys are stored as [b·n_h, d, capacity] (HF's transposed key layout, ready for baddbmm) and values as
 * [b·n_h, capacity, d]; batch row r owns entries [r·n_h, (r+1)·n_h) of dim 0. The bookkeeping
 * (growth, row selection, row concatenation) is LayeredKVCache's.
 */
export class BloomCache extends LayeredKVCache {
  constructor(
    private readonly nHead: number,
    initialCapacity = 64,
  ) {
    super(2, 1, initialCapacity);
  }
  protected rowEntries(rows: number[]): number[] {
    return rows.flatMap((r) => Array.from({ length: this.nHead }, (_, h) => r * this.nHead + h));
  }
  protected sameLayout(other: KVCache): boolean {
    return other instanceof BloomCache && other.nHead === this.nHead;
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Layers (leaf → block), as BloomAttention / BloomMLP / BloomBlock

class BloomAttention extends Module {
  readonly query_key_value: Linear;
  readonly dense: Linear;
  private readonly nHead: number;
  private readonly headDim: number;

  constructor(
    private readonly cfg: BloomConfig,
    o: LayerInit,
  ) {
    super();
    const h = cfg.hidden_size;
    this.nHead = cfg.n_head;
    this.headDim = h / cfg.n_head;
    this.query_key_value = this.child("query_key_value", new Linear(h, 3 * h, o));
    this.dense = this.child("dense", new Linear(h, h, o));
  }

  forward(
    x: torch.Tensor,
    residual: torch.Tensor,
    bias: BloomBias,
    mask: torch.Tensor | undefined,
    cache: { cache: BloomCache; layer: number } | undefined,
    wantProbs: boolean,
  ): { out: torch.Tensor; probs?: torch.Tensor } {
    const [b, s, h] = x.shape as [number, number, number];
    const nh = this.nHead;
    const d = this.headDim;
    // The fused projection is per-head interleaved: [b, s, n_h, 3, d], not [all q | all k | all v].
    const [fq, fk, fv] = this.query_key_value.forward(x).view([b, s, nh, 3, d]).unbind(3) as [
      torch.Tensor,
      torch.Tensor,
      torch.Tensor,
    ];
    if (bias.sdpa && !wantProbs) return { out: this.project(this.fused(fq, fk, fv, bias.sdpa, cache), residual) };
    const alibi = bias.alibi;
    const q = fq.transpose(1, 2).reshape([b * nh, s, d]);
    let k = fk.permute([0, 2, 3, 1]).reshape([b * nh, d, s]); // keys pre-transposed
    let v = fv.transpose(1, 2).reshape([b * nh, s, d]);
    if (cache) ({ keys: k, values: v } = cache.cache.append(cache.layer, k, v));
    const S = k.size(2);

    // scores = alibi + q·kᵀ/√d; in fp16 they are upcast first (fp16's min, −65504, is not "masked" enough).
    let scores = alibi.baddbmm(q, k, 1, 1 / Math.sqrt(d)).view([b, nh, s, S]);
    const inputDtype = scores.dtype;
    if (inputDtype === "float16") scores = scores.to("float32");
    // masked_fill with the dtype's minimum, not −inf: a query that sees no key (a left pad) gets a
    // uniform row instead of NaN, exactly as HF (../shared/golden/README.md, "easy to get wrong").
    if (mask) scores = scores.maskedFill(mask, torch.FLOAT_MIN[scores.dtype]!);
    let probs = scores.softmax(-1, "float32");
    if (probs.dtype !== inputDtype) probs = probs.to(inputDtype);
    if (this.training && this.cfg.attention_dropout > 0) probs = torch.dropout(probs, this.cfg.attention_dropout, true);

    const context = probs
      .view([b * nh, s, S])
      .bmm(v)
      .view([b, nh, s, d])
      .permute([0, 2, 1, 3])
      .reshape([b, s, h]);
    return { out: this.project(context, residual), probs: wantProbs ? probs : undefined };
  }

  /**
   * The same attention through libtorch's fused op (memory-efficient kernel on CUDA), with ALiBi and the
   * mask folded into one additive bias [b, n_h, s, S] made once per forward (prepare). The composite
   * path above is its reference (GPU tier).
   */
  private fused(
    fq: torch.Tensor,
    fk: torch.Tensor,
    fv: torch.Tensor,
    bias: torch.Tensor,
    cache: { cache: BloomCache; layer: number } | undefined,
  ): torch.Tensor {
    const [b, s, nh, d] = fq.shape as [number, number, number, number];
    let k = fk.transpose(1, 2); // [b, n_h, s, d]
    let v = fv.transpose(1, 2);
    if (cache) {
      // The cache keeps BLOOM's layout (keys [b·n_h, d, S]); the fused op reads keys as [b, n_h, S, d].
      const stored = cache.cache.append(
        cache.layer,
        fk.permute([0, 2, 3, 1]).reshape([b * nh, d, s]),
        v.reshape([b * nh, s, d]),
      );
      const S = stored.values.size(1);
      k = stored.keys.view([b, nh, d, S]).transpose(2, 3).contiguous();
      v = stored.values.view([b, nh, S, d]);
    }
    const dropout = this.training ? this.cfg.attention_dropout : 0;
    const out = torch.sdpa(fq.transpose(1, 2), k, v, { mask: bias, dropout, scale: 1 / Math.sqrt(d) });
    return out.transpose(1, 2).reshape([b, s, nh * d]);
  }

  private project(context: torch.Tensor, residual: torch.Tensor): torch.Tensor {
    let out = this.dense.forward(context);
    if (this.training && this.cfg.hidden_dropout > 0) out = torch.dropout(out, this.cfg.hidden_dropout, true);
    return out.add(residual);
  }
}

class BloomMLP extends Module {
  readonly dense_h_to_4h: Linear;
  readonly dense_4h_to_h: Linear;
  constructor(
    private readonly cfg: BloomConfig,
    o: LayerInit,
  ) {
    super();
    const h = cfg.hidden_size;
    this.dense_h_to_4h = this.child("dense_h_to_4h", new Linear(h, 4 * h, o));
    this.dense_4h_to_h = this.child("dense_4h_to_h", new Linear(4 * h, h, o));
  }
  forward(x: torch.Tensor, residual: torch.Tensor): torch.Tensor {
    // BLOOM's GELU is the tanh form x·½(1 + tanh(0.79788456·x·(1 + 0.044715·x²))); its constant
    // rounds to the same float32 as √(2/π), so libtorch's fused tanh-GELU computes the same function.
    let out = this.dense_4h_to_h.forward(this.dense_h_to_4h.forward(x).gelu("tanh"));
    if (this.training && this.cfg.hidden_dropout > 0) out = torch.dropout(out, this.cfg.hidden_dropout, true);
    return out.add(residual);
  }
}

class BloomBlock extends Module {
  readonly input_layernorm: LayerNorm;
  readonly self_attention: BloomAttention;
  readonly post_attention_layernorm: LayerNorm;
  readonly mlp: BloomMLP;
  constructor(
    private readonly cfg: BloomConfig,
    o: LayerInit,
  ) {
    super();
    const h = cfg.hidden_size;
    this.input_layernorm = this.child("input_layernorm", new LayerNorm(h, cfg.layer_norm_epsilon, o));
    this.self_attention = this.child("self_attention", new BloomAttention(cfg, o));
    this.post_attention_layernorm = this.child("post_attention_layernorm", new LayerNorm(h, cfg.layer_norm_epsilon, o));
    this.mlp = this.child("mlp", new BloomMLP(cfg, o));
  }
  forward(
    x: torch.Tensor,
    bias: BloomBias,
    mask: torch.Tensor | undefined,
    cache: { cache: BloomCache; layer: number } | undefined,
    wantProbs: boolean,
  ): { out: torch.Tensor; probs?: torch.Tensor } {
    // With apply_residual_connection_post_layernorm the residual is the LayerNorm output instead.
    const postLn = this.cfg.apply_residual_connection_post_layernorm;
    const ln1 = this.input_layernorm.forward(x);
    const attn = this.self_attention.forward(ln1, postLn ? ln1 : x, bias, mask, cache, wantProbs);
    const ln2 = this.post_attention_layernorm.forward(attn.out);
    return { out: this.mlp.forward(ln2, postLn ? ln2 : attn.out), probs: attn.probs };
  }
}

// ---------------------------------------------------------------------------------------------
// 4. The model

class BloomModel extends Module {
  readonly word_embeddings: Embedding;
  readonly word_embeddings_layernorm: LayerNorm;
  readonly h: ModuleList<BloomBlock>;
  readonly ln_f: LayerNorm;
  constructor(cfg: BloomConfig, o: LayerInit) {
    super();
    const h = cfg.hidden_size;
    this.word_embeddings = this.child("word_embeddings", new Embedding(cfg.vocab_size, h, o));
    this.word_embeddings_layernorm = this.child(
      "word_embeddings_layernorm",
      new LayerNorm(h, cfg.layer_norm_epsilon, o),
    );
    this.h = this.child("h", new ModuleList(Array.from({ length: cfg.n_layer }, () => new BloomBlock(cfg, o))));
    this.ln_f = this.child("ln_f", new LayerNorm(h, cfg.layer_norm_epsilon, o));
  }
}

export class BloomForCausalLM extends CausalLM<BloomBias, BloomCache> {
  readonly config: ModelConfig;
  readonly transformer: BloomModel;
  /** Untied models only; tied ones project with transformer.word_embeddings.weight. */
  readonly lm_head: Linear | undefined;
  /** ALiBi slopes [n_head] (float32), on the model's device. */
  readonly alibiSlopes: torch.Tensor;

  constructor(
    readonly bloomConfig: BloomConfig,
    options: ModelOptions = {},
  ) {
    super(options);
    const c = bloomConfig;
    this.config = {
      modelType: "bloom",
      vocabSize: c.vocab_size,
      hiddenSize: c.hidden_size,
      numLayers: c.n_layer,
      numHeads: c.n_head,
      bosTokenId: c.bos_token_id,
      eosTokenId: c.eos_token_id,
      padTokenId: c.pad_token_id,
      maxPositions: null,
      tieWordEmbeddings: c.tie_word_embeddings,
    };
    const o: LayerInit = {
      dtype: this.dtype,
      device: this.device,
      init: options.init ?? "normal",
      std: c.initializer_range,
    };
    this.transformer = this.child("transformer", new BloomModel(c, o));
    this.lm_head = c.tie_word_embeddings
      ? undefined
      : this.child("lm_head", new Linear(c.hidden_size, c.vocab_size, { ...o, bias: false }));
    this.alibiSlopes = torch.scope(() => alibiSlopes(c.n_head).toDevice(this.device)).keep();
  }

  get blocks(): readonly BloomBlock[] {
    return this.transformer.h.items;
  }

  get lmHeadWeight(): torch.Tensor {
    return this.lm_head?.weight ?? this.transformer.word_embeddings.weight;
  }

  configJson(): Record<string, unknown> {
    return bloomConfigToJson(this.bloomConfig);
  }

  get defaultLoraTargets(): string[] {
    return ["query_key_value"];
  }

  newCache(o: NewCacheOptions = {}): BloomCache {
    return new BloomCache(this.bloomConfig.n_head, o.capacity ?? 64);
  }

  /** llama.cpp's "bloom" (convert_hf_to_gguf.py's BloomModel): QKV regrouped, ALiBi implied. */
  override ggufLayout(): GgufLayout {
    return bloomGgufLayout(this.bloomConfig, this.lm_head !== undefined);
  }

  protected embed(inputIds: torch.Tensor): torch.Tensor {
    const t = this.transformer;
    return t.word_embeddings_layernorm.forward(t.word_embeddings.forward(inputIds));
  }

  protected prepare(ctx: ForwardContext, dtype: torch.DType): BloomBias {
    const nh = this.bloomConfig.n_head;
    const alibi = alibiBias(this.alibiSlopes, ctx.positionIds, nh, dtype);
    if (!useSdpa(this.device)) return { alibi };
    // The fused op's bias, in the dtype its products run in (autocast's, else the model's).
    const S = ctx.positionIds.size(1);
    const compute = torch.autocastDtype(this.device) ?? dtype;
    const perKey = alibi.view([ctx.b, nh, 1, S]).to(compute);
    return { alibi, sdpa: ctx.hidden ? perKey.maskedFill(ctx.hidden, hiddenBias(compute)) : perKey };
  }

  protected runBlock(
    i: number,
    x: torch.Tensor,
    ctx: ForwardContext,
    bias: BloomBias,
    cache: BloomCache | undefined,
    wantProbs: boolean,
  ): BlockOutput {
    return this.blocks[i]!.forward(x, bias, ctx.hidden, cache && { cache, layer: i }, wantProbs);
  }

  protected finalNorm(x: torch.Tensor): torch.Tensor {
    return this.transformer.ln_f.forward(x);
  }

  override dispose(): void {
    super.dispose();
    this.alibiSlopes.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// 5. Registration

registerArchitecture("bloom", {
  create: (json, file, o) => new BloomForCausalLM(bloomConfigFromJson(json, file), o),
  // Some BLOOM checkpoints store BloomModel keys without the "transformer." prefix.
  aliases: (name) => (name.startsWith("transformer.") ? [name.slice("transformer.".length)] : []),
  // A tied checkpoint may still carry lm_head.weight (a copy of the embeddings): nothing to load it into.
  ignorable: (name, m) => name === "lm_head.weight" && m.config.tieWordEmbeddings,
});
