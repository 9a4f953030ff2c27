// The dataset mix of a config: each `datasets:` entry loaded, split into train/validation, capped, as
// OA's get_dataset does, plus `max_train_set` (the card uses it; upstream OA silently ignored it).
import { DataError } from "./io.js";
import type { Conversation } from "./conversation.js";
import type { DatasetOptions, FormatVersion, LoadedDataset } from "./dataset.js";
import { optNumber } from "./dataset.js";
import { datasetLoader } from "./registry.js";
import { Rng } from "./rng.js";

/** Options every entry may carry, handled here rather than by the loader. */
export const MIX_OPTIONS: Record<string, string> = {
  val_split: "fraction held out for validation when the dataset has no split of its own (default 0.2; 0 = none)",
  max_val_set: "cap on validation samples (random, without replacement)",
  max_train_set: "cap on training samples (random, without replacement)",
  fraction: "per epoch, train on this fraction of the dataset (a new random subset each epoch)",
  size: "per epoch, train on this many samples of the dataset (a new random subset each epoch)",
};

export interface DatasetEntry {
  name: string;
  options: DatasetOptions;
}

/** OA's entry syntax: a bare name, or a one-key map {name: {options}} (options may be empty/null). */
export function parseDatasetEntries(list: unknown, where: string): DatasetEntry[] {
  if (!Array.isArray(list)) throw new DataError(`${where}`, `'datasets' must be a list of names or {name: {options}}`);
  return list.map((e, i) => {
    if (typeof e === "string") return { name: e, options: {} };
    if (e && typeof e === "object" && !Array.isArray(e) && Object.keys(e).length === 1) {
      const [name, opts] = Object.entries(e)[0]!;
      if (opts !== null && (typeof opts !== "object" || Array.isArray(opts)))
        throw new DataError(`${where}`, `datasets[${i}] (${name}): options must be a map, got ${JSON.stringify(opts)}`);
      return { name, options: (opts ?? {}) as DatasetOptions };
    }
    throw new DataError(`${where}`, `datasets[${i}]: expected a name or {name: {options}}, got ${JSON.stringify(e)}`);
  });
}

export interface MixedDataset {
  /** The entry's name; a repeated entry gets "#2", "#3" (OA adds its train data twice). */
  name: string;
  train: Conversation[];
  val: Conversation[];
  /** Records/threads dropped by each rule (loader rules and the caps). */
  dropped: Record<string, number>;
  files: string[];
  fraction?: number;
  size?: number;
}

export interface MixOptions {
  seed: number;
  cacheDir: string;
  formatVersion: FormatVersion;
  /** OA's eval_size: cut every validation set to its first N samples. */
  evalSize?: number;
}

/**
 * Splits like torch's random_split with fractions [1 − v, v]: floor sizes, the remainder handed out
 * round-robin from the first subset; a random permutation assigns the items.
 */
export function randomSplit<T>(items: T[], valSplit: number, rng: Rng): [T[], T[]] {
  const n = items.length;
  const sizes = [Math.floor(n * (1 - valSplit)), Math.floor(n * valSplit)];
  for (let r = n - sizes[0]! - sizes[1]!, i = 0; r > 0; r--, i++) sizes[i % 2]!++;
  const perm = rng.permutation(n);
  return [perm.slice(0, sizes[0]).map((i) => items[i]!), perm.slice(sizes[0]).map((i) => items[i]!)];
}

/** sklearn's train_test_split(test_size=v): ceil(v·n) items go to the test side. */
function trainTestSplit<T>(items: T[], valSplit: number, rng: Rng): [T[], T[]] {
  const nTest = Math.ceil(valSplit * items.length);
  const perm = rng.permutation(items.length);
  const test = new Set(perm.slice(0, nTest));
  return [items.filter((_, i) => !test.has(i)), perm.slice(0, nTest).map((i) => items[i]!)];
}

/** At most `max` of `items` (a random subset, without replacement); the rest counted under `rule`. */
export function capItems<T>(
  items: T[],
  max: number | undefined,
  rng: Rng,
  rule: string,
  dropped: Record<string, number>,
): T[] {
  if (max === undefined || items.length <= max) return items;
  dropped[rule] = (dropped[rule] ?? 0) + items.length - max;
  return rng.sampleIndices(items.length, max).map((i) => items[i]!);
}

export async function loadDatasetMix(entries: DatasetEntry[], o: MixOptions): Promise<MixedDataset[]> {
  const seen = new Map<string, number>();
  const out: MixedDataset[] = [];
  for (const entry of entries) {
    const loader = datasetLoader(entry.name);
    const allowed = { ...loader.options, ...MIX_OPTIONS };
    for (const key of Object.keys(entry.options)) {
      if (!(key in allowed))
        throw new DataError(
          `dataset ${entry.name}`,
          `unknown option '${key}'. Known options: ${Object.keys(allowed).sort().join(", ")}`,
        );
    }
    const n = (seen.get(entry.name) ?? 0) + 1;
    seen.set(entry.name, n);
    const label = n === 1 ? entry.name : `${entry.name}#${n}`;
    const name = entry.name.toLowerCase();
    const opt = (k: string, bounds: { min?: number; max?: number; integer?: boolean }) =>
      optNumber(entry.options, k, entry.name, bounds);
    const valSplit = opt("val_split", { min: 0, max: 1 }) ?? 0.2;
    const loaded: LoadedDataset = await loader.load(entry.options, {
      name,
      cacheDir: o.cacheDir,
      rng: new Rng(o.seed, `${label}/load`),
      formatVersion: o.formatVersion,
    });
    const splitRng = new Rng(o.seed, `${label}/split`);
    let train = loaded.train;
    let val = loaded.val ?? [];
    if (!loaded.val && valSplit > 0) {
      if (loaded.groups) {
        const [t, v] = randomSplit(loaded.groups, valSplit, splitRng);
        train = t.flat();
        val = v.flat();
      } else [train, val] = trainTestSplit(train, valSplit, splitRng);
    }
    const dropped = { ...loaded.dropped };
    val = capItems(val, opt("max_val_set", { min: 0, integer: true }), splitRng, "max_val_set", dropped);
    train = capItems(train, opt("max_train_set", { min: 0, integer: true }), splitRng, "max_train_set", dropped);
    if (o.evalSize !== undefined && val.length > o.evalSize) {
      dropped.eval_size = val.length - o.evalSize;
      val = val.slice(0, o.evalSize);
    }
    const fraction = opt("fraction", { min: Number.MIN_VALUE, max: 1 });
    const size = opt("size", { min: 1, integer: true });
    out.push({
      name: label,
      train,
      val,
      dropped,
      files: loaded.files,
      ...(fraction !== undefined ? { fraction } : {}),
      ...(size !== undefined ? { size } : {}),
    });
  }
  return out;
}

/**
 * The training indices of one epoch (OA's PerDatasetSampler semantics, applied whenever fraction or
 * size is set): each dataset contributes all its samples, or a fresh random subset of
 * int(len·fraction) / size samples, without replacement. Returns [dataset, sample] pairs, shuffled.
 */
export function epochIndices(
  mix: Array<{ train: ArrayLike<unknown>; fraction?: number; size?: number }>,
  epoch: number,
  seed: number,
): Array<[number, number]> {
  const rng = new Rng(seed, `epoch/${epoch}`);
  const out: Array<[number, number]> = [];
  mix.forEach((d, di) => {
    const n = d.train.length;
    const k = d.size !== undefined ? Math.min(n, d.size) : d.fraction !== undefined ? Math.floor(n * d.fraction) : n;
    const picked = k === n ? Array.from({ length: n }, (_, i) => i) : rng.sampleIndices(n, k);
    for (const i of picked) out.push([di, i]);
  });
  return rng.shuffle(out);
}
