// A byte-level BPE trainer (GPT-2 style) that writes a Hugging Face tokenizer.json. Every byte is in
// the base alphabet, so any text encodes (nothing becomes <unk>) and decodes back exactly.
import { mkdirSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import { gunzipSync } from "node:zlib";
import { writeFileAtomic } from "../util/atomic-file.js";

/** GPT-2's byte → printable-character map (bytes that are not printable get code points from 256 up). */
export function bytesToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const map: string[] = new Array(256);
  let next = 256;
  for (let b = 0; b < 256; b++) map[b] = String.fromCodePoint(printable.includes(b) ? b : next++);
  return map;
}

/** The ByteLevel pre-tokenizer's split (GPT-2's regex): contractions, letters, numbers, punctuation, spaces. */
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

export interface BpeTrainOptions {
  vocabSize: number;
  /** Added as special tokens with the first ids, in this order. */
  specialTokens: string[];
  /** A pair seen fewer times than this is never merged (default 2). */
  minFrequency?: number;
  onProgress?: (merges: number, target: number) => void;
}

/** Texts of a training file: JSON Lines → every string value in each record; anything else → its lines. */
export function trainingTexts(path: string): string[] {
  const bytes = readFileSync(path);
  const text = (path.endsWith(".gz") ? gunzipSync(bytes) : bytes).toString("utf8");
  if (!/\.jsonl(\.gz)?$/.test(path)) return [text];
  const out: string[] = [];
  const collect = (v: unknown): void => {
    if (typeof v === "string") out.push(v);
    else if (Array.isArray(v)) v.forEach(collect);
    else if (v && typeof v === "object") Object.values(v).forEach(collect);
  };
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    try {
      collect(JSON.parse(line));
    } catch (err) {
      throw new Error(`${path}:${i + 1}: not valid JSON (${(err as Error).message})`, { cause: err });
    }
  });
  return out;
}

/** A max-heap of [count, pair], ties broken by the smaller pair key (deterministic merges). */
class PairHeap {
  private items: Array<[number, number]> = [];
  push(count: number, key: number): void {
    const a = this.items;
    a.push([count, key]);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }
  pop(): [number, number] | undefined {
    const a = this.items;
    if (!a.length) return undefined;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.before(a[l]!, a[m]!)) m = l;
        if (r < a.length && this.before(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
  private before(x: [number, number], y: [number, number]): boolean {
    return x[0] > y[0] || (x[0] === y[0] && x[1] < y[1]);
  }
}

const SHIFT = 2 ** 21; // symbol ids < 2^21, so a pair key a·2^21 + b is exact in a double
const pairKey = (a: number, b: number) => a * SHIFT + b;

/** Word frequencies, words spelled in byte characters (GPT-2's pre-tokenization). */
function wordCounts(texts: Iterable<string>, byteChar: string[]): Map<string, number> {
  const encoder = new TextEncoder();
  const counts = new Map<string, number>();
  for (const text of texts) {
    for (const m of text.matchAll(GPT2_SPLIT)) {
      const w = Array.from(encoder.encode(m[0]), (b) => byteChar[b]!).join("");
      counts.set(w, (counts.get(w) ?? 0) + 1);
    }
  }
  return counts;
}

/** The words as symbol ids with their frequencies, every adjacent pair's count, and which words hold it. */
class PairCounts {
  readonly counts = new Map<number, number>();
  private readonly where = new Map<number, Set<number>>();

  constructor(
    private readonly words: number[][],
    private readonly freqs: number[],
  ) {
    words.forEach((_, wi) => this.add(wi, 1));
  }

  /** Adds (sign 1) or removes (−1) word wi's pairs; `changed` collects the pairs touched. */
  private add(wi: number, sign: number, changed?: Set<number>): void {
    const w = this.words[wi]!;
    for (let i = 0; i + 1 < w.length; i++) {
      const k = pairKey(w[i]!, w[i + 1]!);
      this.counts.set(k, (this.counts.get(k) ?? 0) + sign * this.freqs[wi]!);
      changed?.add(k);
      if (sign > 0) {
        let s = this.where.get(k);
        if (!s) this.where.set(k, (s = new Set()));
        s.add(wi);
      }
    }
  }

  /** Replaces every (a, b) with `merged` in the words that hold it; returns the pairs whose counts changed. */
  merge(key: number, merged: number): Set<number> {
    const a = Math.floor(key / SHIFT);
    const b = key - a * SHIFT;
    const touched = new Set<number>();
    for (const wi of this.where.get(key) ?? []) {
      const w = this.words[wi]!;
      if (!w.some((x, i) => x === a && w[i + 1] === b)) continue;
      this.add(wi, -1, touched);
      const next: number[] = [];
      for (let i = 0; i < w.length; i++) {
        if (i + 1 < w.length && w[i] === a && w[i + 1] === b) {
          next.push(merged);
          i++;
        } else next.push(w[i]!);
      }
      this.words[wi] = next;
      this.add(wi, 1, touched);
    }
    this.counts.delete(key);
    this.where.delete(key);
    return touched;
  }
}

/** Trains the merges and returns the tokenizer.json object. */
export function trainByteLevelBpe(texts: Iterable<string>, o: BpeTrainOptions): Record<string, unknown> {
  const minFrequency = o.minFrequency ?? 2;
  const target = o.vocabSize - o.specialTokens.length;
  if (target < 256) {
    const needs = `the byte alphabet alone needs 256 + ${o.specialTokens.length} special tokens`;
    throw new Error(`--vocab-size ${o.vocabSize} is too small: ${needs}`);
  }
  const byteChar = bytesToUnicode();
  // Symbols: the 256 byte characters, then one per merge.
  const symbols: string[] = [...byteChar];
  const symbolId = new Map(symbols.map((s, i) => [s, i]));
  const counted = [...wordCounts(texts, byteChar)];
  const pairs = new PairCounts(
    counted.map(([w]) => Array.from(w, (ch) => symbolId.get(ch)!)),
    counted.map(([, c]) => c),
  );
  const heap = new PairHeap();
  for (const [k, c] of pairs.counts) heap.push(c, k);
  // Merge the most frequent pair until the vocabulary is full.
  const merges: Array<[string, string]> = [];
  while (symbols.length < target) {
    const top = heap.pop();
    if (!top) break;
    const [count, key] = top;
    if (pairs.counts.get(key) !== count) continue; // stale heap entry
    if (count < minFrequency) break;
    const a = Math.floor(key / SHIFT);
    const b = key - a * SHIFT;
    merges.push([symbols[a]!, symbols[b]!]);
    symbols.push(symbols[a]! + symbols[b]!);
    // Every pair whose count changed gets a fresh heap entry; its older entries are skipped as stale.
    for (const k of pairs.merge(key, symbols.length - 1)) {
      const c = pairs.counts.get(k) ?? 0;
      if (c > 0 && k !== key) heap.push(c, k);
      else pairs.counts.delete(k);
    }
    if (merges.length % 200 === 0) o.onProgress?.(merges.length, target - 256);
  }
  o.onProgress?.(merges.length, target - 256);
  return tokenizerJson(symbols, merges, o.specialTokens);
}

/** tokenizer.json as HF's tokenizers writes a byte-level BPE: special tokens first, then the symbols. */
function tokenizerJson(symbols: string[], merges: Array<[string, string]>, specialTokens: string[]) {
  const vocab: Record<string, number> = {};
  specialTokens.forEach((t, i) => (vocab[t] = i));
  symbols.forEach((s, i) => (vocab[s] = i + specialTokens.length));
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  const added = (content: string, id: number) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: specialTokens.map(added),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges: merges.map(([x, y]) => `${x} ${y}`),
    },
  };
}

export function saveTokenizerJson(path: string, json: Record<string, unknown>): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileAtomic(path, [JSON.stringify(json)]);
}
