// The KV cache of standard multi-head attention (GPT-NeoX, LLaMA): per layer, keys and values
// [b, g, capacity, d] (g = kv heads: a grouped-query model caches its kv heads, not its query heads),
// preallocated and grown by doubling; attention reads the first `length + s` positions through
// narrow() views, so a decoding step copies only its new keys and values.
import * as torch from "../torch/index.js";
import type { KVCache } from "./causal-lm.js";

export class HeadsKVCache implements KVCache {
  private keys: torch.Tensor[] = [];
  private values: torch.Tensor[] = [];
  /** Positions stored (the same for every layer between forwards). */
  length = 0;

  constructor(private readonly initialCapacity = 64) {}

  /** Appends one layer's new keys and values [b, g, s, d]; returns the past + new views [b, g, S, d]. */
  append(layer: number, k: torch.Tensor, v: torch.Tensor): { keys: torch.Tensor; values: torch.Tensor } {
    const s = k.size(2);
    const need = this.length + s;
    if (layer >= this.keys.length || this.keys[layer]!.size(2) < need || this.keys[layer]!.size(0) !== k.size(0)) this.grow(layer, k, need);
    this.keys[layer]!.narrow(2, this.length, s).copy_(k);
    this.values[layer]!.narrow(2, this.length, s).copy_(v);
    return { keys: this.keys[layer]!.narrow(2, 0, need), values: this.values[layer]!.narrow(2, 0, need) };
  }

  /** Called once per forward, after every layer appended its s new positions. */
  advance(s: number): void {
    this.length += s;
  }

  truncate(length: number): void {
    this.length = Math.min(this.length, Math.max(0, length));
  }

  private grow(layer: number, k: torch.Tensor, need: number): void {
    const [b, g, , d] = k.shape as [number, number, number, number];
    const old = layer < this.keys.length ? { k: this.keys[layer]!, v: this.values[layer]! } : undefined;
    const capacity = Math.max(need, 2 * (old?.k.size(2) ?? 0), this.initialCapacity);
    const o = { dtype: k.dtype, device: k.device };
    const key = torch.empty([b, g, capacity, d], o).keep();
    const value = torch.empty([b, g, capacity, d], o).keep();
    if (old && this.length > 0) {
      torch.scope(() => {
        key.narrow(2, 0, this.length).copy_(old.k.narrow(2, 0, this.length));
        value.narrow(2, 0, this.length).copy_(old.v.narrow(2, 0, this.length));
      });
    }
    old?.k.dispose();
    old?.v.dispose();
    this.keys[layer] = key;
    this.values[layer] = value;
  }

  selectRows(rows: number[], trimLeft = 0): void {
    torch.scope(() => {
      const device = this.keys[0]?.device ?? "cpu";
      const idx = torch.tensor(rows, { dtype: "int64", device });
      const n = this.length - trimLeft;
      for (let l = 0; l < this.keys.length; l++) {
        const k = this.keys[l]!.narrow(2, trimLeft, n).indexSelect(0, idx).contiguous().keep();
        const v = this.values[l]!.narrow(2, trimLeft, n).indexSelect(0, idx).contiguous().keep();
        this.keys[l]!.dispose();
        this.values[l]!.dispose();
        this.keys[l] = k;
        this.values[l] = v;
      }
    });
    this.length -= trimLeft;
  }

  concatRows(otherCache: KVCache): { padSelf: number; padOther: number } {
    if (!(otherCache instanceof HeadsKVCache)) throw new Error("concatRows: the other cache must come from the same kind of model");
    const other = otherCache;
    const length = Math.max(this.length, other.length);
    const padSelf = length - this.length;
    const padOther = length - other.length;
    torch.scope(() => {
      for (let l = 0; l < other.keys.length; l++) {
        const ok = other.keys[l]!;
        const mine = this.keys[l];
        const [bO, g, , d] = ok.shape as [number, number, number, number];
        const bS = mine ? mine.size(0) : 0;
        const o = { dtype: ok.dtype, device: ok.device };
        const cap = length + 16;
        const k = torch.zeros([bS + bO, g, cap, d], o).keep();
        const v = torch.zeros([bS + bO, g, cap, d], o).keep();
        if (mine && this.length) {
          k.narrow(0, 0, bS).narrow(2, padSelf, this.length).copy_(mine.narrow(2, 0, this.length));
          v.narrow(0, 0, bS).narrow(2, padSelf, this.length).copy_(this.values[l]!.narrow(2, 0, this.length));
        }
        k.narrow(0, bS, bO).narrow(2, padOther, other.length).copy_(ok.narrow(2, 0, other.length));
        v.narrow(0, bS, bO).narrow(2, padOther, other.length).copy_(other.values[l]!.narrow(2, 0, other.length));
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
