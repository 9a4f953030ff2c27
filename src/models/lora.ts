// LoRA adapters on any CausalLM, in PEFT's files: adapter_config.json and adapter_model.safetensors
// with keys "base_model.model.<module path>.lora_A.weight" / ".lora_B.weight" (no adapter name), so
// that Python's PeftModel.from_pretrained(base, dir) loads what oasft trains, and oasft loads what
// PEFT wrote. Target modules match as PEFT matches a list: a module whose path is the name, or ends
// with "." + the name.
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import * as torch from "../torch/index.js";
import { Embedding, Linear, type Module } from "../nn/index.js";
import { writeFileAtomic } from "../util/atomic-file.js";
import { describeNumber, keepsRule, type NumberRule } from "../util/validate.js";
import type { CausalLM } from "./causal-lm.js";
import { readJsonFile } from "./checkpoint.js";
import {
  isRewardModelDir,
  loadCausalLM,
  resizeTokenEmbeddings,
  resolveModelDir,
  type LoadOptions,
} from "./registry.js";

export interface LoraConfig {
  r: number;
  lora_alpha: number;
  lora_dropout: number;
  target_modules: string[];
  /** Only "none" is supported (PEFT's default): no bias is trained. */
  bias: "none";
  /** Modules trained in full and saved with the adapter (e.g. an embedding grown for new tokens). */
  modules_to_save: string[] | null;
  /**
   * PEFT's task: CAUSAL_LM (the default), or SEQ_CLS for a reward model, whose score head trains in full
   * and is saved with the adapter as PEFT saves a classifier ("base_model.model.score.weight").
   */
  task_type?: "CAUSAL_LM" | "SEQ_CLS";
}

export const ADAPTER_CONFIG = "adapter_config.json";
export const ADAPTER_WEIGHTS = "adapter_model.safetensors";
const PREFIX = "base_model.model.";

export class LoraError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LoraError";
  }
}

/** Every Linear in the module tree with its dotted path. */
function linears(root: Module, prefix = ""): Array<[string, Linear]> {
  const out: Array<[string, Linear]> = [];
  for (const [name, child] of root.namedChildren()) {
    const path = prefix + name;
    if (child instanceof Linear) out.push([path, child]);
    out.push(...linears(child, `${path}.`));
  }
  return out;
}

const matches = (path: string, target: string) => path === target || path.endsWith(`.${target}`);

/**
 * Attaches adapters to the targeted layers and freezes everything else (modules_to_save excepted).
 * `where` names the config in errors. Returns the adapted module paths.
 */
export function applyLora(model: CausalLM, cfg: LoraConfig, where = "peft_config"): string[] {
  // A sequence classifier's head exists before its adapters: PEFT keeps it in modules_to_save.
  if (cfg.task_type === "SEQ_CLS") model.scoreHead();
  const rules: Array<["r" | "lora_alpha" | "lora_dropout", NumberRule]> = [
    ["r", { integer: true, min: 1 }],
    ["lora_alpha", { gt: 0 }],
    ["lora_dropout", { min: 0, lt: 1 }],
  ];
  for (const [key, rule] of rules) {
    if (!keepsRule(cfg[key], rule)) {
      throw new LoraError(`${where} › ${key}: expected ${describeNumber(rule)}, got ${cfg[key]}`);
    }
  }
  if (cfg.bias !== "none")
    throw new LoraError(`${where} › bias: only "none" is supported, got ${JSON.stringify(cfg.bias)}`);
  const all = linears(model);
  for (const t of cfg.target_modules) {
    if (!all.some(([p]) => matches(p, t))) {
      const names = [...new Set(all.map(([p]) => p.split(".").at(-1)!))].join(", ");
      throw new LoraError(
        `${where} › target_modules: '${t}' matches no linear layer of this ${model.config.modelType} model (its ` +
          `layers: ${names})`,
      );
    }
  }
  const adapted: string[] = [];
  for (const [path, layer] of all) {
    if (!cfg.target_modules.some((t) => matches(path, t))) continue;
    layer.addLora({ r: cfg.r, alpha: cfg.lora_alpha, dropout: cfg.lora_dropout });
    adapted.push(path);
  }
  const saved = cfg.modules_to_save ?? [];
  for (const m of saved) {
    if (!model.namedParameters().some(([n]) => n.startsWith(`${m}.`) || n.includes(`.${m}.`))) {
      throw new LoraError(`${where} › modules_to_save: '${m}' is no module of this model`);
    }
  }
  // The base is frozen: no gradients and so no optimizer state for it.
  for (const [name, t] of model.namedParameters()) {
    t.requiresGrad = isAdapterParam(name) || saved.some((m) => name.startsWith(`${m}.`) || name.includes(`.${m}.`));
  }
  return adapted;
}

export const isAdapterParam = (name: string) => /\.lora_[AB]\.weight$/.test(name);

/** The trainable tensors under PEFT's names (adapters, then modules_to_save). */
export function adapterTensors(model: CausalLM): Array<[string, torch.Tensor]> {
  return model
    .namedParameters()
    .filter(([, t]) => t.requiresGrad)
    .map(([n, t]) => [PREFIX + n, t]);
}

/** adapter_config.json as PEFT writes it for a LoRA adapter (CAUSAL_LM, or SEQ_CLS for a reward model). */
export function adapterConfigJson(
  cfg: LoraConfig,
  baseModel: string | null,
  targets: string[],
): Record<string, unknown> {
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: baseModel,
    bias: cfg.bias,
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: cfg.lora_alpha,
    lora_dropout: cfg.lora_dropout,
    modules_to_save: cfg.modules_to_save,
    peft_type: "LORA",
    r: cfg.r,
    rank_pattern: {},
    revision: null,
    target_modules: targets,
    task_type: cfg.task_type ?? "CAUSAL_LM",
    use_dora: false,
    use_rslora: false,
  };
}

/** Writes adapter_config.json and adapter_model.safetensors (the trainable tensors, in fp32 as PEFT keeps them). */
export function saveAdapter(model: CausalLM, cfg: LoraConfig, dir: string, baseModel: string | null): void {
  mkdirSync(dir, { recursive: true });
  torch.scope(() => {
    const tensors = adapterTensors(model).map(([n, t]): [string, torch.Tensor] => [n, t.detach()]);
    torch.saveSafetensors(join(dir, ADAPTER_WEIGHTS), tensors, { format: "pt" });
  });
  const json = adapterConfigJson(cfg, baseModel, cfg.target_modules);
  writeFileAtomic(join(dir, ADAPTER_CONFIG), [JSON.stringify(json, null, 2) + "\n"]);
}

/** Reads a PEFT adapter folder's config (LoRA for causal LMs and reward models), naming the file and key on errors. */
export function readAdapterConfig(dir: string): LoraConfig & { base_model_name_or_path: string | null } {
  const file = join(dir, ADAPTER_CONFIG);
  if (!existsSync(file)) throw new LoraError(`${dir}: no ${ADAPTER_CONFIG} (expected a PEFT LoRA adapter folder)`);
  const j = readJsonFile(file, "PEFT adapter config");
  if (j.peft_type !== "LORA")
    throw new LoraError(`${file} › peft_type: only "LORA" adapters are supported, got ${JSON.stringify(j.peft_type)}`);
  if (j.use_dora === true || j.use_rslora === true)
    throw new LoraError(`${file}: DoRA and rsLoRA adapters are not supported`);
  if (j.fan_in_fan_out === true)
    throw new LoraError(`${file} › fan_in_fan_out: true is for GPT-2's Conv1D layers, which these models do not have`);
  const targets = typeof j.target_modules === "string" ? [j.target_modules] : j.target_modules;
  if (!Array.isArray(targets) || !targets.every((t) => typeof t === "string"))
    throw new LoraError(`${file} › target_modules: expected a list of module names`);
  const task = j.task_type ?? "CAUSAL_LM";
  if (task !== "CAUSAL_LM" && task !== "SEQ_CLS") {
    throw new LoraError(
      `${file} › task_type: expected CAUSAL_LM or SEQ_CLS (a reward model), got ${JSON.stringify(task)}`,
    );
  }
  // PEFT adds the classifier heads ("classifier", "score") to a SEQ_CLS adapter's modules_to_save whether
  // or not the file lists them; these models name theirs "score".
  const listed = (j.modules_to_save ?? null) as string[] | null;
  const toSave =
    task === "SEQ_CLS" ? [...new Set([...(listed ?? []).filter((m) => m !== "classifier"), "score"])] : listed;
  return {
    r: Number(j.r),
    lora_alpha: Number(j.lora_alpha),
    lora_dropout: Number(j.lora_dropout ?? 0),
    target_modules: targets as string[],
    bias: (j.bias ?? "none") as "none",
    modules_to_save: toSave,
    task_type: task,
    base_model_name_or_path: (j.base_model_name_or_path ?? null) as string | null,
  };
}

/**
 * Applies a PEFT adapter folder to `model` and loads its tensors, checked name by name and shape by
 * shape against the base (an adapter for another base is an error naming the tensor).
 */
export function loadAdapter(model: CausalLM, dir: string): LoraConfig {
  const cfg = readAdapterConfig(dir);
  applyLora(model, cfg, join(dir, ADAPTER_CONFIG));
  const file = join(dir, ADAPTER_WEIGHTS);
  if (!existsSync(file)) throw new LoraError(`${dir}: no ${ADAPTER_WEIGHTS} (adapter_model.bin pickles are not read)`);
  const { tensors } = torch.loadSafetensors(file);
  try {
    const mine = new Map(adapterTensors(model));
    // PEFT before 0.7 kept the adapter name in some keys ("...lora_A.default.weight"): accept both.
    const stored = new Map(
      [...tensors].map(([k, t]) => [k.replace(/\.(lora_[AB])\.default\.weight$/, ".$1.weight"), t]),
    );
    for (const [name, t] of mine) {
      const src = stored.get(name);
      if (!src) throw new LoraError(`${file}: missing ${name}`);
      if (src.shape.join() !== t.shape.join()) {
        throw new LoraError(
          `${file} › ${name}: shape [${src.shape}] does not fit this base model's [${t.shape}] (an adapter for ` +
            `another model?)`,
        );
      }
      torch.noGrad(() => t.copy_(src));
    }
    const extra = [...stored.keys()].filter((k) => !mine.has(k));
    if (extra.length)
      throw new LoraError(`${file}: ${extra[0]} is not a module of this base model (an adapter for another model?)`);
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
  return cfg;
}

/** Folds every adapter into its base weight: the model is a plain one again (for serving, or `oasft merge`). */
export function mergeLora(model: CausalLM): void {
  for (const [, layer] of linears(model)) layer.mergeLora();
  for (const [, t] of model.namedParameters()) t.requiresGrad = true;
}

/**
 * The modules holding token rows: the embedding and, when untied, the LM head. A vocabulary grown for
 * OA's tokens has new rows there, which LoRA alone would leave untrained and unsaved.
 */
export function tokenRowModules(model: CausalLM): string[] {
  const out: string[] = [];
  for (const { name, tensor, owner } of model.parameterOwners()) {
    if (owner instanceof Embedding || (tensor === model.lmHeadWeight && owner instanceof Linear))
      out.push(name.replace(/\.weight$/, ""));
  }
  return [...new Set(out)];
}

/**
 * A base model with a PEFT adapter applied: the base's vocabulary first grows to the adapter's when
 * the adapter saved grown token rows (modules_to_save), then the adapter loads. `merge` folds the
 * adapters into the weights (what serving wants); otherwise they stay separate.
 */
export function loadWithAdapter(base: string, adapterDir: string, o: LoadOptions & { merge?: boolean } = {}): CausalLM {
  let model = loadCausalLM(base, o);
  try {
    const header = torch.readSafetensorsHeader(join(adapterDir, ADAPTER_WEIGHTS));
    const rows = Math.max(
      0,
      ...tokenRowModules(model).map((m) => header.entries.get(`${PREFIX}${m}.weight`)?.shape[0] ?? 0),
    );
    if (rows > model.config.vocabSize) model = resizeTokenEmbeddings(model, rows);
    loadAdapter(model, adapterDir);
    if (o.merge) mergeLora(model);
    return model;
  } catch (err) {
    model.dispose();
    throw err;
  }
}

/**
 * A reward model for scoring: a *ForSequenceClassification folder, or a SEQ_CLS LoRA adapter folder
 * (oasft train --stage rm --peft_model) merged into the base its adapter_config.json names.
 */
export function loadRewardModel(dir: string, o: LoadOptions, what = "--reward-model"): CausalLM {
  if (existsSync(join(dir, ADAPTER_CONFIG))) {
    const cfg = readAdapterConfig(dir);
    const file = join(dir, ADAPTER_CONFIG);
    if (cfg.task_type !== "SEQ_CLS") {
      throw new LoraError(
        `${what} ${dir}: a ${cfg.task_type} adapter, not a reward model (${file} › task_type is not SEQ_CLS)`,
      );
    }
    if (!cfg.base_model_name_or_path)
      throw new LoraError(`${file} › base_model_name_or_path: not set; the base model is unknown`);
    const base = resolveModelDir(cfg.base_model_name_or_path, `${file} › base_model_name_or_path`);
    return loadWithAdapter(base, dir, { ...o, merge: true });
  }
  if (!isRewardModelDir(dir)) {
    const why = "config.json's architectures is not *ForSequenceClassification, and it is no SEQ_CLS adapter";
    throw new LoraError(`${what} ${dir}: not a reward model (${why})`);
  }
  return loadCausalLM(dir, { ...o, scoreHead: true });
}
