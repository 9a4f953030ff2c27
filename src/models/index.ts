// Causal LMs by Hugging Face model_type: create, load and save model folders in the HF layout.
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import * as torch from "../torch/index.js";
import { Registry } from "../util/registry.js";
import { writeFileAtomic } from "../util/atomic-file.js";
import { BloomForCausalLM, bloomConfigFromJson, bloomConfigToJson, type BloomInitOptions } from "./bloom.js";
import { indexWeights, loadWeights, readModelConfig, saveWeights, storedName } from "./checkpoint.js";
import { ConfigError } from "./config-json.js";

export { BloomForCausalLM, BloomCache, alibiSlopes, causalLmLoss, trainStep, type TrainStepOptions, type BloomConfig, type CausalLMInput, type CausalLMOutput } from "./bloom.js";
export { CheckpointError, indexWeights, loadWeights, readJsonFile, readModelConfig, saveWeights } from "./checkpoint.js";
export { ConfigError } from "./config-json.js";

/** The causal LM type every command works with (one architecture so far). */
export type CausalLM = BloomForCausalLM;
export type ModelOptions = BloomInitOptions;

interface Architecture {
  create(json: Record<string, unknown>, file: string, o: ModelOptions): CausalLM;
  toJson(model: CausalLM): Record<string, unknown>;
  /** Checkpoint-name spellings other than the module path (HF base_model_prefix handling). */
  aliases(name: string): string[];
  ignorable(name: string, model: CausalLM): boolean;
}

export const architectures = new Registry<Architecture>("model_type");
architectures.register("bloom", {
  create: (json, file, o) => new BloomForCausalLM(bloomConfigFromJson(json, file), o),
  toJson: (m) => bloomConfigToJson(m.config),
  // Some BLOOM checkpoints store BloomModel keys without the "transformer." prefix.
  aliases: (name) => (name.startsWith("transformer.") ? [name.slice("transformer.".length)] : []),
  // A tied checkpoint may still carry lm_head.weight (a copy of the embeddings): nothing to load it into.
  ignorable: (name, m) => name === "lm_head.weight" && m.config.tie_word_embeddings,
});

function architectureOf(json: Record<string, unknown>, file: string): Architecture {
  const type = json.model_type;
  if (typeof type !== "string") throw new ConfigError(file, "model_type", `missing; expected one of: ${architectures.names().join(", ")}`);
  try {
    return architectures.get(type);
  } catch (err) {
    throw new ConfigError(file, "model_type", (err as Error).message);
  }
}

/** A new model from a config.json object; `init: "normal"` is HF's random init. */
export function createCausalLM(json: Record<string, unknown>, o: ModelOptions = {}, file = "config.json"): CausalLM {
  return architectureOf(json, file).create(json, file, o);
}

/** Loads a Hugging Face model folder (config.json + safetensors), weights cast to `o.dtype`. */
export function loadCausalLM(dir: string, o: Omit<ModelOptions, "init"> = {}): CausalLM {
  const json = readModelConfig(dir);
  const file = join(dir, "config.json");
  const arch = architectureOf(json, file);
  const model = arch.create(json, file, { ...o, init: "empty" });
  try {
    loadWeights(model, dir, { aliases: arch.aliases, ignorable: (n) => arch.ignorable(n, model) });
  } catch (err) {
    model.dispose();
    throw err;
  }
  return model;
}

/** Maps each parameter name of `model` to the name its tensor has in the checkpoint folder `dir`. */
export function checkpointNames(model: CausalLM, dir: string): Map<string, string> {
  const index = indexWeights(dir);
  const aliases = architecturesFor(model).aliases;
  return new Map(model.namedParameters().map(([name]) => [name, storedName(name, index, aliases) ?? name]));
}

/** Saves config.json, generation_config.json, the weights and (if given) tokenizer.json into `dir`. */
export function saveCausalLM(model: CausalLM, dir: string, o: { tokenizerFile?: string; maxShardBytes?: number } = {}): void {
  mkdirSync(dir, { recursive: true });
  const json = { ...architecturesFor(model).toJson(model), torch_dtype: model.dtype };
  writeFileAtomic(join(dir, "config.json"), [JSON.stringify(json, null, 2) + "\n"]);
  const c = model.config;
  const generation = { _from_model_config: true, bos_token_id: c.bos_token_id, eos_token_id: c.eos_token_id, pad_token_id: c.pad_token_id };
  writeFileAtomic(join(dir, "generation_config.json"), [JSON.stringify(generation, null, 2) + "\n"]);
  saveWeights(model, dir, o.maxShardBytes);
  if (o.tokenizerFile) {
    if (!existsSync(o.tokenizerFile)) throw new Error(`${o.tokenizerFile}: tokenizer file not found`);
    copyFileSync(o.tokenizerFile, join(dir, "tokenizer.json"));
  }
}

function architecturesFor(model: CausalLM): Architecture {
  return architectures.get(model.config.model_type);
}


/**
 * A copy of `model` with `vocabSize` token rows (OA resizes to the tokenizer's length rounded up to
 * 16): existing rows are kept, new embedding (and untied head) rows get HF's normal init. The old
 * model is disposed.
 */
export function resizeTokenEmbeddings(model: CausalLM, vocabSize: number): CausalLM {
  if (vocabSize === model.config.vocab_size) return model;
  const json = { ...architectureOf({ model_type: model.config.model_type }, "config.json").toJson(model), vocab_size: vocabSize };
  const resized = createCausalLM(json, { dtype: model.dtype, device: model.device });
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
