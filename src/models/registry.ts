// Causal LMs by Hugging Face model_type: each architecture file registers itself at its bottom
// (registerArchitecture), and everything here works on any of them: create, load and save model
// folders in the HF layout, grow the vocabulary.
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import * as torch from "../torch/index.js";
import { Registry } from "../util/registry.js";
import { cachedSnapshot, hubCacheDir, repoFolder } from "../util/hub-cache.js";
import { writeFileAtomic } from "../util/atomic-file.js";
import type { CausalLM, ModelOptions } from "./causal-lm.js";
import { indexWeights, loadWeights, readModelConfig, saveWeights, storedName } from "./checkpoint.js";
import { ConfigError } from "./config-json.js";

export interface Architecture {
  /** A model from a config.json object (`file` names it in errors). */
  create(json: Record<string, unknown>, file: string, o: ModelOptions): CausalLM;
  /** Checkpoint-name spellings other than the module path (HF base_model_prefix handling). */
  aliases(name: string): string[];
  /** Checkpoint tensors with nothing to load into (e.g. a tied copy of the embeddings). */
  ignorable(name: string, model: CausalLM): boolean;
}

const architectures = new Registry<Architecture>("model_type");

/** Called once by each architecture file, at its bottom. */
export function registerArchitecture(modelType: string, arch: Architecture): void {
  architectures.register(modelType, arch);
}

export function knownModelTypes(): string[] {
  return architectures.names();
}

function architectureOf(json: Record<string, unknown>, file: string): Architecture {
  const type = json.model_type;
  if (typeof type !== "string")
    throw new ConfigError(file, "model_type", `missing; expected one of: ${knownModelTypes().join(", ")}`);
  try {
    return architectures.get(type);
  } catch (err) {
    throw new ConfigError(file, "model_type", (err as Error).message);
  }
}

/**
 * A model folder from what a user typed: a local path, or a hub name ("ORG/NAME") found in the Hugging
 * Face cache (what `huggingface-cli download` or transformers left there). Weights are never
 * downloaded here; the error says where the folder was looked for.
 */
export function resolveModelDir(nameOrPath: string, what = "model"): string {
  if (existsSync(nameOrPath)) return nameOrPath;
  const [repo, revision] = nameOrPath.split("@") as [string, string | undefined];
  if (/^[\w.-]+\/[\w.-]+$/.test(repo) && !repo.startsWith(".")) {
    const snapshot = cachedSnapshot(repo, "model", revision ?? "main");
    if (snapshot) return snapshot;
    throw new Error(
      `${what} ${nameOrPath}: not a local folder, and not in the Hugging Face cache ` +
        `(${join(hubCacheDir(), repoFolder(repo, "model"))}); download it first (huggingface-cli download ` +
        `${repo}) or give a local path`,
    );
  }
  return nameOrPath; // a path that does not exist: the loader names it
}

/** A folder in HF's sequence-classification layout (a reward model): config.json's architectures say so. */
export function isRewardModelDir(dir: string): boolean {
  const arch = (readModelConfig(dir).architectures as unknown[] | undefined)?.[0];
  return typeof arch === "string" && arch.endsWith("ForSequenceClassification");
}

/** A new model from a config.json object; `init: "normal"` is HF's random init. */
export function createCausalLM(json: Record<string, unknown>, o: ModelOptions = {}, file = "config.json"): CausalLM {
  return architectureOf(json, file).create(json, file, o);
}

/**
 * Loads a Hugging Face model folder (config.json + safetensors) onto `o.device` in `o.dtype`, one
 * tensor at a time: host memory holds at most one stored tensor beside the model.
 */
/** Where and how a stored model loads. */
export interface LoadOptions extends Omit<ModelOptions, "init"> {
  /** Load (or make) a reward model's scalar head: an RM folder, or a causal LM becoming one. */
  scoreHead?: boolean;
}

export function loadCausalLM(nameOrDir: string, o: LoadOptions = {}): CausalLM {
  const dir = resolveModelDir(nameOrDir);
  const json = readModelConfig(dir);
  const file = join(dir, "config.json");
  const arch = architectureOf(json, file);
  const { scoreHead, ...options } = o;
  const model = arch.create(json, file, { ...options, init: "empty" });
  try {
    // A reward model: its score head loads with it (a causal LM's folder has none: it keeps HF's random
    // init), and a folder in HF's sequence-classification layout has no LM head (an untied one is then
    // zero; rewards never use it).
    const score = scoreHead ? model.scoreHead().weight : undefined;
    const head = model.config.tieWordEmbeddings ? undefined : model.lmHeadWeight;
    const named = new Map(model.namedParameters());
    const optional = (n: string) => score !== undefined && (named.get(n) === head || named.get(n) === score);
    const ignorable = (n: string) => arch.ignorable(n, model);
    const skipped = loadWeights(model, dir, { aliases: arch.aliases, ignorable, optional });
    if (head && skipped.some((n) => named.get(n) === head)) torch.noGrad(() => head.zero_());
  } catch (err) {
    model.dispose();
    throw err;
  }
  return model;
}

/** Maps each parameter name of `model` to the name its tensor has in the checkpoint folder `dir`. */
export function checkpointNames(model: CausalLM, dir: string): Map<string, string> {
  const index = indexWeights(dir);
  const aliases = architectures.get(model.config.modelType).aliases;
  return new Map(model.namedParameters().map(([name]) => [name, storedName(name, index, aliases) ?? name]));
}

export interface SaveOptions {
  tokenizerFile?: string;
  /** Shard above this many bytes (HF's max_shard_size, default "5GB" = 5·10⁹ bytes). */
  maxShardBytes?: number;
}

/**
 * Saves config.json, generation_config.json, the weights (sharded when large) and (if given) tokenizer.json into `dir`.
 */
export function saveCausalLM(model: CausalLM, dir: string, o: SaveOptions = {}): void {
  mkdirSync(dir, { recursive: true });
  const json = { ...model.configJson(), torch_dtype: model.dtype };
  writeFileAtomic(join(dir, "config.json"), [JSON.stringify(json, null, 2) + "\n"]);
  const c = model.config;
  const generation = {
    _from_model_config: true,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId,
    pad_token_id: c.padTokenId,
  };
  writeFileAtomic(join(dir, "generation_config.json"), [JSON.stringify(generation, null, 2) + "\n"]);
  saveWeights(model, dir, o.maxShardBytes);
  if (o.tokenizerFile) {
    if (!existsSync(o.tokenizerFile)) throw new Error(`${o.tokenizerFile}: tokenizer file not found`);
    copyFileSync(o.tokenizerFile, join(dir, "tokenizer.json"));
  }
}

/**
 * Saves a reward model in HF's sequence-classification layout (what AutoModelForSequenceClassification
 * loads): `<Family>ForSequenceClassification` with one label, the trunk's tensors and `score.weight`,
 * no LM head; pad_token_id set, as HF needs it to find each row's last token.
 */
export function saveRewardModel(model: CausalLM, dir: string, padTokenId: number): void {
  mkdirSync(dir, { recursive: true });
  const base = model.configJson();
  const arch = String((base.architectures as string[] | undefined)?.[0] ?? "").replace(/For\w+$/, "");
  const json = {
    ...base,
    architectures: [`${arch}ForSequenceClassification`],
    id2label: { 0: "LABEL_0" },
    label2id: { LABEL_0: 0 },
    pad_token_id: padTokenId,
    torch_dtype: model.dtype,
  };
  writeFileAtomic(join(dir, "config.json"), [JSON.stringify(json, null, 2) + "\n"]);
  const head = model.config.tieWordEmbeddings ? undefined : model.lmHeadWeight;
  const skip = new Set(
    model
      .namedParameters()
      .filter(([, t]) => t === head)
      .map(([n]) => n),
  );
  saveWeights(model, dir, undefined, (n) => !skip.has(n));
}

/**
 * A copy of `model` with `vocabSize` token rows (OA resizes to the tokenizer's length rounded up to
 * 16): existing rows are kept, new embedding (and untied head) rows get HF's normal init. The old
 * model is disposed.
 */
export function resizeTokenEmbeddings(model: CausalLM, vocabSize: number): CausalLM {
  if (vocabSize === model.config.vocabSize) return model;
  const json = { ...model.configJson(), vocab_size: vocabSize };
  const resized = createCausalLM(json, { dtype: model.dtype, device: model.device });
  if (model.hasScoreHead) resized.scoreHead();
  const old = new Map(model.namedParameters());
  torch.noGrad(() => {
    for (const [name, p] of resized.namedParameters()) {
      const src = old.get(name);
      if (!src) throw new Error(`resize: parameter ${name} missing in the source model`);
      torch.scope(() => {
        if (src.shape.join() === p.shape.join()) p.copy_(src);
        else {
          const rows = Math.min(src.size(0), p.size(0));
          p.narrow(0, 0, rows).copy_(src.narrow(0, 0, rows));
        }
      });
    }
  });
  model.dispose();
  return resized;
}
