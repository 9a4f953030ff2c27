// Seeded randomness for everything data-side (splits, caps, templates, truncation windows), so that a
// run is repeatable for a seed. Python's Mersenne Twister is not reproduced: OA's splits cannot be
// matched bit for bit anyway (they mix NumPy, torch and `random`), so we document our seeds instead.

/** 32-bit FNV-1a of a string: turns "seed + dataset name" into a stream seed. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** sfc32, a small fast PRNG with a 128-bit state; good statistical quality for data shuffling. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /** A stream for `seed` and an optional label (e.g. a dataset name), independent of other labels. */
  constructor(seed: number | string, label = "") {
    const s = hashString(`${seed}/${label}`);
    this.a = s;
    this.b = hashString(`${s}:b`);
    this.c = hashString(`${s}:c`);
    this.d = 1;
    for (let i = 0; i < 12; i++) this.next();
  }

  /** A float in [0, 1). */
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return (t >>> 0) / 4294967296;
  }

  /** An integer in [lo, hi], both ends included (Python's random.randint). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  choice<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("choice from an empty list");
    return items[Math.floor(this.next() * items.length)]!;
  }

  /** Fisher–Yates, in place. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [items[i], items[j]] = [items[j]!, items[i]!];
    }
    return items;
  }

  /** A random permutation of 0..n-1. */
  permutation(n: number): number[] {
    return this.shuffle(Array.from({ length: n }, (_, i) => i));
  }

  /** `k` distinct indices of 0..n-1 (without replacement), in ascending order. */
  sampleIndices(n: number, k: number): number[] {
    return this.permutation(n)
      .slice(0, Math.min(k, n))
      .sort((x, y) => x - y);
  }
}
