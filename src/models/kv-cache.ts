// KV caches: per layer, a key buffer and a value buffer preallocated along their time dimension and
// grown by doubling; attention reads the first `length + s` positions through narrow() views, so a
// decoding step copies only its new keys and values. The layouts differ by architecture (where the
// time dimension is, how many entries of dim 0 a batch row owns); the bookkeeping below is shared.
import * as torch from "../torch/index.js";

// The contract: a KV cache is owned by the model that made it (model.newCache()); its layout is the
// model's business.

export interface KVCache {
  /** Positions stored (the same for every layer between forwards). */
  readonly length: number;
  /** Positions the buffers hold before they must grow (0 before the first forward). */
  readonly capacity: number;
  /** Forgets positions from `length` on (a shared prompt prefix is reused this way). */
  truncate(length: number): void;
  /**
   * Keeps only batch rows `rows` (in that order) and drops the first `trimLeft` positions (padding
   * that every kept row has): continuous batching removes finished sequences this way.
   */
  selectRows(rows: number[], trimLeft?: number): void;
  /**
   * Appends the rows of `other` (made by the same model) below this cache's rows, right-aligned: the
   * shorter side is padded on the left, and the caller pads its attention mask the same way.
   */
  concatRows(other: KVCache): { padSelf: number; padOther: number };
  /**
   * Called once after every block appended its s new positions to its layer: the cache's length moves
   * on (a layered cache counts positions once for all layers).
   */
  advance(s: number): void;
  /**
   * Fixed-shape decoding (a captured step, src/generate/captured.ts): until endFixed, each forward brings
   * one new position per batch row and writes it at that row's column in `slot` (a [b] int64 tensor the
   * caller sets before every step; rows may stand at different columns), and attends over all `capacity`
   * columns, which the caller's attention mask shows or hides; `length` reads capacity − 1 meanwhile, so
   * every step has the same shapes. The buffers must already hold the prompt (a prefill ran).
   */
  beginFixed(): { slot: torch.Tensor; capacity: number };
  /** Back to a growing cache that holds `length` positions (the columns written during the fixed steps). */
  endFixed(length: number): void;
  /**
   * Copies every batch row of `other` (same model) into rows `rows` of this cache, at columns
   * [0, other.length), and zeroes the rest of those rows. In place, so a recorded step stays valid: during
   * fixed decoding, this is how a request joins a running batch.
   */
  placeRows(other: KVCache, rows: number[]): void;
  /**
   * New zeroed buffers of `rows.length` batch rows and `capacity` columns: new row i holds old row
   * rows[i].from's columns [0, rows[i].length) at [rows[i].at ?? 0, …); the cache then holds `length`
   * positions. Not during fixed decoding (a recorded step would read the old buffers).
   */
  relayout(rows: RowMove[], capacity: number, length: number): void;
  dispose(): void;
}

/** One batch row's move in KVCache.relayout. */
export interface RowMove {
  from: number;
  length: number;
  at?: number;
}

export interface NewCacheOptions {
  /** Rows the cache starts with room for (it grows when a forward brings more). */
  batch?: number;
  /** Positions per row allocated up front (it grows by doubling past that). */
  capacity?: number;
}

/** A buffer's shape with dim 0 split into [b rows, entries per row]. */
function byRowShape(buffer: torch.Tensor, b: number): number[] {
  return [b, buffer.size(0) / b, ...buffer.shape.slice(1)];
}

/** An uninitialised buffer shaped like `like`, with its time dimension `capacity` long. */
function resized(like: torch.Tensor, timeDim: number, capacity: number): torch.Tensor {
  const shape = like.shape;
  shape[timeDim] = capacity;
  return torch.empty(shape, { dtype: like.dtype, device: like.device }).keep();
}

export abstract class LayeredKVCache implements KVCache {
  protected keys: torch.Tensor[] = [];
  protected values: torch.Tensor[] = [];
  /** Positions stored (the same for every layer between forwards). */
  #length = 0;
  /** Set between beginFixed and endFixed: the slot and, per buffer kind, its scatter index (a view of it). */
  #fixed: { slot: torch.Tensor; capacity: number; keyIndex: torch.Tensor; valueIndex: torch.Tensor } | undefined;

  get capacity(): number {
    return Math.min(...this.keys.map((k) => k.size(this.keyTime)), this.keys.length ? Infinity : 0);
  }

  get length(): number {
    return this.#fixed ? this.#fixed.capacity - 1 : this.#length;
  }
  protected set length(n: number) {
    if (this.#fixed) throw new Error("the KV cache is in fixed-shape decoding (endFixed first)");
    this.#length = n;
  }

  /**
   * @param keyTime the time dimension of the key buffers
   * @param valueTime the time dimension of the value buffers
   */
  constructor(
    private readonly keyTime: number,
    private readonly valueTime: number,
    private readonly initialCapacity = 64,
  ) {}

  /** The dim-0 entries that batch rows `rows` own, in order. */
  protected abstract rowEntries(rows: number[]): number[];
  /** Whether `other` has this cache's layout (from the same model). */
  protected abstract sameLayout(other: KVCache): boolean;

  /** Appends one layer's new keys and values; returns the past + new views. */
  append(layer: number, k: torch.Tensor, v: torch.Tensor): { keys: torch.Tensor; values: torch.Tensor } {
    if (this.#fixed) {
      const { keyIndex, valueIndex } = this.#fixed;
      const [key, value] = [this.keys[layer]!, this.values[layer]!];
      this.byRow(key).scatter_(this.keyTime + 1, keyIndex, k.reshape(keyIndex.shape));
      this.byRow(value).scatter_(this.valueTime + 1, valueIndex, v.reshape(valueIndex.shape));
      return { keys: key, values: value };
    }
    const s = k.size(this.keyTime);
    const need = this.length + s;
    const current = this.keys[layer];
    if (!current || current.size(this.keyTime) < need || current.size(0) !== k.size(0)) this.grow(layer, k, v, need);
    this.keys[layer]!.narrow(this.keyTime, this.length, s).copy_(k);
    this.values[layer]!.narrow(this.valueTime, this.length, s).copy_(v);
    return {
      keys: this.keys[layer]!.narrow(this.keyTime, 0, need),
      values: this.values[layer]!.narrow(this.valueTime, 0, need),
    };
  }

  /** Layer `layer`'s stored keys and values (views of the first `length` positions, in this cache's layout). */
  read(layer: number): { keys: torch.Tensor; values: torch.Tensor } {
    return {
      keys: this.keys[layer]!.narrow(this.keyTime, 0, this.length),
      values: this.values[layer]!.narrow(this.valueTime, 0, this.length),
    };
  }

  /** Called once per forward, after every layer appended its s new positions. */
  advance(s: number): void {
    if (!this.#fixed) this.length += s; // fixed steps: the caller counts (endFixed)
  }

  beginFixed(): { slot: torch.Tensor; capacity: number } {
    if (this.#fixed) throw new Error("beginFixed: the KV cache is already in fixed-shape decoding");
    const capacity = this.keys[0]?.size(this.keyTime);
    if (
      capacity === undefined ||
      this.keys.some((k) => k.size(this.keyTime) !== capacity || k.size(0) !== this.keys[0]!.size(0))
    ) {
      throw new Error("beginFixed: the cache holds no prompt yet (prefill first)");
    }
    if (this.#length + 1 > capacity)
      throw new Error(`beginFixed: no room past ${this.#length} of ${capacity} positions`);
    // Unwritten slots are read (masked) from now on: zeros, not whatever the allocator left (0 · NaN = NaN).
    torch.scope(() => {
      const rest = capacity - this.#length;
      for (const k of this.keys) k.narrow(this.keyTime, this.#length, rest).zero_();
      for (const v of this.values) v.narrow(this.valueTime, this.#length, rest).zero_();
    });
    const b = this.keys[0]!.size(0) / this.rowEntries([0]).length;
    const slot = torch.full([b], this.#length, { dtype: "int64", device: this.keys[0]!.device }).keep();
    // The scatter indices are views of the slot: what the caller writes there, every step's scatter reads.
    const index = (buffer: torch.Tensor, time: number) => {
      const shape = byRowShape(buffer, b);
      shape[time + 1] = 1;
      return slot
        .view([b, ...shape.slice(1).map(() => 1)])
        .expand(shape)
        .keep();
    };
    this.#fixed = {
      slot,
      capacity,
      keyIndex: index(this.keys[0]!, this.keyTime),
      valueIndex: index(this.values[0]!, this.valueTime),
    };
    return { slot, capacity };
  }

  /** A buffer seen as [b, entries per row, ...] (a view): fixed steps scatter each row at its own column. */
  private byRow(buffer: torch.Tensor): torch.Tensor {
    return buffer.view(byRowShape(buffer, this.#fixed!.slot.size(0)));
  }

  endFixed(length: number): void {
    if (!this.#fixed) return;
    if (length > this.#fixed.capacity) throw new Error(`endFixed: ${length} positions exceed ${this.#fixed.capacity}`);
    for (const t of [this.#fixed.slot, this.#fixed.keyIndex, this.#fixed.valueIndex]) t.dispose();
    this.#fixed = undefined;
    this.#length = length;
  }

  placeRows(otherCache: KVCache, rows: number[]): void {
    const other = this.checkSameLayout(otherCache, "placeRows");
    const n = other.length;
    if (n > this.capacity) throw new Error(`placeRows: ${n} positions exceed the capacity ${this.capacity}`);
    const entries = this.rowEntries(rows);
    if (other.keys[0]!.size(0) !== entries.length) {
      const held = other.keys[0]!.size(0);
      throw new Error(
        `placeRows: the other cache holds ${held} entries; rows ${rows.join(", ")} take ${entries.length}`,
      );
    }
    torch.scope(() => {
      const idx = torch.tensor(entries, { dtype: "int64", device: this.keys[0]!.device });
      const place = (mine: torch.Tensor, theirs: torch.Tensor, time: number) => {
        mine.indexFill_(0, idx, 0);
        mine.narrow(time, 0, n).indexCopy_(0, idx, theirs.narrow(time, 0, n));
      };
      for (let l = 0; l < this.keys.length; l++) {
        place(this.keys[l]!, other.keys[l]!, this.keyTime);
        place(this.values[l]!, other.values[l]!, this.valueTime);
      }
    });
  }

  relayout(rows: RowMove[], capacity: number, length: number): void {
    if (this.#fixed) throw new Error("relayout: the KV cache is in fixed-shape decoding (endFixed first)");
    // A row's entries are contiguous along dim 0 in every layout here (rowEntries).
    const per = this.rowEntries([0]).length;
    const move = (old: torch.Tensor, time: number) => {
      const shape = old.shape;
      shape[0] = rows.length * per;
      shape[time] = capacity;
      const out = torch.zeros(shape, { dtype: old.dtype, device: old.device }).keep();
      rows.forEach((r, i) => {
        if (!r.length) return;
        const to = out.narrow(0, i * per, per).narrow(time, r.at ?? 0, r.length);
        to.copy_(old.narrow(0, r.from * per, per).narrow(time, 0, r.length));
      });
      old.dispose();
      return out;
    };
    torch.scope(() => {
      this.keys = this.keys.map((k) => move(k, this.keyTime));
      this.values = this.values.map((v) => move(v, this.valueTime));
    });
    this.length = length;
  }

  truncate(length: number): void {
    this.length = Math.min(this.length, Math.max(0, length));
  }

  /** Reallocates one layer's buffers with at least `need` positions (doubling), keeping the stored past. */
  private grow(layer: number, k: torch.Tensor, v: torch.Tensor, need: number): void {
    const old = this.keys[layer] ? { k: this.keys[layer]!, v: this.values[layer]! } : undefined;
    const capacity = Math.max(need, 2 * (old?.k.size(this.keyTime) ?? 0), this.initialCapacity);
    const key = resized(k, this.keyTime, capacity);
    const value = resized(v, this.valueTime, capacity);
    if (old && this.length > 0 && old.k.size(0) === k.size(0)) {
      torch.scope(() => {
        key.narrow(this.keyTime, 0, this.length).copy_(old.k.narrow(this.keyTime, 0, this.length));
        value.narrow(this.valueTime, 0, this.length).copy_(old.v.narrow(this.valueTime, 0, this.length));
      });
    }
    old?.k.dispose();
    old?.v.dispose();
    this.keys[layer] = key;
    this.values[layer] = value;
  }

  selectRows(rows: number[], trimLeft = 0): void {
    torch.scope(() => {
      const idx = torch.tensor(this.rowEntries(rows), { dtype: "int64", device: this.keys[0]?.device ?? "cpu" });
      const n = this.length - trimLeft;
      const pick = (t: torch.Tensor, time: number) =>
        t.narrow(time, trimLeft, n).indexSelect(0, idx).contiguous().keep();
      for (let l = 0; l < this.keys.length; l++) {
        const k = pick(this.keys[l]!, this.keyTime);
        const v = pick(this.values[l]!, this.valueTime);
        this.keys[l]!.dispose();
        this.values[l]!.dispose();
        this.keys[l] = k;
        this.values[l] = v;
      }
    });
    this.length -= trimLeft;
  }

  private checkSameLayout(other: KVCache, op: string): LayeredKVCache {
    if (!(other instanceof LayeredKVCache) || !this.sameLayout(other)) {
      throw new Error(`${op}: the other cache must come from the same model`);
    }
    return other;
  }

  concatRows(otherCache: KVCache): { padSelf: number; padOther: number } {
    const other = this.checkSameLayout(otherCache, "concatRows");
    const length = Math.max(this.length, other.length);
    const padSelf = length - this.length;
    const padOther = length - other.length;
    // Rows stacked on dim 0, right-aligned in time: the shorter side gets zeros (masked) on the left.
    const stack = (mine: torch.Tensor | undefined, theirs: torch.Tensor, time: number) => {
      const rowsMine = mine ? mine.size(0) : 0;
      const like = theirs.narrow(0, 0, 1);
      const shape = like.shape;
      shape[0] = rowsMine + theirs.size(0);
      shape[time] = length + 16;
      const out = torch.zeros(shape, { dtype: theirs.dtype, device: theirs.device }).keep();
      if (mine && this.length)
        out
          .narrow(0, 0, rowsMine)
          .narrow(time, padSelf, this.length)
          .copy_(mine.narrow(time, 0, this.length));
      out
        .narrow(0, rowsMine, theirs.size(0))
        .narrow(time, padOther, other.length)
        .copy_(theirs.narrow(time, 0, other.length));
      return out;
    };
    torch.scope(() => {
      for (let l = 0; l < other.keys.length; l++) {
        const k = stack(this.keys[l], other.keys[l]!, this.keyTime);
        const v = stack(this.values[l], other.values[l]!, this.valueTime);
        this.keys[l]?.dispose();
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
    this.endFixed(0);
    this.#length = 0;
  }
}

/**
 * The cache of standard multi-head attention (GPT-NeoX, LLaMA): keys and values [b, g, capacity, d],
 * g = kv heads (a grouped-query model caches its kv heads, not its query heads).
 */
export class HeadsKVCache extends LayeredKVCache {
  constructor(initialCapacity = 64) {
    super(2, 2, initialCapacity);
  }
  protected rowEntries(rows: number[]): number[] {
    return rows;
  }
  protected sameLayout(other: KVCache): boolean {
    return other instanceof HeadsKVCache;
  }
}
