// BLOOM (BigScience): ALiBi attention, per-head fused QKV, LayerNorm after the embedding, tied LM head.
// Reference: huggingface/transformers c965d302 src/transformers/models/bloom/modeling_bloom.py
// (the code ../shared/golden was produced with). Module fields carry HF's state-dict names, so a
// Hugging Face BLOOM folder loads unchanged and what we save loads in Python.
//
// Shapes: b batch, s new tokens, S = past + s keys, h hidden, n_h heads, d head dim (h = n_h·d), v vocab.
import * as torch from "../torch/index.js";
import { Embedding, LayerNorm, Linear, Module, ModuleList, type InitMode } from "../nn/index.js";
import { ConfigError, readBool, readInt, readNumber, readOptionalInt } from "./config-json.js";

// ---------------------------------------------------------------------------------------------
// 1. Config: HF config.json keys, with HF's aliases and defaults (configuration_bloom.py)

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

// ---------------------------------------------------------------------------------------------
// 2. Helpers: ALiBi and the attention mask

/**
 * ALiBi slopes as HF's build_alibi_tensor computes them: the base is rounded to float32 first and
 * raised with torch's own float32 pow, so 16/32-head slopes match HF to the last bit.
 */
export function alibiSlopes(nHeads: number): torch.Tensor {
  return torch.scope(() => {
    const p = 2 ** Math.floor(Math.log2(nHeads));
    const powered = (base: number, from: number, count: number, step: number) =>
      torch.tensor([base]).reshape([]).pow(torch.arange(from, from + count * step, step, { dtype: "int32" }));
    const slopes = powered(2 ** -(2 ** -(Math.log2(p) - 3)), 1, p, 1);
    if (p === nHeads) return slopes;
    const extra = powered(2 ** -(2 ** -(Math.log2(2 * p) - 3)), 1, Math.min(p, nHeads - p), 2);
    return torch.cat([slopes, extra]);
  });
}

/**
 * The ALiBi bias [b·n_h, 1, S]: slope[h]·pos[key] with pos = (cumsum(mask) − 1)·mask, so that the
 * first real token of a left-padded row has position 0 (HF). Depends on the key only; softmax makes
 * it equivalent to slope·(key − query).
 */
function alibiBias(slopes: torch.Tensor, mask: torch.Tensor, nHeads: number, dtype: torch.DType, positionIds?: torch.Tensor): torch.Tensor {
  const [b, S] = mask.shape as [number, number];
  const positions = (positionIds ?? mask.cumsum(-1).sub(1).mul(mask)).unsqueeze(1); // [b, 1, S] int64
  const bias = slopes.unsqueeze(-1).mul(positions); // [b, n_h, S] float32
  const out = bias.reshape([b * nHeads, 1, S]);
  return dtype === "float32" ? out : out.to(dtype);
}

/**
 * HF's combined mask [b, 1, s, S], true = masked: key j is hidden from query i when j > i + past
 * (causal) or when key j is padding. A single new token (s = 1) needs only the padding part.
 */
function attentionMaskFor(mask: torch.Tensor | undefined, s: number, past: number, segmentIds?: torch.Tensor): torch.Tensor | undefined {
  const S = past + s;
  const padding = mask?.eq(0).unsqueeze(1).unsqueeze(1); // [b, 1, 1, S]
  if (s === 1 && !segmentIds) return padding;
  const causal = torch.ones([s, S], { dtype: "bool", device: mask?.device ?? "cpu" }).triu(past + 1); // [s, S]
  let masked = padding ? padding.logicalOr(causal) : causal.unsqueeze(0).unsqueeze(0);
  if (segmentIds) {
    // Packed samples: a query sees only keys of its own sample (block-diagonal within the causal mask).
    const query = segmentIds.narrow(1, past, s).unsqueeze(2); // [b, s, 1]
    masked = masked.logicalOr(query.ne(segmentIds.unsqueeze(1)).unsqueeze(1)); // [b, 1, s, S]
  }
  return masked;
}

// ---------------------------------------------------------------------------------------------
// 3. KV cache: preallocated per layer, grown by doubling, views handed to attention

/**
 * Keys are stored as [b·n_h, d, capacity] (HF's transposed key layout, ready for baddbmm) and values as
 * [b·n_h, capacity, d]; attention reads the first `length + s` positions through narrow() views,
 * so a decoding step copies only its new key/value instead of re-concatenating the whole past.
 */
export class BloomCache {
  private keys: torch.Tensor[] = [];
  private values: torch.Tensor[] = [];
  /** Positions already stored (the same for every layer between forwards). */
  length = 0;

  constructor(private readonly initialCapacity = 64) {}

  /** Appends one layer's new keys [b·n_h, d, s] and values [b·n_h, s, d]; returns the full past+new views. */
  append(layer: number, k: torch.Tensor, v: torch.Tensor): { keys: torch.Tensor; values: torch.Tensor } {
    const s = k.size(2);
    const need = this.length + s;
    if (layer >= this.keys.length || this.keys[layer]!.size(2) < need) this.grow(layer, k, need);
    this.keys[layer]!.narrow(2, this.length, s).copy_(k);
    this.values[layer]!.narrow(1, this.length, s).copy_(v);
    return { keys: this.keys[layer]!.narrow(2, 0, need), values: this.values[layer]!.narrow(1, 0, need) };
  }

  /** Forgets positions from `length` on (a shared prompt prefix is reused this way). */
  truncate(length: number): void {
    this.length = Math.min(this.length, Math.max(0, length));
  }

  /** Called once per forward, after every layer appended its s new positions. */
  advance(s: number): void {
    this.length += s;
  }

  /** Reallocates one layer's buffers with at least `need` positions (doubling), keeping the stored past. */
  private grow(layer: number, k: torch.Tensor, need: number): void {
    const [bh, d] = k.shape as [number, number];
    const old = layer < this.keys.length ? { k: this.keys[layer]!, v: this.values[layer]! } : undefined;
    const capacity = Math.max(need, 2 * (old?.k.size(2) ?? 0), this.initialCapacity);
    const o = { dtype: k.dtype, device: k.device };
    const key = torch.empty([bh, d, capacity], o).keep();
    const value = torch.empty([bh, capacity, d], o).keep();
    if (old && this.length > 0) {
      torch.scope(() => {
        key.narrow(2, 0, this.length).copy_(old.k.narrow(2, 0, this.length));
        value.narrow(1, 0, this.length).copy_(old.v.narrow(1, 0, this.length));
      });
    }
    old?.k.dispose();
    old?.v.dispose();
    this.keys[layer] = key;
    this.values[layer] = value;
  }

  /**
   * Keeps only batch rows `rows` (in that order) and drops the first `trimLeft` positions (padding
   * that every kept row has): continuous batching removes finished sequences this way.
   */
  selectRows(rows: number[], nHead: number, trimLeft = 0): void {
    torch.scope(() => {
      const device = this.keys[0]?.device ?? "cpu";
      // Row r of the batch owns entries [r·n_h, (r+1)·n_h) of the first dimension.
      const index = torch.tensor(rows.flatMap((r) => Array.from({ length: nHead }, (_, h) => r * nHead + h)), { dtype: "int64" });
      const idx = device === "cpu" ? index : index.toDevice(device);
      const n = this.length - trimLeft;
      for (let l = 0; l < this.keys.length; l++) {
        const k = this.keys[l]!.narrow(2, trimLeft, n).indexSelect(0, idx).contiguous().keep();
        const v = this.values[l]!.narrow(1, trimLeft, n).indexSelect(0, idx).contiguous().keep();
        this.keys[l]!.dispose();
        this.values[l]!.dispose();
        this.keys[l] = k;
        this.values[l] = v;
      }
    });
    this.length -= trimLeft;
  }

  /**
   * Appends the rows of `other` below this cache's rows, right-aligned: the shorter side is padded on
   * the left (the caller pads its attention mask the same way). `other` is left unchanged.
   */
  concatRows(other: BloomCache): { padSelf: number; padOther: number } {
    const length = Math.max(this.length, other.length);
    const padSelf = length - this.length;
    const padOther = length - other.length;
    torch.scope(() => {
      for (let l = 0; l < other.keys.length; l++) {
        const ok = other.keys[l]!;
        const ov = other.values[l]!;
        const mine = this.keys[l];
        const [bhO, d] = ok.shape as [number, number];
        const bhS = mine ? mine.size(0) : 0;
        const o = { dtype: ok.dtype, device: ok.device };
        const cap = length + 16;
        const k = torch.zeros([bhS + bhO, d, cap], o).keep();
        const v = torch.zeros([bhS + bhO, cap, d], o).keep();
        if (mine && this.length) {
          k.narrow(0, 0, bhS).narrow(2, padSelf, this.length).copy_(mine.narrow(2, 0, this.length));
          v.narrow(0, 0, bhS).narrow(1, padSelf, this.length).copy_(this.values[l]!.narrow(1, 0, this.length));
        }
        k.narrow(0, bhS, bhO).narrow(2, padOther, other.length).copy_(ok.narrow(2, 0, other.length));
        v.narrow(0, bhS, bhO).narrow(1, padOther, other.length).copy_(ov.narrow(1, 0, other.length));
        mine?.dispose();
        this.values[l]?.dispose();
        this.keys[l] = k;
        this.values[l] = v;
      }
    });
    this.length = length;
    return { padSelf, padOther };
  }

  dispose(): void {
    for (const t of [...this.keys, ...this.values]) t.dispose();
    this.keys = [];
    this.values = [];
    this.length = 0;
  }
}

// ---------------------------------------------------------------------------------------------
// 4. Layers (leaf → block), as BloomAttention / BloomMLP / BloomBlock

interface LayerInit {
  dtype: torch.DType;
  device: string;
  init: InitMode;
  std: number;
}

class BloomAttention extends Module {
  readonly query_key_value: Linear;
  readonly dense: Linear;
  private readonly nHead: number;
  private readonly headDim: number;

  constructor(private readonly cfg: BloomConfig, o: LayerInit) {
    super();
    const h = cfg.hidden_size;
    this.nHead = cfg.n_head;
    this.headDim = h / cfg.n_head;
    this.query_key_value = this.child("query_key_value", new Linear(h, 3 * h, o));
    this.dense = this.child("dense", new Linear(h, h, o));
  }

  forward(
    x: torch.Tensor, residual: torch.Tensor, alibi: torch.Tensor, mask: torch.Tensor | undefined,
    cache: { cache: BloomCache; layer: number } | undefined, wantProbs: boolean,
  ): { out: torch.Tensor; probs?: torch.Tensor } {
    const [b, s, h] = x.shape as [number, number, number];
    const nh = this.nHead;
    const d = this.headDim;
    // The fused projection is per-head interleaved: [b, s, n_h, 3, d], not [all q | all k | all v].
    const [fq, fk, fv] = this.query_key_value.forward(x).view([b, s, nh, 3, d]).unbind(3) as [torch.Tensor, torch.Tensor, torch.Tensor];
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

    const context = probs.view([b * nh, s, S]).bmm(v).view([b, nh, s, d]).permute([0, 2, 1, 3]).reshape([b, s, h]);
    let out = this.dense.forward(context);
    if (this.training && this.cfg.hidden_dropout > 0) out = torch.dropout(out, this.cfg.hidden_dropout, true);
    return { out: out.add(residual), probs: wantProbs ? probs : undefined };
  }
}

class BloomMLP extends Module {
  readonly dense_h_to_4h: Linear;
  readonly dense_4h_to_h: Linear;
  constructor(private readonly cfg: BloomConfig, o: LayerInit) {
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
  constructor(private readonly cfg: BloomConfig, o: LayerInit) {
    super();
    const h = cfg.hidden_size;
    this.input_layernorm = this.child("input_layernorm", new LayerNorm(h, cfg.layer_norm_epsilon, o));
    this.self_attention = this.child("self_attention", new BloomAttention(cfg, o));
    this.post_attention_layernorm = this.child("post_attention_layernorm", new LayerNorm(h, cfg.layer_norm_epsilon, o));
    this.mlp = this.child("mlp", new BloomMLP(cfg, o));
  }
  forward(
    x: torch.Tensor, alibi: torch.Tensor, mask: torch.Tensor | undefined,
    cache: { cache: BloomCache; layer: number } | undefined, wantProbs: boolean,
  ): { out: torch.Tensor; probs?: torch.Tensor } {
    // With apply_residual_connection_post_layernorm the residual is the LayerNorm output instead.
    const postLn = this.cfg.apply_residual_connection_post_layernorm;
    const ln1 = this.input_layernorm.forward(x);
    const attn = this.self_attention.forward(ln1, postLn ? ln1 : x, alibi, mask, cache, wantProbs);
    const ln2 = this.post_attention_layernorm.forward(attn.out);
    return { out: this.mlp.forward(ln2, postLn ? ln2 : attn.out), probs: attn.probs };
  }
}

// ---------------------------------------------------------------------------------------------
// 5. The model

export interface CausalLMInput {
  /** [b, s] int64 token ids. */
  inputIds: torch.Tensor;
  /** [b, past + s], 1 = real token, 0 = padding; omitted = no padding. Covers the cached past too. */
  attentionMask?: torch.Tensor;
  /** [b, s] int64 next-token targets as HF: labels[t] is predicted at t−1; −100 = not trained. */
  labels?: torch.Tensor;
  /**
   * Packed rows: [b, past + s] int64, 1, 2, ... per packed sample (0 on padding). Attention stays
   * inside a sample; pass positionIds too so that ALiBi positions restart at each sample.
   */
  segmentIds?: torch.Tensor;
  /** [b, past + s] int64 ALiBi positions; default: from the attention mask (cumsum − 1, as HF). */
  positionIds?: torch.Tensor;
  /** Incremental decoding: keys/values of earlier positions; this call appends its own. */
  cache?: BloomCache;
  /** "last": compute logits for the last position only (generation); default "all". */
  logits?: "all" | "last";
  outputHiddenStates?: boolean;
  outputAttentions?: boolean;
}

export interface CausalLMOutput {
  /** [b, s, v] (or [b, 1, v] with logits: "last"), in the model's compute dtype. */
  logits: torch.Tensor;
  /** Mean cross entropy over the trained (≠ −100) shifted labels, float32 scalar. */
  loss?: torch.Tensor;
  /** HF's output_hidden_states: the embedding LayerNorm output, each block's output, ln_f(last). */
  hiddenStates?: torch.Tensor[];
  /** Per layer softmax probabilities [b, n_h, s, S]. */
  attentions?: torch.Tensor[];
}

export interface BloomInitOptions {
  dtype?: torch.DType;
  device?: string;
  /** "normal": HF's random init; "empty": uninitialised, for loading a checkpoint right after. */
  init?: InitMode;
}

class BloomModel extends Module {
  readonly word_embeddings: Embedding;
  readonly word_embeddings_layernorm: LayerNorm;
  readonly h: ModuleList<BloomBlock>;
  readonly ln_f: LayerNorm;
  constructor(cfg: BloomConfig, o: LayerInit) {
    super();
    const h = cfg.hidden_size;
    this.word_embeddings = this.child("word_embeddings", new Embedding(cfg.vocab_size, h, o));
    this.word_embeddings_layernorm = this.child("word_embeddings_layernorm", new LayerNorm(h, cfg.layer_norm_epsilon, o));
    this.h = this.child("h", new ModuleList(Array.from({ length: cfg.n_layer }, () => new BloomBlock(cfg, o))));
    this.ln_f = this.child("ln_f", new LayerNorm(h, cfg.layer_norm_epsilon, o));
  }
}

export class BloomForCausalLM extends Module {
  readonly transformer: BloomModel;
  /** Untied models only; tied ones project with transformer.word_embeddings.weight. */
  readonly lm_head: Linear | undefined;
  readonly dtype: torch.DType;
  readonly device: string;
  private readonly slopes: torch.Tensor;
  /** ALiBi slopes [n_head] (float32), on the model's device. */
  get alibiSlopes(): torch.Tensor {
    return this.slopes;
  }

  constructor(readonly config: BloomConfig, options: BloomInitOptions = {}) {
    super();
    const o: LayerInit = {
      dtype: options.dtype ?? "float32",
      device: options.device ?? "cpu",
      init: options.init ?? "normal",
      std: config.initializer_range,
    };
    this.dtype = o.dtype;
    this.device = o.device;
    this.transformer = this.child("transformer", new BloomModel(config, o));
    this.lm_head = config.tie_word_embeddings
      ? undefined
      : this.child("lm_head", new Linear(config.hidden_size, config.vocab_size, { ...o, bias: false }));
    const slopes = alibiSlopes(config.n_head);
    this.slopes = (o.device === "cpu" ? slopes : slopes.toDevice(o.device)).keep();
    if (slopes !== this.slopes) slopes.dispose();
  }

  get lmHeadWeight(): torch.Tensor {
    return this.lm_head?.weight ?? this.transformer.word_embeddings.weight;
  }

  forward(input: CausalLMInput): CausalLMOutput {
    const { inputIds, attentionMask, labels, cache } = input;
    const [b, s] = inputIds.shape as [number, number];
    const past = cache?.length ?? 0;
    const S = past + s;
    if (attentionMask && (attentionMask.size(0) !== b || attentionMask.size(1) !== S)) {
      throw new Error(`attentionMask must be [${b}, ${S}] (batch, past + new tokens), got [${attentionMask.shape}]`);
    }

    const t = this.transformer;
    let x = torch.scope(() => t.word_embeddings_layernorm.forward(t.word_embeddings.forward(inputIds)));
    const mask = attentionMask ?? torch.ones([b, S], { dtype: "int64", device: this.device });
    const alibi = alibiBias(this.slopes, mask, this.config.n_head, x.dtype, input.positionIds);
    const causalMask = attentionMaskFor(attentionMask, s, past, input.segmentIds);

    const hiddenStates: torch.Tensor[] = [];
    const attentions: torch.Tensor[] = [];
    t.h.items.forEach((block, layer) => {
      if (input.outputHiddenStates) hiddenStates.push(x);
      // One scope per block: its intermediates lose their JS owners as soon as it returns, so only
      // what autograd saved for backward stays alive (and is freed node by node during backward).
      const r = torch.scope(() => block.forward(x, alibi, causalMask, cache && { cache, layer }, input.outputAttentions ?? false));
      x = r.out;
      if (r.probs) attentions.push(r.probs);
    });
    x = t.ln_f.forward(x);
    if (input.outputHiddenStates) hiddenStates.push(x);
    cache?.advance(s);

    const last = input.logits === "last" ? x.narrow(1, s - 1, 1) : x;
    const logits = torch.linear(last, this.lmHeadWeight);
    const out: CausalLMOutput = { logits };
    if (labels) out.loss = causalLmLoss(logits, labels);
    if (input.outputHiddenStates) out.hiddenStates = hiddenStates;
    if (input.outputAttentions) out.attentions = attentions;
    return out;
  }
}

export interface TrainStepOptions {
  /**
   * Keep only each block's input during forward and recompute the block in backward (HF's
   * gradient_checkpointing): activation memory of one block instead of all, for one extra forward.
   */
  gradientCheckpointing?: boolean;
  /** Multiplies the loss before backward (fp16 loss scale × accumulation weight); default 1. */
  gradScale?: number;
}

export interface TrainStepResult {
  /** The mean loss over trained tokens (unscaled). */
  loss: number;
}

/**
 * Forward and backward of one micro-batch (labels required); parameter gradients accumulate.
 * With checkpointing, blocks run forward without a graph, then backward re-runs each block from its
 * saved input, last to first, and back-propagates the gradient of its output: the same operations in
 * the same order, so the same loss and gradients as without.
 */
export function trainStep(model: BloomForCausalLM, input: CausalLMInput, o: TrainStepOptions = {}): TrainStepResult {
  if (!input.labels) throw new Error("trainStep needs labels");
  const scale = o.gradScale ?? 1;
  if (!o.gradientCheckpointing) {
    return torch.scope(() => {
      const { loss } = model.forward(input);
      const value = loss!.item();
      torch.backward([scale === 1 ? loss! : loss!.mul(scale)]);
      return { loss: value };
    });
  }
  return torch.scope(() => {
    const t = model.transformer;
    const cfg = model.config;
    const { inputIds, attentionMask } = input;
    const [b, s] = inputIds.shape as [number, number];
    const mask = attentionMask ?? torch.ones([b, s], { dtype: "int64", device: model.device });
    // Dropout must draw the same numbers when a block is recomputed: keep the RNG state per block.
    const dropout = model.training && (cfg.hidden_dropout > 0 || cfg.attention_dropout > 0);
    const embed = () => t.word_embeddings_layernorm.forward(t.word_embeddings.forward(inputIds));
    const inputs: torch.Tensor[] = [];
    const rngStates: torch.Tensor[] = [];
    let x = torch.noGrad(embed);
    const alibi = alibiBias(model.alibiSlopes, mask, cfg.n_head, x.dtype, input.positionIds);
    const causalMask = attentionMaskFor(attentionMask, s, 0, input.segmentIds);
    torch.noGrad(() => {
      for (const block of t.h.items) {
        inputs.push(x);
        if (dropout) rngStates.push(torch.cpuRngState());
        x = torch.scope(() => block.forward(x, alibi, causalMask, undefined, false).out);
      }
    });
    const last = x.detach();
    last.requiresGrad = true;
    const value = torch.scope(() => {
      const logits = torch.linear(t.ln_f.forward(last), model.lmHeadWeight);
      const loss = causalLmLoss(logits, input.labels!);
      torch.backward([scale === 1 ? loss : loss.mul(scale)]);
      return loss.item();
    });
    let grad = last.grad!;
    for (let i = t.h.items.length - 1; i >= 0; i--) {
      grad = torch.scope(() => {
        const xi = inputs[i]!.detach();
        xi.requiresGrad = true;
        if (dropout) torch.setCpuRngState(rngStates[i]!);
        const out = t.h.items[i]!.forward(xi, alibi, causalMask, undefined, false).out;
        torch.backward([out], [grad]);
        return xi.grad!;
      });
    }
    torch.scope(() => torch.backward([embed()], [grad]));
    return { loss: value };
  });
}

/**
 * HF's causal-LM loss: logits at t predict labels at t+1, mean over labels ≠ −100. The labels are
 * shifted left (and −100 appended) instead of slicing the logits, which avoids copying [b, s, v].
 * Computed in float32 whatever the compute dtype.
 */
export function causalLmLoss(logits: torch.Tensor, labels: torch.Tensor): torch.Tensor {
  const [b, s, v] = logits.shape as [number, number, number];
  const shifted = torch.cat([labels.narrow(1, 1, s - 1), torch.full([b, 1], -100, { dtype: "int64", device: labels.device })], 1);
  const flat = logits.dtype === "float32" ? logits.view([b * s, v]) : logits.reshape([b * s, v]).to("float32");
  return torch.crossEntropy(flat, shifted.view([b * s]), { ignoreIndex: -100 });
}
