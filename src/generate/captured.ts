// Decoding steps without per-op JavaScript. A decode step of a small model is hundreds of small ops; run
// from JavaScript, each pays an N-API round trip and handle bookkeeping, which on a 2-core CPU costs more
// than the arithmetic. Here the KV cache switches to fixed shapes (KVCache.beginFixed: new keys written at
// a slot held in a tensor, attention over every slot with the mask as data), the model's own forward runs
// once while the addon records it (torch.Tape), and later steps replay that tape natively. No model file
// knows: every family decodes this way through the CausalLM interface.
//
// Per step, JavaScript writes the new tokens and the slot into their tensors and calls one replay; the
// recorded forward itself marks the slot in the mask and derives the positions from it. The replayed
// step equals the same step run eagerly bit for bit (test/generate/captured.test.ts); against the growing
// cache it differs only by float rounding (attention sums over more, masked, keys).
import * as torch from "../torch/index.js";
import { positionsFromMask, type CausalLM, type KVCache } from "../models/index.js";

/** Whether decode steps are captured: OASFT_CAPTURE=0 keeps every step eager (a debugging switch). */
export const captureByDefault = process.env.OASFT_CAPTURE !== "0";

export interface FixedDecoderOptions {
  /** Rows decoded together (the cache's rows). */
  batch: number;
  /** [b, past] mask of what the cache holds (1 = real token, 0 = padding); omitted = no padding. */
  attentionMask?: torch.Tensor;
  /** false: every step runs eagerly on the fixed cache (the reference the replay must equal). */
  capture?: boolean;
}

export class FixedDecoder {
  /** Steps replayed from the tape (not counting the recorded one). */
  replayed = 0;
  /** Why the step could not be captured (it then runs eagerly); undefined when it was, or not yet tried. */
  reason: string | undefined;
  #tape: torch.Tape | undefined;
  /** The recorded step, once there is one (benchmarks profile it). */
  get tape(): torch.Tape | undefined {
    return this.#tape;
  }
  #filled: number;
  private readonly ids: torch.Tensor;
  private readonly mask: torch.Tensor;
  private readonly slot: torch.Tensor;
  private readonly capacity: number;

  private constructor(
    private readonly model: CausalLM,
    private readonly cache: KVCache,
    b: number,
    private readonly capture: boolean,
    mask: torch.Tensor | undefined,
  ) {
    this.#filled = cache.length;
    ({ slot: this.slot, capacity: this.capacity } = cache.beginFixed(1));
    const device = model.device;
    this.ids = torch.zeros([b, 1], { dtype: "int64", device }).keep();
    this.mask = torch.zeros([b, this.capacity], { dtype: "int64", device }).keep();
    torch.scope(() => {
      const past = this.mask.narrow(1, 0, this.#filled);
      if (mask) past.copy_(mask);
      else past.fill_(1);
    });
  }

  /**
   * A decoder over `cache` (which holds the prompt: a prefill ran) when fixed shapes compute what the
   * growing cache does for this model and the cache has room for at least one more token; else undefined
   * (decode eagerly, which grows the cache; a later open then finds room).
   */
  static open(model: CausalLM, cache: KVCache, o: FixedDecoderOptions): FixedDecoder | undefined {
    const capacity = cache.capacity;
    if (cache.length + 1 > capacity || !model.fixedCacheExact(capacity)) return undefined;
    const mask = o.attentionMask;
    if (mask && (mask.ndim !== 2 || mask.size(0) !== o.batch || mask.size(1) !== cache.length)) {
      throw new Error(`FixedDecoder: attentionMask must be [${o.batch}, ${cache.length}], got [${mask.shape}]`);
    }
    return new FixedDecoder(model, cache, o.batch, o.capture ?? captureByDefault, mask);
  }

  /**
   * A decoder for rows whose cache mask is `mask` (per row, 1 = real token, 0 = padding, one entry per
   * cached position), when the cache has room for two more steps at least (one to record, one to replay).
   */
  static forRows(model: CausalLM, cache: KVCache, mask: number[][]): FixedDecoder | undefined {
    if (cache.capacity - cache.length < 2) return undefined;
    const padded = mask.some((m) => m.includes(0));
    return torch.scope(() => {
      const attentionMask = padded ? torch.tensor(mask, { dtype: "int64", device: model.device }) : undefined;
      return FixedDecoder.open(model, cache, { batch: mask.length, attentionMask });
    });
  }

  /** Slots left before the cache is full. */
  get room(): number {
    return this.capacity - this.#filled;
  }

  /**
   * Appends one token per row (`next` [b, 1] int64) and returns the logits of the new position [b, v]
   * (in the current scope).
   */
  step(next: torch.Tensor): torch.Tensor {
    if (this.room < 1) throw new Error("FixedDecoder: the cache is full (close and decode eagerly)");
    this.ids.copy_(next);
    this.slot.fill_(this.#filled);
    let logits: torch.Tensor;
    if (this.#tape) {
      logits = this.#tape.replay()[0]!;
      this.replayed++;
    } else if (this.capture && this.reason === undefined) {
      const r = torch.Tape.record(() => [this.forward()]);
      if ("tape" in r) this.#tape = r.tape;
      else this.reason = r.reason;
      logits = r.outputs[0]!;
    } else {
      logits = this.forward();
    }
    this.#filled++;
    return logits;
  }

  /** The step as the model computes it: mark the slot real, positions from the mask, one forward. */
  private forward(): torch.Tensor {
    return torch.scope(() => {
      this.mask.indexFill_(1, this.slot, 1);
      // The new token's position is the count of real tokens before it (HF's cumsum − 1); it goes in the
      // last column, where a model reads the new tokens' positions. Other columns are the keys' positions.
      const positions = torch.cat(
        [positionsFromMask(this.mask).narrow(1, 0, this.capacity - 1), this.mask.sum([1], true).sub(1)],
        1,
      );
      const out = this.model.forward({
        inputIds: this.ids,
        attentionMask: this.mask,
        positionIds: positions,
        cache: this.cache,
        logits: "last",
      });
      return out.logits.select(1, 0);
    });
  }

  /** Ends fixed-shape decoding: the cache grows again from the positions written; frees the tape. */
  close(): void {
    this.#tape?.dispose();
    this.#tape = undefined;
    this.cache.endFixed(this.#filled);
    for (const t of [this.ids, this.mask]) t.dispose();
  }
}
