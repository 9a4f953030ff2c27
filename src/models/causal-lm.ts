// The causal-LM interface every command types against. An architecture file (bloom.ts, ...) subclasses
// CausalLM with its modules and four stages: embed → blocks → final norm → LM head. Everything around
// the stages (positions, masks, the block loop with its scopes, hidden states, the loss, gradient
// checkpointing) is written once here, so that no code above src/models knows an architecture.
//
// Shapes: b batch, s new tokens, S = past + s (keys, the cache included), h hidden, v vocab.
import * as torch from "../torch/index.js";
import { CheckpointedBlocks, type BlockHooks } from "../nn/checkpoint.js";
import { Linear, Module, Norm } from "../nn/index.js";
import type { GgufLayout } from "./gguf-layout.js";
import type { KVCache, NewCacheOptions } from "./kv-cache.js";

export type { KVCache, NewCacheOptions, RowMove } from "./kv-cache.js";
import { causalLmLoss, chunkedLmLoss, hiddenKeys, positionsFromMask, softcapped } from "../nn/lm.js";

export { causalLmLoss, chunkedLmLoss, hiddenKeys, positionsFromMask, softcapped } from "../nn/lm.js";

// ---------------------------------------------------------------------------------------------
// 1. Config: the normalised view of an architecture's config.json

export interface ModelConfig {
  /** HF's model_type ("bloom", ...). */
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  bosTokenId: number | null;
  eosTokenId: number | null;
  padTokenId: number | null;
  /** The longest sequence the position scheme was trained for; null when it has none (ALiBi). */
  maxPositions: number | null;
  tieWordEmbeddings: boolean;
}

// ---------------------------------------------------------------------------------------------
// 2. Forward input and output

export interface CausalLMInput {
  /** [b, s] int64 token ids. */
  inputIds: torch.Tensor;
  /** [b, past + s], 1 = real token, 0 = padding; omitted = no padding. Covers the cached past too. */
  attentionMask?: torch.Tensor;
  /** [b, s] int64 next-token targets as HF: labels[t] is predicted at t−1; −100 = not trained. */
  labels?: torch.Tensor;
  /**
   * Packed rows: [b, past + s] int64, 1, 2, ... per packed sample (0 on padding). Attention stays
   * inside a sample; pass positionIds too so that positions restart at each sample.
   */
  segmentIds?: torch.Tensor;
  /**
   * [b, past + s] int64 position of every token, the cached past included. Omitted: derived from the
   * attention mask (cumsum − 1 over real tokens, 0 on padding, as HF), so left padding is invisible.
   */
  positionIds?: torch.Tensor;
  /** Incremental decoding: keys/values of earlier positions (from model.newCache()); this call appends. */
  cache?: KVCache;
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
  /** HF's output_hidden_states: the embedding output, each block's output, the final norm's. */
  hiddenStates?: torch.Tensor[];
  /** Per layer attention probabilities [b, n_h, s, S] (architectures that compute them). */
  attentions?: torch.Tensor[];
}

/** What every block of one forward shares, built once by the base class. */
export interface ForwardContext {
  b: number;
  s: number;
  /** Cached positions before this forward. */
  past: number;
  /** [b, S] int64, 1 = real key (all ones when the input had no mask). */
  keyMask: torch.Tensor;
  /** [b, S] int64 positions of all keys; the new tokens' are the last s columns. */
  positionIds: torch.Tensor;
  /** [b, 1, s, S] bool, true = hidden (causal, padding, other packed sample); undefined when nothing is. */
  hidden: torch.Tensor | undefined;
  /** `hidden` is the plain causal mask (no past, padding or packing): fused kernels need no mask tensor. */
  causal: boolean;
}

export interface BlockOutput {
  out: torch.Tensor;
  probs?: torch.Tensor;
}

export interface ModelOptions {
  dtype?: torch.DType;
  device?: string;
  /** "normal": HF's random init; "empty": uninitialised, for loading a checkpoint right after. */
  init?: "normal" | "empty";
}

// ---------------------------------------------------------------------------------------------
// 3. The base class

export interface TrainStepOptions {
  /**
   * Keep only each block's input during forward and recompute the block in backward (HF's
   * gradient_checkpointing): activation memory of one block instead of all, for one extra forward.
   */
  gradientCheckpointing?: boolean;
  /** Multiplies the loss before backward (fp16 loss scale × accumulation weight); default 1. */
  gradScale?: number;
  /**
   * The LM head and the loss in chunks of tokens (default true): each chunk's logits live only until
   * its own backward, so [tokens × vocab] logits never exist at once, and chunks with no trained
   * token cost nothing. Equal to the plain loss and gradients within float rounding.
   */
  chunkedLoss?: boolean;
  /** Rows per loss chunk (default: about 64 MiB of float32 logits on the CPU, 1 GiB on a GPU). */
  lossChunkRows?: number;
  /** Called around each block's forward and recompute (ZeRO-3's gather and free); needs gradientCheckpointing. */
  blockHooks?: BlockHooks;
  /**
   * Another objective on the final hidden states (a reward head, DPO): given them as a leaf that
   * requires grad, it runs its own backward (into that leaf's grad and any parameters it uses, scaled
   * by gradScale) and returns its loss; then the trunk's backward runs as for the LM loss. Labels are
   * not required.
   */
  head?: (x: torch.Tensor, gradScale: number) => number;
}

/**
 * `Shared`: what an architecture prepares once per forward for all its blocks (rotary tables, ALiBi
 * bias, masks); `Cache`: its KV cache. A cache passed to forward must be one this model made
 * (newCache), as in HF, where a model's past_key_values come from the same model.
 */
export abstract class CausalLM<Shared = unknown, Cache extends KVCache = KVCache> extends Module {
  abstract readonly config: ModelConfig;
  readonly dtype: torch.DType;
  readonly device: string;

  constructor(o: ModelOptions) {
    super();
    this.dtype = o.dtype ?? "float32";
    this.device = o.device ?? "cpu";
  }

  // ----- what an architecture provides ----------------------------------------------------------
  /** The repeated blocks, in order: the unit of gradient checkpointing, sharding and adapter targets. */
  abstract get blocks(): readonly Module[];
  /** The weight of the output projection [v, h] (the embedding itself when tied). */
  abstract get lmHeadWeight(): torch.Tensor;
  /**
   * Why fp16 is a poor choice for this family, when it is (activations known to overflow its range;
   * the trainer prints it and suggests bf16); null otherwise.
   */
  get fp16Advice(): string | null {
    return null;
  }
  /** Soft-capping of the final logits (Gemma 2's final_logit_softcapping); null for most families. */
  get finalLogitSoftcap(): number | null {
    return null;
  }
  /**
   * Whether a forward over a fixed-shape cache of `capacity` slots (KVCache.beginFixed: unwritten slots
   * hidden by the mask, the cache's length read as capacity − s) computes what the growing cache does.
   * Not where the length itself enters the math: a sliding window shorter than the capacity (applied by
   * index) or dynamic NTK rotary past max_position_embeddings. Families with either say so.
   */
  fixedCacheExact(_capacity: number): boolean {
    return true;
  }
  /** The config.json to save (the original keys kept, HF's canonical names written). */
  abstract configJson(): Record<string, unknown>;
  /** A KV cache for this model's layout. */
  abstract newCache(o?: NewCacheOptions): Cache;
  /** PEFT's default LoRA targets for this architecture (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING). */
  abstract get defaultLoraTargets(): string[];
  /** Token ids [b, s] → hidden states [b, s, h] (any embedding norm included). */
  protected abstract embed(inputIds: torch.Tensor): torch.Tensor;
  /** Per-forward tensors the blocks share beyond the context (ALiBi bias, rotary tables, ...). */
  protected abstract prepare(ctx: ForwardContext, dtype: torch.DType): Shared;
  /** Block `i` on x [b, s, h]; appends to `cache` when given. */
  protected abstract runBlock(
    i: number,
    x: torch.Tensor,
    ctx: ForwardContext,
    shared: Shared,
    cache: Cache | undefined,
    wantProbs: boolean,
  ): BlockOutput;
  /** The final norm before the LM head. */
  protected abstract finalNorm(x: torch.Tensor): torch.Tensor;

  /** This architecture in llama.cpp's terms (GGUF export); architectures llama.cpp lacks say so. */
  ggufLayout(): GgufLayout {
    throw new Error(
      `llama.cpp has no architecture for model_type ${this.config.modelType}; GGUF export is not possible`,
    );
  }

  // ----- generic ------------------------------------------------------------------------------------
  /** Advances the cache after every block appended its s new positions (caches that need it). */
  protected afterForward(cache: KVCache | undefined, s: number): void {
    cache?.advance(s);
  }

  /** The forward context: key mask, positions (derived when absent) and the hidden-key mask, on the model's device. */
  protected context(input: CausalLMInput): ForwardContext {
    const { inputIds, attentionMask, cache } = input;
    const [b, s] = inputIds.shape as [number, number];
    const past = cache?.length ?? 0;
    const S = past + s;
    for (const [name, t] of [
      ["attentionMask", attentionMask],
      ["positionIds", input.positionIds],
      ["segmentIds", input.segmentIds],
    ] as const) {
      if (t && (t.ndim !== 2 || t.size(0) !== b || t.size(1) !== S)) {
        throw new Error(`${name} must be [${b}, ${S}] (batch, past + new tokens), got [${t.shape}]`);
      }
    }
    const keyMask = attentionMask ?? torch.ones([b, S], { dtype: "int64", device: this.device });
    return {
      b,
      s,
      past,
      keyMask,
      positionIds: input.positionIds ?? positionsFromMask(keyMask),
      hidden: hiddenKeys(attentionMask, s, past, this.device, input.segmentIds),
      causal: !attentionMask && !input.segmentIds && past === 0,
    };
  }

  forward(input: CausalLMInput): CausalLMOutput {
    const { x, ctx, hiddenStates, attentions } = this.trunk(input);
    const last = input.logits === "last" ? x.narrow(1, ctx.s - 1, 1) : x;
    const out: CausalLMOutput = { logits: softcapped(torch.linear(last, this.lmHeadWeight), this.finalLogitSoftcap) };
    if (input.labels) out.loss = causalLmLoss(out.logits, input.labels);
    if (input.outputHiddenStates) out.hiddenStates = hiddenStates;
    if (input.outputAttentions) out.attentions = attentions;
    return out;
  }

  #score: Linear | undefined;

  /**
   * A reward model's scalar head, made on first use: HF's *ForSequenceClassification `score` (num_labels
   * 1, no bias, N(0, 0.02) as HF initialises it), a parameter of this model like any other.
   */
  scoreHead(): Linear {
    const make = () => new Linear(this.config.hiddenSize, 1, { bias: false, dtype: this.dtype, device: this.device });
    this.#score ??= this.child("score", make());
    return this.#score;
  }

  get hasScoreHead(): boolean {
    return this.#score !== undefined;
  }

  /**
   * Rewards [b] of sequences: the score head on the final hidden state of each row's last token that is
   * not padding (as HF's sequence classification picks it from input_ids != pad_token_id).
   */
  rewards(x: torch.Tensor, lastIndex: number[]): torch.Tensor {
    const index = torch.tensor(
      lastIndex.map((t, r) => r * x.size(1) + t),
      { dtype: "int64", device: x.device },
    );
    const last = x.reshape([x.size(0) * x.size(1), x.size(2)]).indexSelect(0, index);
    return this.scoreHead()
      .forward(last)
      .view([x.size(0)]);
  }

  /** The final norm's output [b, s, h] (the LM head's input, a reward head's too). */
  finalHidden(input: CausalLMInput): torch.Tensor {
    return this.trunk(input).x;
  }

  /** The LM head's logits of final hidden states (with the family's soft-capping). */
  headLogits(x: torch.Tensor): torch.Tensor {
    return softcapped(torch.linear(x, this.lmHeadWeight), this.finalLogitSoftcap);
  }

  /** Everything before the LM head: the final norm's output [b, s, h], with the graph when grad is on. */
  private trunk(input: CausalLMInput): {
    x: torch.Tensor;
    ctx: ForwardContext;
    hiddenStates: torch.Tensor[];
    attentions: torch.Tensor[];
  } {
    const ctx = this.context(input);
    // The caller's cache came from this model's newCache (the interface's contract).
    const cache = input.cache as Cache | undefined;
    let x = torch.scope(() => this.embed(input.inputIds));
    const shared = this.prepare(ctx, x.dtype);
    const hiddenStates: torch.Tensor[] = [];
    const attentions: torch.Tensor[] = [];
    const wantProbs = input.outputAttentions ?? false;
    for (let i = 0; i < this.blocks.length; i++) {
      if (input.outputHiddenStates) hiddenStates.push(x);
      // One scope per block: its intermediates lose their JS owners as soon as it returns, so only
      // what autograd saved for backward stays alive (and is freed node by node during backward).
      const r = torch.scope(() => this.runBlock(i, x, ctx, shared, cache, wantProbs));
      x = r.out;
      if (r.probs) attentions.push(r.probs);
    }
    x = this.finalNorm(x);
    if (input.outputHiddenStates) hiddenStates.push(x);
    this.afterForward(cache, ctx.s);
    return { x, ctx, hiddenStates, attentions };
  }

  /**
   * Forward and backward of one micro-batch (labels required); parameter gradients accumulate.
   * With checkpointing, the blocks run without a graph, keeping only their inputs, and backward
   * re-runs each block from its input, last to first (src/nn/checkpoint.ts): the same operations
   * in the same order, so the same loss and gradients as without.
   */
  trainStep(input: CausalLMInput, o: TrainStepOptions = {}): { loss: number } {
    if (!input.labels && !o.head) throw new Error("trainStep needs labels");
    if (input.cache) throw new Error("trainStep does not take a KV cache");
    const scale = o.gradScale ?? 1;
    const chunked = o.chunkedLoss ?? true;
    // The head and the loss on the final hidden states `x`: in chunks (one chunk's logits alive at a
    // time), then the trunk's backward from d(loss)/dx; or, unchunked, as one graph.
    const headAndLoss = (x: torch.Tensor): number => {
      if (o.head) {
        const detached = x.detach();
        detached.requiresGrad = true;
        const value = o.head(detached, scale);
        if (detached.grad && x.requiresGrad) torch.backward([x], [detached.grad]);
        return value;
      }
      if (!chunked) {
        const loss = causalLmLoss(
          softcapped(torch.linear(x, this.lmHeadWeight), this.finalLogitSoftcap),
          input.labels!,
        );
        torch.backward([scale === 1 ? loss : loss.mul(scale)]);
        return loss.item();
      }
      const detached = x.detach();
      detached.requiresGrad = true;
      const value = chunkedLmLoss(
        detached,
        this.lmHeadWeight,
        input.labels!,
        scale,
        o.lossChunkRows,
        this.finalLogitSoftcap,
      );
      if (detached.grad && x.requiresGrad) torch.backward([x], [detached.grad]);
      return value;
    };
    if (o.blockHooks && !o.gradientCheckpointing) throw new Error("trainStep: blockHooks need gradientCheckpointing");
    return torch.scope(() => {
      if (!o.gradientCheckpointing) return { loss: headAndLoss(this.trunk(input).x) };
      const ctx = this.context(input);
      const x0 = torch.noGrad(() => this.embed(input.inputIds));
      const shared = this.prepare(ctx, x0.dtype);
      const blocks = this.blocks.map(
        (_, i) => (x: torch.Tensor) => this.runBlock(i, x, ctx, shared, undefined, false).out,
      );
      const seq = new CheckpointedBlocks(this.device, this.training, o.blockHooks);
      const xL = seq.forward(x0, blocks);
      const last = xL.detach();
      last.requiresGrad = true;
      const value = torch.scope(() => headAndLoss(this.finalNorm(last)));
      const grad0 = seq.backward(last.grad!);
      torch.scope(() => {
        const embedded = this.embed(input.inputIds);
        if (embedded.requiresGrad) torch.backward([embedded], [grad0]); // a frozen embedding (LoRA) has none
      });
      return { loss: value };
    });
  }

  /**
   * AdamW's groups as the HF Trainer makes them: weight decay on every trainable parameter except
   * biases and the weights of norm layers (LayerNorm, RMSNorm), decided by module type, not by name.
   */
  decayGroups(): { decay: Array<[string, torch.Tensor]>; noDecay: Array<[string, torch.Tensor]> } {
    const decay: Array<[string, torch.Tensor]> = [];
    const noDecay: Array<[string, torch.Tensor]> = [];
    for (const { name, local, tensor, owner } of this.parameterOwners()) {
      if (!tensor.requiresGrad) continue; // frozen (a LoRA base): no optimizer state at all
      (owner instanceof Norm || local === "bias" ? noDecay : decay).push([name, tensor]);
    }
    return { decay, noDecay };
  }
}
