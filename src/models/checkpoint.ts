// Hugging Face model folders: config.json + model.safetensors, or shards listed in
// model.safetensors.index.json ({"weight_map": {tensor name: shard file}}).
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import * as torch from "../torch/index.js";
import type { Module } from "../nn/index.js";
import { writeFileAtomic } from "../util/atomic-file.js";

export class CheckpointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CheckpointError";
  }
}

export function readJsonFile(path: string, what: string): Record<string, unknown> {
  if (!existsSync(path)) throw new CheckpointError(`${path}: missing (${what})`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new CheckpointError(`${path}: not valid JSON (${(err as Error).message})`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed))
    throw new CheckpointError(`${path}: expected a JSON object`);
  return parsed as Record<string, unknown>;
}

/** Reads <dir>/config.json, with a clear error when the folder is not a model folder. */
export function readModelConfig(dir: string): Record<string, unknown> {
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw new CheckpointError(`${dir}: not a folder (expected a Hugging Face model folder with config.json)`);
  return readJsonFile(join(dir, "config.json"), "a Hugging Face model folder needs config.json");
}

/** Where each tensor of a checkpoint lives: name → { file, entry }. */
export function indexWeights(dir: string): Map<string, { file: string; entry: torch.SafetensorsEntry }> {
  const single = join(dir, "model.safetensors");
  const indexPath = join(dir, "model.safetensors.index.json");
  let files: string[];
  if (existsSync(single)) {
    files = [single];
  } else if (existsSync(indexPath)) {
    const index = readJsonFile(indexPath, "sharded checkpoint index");
    const map = index.weight_map;
    if (!map || typeof map !== "object")
      throw new CheckpointError(`${indexPath} › weight_map: missing or not an object`);
    files = [...new Set(Object.values(map as Record<string, string>))].map((f) => join(dir, f));
    for (const f of files)
      if (!existsSync(f)) throw new CheckpointError(`${indexPath}: lists shard ${f}, which is missing`);
  } else {
    const present = existsSync(dir) ? readdirSync(dir).join(", ") : "";
    throw new CheckpointError(
      `${dir}: no weights (expected model.safetensors or model.safetensors.index.json; found: ` +
        `${present || "nothing"})` +
        (present.includes("pytorch_model.bin")
          ? ". pytorch_model.bin (pickle) is not read: convert it to safetensors first"
          : ""),
    );
  }
  const out = new Map<string, { file: string; entry: torch.SafetensorsEntry }>();
  for (const file of files) {
    for (const [name, entry] of torch.readSafetensorsHeader(file).entries) out.set(name, { file, entry });
  }
  return out;
}

export interface LoadWeightsOptions {
  /** Checkpoint names that may be absent or present without a parameter (e.g. a tied lm_head.weight). */
  ignorable?: (name: string) => boolean;
  /** Other spellings of a parameter name to look for, e.g. without the "transformer." prefix. */
  aliases?: (name: string) => string[];
  /** Parameters the checkpoint may lack (a reward model folder has no LM head); they are left as they are. */
  optional?: (name: string) => boolean;
}

/** The name a parameter has in a checkpoint: its own, else the first alias the checkpoint holds. */
export function storedName(
  name: string,
  index: ReadonlyMap<string, unknown>,
  aliases?: (name: string) => string[],
): string | undefined {
  return [name, ...(aliases?.(name) ?? [])].find((k) => index.has(k));
}

/**
 * Copies every parameter of `model` from the checkpoint in `dir`, one tensor at a time (cast to the
 * parameter's dtype and device). Missing, unexpected and wrongly shaped tensors are errors naming the file and tensor.
 */
export function loadWeights(model: Module, dir: string, o: LoadWeightsOptions = {}): string[] {
  const index = indexWeights(dir);
  const used = new Set<string>();
  const missing: string[] = [];
  const skipped: string[] = [];
  torch.noGrad(() => {
    for (const [name, param] of model.namedParameters()) {
      const key = storedName(name, index, o.aliases);
      if (!key) {
        if (o.optional?.(name)) skipped.push(name);
        else missing.push(name);
        continue;
      }
      used.add(key);
      const { file, entry } = index.get(key)!;
      const want = param.shape;
      if (entry.shape.length !== want.length || entry.shape.some((d, i) => d !== want[i])) {
        throw new CheckpointError(
          `${file} › ${key}: shape [${entry.shape}] does not match the model's [${want}] (is config.json the ` +
            `model's own?)`,
        );
      }
      // A CPU parameter of the stored dtype is filled straight from the file; otherwise one stored
      // tensor at a time is read on the host, then cast and copied to the parameter's device.
      torch.scope(() => {
        const got = torch.loadSafetensorsEntry(file, entry, key, param);
        if (got !== param) param.copy_(got);
      });
    }
  });
  if (missing.length) {
    const file = [...new Set([...index.values()].map((v) => v.file))].join(", ");
    throw new CheckpointError(
      `${file}: missing tensor${missing.length > 1 ? "s" : ""} ` +
        `${missing.slice(0, 8).join(", ")}${missing.length > 8 ? ` and ${missing.length - 8} more` : ""}`,
    );
  }
  const unexpected = [...index.keys()].filter((k) => !used.has(k) && !o.ignorable?.(k));
  if (unexpected.length) {
    throw new CheckpointError(
      `${index.get(unexpected[0]!)!.file}: unexpected tensor${unexpected.length > 1 ? "s" : ""} ` +
        `${unexpected.slice(0, 8).join(", ")} (not in this model's architecture)`,
    );
  }
  return skipped;
}

/** HF's default max_shard_size, "5GB" (decimal, as transformers' convert_file_size_to_int reads it). */
export const DEFAULT_MAX_SHARD_BYTES = 5e9;

/**
 * Saves all parameters as model.safetensors, or as model-0000i-of-0000n.safetensors shards plus
 * model.safetensors.index.json when they exceed `maxShardBytes` (as HF's save_pretrained). Each
 * tensor streams from its own memory to the file, so host memory does not grow while saving.
 */
export function saveWeights(
  model: Module,
  dir: string,
  maxShardBytes = DEFAULT_MAX_SHARD_BYTES,
  keep: (name: string) => boolean = () => true,
): void {
  mkdirSync(dir, { recursive: true });
  const params = model.namedParameters().filter(([n]) => keep(n));
  const shards: Array<Array<[string, torch.Tensor]>> = [[]];
  let size = 0;
  for (const [name, t] of params) {
    const bytes = t.numel * torch.BYTES_PER_ELEMENT[t.dtype];
    if (size > 0 && size + bytes > maxShardBytes) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1]!.push([name, t]);
    size += bytes;
  }
  const metadata = { format: "pt" }; // transformers refuses safetensors files without format=pt
  if (shards.length === 1) {
    torch.saveSafetensors(join(dir, "model.safetensors"), shards[0]!, metadata);
    removeStaleWeights(dir, new Set(["model.safetensors"]));
    return;
  }
  const weightMap: Record<string, string> = {};
  let totalSize = 0;
  shards.forEach((shard, i) => {
    const file = `model-${String(i + 1).padStart(5, "0")}-of-${String(shards.length).padStart(5, "0")}.safetensors`;
    torch.saveSafetensors(join(dir, file), shard, metadata);
    for (const [name, t] of shard) {
      weightMap[name] = file;
      totalSize += t.numel * torch.BYTES_PER_ELEMENT[t.dtype];
    }
  });
  const index = { metadata: { total_size: totalSize }, weight_map: weightMap };
  writeFileAtomic(join(dir, "model.safetensors.index.json"), [JSON.stringify(index, null, 2) + "\n"]);
  removeStaleWeights(dir, new Set([...Object.values(weightMap), "model.safetensors.index.json"]));
}

/** Removes weight files of an earlier save into the same folder (a single file wins over shards when loading). */
function removeStaleWeights(dir: string, keep: Set<string>): void {
  for (const name of readdirSync(dir)) {
    const weights =
      name === "model.safetensors" ||
      name === "model.safetensors.index.json" ||
      /^model-\d+-of-\d+\.safetensors$/.test(name);
    if (weights && !keep.has(name)) rmSync(join(dir, name), { force: true });
  }
}
