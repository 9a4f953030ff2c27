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
  /** Whether the step also makes the greedy picks (StepOutput.greedy). */
  picks?: boolean;
}

/** A decode step's outputs: the logits [b, V] and, when asked for, the greedy picks [b, 2] float64 (id, logprob). */
export interface StepOutput {
  logits: torch.Tensor;
  greedy?: torch.Tensor;
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
  /** Per row: the column its next token is written at; undefined for a free row (it idles at column 0). */
  #columns: Array<number | undefined>;
  private readonly ids: torch.Tensor;
  private readonly mask: torch.Tensor;
  private readonly slot: torch.Tensor;
  /** The slot as [b, 1]: the recorded step marks each row's column in the mask through it. */
  private readonly slotColumn: torch.Tensor;
  readonly capacity: number;

  private constructor(
    private readonly model: CausalLM,
    private readonly cache: KVCache,
    readonly batch: number,
    private readonly capture: boolean,
    mask: torch.Tensor | undefined,
    private readonly picks: boolean,
  ) {
    const filled = cache.length;
    this.#columns = new Array<number>(batch).fill(filled);
    ({ slot: this.slot, capacity: this.capacity } = cache.beginFixed());
    const device = model.device;
    this.slotColumn = this.slot.view([batch, 1]).keep();
    this.ids = torch.zeros([batch, 1], { dtype: "int64", device }).keep();
    this.mask = torch.zeros([batch, this.capacity], { dtype: "int64", device }).keep();
    torch.scope(() => {
      const past = this.mask.narrow(1, 0, filled);
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
    return new FixedDecoder(model, cache, o.batch, o.capture ?? captureByDefault, mask, o.picks ?? false);
  }

  /** Columns left before the fullest busy row reaches the end of the cache. */
  get room(): number {
    return this.capacity - this.used;
  }

  /** The columns the busiest row holds (0 when every row is free). */
  get used(): number {
    return Math.max(0, ...this.#columns.map((c) => c ?? 0));
  }

  /**
   * Appends one token per row (`next` [b, 1] int64; anything for free rows) and returns the logits of the
   * new positions [b, v] and, with `picks`, each row's greedy pick [b, 2] float64 (the argmax and its
   * log-probability, computed in the recorded step: a greedy row costs no op of its own), in the current
   * scope; free rows' outputs mean nothing.
   */
  step(next: torch.Tensor): StepOutput {
    if (this.room < 1) throw new Error("FixedDecoder: the cache is full (close and decode eagerly)");
    this.ids.copy_(next);
    this.writeSlot();
    let outputs: torch.Tensor[];
    if (this.#tape) {
      outputs = this.#tape.replay();
      this.replayed++;
    } else if (this.capture && this.reason === undefined) {
      const r = torch.Tape.record(() => this.forward());
      if ("tape" in r) this.#tape = r.tape;
      else this.reason = r.reason;
      outputs = r.outputs;
    } else {
      outputs = this.forward();
    }
    this.#columns = this.#columns.map((c) => (c === undefined ? c : c + 1));
    return { logits: outputs[0]!, greedy: outputs[1] };
  }

  /** The columns into the slot tensor: one fill when every row stands at the same column. */
  private writeSlot(): void {
    const columns = this.#columns.map((c) => c ?? 0);
    if (columns.every((c) => c === columns[0])) this.slot.fill_(columns[0]!);
    else torch.scope(() => this.slot.copy_(torch.tensor(columns, { dtype: "int64", device: this.slot.device })));
  }

  /**
   * The step as the model computes it: mark each row's column real, positions from the mask, one forward;
   * then, with `picks`, the greedy picks (pickNextTokens' rule: argmax of the float32 logits, its
   * log-softmax entry).
   */
  private forward(): torch.Tensor[] {
    return torch.scope(() => {
      this.mask.scatter_(1, this.slotColumn, 1);
      // A new token's position is the count of real tokens before it (HF's cumsum − 1); it goes in the
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
      const logits = out.logits.select(1, 0);
      if (!this.picks) return [logits];
      const x = logits.to("float32");
      const best = x.argmax(-1, true);
      const greedy = torch.cat([best.to("float64"), x.logSoftmax(-1).gather(1, best).to("float64")], 1);
      return [logits, greedy];
    });
  }

  /**
   * Puts the prefilled rows of `own` (same model; `masks` per row, 1 = real, one entry per position it
   * holds) into the free rows `rows`, in place: the recorded step replays on, now with them.
   */
  place(rows: number[], own: KVCache, masks: number[][]): void {
    if (rows.some((r) => this.#columns[r] !== undefined)) throw new Error(`FixedDecoder.place: rows ${rows} are busy`);
    if (own.length >= this.capacity) throw new Error(`FixedDecoder.place: ${own.length} positions leave no room`);
    this.cache.placeRows(own, rows);
    this.restore(rows, masks);
  }

  /**
   * Rows `rows` hold, in the cache already, the positions their `masks` describe (1 = real): each row's
   * next token goes at column masks[i].length.
   */
  restore(rows: number[], masks: number[][]): void {
    if (!rows.length) return;
    torch.scope(() => {
      const device = this.mask.device;
      const idx = torch.tensor(rows, { dtype: "int64", device });
      const wide = masks.map((m) => [...m, ...new Array<number>(this.capacity - m.length).fill(0)]);
      this.mask.indexCopy_(0, idx, torch.tensor(wide, { dtype: "int64", device }));
    });
    rows.forEach((r, i) => (this.#columns[r] = masks[i]!.length));
  }

  /** Row `row`'s mask up to its next column (1 = real). */
  rowMask(row: number): number[] {
    const column = this.#columns[row] ?? 0;
    return torch.scope(() => this.mask.select(0, row).narrow(0, 0, column).toNumbers());
  }

  /** Frees rows `rows`: they see nothing of their past from now on and idle at column 0 until placed again. */
  free(rows: number[]): void {
    if (!rows.length) return;
    torch.scope(() => this.mask.indexFill_(0, torch.tensor(rows, { dtype: "int64", device: this.mask.device }), 0));
    for (const r of rows) this.#columns[r] = undefined;
  }

  /** Ends fixed-shape decoding: the cache grows again from the columns written; frees the tape. */
  close(): void {
    this.#tape?.dispose();
    this.#tape = undefined;
    this.cache.endFixed(this.used);
    for (const t of [this.ids, this.mask, this.slotColumn]) t.dispose();
  }
}
