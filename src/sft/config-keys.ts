// The config key table, one table per group: each key with its type, default, range and meaning (as
// TRL's configs document theirs). This file: what is trained (model, data, format);
// config-keys-train.ts: how (optim, parallel, run, lora, pref, and OA's keys oasft does not act on).
// config.ts composes them into the one flat table OA's YAML uses; components type what they read
// with the groups they need (Settings<"optim" | "model">).

export type KeyType = "number" | "integer" | "string" | "boolean" | "list" | "map";

export interface KeySpec {
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

/** The model and where it runs: what is fine-tuned, its tokenizer, precision, device and threads. */
export const MODEL_KEYS = {
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
  dtype: {
    type: "string",
    default: "fp16",
    choices: ["fp16", "float16", "bf16", "bfloat16", "fp32", "float32"],
    doc: "training precision",
  },
  device: { type: "string", default: "auto", doc: "cpu, cuda, cuda:N, or auto (cuda when available)" },
  threads: {
    type: "integer",
    range: { min: 1 },
    default: null,
    nullable: true,
    doc: "CPU threads for libtorch (default: OMP_NUM_THREADS, else the CPUs this process may use)",
  },
  gradient_checkpointing: { type: "boolean", default: false, doc: "recompute each block's activations in backward" },
} as const satisfies Record<string, KeySpec>;

/**
 * The data mix: datasets (OA's entries), where files are found, the held-out size, and the seed of splits and windows.
 */
export const DATA_KEYS = {
  datasets: { type: "list", default: [], doc: "the dataset mix: names or {name: {options}}" },
  datasets_extra: { type: "list", default: [], doc: "appended to datasets (YAML cannot extend a list)" },
  cache_dir: { type: "string", default: ".cache", doc: "base for relative input_file_path values and downloads" },
  eval_size: {
    type: "integer",
    range: { min: 1 },
    default: null,
    nullable: true,
    doc: "cut each validation set to its first N samples",
  },
  rng_seed: {
    type: "integer",
    range: { min: 0 },
    default: 0xa1221f97,
    doc: "seed for data (splits, templates, windows) and initialisation",
  },
} as const satisfies Record<string, KeySpec>;

/** How a conversation becomes tokens: OA's format or a chat template, system prefixes, masks, lengths and packing. */
export const FORMAT_KEYS = {
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
    doc:
      "the chat format trained in, and saved with the model: oa (OA's, the card's), model (the model's " +
      "tokenizer_config.json chat_template) or a .jinja file",
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
      "You are Joi, a large language model trained by Open-Assistant. Answer as concisely as possible.\nKnowledge " +
      "cutoff: 2021-09-01\nCurrent date: 2023-03-12",
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
    doc:
      "pack samples into rows (no attention across samples); a micro-batch holds per_device_train_batch_size × " +
      "max_length token slots",
  },
  packing_row_length: {
    type: "integer",
    range: { min: 2 },
    default: null,
    nullable: true,
    doc:
      "packed row width; default: the 90th-percentile sample length rounded up to a power of two (longer " +
      "samples get full rows)",
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
} as const satisfies Record<string, KeySpec>;
