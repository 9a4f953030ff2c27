// The engine's running batch, in two forms behind one interface.
//
// SlotBatch (the default): the rows live in a fixed-shape cache of B rows (a batch-size bucket: a power of
// two up to the engine's maxBatch) by C columns, each row at its own column, and one captured decode step
// (src/generate/captured.ts) serves every step while the bucket holds. A joining request is copied into a
// free row in place, a leaving one frees its row: neither touches the recorded step. It is re-recorded
// only when the bucket or the capacity changes: more rows than B, a row reaching column C (C doubles),
// or few enough rows or columns left that a smaller bucket pays (B/4 rows, C/4 columns: the hysteresis
// keeps a batch that hovers near a boundary from re-recording at every join).
//
// GrowingBatch: every row right-aligned in a cache that grows as it fills, each step run op by op from
// JavaScript. It is the reference the captured steps are tested against, and what runs where fixed shapes
// would change the math (a sliding window shorter than the cache): a SlotBatch that must grow past the
// capacities its model computes exactly hands its rows over to one.
import * as torch from "../torch/index.js";
import type { CausalLM, KVCache, RowMove } from "../models/index.js";
import { FixedDecoder, type StepOutput } from "./captured.js";

export interface DecodeBatch {
  /** Rows held, in the engine's order. */
  readonly size: number;
  /** Whether, once empty, the batch takes new rows without a new layout (else the caller disposes it). */
  readonly reusable: boolean;
  /**
   * Appends the prefilled rows of `own` (same model; per row its mask, 1 = real, one entry per position
   * `own` holds, and its budget: the most tokens it may still feed) after the current rows. The batch owns
   * `own` from then on.
   */
  join(own: KVCache, masks: number[][], budgets: number[]): void;
  /** Keeps rows `keep` (indices in the current order), in that order. */
  keep(keep: number[]): void;
  /**
   * One token per row (`tokens` [size]): the logits of the new positions [size, V] and, where the step
   * makes them, the greedy picks [size, 2] (StepOutput), in the current scope.
   */
  step(tokens: number[]): StepOutput;
  dispose(): void;
}

export interface BatchOptions {
  /** Rows at most (the largest bucket). */
  maxBatch: number;
  /** false: a GrowingBatch, op by op. "eager-fixed": a SlotBatch whose steps run op by op (the reference). */
  capture: boolean | "eager-fixed";
}

/** A batch for the first rows to run: a SlotBatch where it applies, else a GrowingBatch. */
export function startBatch(
  model: CausalLM,
  own: KVCache,
  masks: number[][],
  budgets: number[],
  o: BatchOptions,
): DecodeBatch {
  return (o.capture !== false && SlotBatch.start(model, own, masks, budgets, o)) || new GrowingBatch(model, own, masks);
}

/** The smallest power of two that holds `n` rows, at most `max` (a lone larger `n` gets itself). */
function bucket(n: number, max: number): number {
  return Math.max(n, Math.min(max, 2 ** Math.ceil(Math.log2(Math.max(1, n)))));
}

/**
 * Columns for at least `need` positions: the power of two that holds `want` (at least 64) but no more than
 * the rows can ever fill (`limit`, from their budgets), or, where the model's fixed-shape math is not exact
 * that far (a sliding window), the most columns below it that are; undefined when even `need` is not.
 */
function capacityFor(model: CausalLM, need: number, limit = Infinity, want = need): number | undefined {
  let hi = Math.max(need, Math.min(limit, Math.max(64, 2 ** Math.ceil(Math.log2(want)))));
  if (model.fixedCacheExact(hi)) return hi;
  if (!model.fixedCacheExact(need)) return undefined;
  let lo = need; // exact; hi is not (exactness only fails past a bound: a window, a rotary length)
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (model.fixedCacheExact(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** A row's place in a relayout: where it comes from and its mask (its length is the columns it holds). */
interface RowState {
  from: number;
  mask: number[];
}

export class SlotBatch implements DecodeBatch {
  /** Engine order → decoder row. */
  #rows: number[] = [];
  /** Engine order → the most columns the row can reach (its columns at joining + its budget). */
  #limits: number[] = [];
  /** Set once the rows outgrew the exact capacities: every call goes there. */
  #growing: GrowingBatch | undefined;

  private constructor(
    private readonly model: CausalLM,
    private readonly cache: KVCache,
    private decoder: FixedDecoder,
    private readonly o: BatchOptions,
  ) {}

  static start(
    model: CausalLM,
    own: KVCache,
    masks: number[][],
    budgets: number[],
    o: BatchOptions,
  ): SlotBatch | undefined {
    const limits = budgets.map((b) => own.length + b);
    const capacity = capacityFor(model, own.length + 1, Math.max(...limits));
    if (capacity === undefined) return undefined;
    const state = masks.map((mask, from) => ({ from, mask }));
    const decoder = SlotBatch.layout(model, own, bucket(masks.length, o.maxBatch), capacity, state, o);
    const batch = new SlotBatch(model, own, decoder, o);
    batch.#rows = masks.map((_, i) => i);
    batch.#limits = limits;
    return batch;
  }

  /**
   * Lays the rows of `state` out in `cache` as rows 0, 1, … of `batch` × `capacity` fixed buffers, the rest
   * free, and opens a decoder over them (its step is recorded at its first call).
   */
  private static layout(
    model: CausalLM,
    cache: KVCache,
    batch: number,
    capacity: number,
    state: RowState[],
    o: BatchOptions,
  ): FixedDecoder {
    const used = Math.max(0, ...state.map((s) => s.mask.length));
    const moves: RowMove[] = state.map((s) => ({ from: s.from, length: s.mask.length }));
    while (moves.length < batch) moves.push({ from: 0, length: 0 });
    cache.relayout(moves, capacity, used);
    const decoder = FixedDecoder.open(model, cache, { batch, capture: o.capture === true, picks: true });
    if (!decoder) throw new Error(`SlotBatch: no fixed-shape decoder for ${capacity} columns`);
    decoder.free(moves.map((_, i) => i));
    decoder.restore(
      state.map((_, i) => i),
      state.map((s) => s.mask),
    );
    return decoder;
  }

  get size(): number {
    return this.#growing ? this.#growing.size : this.#rows.length;
  }

  get reusable(): boolean {
    return !this.#growing;
  }

  /** The rows' state (from, mask) in engine order, read off the decoder, which is then closed. */
  private closeDecoder(): RowState[] {
    const state = this.#rows.map((from) => ({ from, mask: this.decoder.rowMask(from) }));
    this.decoder.close();
    return state;
  }

  /**
   * Lays the rows out anew in a `batch` × `capacity` bucket (the step is recorded again), or hands them to
   * a GrowingBatch when the model's fixed-shape math is not exact at `capacity`.
   */
  private relayout(batch: number, capacity: number | undefined): void {
    const state = this.closeDecoder();
    if (capacity === undefined) {
      // Right-aligned, as the growing cache keeps its rows.
      const used = Math.max(0, ...state.map((s) => s.mask.length));
      const moves = state.map((s) => ({ from: s.from, length: s.mask.length, at: used - s.mask.length }));
      this.cache.relayout(moves, used + 16, used);
      const masks = state.map((s) => [...new Array<number>(used - s.mask.length).fill(0), ...s.mask]);
      this.#growing = new GrowingBatch(this.model, this.cache, masks);
      return;
    }
    this.decoder = SlotBatch.layout(this.model, this.cache, batch, capacity, state, this.o);
    this.#rows = state.map((_, i) => i);
  }

  join(own: KVCache, masks: number[][], budgets: number[]): void {
    if (!this.#growing) {
      const rows = this.size + masks.length;
      const need = Math.max(this.decoder.used, own.length) + 1;
      const limit = Math.max(...this.#limits, ...budgets.map((b) => own.length + b));
      // An idle batch takes the bucket its new rows need, so a lone request after a busy spell runs alone.
      const idle = this.size === 0 && bucket(rows, this.o.maxBatch) < this.decoder.batch;
      if (idle || rows > this.decoder.batch || need > this.decoder.capacity) {
        const batch = idle || rows > this.decoder.batch ? bucket(rows, this.o.maxBatch) : this.decoder.batch;
        const capacity = need > this.decoder.capacity ? capacityFor(this.model, need, limit) : this.decoder.capacity;
        this.relayout(batch, capacity);
      }
    }
    if (this.#growing) return this.#growing.join(own, masks, budgets);
    const busy = new Set(this.#rows);
    const free = [...Array(this.decoder.batch).keys()].filter((r) => !busy.has(r)).slice(0, masks.length);
    this.decoder.place(free, own, masks);
    this.#rows.push(...free);
    this.#limits.push(...budgets.map((b) => own.length + b));
    own.dispose();
  }

  keep(keep: number[]): void {
    if (this.#growing) return this.#growing.keep(keep);
    const kept = new Set(keep.map((i) => this.#rows[i]!));
    this.decoder.free(this.#rows.filter((r) => !kept.has(r)));
    this.#rows = keep.map((i) => this.#rows[i]!);
    this.#limits = keep.map((i) => this.#limits[i]!);
    if (!this.#rows.length) return;
    const { batch, capacity, used } = this.decoder;
    const fewRows = this.#rows.length <= batch / 4;
    const fewColumns = capacity > 64 && used <= capacity / 4;
    if (fewRows || fewColumns) {
      this.relayout(
        fewRows ? bucket(2 * this.#rows.length, this.o.maxBatch) : batch,
        fewColumns ? capacityFor(this.model, Math.max(2 * used, used + 1), Math.max(...this.#limits)) : capacity,
      );
    }
  }

  step(tokens: number[]): StepOutput {
    if (!this.#growing && this.decoder.room < 1) {
      // The columns double (a budget permitting), so a long reply records its step O(log length) times.
      const { used, capacity } = this.decoder;
      this.relayout(this.decoder.batch, capacityFor(this.model, used + 1, Math.max(...this.#limits), 2 * capacity));
    }
    if (this.#growing) return this.#growing.step(tokens);
    const device = this.model.device;
    const ids = new Array<number>(this.decoder.batch).fill(0);
    this.#rows.forEach((r, i) => (ids[r] = tokens[i]!));
    const out = this.decoder.step(torch.tensor(ids, { dtype: "int64", device, shape: [ids.length, 1] }));
    if (this.#rows.length === ids.length && this.#rows.every((r, i) => r === i)) return out;
    const order = torch.tensor(this.#rows, { dtype: "int64", device });
    return { logits: out.logits.indexSelect(0, order), greedy: out.greedy?.indexSelect(0, order) };
  }

  dispose(): void {
    if (this.#growing) return this.#growing.dispose();
    this.decoder.close();
    this.cache.dispose();
  }
}

/** Rows right-aligned in a growing cache, every step op by op (the reference; see the top of this file). */
export class GrowingBatch implements DecodeBatch {
  constructor(
    private readonly model: CausalLM,
    private readonly cache: KVCache,
    /** Per row, 1 = real, one entry per cached position. */
    private mask: number[][],
  ) {}

  get size(): number {
    return this.mask.length;
  }

  readonly reusable = false;

  join(own: KVCache, masks: number[][], _budgets: number[]): void {
    const { padSelf, padOther } = this.cache.concatRows(own);
    own.dispose();
    this.mask = this.mask.map((m) => [...new Array<number>(padSelf).fill(0), ...m]);
    for (const m of masks) this.mask.push([...new Array<number>(padOther).fill(0), ...m]);
  }

  keep(keep: number[]): void {
    const mask = keep.map((i) => this.mask[i]!);
    // The padding every kept row has goes too.
    const trim = keep.length ? Math.min(...mask.map((m) => m.indexOf(1))) : 0;
    if (keep.length) this.cache.selectRows(keep, trim);
    this.mask = mask.map((m) => m.slice(trim));
  }

  step(tokens: number[]): StepOutput {
    const device = this.model.device;
    const feed = torch.tensor(tokens, { dtype: "int64", device, shape: [tokens.length, 1] });
    this.mask = this.mask.map((m) => [...m, 1]);
    const padded = this.mask.some((m) => m.includes(0));
    const mask = padded ? torch.tensor(this.mask, { dtype: "int64", device }) : undefined;
    const out = this.model.forward({ inputIds: feed, attentionMask: mask, cache: this.cache, logits: "last" });
    return { logits: out.logits.select(1, 0) };
  }

  dispose(): void {
    this.cache.dispose();
  }
}
