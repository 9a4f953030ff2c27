// The SFT config: every key with its type, default and meaning in one place (as TRL's SFTConfig),
// composed from OA-style YAML files of named blocks:  --configs defaults bloom-zh-3b datasets
// merges the blocks shallowly in order (a later block's value replaces, lists included), then
// `--key value` flags override, typed by the key. Unknown keys and wrong types are errors naming the
// key, the block and the file.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";
import { editDistance } from "../util/registry.js";
import { MIX_OPTIONS, parseDatasetEntries, type DatasetEntry } from "../data/mix.js";
import { datasetLoader } from "../data/registry.js";

type KeyType = "number" | "integer" | "string" | "boolean" | "list" | "map";

interface KeySpec {
  type: KeyType;
  default: unknown;
  doc: string;
  /** null is a valid value (OA's "not set"). */
  nullable?: boolean;
  /** Values allowed for a string key. */
  choices?: readonly string[];
  /** An OA key that oasft reads but does not act on; setting it away from its default prints a note. */
  unsupported?: string;
  /** Bounds of a number: min/max inclusive, gt/lt exclusive. Checked before any work. */
  range?: { min?: number; max?: number; gt?: number; lt?: number };
}

/** Every key, grouped as OA's `defaults` block, plus oasft's own at the end. */
export const CONFIG_KEYS = {
  // --- model and run ---
  model_name: {
    type: "string",
    default: null,
    nullable: true,
    doc: "model folder (HF layout) to fine-tune, or a config.json for a new model",
  },
  tokenizer_name: {
    type: "string",
    default: null,
    nullable: true,
    doc: "tokenizer.json or folder; default: the model folder's",
  },
  tokenizer_family: {
    type: "string",
    default: null,
    nullable: true,
    doc: "pad/eos/sep family (bloom, pythia, llama, ...); default: matched in model_name, else tokenizer_config.json",
  },
  output_dir: { type: "string", default: "saved_model", doc: "where checkpoints and the final model go" },
  log_dir: { type: "string", default: "base", doc: "run name used in logs" },
  cache_dir: { type: "string", default: ".cache", doc: "base for relative input_file_path values and downloads" },
  rng_seed: {
    type: "integer",
    range: { min: 0 },
    default: 0xa1221f97,
    doc: "seed for data (splits, templates, windows) and initialisation",
  },
  dtype: {
    type: "string",
    default: "fp16",
    choices: ["fp16", "float16", "bf16", "bfloat16", "fp32", "float32"],
    doc: "training precision",
  },
  // --- optimisation ---
  learning_rate: { type: "number", range: { gt: 0 }, default: 1e-5, doc: "peak learning rate" },
  gradient_checkpointing: { type: "boolean", default: false, doc: "recompute each block's activations in backward" },
  gradient_accumulation_steps: {
    type: "integer",
    range: { min: 1 },
    default: 32,
    doc: "micro-batches per optimizer step",
  },
  per_device_train_batch_size: {
    type: "integer",
    range: { min: 1 },
    default: 2,
    doc: "sequences (or packed rows) per micro-batch",
  },
  per_device_eval_batch_size: { type: "integer", range: { min: 1 }, default: 2, doc: "sequences per evaluation batch" },
  adam_beta1: { type: "number", range: { min: 0, lt: 1 }, default: 0.9, doc: "AdamW β1" },
  adam_beta2: { type: "number", range: { min: 0, lt: 1 }, default: 0.95, doc: "AdamW β2" },
  adam_epsilon: { type: "number", range: { min: 0 }, default: 1e-12, doc: "AdamW ε" },
  weight_decay: {
    type: "number",
    range: { min: 0 },
    default: 0.0,
    doc: "decoupled weight decay (not on biases and LayerNorm weights)",
  },
  warmup_steps: { type: "integer", range: { min: 0 }, default: 600, doc: "linear warmup steps" },
  max_grad_norm: { type: "number", range: { min: 0 }, default: 2.0, doc: "global gradient-norm clip" },
  num_train_epochs: { type: "number", range: { gt: 0 }, default: 3, doc: "epochs (max_steps wins when set)" },
  max_steps: {
    type: "integer",
    range: { min: 1 },
    default: null,
    nullable: true,
    doc: "stop after this many optimizer steps",
  },
  lr_scheduler_type: {
    type: "string",
    default: "linear",
    choices: ["linear", "cosine", "constant"],
    doc: "decay after warmup",
  },
  loss_fn: {
    type: "string",
    default: "CrossEntropyLoss",
    choices: ["CrossEntropyLoss"],
    doc: "training loss (OA's Poly loss is not supported)",
  },
  loss_normalization: {
    type: "string",
    default: "tokens",
    choices: ["tokens", "micro_batch"],
    doc: "accumulated loss: mean over all trained tokens of the step, or OA's mean of per-micro-batch means",
  },
  device: { type: "string", default: "auto", doc: "cpu, cuda, cuda:N, or auto (cuda when available)" },
  resume_from_checkpoint: {
    type: "string",
    default: null,
    nullable: true,
    doc: 'a checkpoint folder, or "latest" in output_dir',
  },
  overwrite_output_dir: {
    type: "boolean",
    default: false,
    doc: "start a new run in an output_dir that holds another run (its checkpoints, log and summary are removed first)",
  },
  threads: {
    type: "integer",
    range: { min: 1 },
    default: null,
    nullable: true,
    doc: "CPU threads for libtorch (default: OMP_NUM_THREADS, else the CPUs this process may use)",
  },
  // --- many processes (see `oasft train --nproc_per_node`) ---
  zero_stage: {
    type: "integer",
    range: { min: 0, max: 3 },
    default: null,
    nullable: true,
    doc: "ZeRO sharding across ranks: 0 none, 1 optimizer state, 2 + gradients, 3 + parameters (default: the DeepSpeed JSON's zero_optimization.stage with --deepspeed, else 0)",
  },
  dist_backend: {
    type: "string",
    default: "auto",
    choices: ["auto", "gloo", "nccl"],
    doc: "c10d backend (auto: nccl on CUDA, gloo on CPU)",
  },
  dist_timeout: {
    type: "number",
    range: { gt: 0 },
    default: 600,
    doc: "seconds any rendezvous or collective may wait for a peer before the run fails",
  },
  // --- evaluation, logging, saving ---
  eval_steps: { type: "integer", range: { min: 1 }, default: 200, doc: "evaluate every N optimizer steps" },
  eval_size: {
    type: "integer",
    range: { min: 1 },
    default: null,
    nullable: true,
    doc: "cut each validation set to its first N samples",
  },
  eval_accumulation_steps: {
    type: "integer",
    default: null,
    nullable: true,
    unsupported: "evaluation sums on the device in one pass",
    doc: "(HF Trainer) move eval outputs to the CPU every N steps",
  },
  logging_steps: { type: "integer", range: { min: 1 }, default: 10, doc: "log every N optimizer steps" },
  save_strategy: {
    type: "string",
    default: "steps",
    choices: ["steps", "epoch", "no"],
    doc: "when to save checkpoints",
  },
  save_steps: { type: "integer", range: { min: 1 }, default: 1000, doc: "save every N optimizer steps" },
  save_total_limit: { type: "integer", range: { min: 0 }, default: 4, doc: "keep at most N checkpoints" },
  // --- data and formatting ---
  datasets: { type: "list", default: [], doc: "the dataset mix: names or {name: {options}}" },
  datasets_extra: { type: "list", default: [], doc: "appended to datasets (YAML cannot extend a list)" },
  max_length: { type: "integer", range: { min: 2 }, default: 512, doc: "training sequence length in tokens" },
  val_max_length: {
    type: "integer",
    range: { min: 2 },
    default: null,
    nullable: true,
    doc: "evaluation sequence length (default max_length)",
  },
  random_offset_probability: {
    type: "number",
    range: { min: 0, max: 1 },
    default: 0.8,
    doc: "chance that an over-long sample is cut to a random window instead of its head",
  },
  label_masking: { type: "boolean", default: true, doc: "train on assistant tokens only" },
  train_on_preamble: {
    type: "boolean",
    default: false,
    doc: "also train tokens before the first role token (OA does, via Python's -1 % 2 == 1)",
  },
  chat_template: {
    type: "string",
    default: "oa",
    doc: "the chat format trained in, and saved with the model: oa (OA's, the card's), model (the model's tokenizer_config.json chat_template) or a .jinja file",
  },
  format_version: {
    type: "string",
    default: "head",
    choices: ["head", "may2023"],
    doc: "OA's final formatting, or the May-2023 one the card likely used",
  },
  use_system_prefix: { type: "boolean", default: false, doc: "prepend system_prefix (untrained) to every sample" },
  system_prefix: {
    type: "string",
    default:
      "You are Joi, a large language model trained by Open-Assistant. Answer as concisely as possible.\nKnowledge cutoff: 2021-09-01\nCurrent date: 2023-03-12",
    doc: "the global system prefix",
  },
  use_system_tag: {
    type: "boolean",
    default: false,
    doc: "add the reply's properties as a system tag after each prompt",
  },
  system_property_dropout: {
    type: "number",
    range: { min: 0, max: 1 },
    default: 0.5,
    doc: "chance of dropping each system-tag property",
  },
  system_add_length: { type: "boolean", default: false, doc: "add the reply's length to the system tag" },
  packing: {
    type: "boolean",
    default: false,
    doc: "pack samples into rows (no attention across samples); a micro-batch holds per_device_train_batch_size × max_length token slots",
  },
  packing_row_length: {
    type: "integer",
    range: { min: 2 },
    default: null,
    nullable: true,
    doc: "packed row width; default: the 90th-percentile sample length rounded up to a power of two (longer samples get full rows)",
  },
  samples_mixing: {
    type: "boolean",
    default: false,
    unsupported: "OA's random concatenation without attention separation; use packing",
    doc: "OA's short-sample mixing",
  },
  use_custom_sampler: {
    type: "boolean",
    default: false,
    doc: "(OA) per-dataset fraction/size sampling; oasft applies fraction/size whenever they are set",
  },
  sort_by_length: {
    type: "boolean",
    default: false,
    unsupported: "length-sorted sampling is not implemented",
    doc: "(OA custom sampler) sort by length",
  },
  per_digit_tokens: {
    type: "boolean",
    default: false,
    unsupported: "OA's version sets a wrong attribute and has no effect",
    doc: "split numbers into digits",
  },
  // --- what is optimised: SFT, or learning from ranked replies (src/pref) ---
  stage: {
    type: "string",
    default: "sft",
    choices: ["sft", "rm", "dpo"],
    doc: "sft (the LM loss on assistant tokens), rm (a reward model: OA's ranking loss over ranked replies) or dpo (Direct Preference Optimization); rm and dpo read oasst_export's rankings, preference_pairs files",
  },
  score_l2_reg: {
    type: "number",
    range: { min: 0 },
    default: 0.001,
    doc: "stage rm: OA's L2 penalty on the rewards, ½·λ·(r_i² + r_j²) per pair",
  },
  beta: {
    type: "number",
    range: { gt: 0 },
    default: 0.1,
    doc: "DPO's β: how far the policy may move from the reference",
  },
  dpo_loss: {
    type: "string",
    default: "sigmoid",
    choices: ["sigmoid", "ipo"],
    doc: "DPO's loss: sigmoid (the paper's) or ipo (on per-token mean log-probabilities, as TRL)",
  },
  ref_model: {
    type: "string",
    default: null,
    nullable: true,
    doc: "stage dpo: the reference model's folder (same tokenizer); default: the starting model (with LoRA: the base, adapters off)",
  },
  rpo_alpha: {
    type: "number",
    range: { min: 0 },
    default: null,
    nullable: true,
    doc: "weight of an added SFT loss on the chosen replies (TRL's RPO); null for none",
  },
  max_replies: {
    type: "integer",
    range: { min: 2 },
    default: 5,
    doc: "ranked replies kept per oasst group, best first (OA's max_replies); DPO trains on every better/worse pair among them",
  },
  max_prompt_length: {
    type: "integer",
    range: { min: 1 },
    default: null,
    nullable: true,
    doc: "preference stages: a pair longer than max_length keeps this many prompt tokens (its last), then the replies are cut (default max_length / 2)",
  },
  // --- model patches and features oasft does not implement ---
  int8_training: { type: "boolean", default: false, unsupported: "8-bit weights", doc: "(OA) int8 PEFT training" },
  quantization: {
    type: "boolean",
    default: false,
    unsupported: "bitsandbytes 8-bit AdamW",
    doc: "(OA) 8-bit optimizer",
  },
  seq2seqmodel: { type: "boolean", default: false, unsupported: "encoder-decoder models", doc: "(OA) seq2seq models" },
  poly_eps: {
    type: "number",
    default: 1.0,
    unsupported: "only CrossEntropyLoss is implemented",
    doc: "(OA) Poly loss ε",
  },
  fuse_gelu: {
    type: "boolean",
    default: true,
    unsupported: "the GELU kernels are libtorch's fused ones already",
    doc: "(OA) tanh-GELU fusion",
  },
  log_wandb: {
    type: "boolean",
    default: true,
    doc: "(OA) wandb logging; oasft writes log.jsonl and training.svg instead (nothing is sent anywhere)",
  },
  verbose: {
    type: "boolean",
    default: false,
    unsupported: "`oasft data stats` prints the dataset statistics",
    doc: "(OA) print dataset statistics",
  },
  freeze_layer: {
    type: "integer",
    range: { min: 0 },
    default: null,
    nullable: true,
    unsupported: "layer freezing",
    doc: "(OA) freeze embeddings and the first N layers",
  },
  residual_dropout: {
    type: "number",
    range: { min: 0, max: 1 },
    default: 0.0,
    unsupported: "residual dropout (OA patches NeoX/LLaMA/Falcon only)",
    doc: "(OA) residual dropout",
  },
  residual_dropout_lima: {
    type: "boolean",
    default: false,
    unsupported: "LIMA dropout",
    doc: "(OA) LIMA-style dropout",
  },
  use_flash_attention: {
    type: "boolean",
    default: false,
    unsupported: "flash attention (OA patches NeoX/LLaMA/Falcon only)",
    doc: "(OA) flash attention",
  },
  is_reward_model: { type: "boolean", default: false, unsupported: "set stage: rm", doc: "(OA) RM training" },
  deepspeed: {
    type: "boolean",
    default: false,
    doc: "read deepspeed_config (precision, clipping, accumulation, AdamW, WarmupDecayLR), as OA's --deepspeed",
  },
  deepspeed_config: {
    type: "string",
    default: "configs/zero_config.json",
    doc: "DeepSpeed JSON (fp16/bf16, clipping, scheduler) read by the trainer",
  },
  peft_model: {
    type: "boolean",
    default: false,
    doc: "train LoRA adapters on the frozen model; saves PEFT's adapter files",
  },
  peft_type: { type: "string", default: "lora", choices: ["lora"], doc: "(OA) the PEFT method: LoRA" },
  peft_config: {
    type: "map",
    default: null,
    nullable: true,
    doc: "LoRA settings: r (16), lora_alpha (32), lora_dropout (0.05), target_modules (per architecture), bias (none), modules_to_save",
  },
  superhot: {
    type: "boolean",
    default: false,
    unsupported: "OA's SuperHOT RoPE patch (set rope_scaling in the model's config.json instead)",
    doc: "(OA) RoPE scaling",
  },
} as const satisfies Record<string, KeySpec>;

export type ConfigKey = keyof typeof CONFIG_KEYS;

/** The TypeScript type of one key's value, read from its spec (type, choices, nullable). */
type ValueOf<S> =
  | (S extends { type: "number" | "integer" }
      ? number
      : S extends { type: "boolean" }
        ? boolean
        : S extends { type: "list" }
          ? unknown[]
          : S extends { type: "map" }
            ? Record<string, unknown>
            : S extends { choices: readonly (infer C)[] }
              ? C
              : string)
  | (S extends { nullable: true } ? null : never);

/** The effective config: every key of CONFIG_KEYS, typed from its entry there (the one key table). */
export type SFTConfig = { -readonly [K in ConfigKey]: ValueOf<(typeof CONFIG_KEYS)[K]> };

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

const SPECS = CONFIG_KEYS as Record<string, KeySpec>;

/** The package's own configs/ folder. */
export const BUILTIN_CONFIG_DIR = resolve(fileURLToPath(import.meta.url), "../../../../configs");

export interface ConfigBlock {
  values: Record<string, unknown>;
  file: string;
}

/**
 * Every named block of every *.yaml file in the folders (the built-in configs/ first, then the
 * working folder's configs/ when it exists). A name defined twice in one folder is an error; a
 * user's block replaces a built-in one of the same name.
 */
export function readConfigBlocks(dirs: string[] = defaultConfigDirs()): Map<string, ConfigBlock> {
  const blocks = new Map<string, ConfigBlock>();
  for (const dir of dirs) {
    if (!existsSync(dir)) throw new ConfigError(`config folder ${dir} not found`);
    const inDir = new Map<string, string>();
    for (const name of readdirSync(dir)
      .filter((f) => /\.ya?ml$/.test(f))
      .sort()) {
      const file = join(dir, name);
      let doc: unknown;
      try {
        doc = parseYaml(readFileSync(file, "utf8"));
      } catch (err) {
        throw new ConfigError(`${file}: not valid YAML (${(err as Error).message})`);
      }
      if (doc === null || doc === undefined) continue;
      if (typeof doc !== "object" || Array.isArray(doc))
        throw new ConfigError(`${file}: expected named blocks at the top level (name: {key: value})`);
      for (const [block, values] of Object.entries(doc as Record<string, unknown>)) {
        if (!values || typeof values !== "object" || Array.isArray(values))
          throw new ConfigError(`${file}: block '${block}' must be a map of keys`);
        if (inDir.has(block))
          throw new ConfigError(`block '${block}' is defined in both ${inDir.get(block)} and ${file}`);
        inDir.set(block, file);
        blocks.set(block, { values: values as Record<string, unknown>, file });
      }
    }
  }
  return blocks;
}

export function defaultConfigDirs(): string[] {
  const local = resolve("configs");
  return existsSync(local) && local !== BUILTIN_CONFIG_DIR ? [BUILTIN_CONFIG_DIR, local] : [BUILTIN_CONFIG_DIR];
}

/** A value checked against its key's type; numbers written as strings ("1e-5", PyYAML's habit) become numbers. */
export function coerceValue(key: string, value: unknown, where: string): unknown {
  const spec = SPECS[key];
  if (!spec) {
    const close = Object.keys(SPECS).filter((k) => k.includes(key) || key.includes(k) || editDistance(k, key) <= 2);
    throw new ConfigError(
      `${where}: unknown key '${key}'.${close.length ? ` Did you mean: ${close.join(", ")}?` : ""}`,
    );
  }
  if (value === null) {
    if (spec.nullable) return null;
    throw new ConfigError(`${where}: key '${key}' cannot be null (expected ${spec.type})`);
  }
  const bad = () =>
    new ConfigError(
      `${where}: key '${key}' expects ${spec.type}${spec.choices ? ` (one of ${spec.choices.join(", ")})` : ""}, got ${JSON.stringify(value)}`,
    );
  switch (spec.type) {
    case "number":
    case "integer": {
      const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
      if (typeof n !== "number" || !Number.isFinite(n) || (spec.type === "integer" && !Number.isInteger(n)))
        throw bad();
      const r = spec.range;
      const broken =
        r &&
        ((r.min !== undefined && n < r.min) ||
          (r.max !== undefined && n > r.max) ||
          (r.gt !== undefined && n <= r.gt) ||
          (r.lt !== undefined && n >= r.lt));
      if (broken) throw new ConfigError(`${where}: key '${key}' must be ${describeRange(r)}, got ${n}`);
      return n;
    }
    case "boolean":
      if (typeof value === "boolean") return value;
      if (typeof value === "string" && /^(true|yes|1|false|no|0)$/i.test(value)) return /^(true|yes|1)$/i.test(value);
      throw bad();
    case "string":
      if (typeof value !== "string" && typeof value !== "number") throw bad();
      if (spec.choices && !spec.choices.includes(String(value))) throw bad();
      return String(value);
    case "list":
      if (!Array.isArray(value)) throw bad();
      return value;
    case "map":
      if (!value || typeof value !== "object" || Array.isArray(value)) throw bad();
      return value;
  }
}

/** "≥ 1", "> 0", "in [0, 1]", "in [0, 1)" */
function describeRange(r: NonNullable<KeySpec["range"]>): string {
  const low =
    r.min !== undefined ? { v: r.min, open: false } : r.gt !== undefined ? { v: r.gt, open: true } : undefined;
  const high =
    r.max !== undefined ? { v: r.max, open: false } : r.lt !== undefined ? { v: r.lt, open: true } : undefined;
  if (low && high) return `in ${low.open ? "(" : "["}${low.v}, ${high.v}${high.open ? ")" : "]"}`;
  if (low) return `${low.open ? ">" : "≥"} ${low.v}`;
  return `${high!.open ? "<" : "≤"} ${high!.v}`;
}

export interface ComposedConfig {
  config: SFTConfig;
  /** For each key, where its value came from ("default", "block X (file)", "--flag"). */
  origin: Record<string, string>;
  /** Notes on set keys oasft does not act on. */
  notes: string[];
}

/**
 * OA's composition: defaults, then each named block in order (comma lists allowed), then flags
 * `--key value` / `--key=value` / `--no-key` (null). Returns the effective config.
 */
export function composeConfig(names: string[], flags: string[] = [], blocks = readConfigBlocks()): ComposedConfig {
  const config: Record<string, unknown> = {};
  const origin: Record<string, string> = {};
  // Every problem is collected and reported at once, so that one run shows all the typos.
  const errors: string[] = [];
  const set = (key: string, value: unknown, where: string, from: string) => {
    try {
      config[key] = coerceValue(key, value, where);
      origin[key] = from;
    } catch (err) {
      errors.push((err as Error).message);
    }
  };
  for (const [k, spec] of Object.entries(SPECS)) {
    config[k] = spec.default;
    origin[k] = "default";
  }
  for (const name of names
    .flatMap((n) => n.split(","))
    .map((n) => n.trim())
    .filter(Boolean)) {
    const block = blocks.get(name);
    if (!block) {
      errors.push(`config block '${name}' not found; known blocks: ${[...blocks.keys()].sort().join(", ")}`);
      continue;
    }
    for (const [k, v] of Object.entries(block.values))
      set(k, v, `${block.file} › ${name}`, `block ${name} (${block.file})`);
  }
  for (let i = 0; i < flags.length; i++) {
    const flag = flags[i]!;
    if (!flag.startsWith("--")) {
      errors.push(`unexpected argument '${flag}' (config overrides are --key value)`);
      continue;
    }
    const eq = flag.indexOf("=");
    let key = (eq >= 0 ? flag.slice(2, eq) : flag.slice(2)).replaceAll("-", "_");
    if (key.startsWith("no_") && !(key in SPECS) && key.slice(3) in SPECS && eq < 0) {
      key = key.slice(3);
      set(key, null, `--no-${key}`, `--no-${key}`);
      continue;
    }
    const spec = SPECS[key];
    let raw: string | undefined = eq >= 0 ? flag.slice(eq + 1) : flags[i + 1];
    if (spec?.type === "boolean" && eq < 0 && (raw === undefined || raw.startsWith("--"))) raw = "true";
    else if (eq < 0) i++;
    if (raw === undefined) {
      errors.push(`--${key}: missing value`);
      continue;
    }
    let value: unknown = raw;
    if (spec?.type === "list" || spec?.type === "map") {
      try {
        value = parseYaml(raw);
      } catch {
        errors.push(`--${key}: expected a YAML/JSON ${spec.type}, got '${raw}'`);
        continue;
      }
    }
    set(key, value, `--${key}`, `--${key}`);
  }
  errors.push(...nestedProblems(config, origin));
  if (errors.length)
    throw new ConfigError(
      errors.length === 1 ? errors[0]! : `${errors.length} problems in the config:\n  ${errors.join("\n  ")}`,
    );
  const notes = Object.entries(SPECS)
    .filter(([k, spec]) => spec.unsupported && JSON.stringify(config[k]) !== JSON.stringify(spec.default))
    .map(
      ([k, spec]) =>
        `${k} = ${JSON.stringify(config[k])} is ignored by oasft: ${spec.unsupported} (set in ${origin[k]})`,
    );
  return { config: config as SFTConfig, origin, notes };
}

/** The keys of a peft_config block (PEFT's LoraConfig fields oasft reads). */
export const PEFT_CONFIG_KEYS = [
  "r",
  "lora_alpha",
  "lora_dropout",
  "target_modules",
  "bias",
  "modules_to_save",
  "task_type",
  "peft_type",
];

/**
 * Problems one level down, found with the top level's, so that one run shows every typo: unknown
 * peft_config keys, unknown dataset names and every unknown option of every dataset entry.
 */
function nestedProblems(config: Record<string, unknown>, origin: Record<string, string>): string[] {
  const problems: string[] = [];
  const peft = config.peft_config as Record<string, unknown> | null;
  const badPeft = Object.keys(peft ?? {}).filter((k) => !PEFT_CONFIG_KEYS.includes(k));
  if (badPeft.length) {
    const known = PEFT_CONFIG_KEYS.filter((k) => k !== "peft_type").join(", ");
    problems.push(`peft_config (${origin.peft_config}): unknown key(s) ${badPeft.join(", ")}; expected ${known}`);
  }
  for (const key of ["datasets", "datasets_extra"] as const) {
    let entries: DatasetEntry[];
    try {
      entries = parseDatasetEntries(config[key], key);
    } catch (err) {
      problems.push((err as Error).message);
      continue;
    }
    for (const entry of entries) {
      let loader;
      try {
        loader = datasetLoader(entry.name);
      } catch (err) {
        problems.push(`${key} (${origin[key]}): ${(err as Error).message}`);
        continue;
      }
      const allowed = { ...loader.options, ...MIX_OPTIONS };
      const unknown = Object.keys(entry.options).filter((k) => !(k in allowed));
      if (unknown.length) {
        const known = Object.keys(allowed).sort().join(", ");
        problems.push(
          `dataset ${entry.name} (${origin[key]}): unknown option(s) ${unknown.join(", ")}. Known options: ${known}`,
        );
      }
    }
  }
  return problems;
}

/**
 * Every key as help text, grouped as the table: `--key <type> (default: value)  meaning`, plus what
 * the key's range or choices are, and a mark on keys oasft accepts but does not act on.
 */
export function configKeysHelp(): string {
  const rows = Object.entries(SPECS).map(([key, spec]) => {
    const type = spec.choices ? spec.choices.join("|") : spec.type;
    const bounds = spec.range ? ` ${describeRange(spec.range)}` : "";
    const value =
      typeof spec.default === "string" && spec.default.length > 40
        ? `"${spec.default.slice(0, 37)}..."`
        : JSON.stringify(spec.default);
    const note = spec.unsupported ? ` [accepted, not acted on: ${spec.unsupported}]` : "";
    return { flag: `--${key} <${type}${bounds}>`, text: `${spec.doc} (default ${value})${note}` };
  });
  const width = Math.min(48, Math.max(...rows.map((r) => r.flag.length)));
  return rows.map((r) => `  ${r.flag.padEnd(width)}  ${r.text}`).join("\n");
}

/** Splits argv into `--configs a b c` names and the remaining override flags. */
export function splitConfigArgs(argv: string[]): { names: string[]; rest: string[] } {
  const names: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--configs") {
      while (i + 1 < argv.length && !argv[i + 1]!.startsWith("--")) names.push(argv[++i]!);
    } else rest.push(argv[i]!);
  }
  return { names, rest };
}
