// What a dataset loader is, and the helpers loaders share (options, input files, drop counters).
import { DataError } from "./io.js";
import { existsSync, statSync, readdirSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import type { Conversation } from "./conversation.js";
import { hubDatasetFiles, type HubDataset } from "./hub.js";
import type { Rng } from "./rng.js";

/** "head": OA's final formatting (2024-01); "may2023": the code the card's run most likely used. */
export type FormatVersion = "head" | "may2023";

export interface LoaderContext {
  /** The name as written in the config (e.g. "wmt2019_zh-en"): some loaders read their variant from it. */
  name: string;
  /** Base folder for relative input_file_path values and downloads (OA's cache_dir). */
  cacheDir: string;
  /** This dataset's own random stream (seeded by the run seed and the dataset name). */
  rng: Rng;
  formatVersion: FormatVersion;
}

/** Options a dataset entry may carry; the mix handles the split/cap ones, loaders read the rest. */
export type DatasetOptions = Record<string, unknown>;

export interface LoadedDataset {
  train: Conversation[];
  /** The loader's own evaluation split (gsm8k's test, wmt's validation); else the mix splits `train`. */
  val?: Conversation[];
  /** Records dropped by each rule, by rule name: nothing is ever dropped silently. */
  dropped: Record<string, number>;
  /** Units the mix must keep together when splitting (oasst: trees); default: conversations. */
  groups?: Conversation[][];
  /** Files the data came from, for stats. */
  files: string[];
}

/**
 * Replies to one context, ranked best first (preference data: reward models, DPO). Each candidate is
 * the whole conversation, the context followed by that reply, so every chat format renders it as SFT does.
 */
export interface RankedGroup {
  candidates: Conversation[];
  /** Where the group came from ("file:line", a message id), for errors found after loading. */
  where: string;
}

export interface LoadedRanked {
  groups: RankedGroup[];
  dropped: Record<string, number>;
  files: string[];
}

export interface DatasetLoader {
  description: string;
  /** The loader-specific option keys and what each means (the mix's own keys are always allowed). */
  options: Record<string, string>;
  load(options: DatasetOptions, ctx: LoaderContext): Promise<LoadedDataset>;
  /** Ranked replies (stages rm and dpo); datasets without rankings have none. */
  loadRanked?(options: DatasetOptions, ctx: LoaderContext): Promise<LoadedRanked>;
}

export class DropCounter {
  readonly counts: Record<string, number> = {};
  drop(rule: string): void {
    this.counts[rule] = (this.counts[rule] ?? 0) + 1;
  }
}

// ----- typed option access ---------------------------------------------------------------------

export function optString(o: DatasetOptions, key: string, dataset: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string")
    throw new DataError(`dataset ${dataset}`, `option '${key}' must be a string, got ${JSON.stringify(v)}`);
  return v;
}

export function optNumber(
  o: DatasetOptions,
  key: string,
  dataset: string,
  { min = -Infinity, max = Infinity, integer = false } = {},
): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  const n = typeof v === "string" && v.trim() !== "" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    const what = integer ? "an integer" : "a number";
    throw new DataError(
      `dataset ${dataset}`,
      `option '${key}' must be ${what} in [${min}, ${max}], got ${JSON.stringify(v)}`,
    );
  }
  return n;
}

/** input_file_path as a list (a string, or a list of strings). */
export function optPaths(o: DatasetOptions, key: string, dataset: string): string[] | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v === "string") return [v];
  if (Array.isArray(v) && v.every((x) => typeof x === "string")) return v as string[];
  throw new DataError(
    `dataset ${dataset}`,
    `option '${key}' must be a path or a list of paths, got ${JSON.stringify(v)}`,
  );
}

/** A path as the user wrote it (relative to the working folder), else relative to cache_dir (as OA). */
export function resolveInputPath(path: string, ctx: LoaderContext): string {
  const candidates = isAbsolute(path) ? [path] : [resolve(path), join(ctx.cacheDir, path)];
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    const noCache =
      isAbsolute(path) || existsSync(ctx.cacheDir) ? "" : `; cache_dir ${resolve(ctx.cacheDir)} does not exist`;
    throw new DataError(
      `dataset ${ctx.name}`,
      `input_file_path '${path}' not found (looked at ${candidates.join(" and ")}${noCache})`,
    );
  }
  return found;
}

/** Files in a folder (recursively) whose name matches, sorted. */
export function filesIn(dir: string, pattern: RegExp): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (statSync(p).isDirectory()) out.push(...filesIn(p, pattern));
    else if (pattern.test(e.name)) out.push(p);
  }
  return out.sort();
}

const DATA_FILE = /\.(jsonl|json|parquet)(\.gz)?$/;

/**
 * The data files of a dataset: input_file_path (a file, several files, or a folder) when given, else
 * the hub dataset from the local cache, downloading it when allowed. `split` picks train/test files
 * inside a folder or a hub snapshot by name.
 */
export async function inputFiles(
  o: DatasetOptions,
  ctx: LoaderContext,
  hub: HubDataset | undefined,
  split?: RegExp,
): Promise<string[]> {
  const paths = optPaths(o, "input_file_path", ctx.name);
  if (paths) {
    const files: string[] = [];
    for (const p of paths.map((x) => resolveInputPath(x, ctx))) {
      if (statSync(p).isDirectory()) {
        const inDir = filesIn(p, DATA_FILE).filter((f) => !split || split.test(f.slice(p.length)));
        if (!inDir.length)
          throw new DataError(
            `dataset ${ctx.name}`,
            `no ${split ? `${split} ` : ""}data file (.jsonl, .json, .parquet) in ${p}`,
          );
        files.push(...inDir);
      } else files.push(p);
    }
    return files;
  }
  if (!hub) throw new DataError(`dataset ${ctx.name}`, `set input_file_path (this dataset has no hub source)`);
  const files = await hubDatasetFiles(hub);
  const inRepo = (f: string) => f.slice(f.indexOf("/snapshots/") + 11);
  const picked = split ? files.filter((f) => split.test(inRepo(f))) : files;
  if (!picked.length) throw new DataError(`dataset ${ctx.name}`, `no ${split} file among ${hub.repo}'s files`);
  return picked;
}
