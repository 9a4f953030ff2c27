// The config keys of how a model is trained (optim, parallel, run, lora, pref, and OA's keys oasft
// does not act on), and every group in the help's order; config-keys.ts has the model, data and format.
import { DATA_KEYS, FORMAT_KEYS, MODEL_KEYS, type KeySpec } from "./config-keys.js";

/**
 * The optimisation: AdamW, the schedule, batch and accumulation, the loss, and DeepSpeed's JSON (read as OA reads it).
 */
export const OPTIM_KEYS = {
  learning_rate: { type: "number", range: { gt: 0 }, default: 1e-5, doc: "peak learning rate" },
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
} as const satisfies Record<string, KeySpec>;

/** Many processes (oasft train --nproc_per_node): ZeRO stage, backend and timeout. */
export const PARALLEL_KEYS = {
  zero_stage: {
    type: "integer",
    range: { min: 0, max: 3 },
    default: null,
    nullable: true,
    doc:
      "ZeRO sharding across ranks: 0 none, 1 optimizer state, 2 + gradients, 3 + parameters (default: the " +
      "DeepSpeed JSON's zero_optimization.stage with --deepspeed, else 0)",
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
} as const satisfies Record<string, KeySpec>;

/** The run: where it writes, when it evaluates, logs and saves, and where it resumes. */
export const RUN_KEYS = {
  output_dir: { type: "string", default: "saved_model", doc: "where checkpoints and the final model go" },
  log_dir: { type: "string", default: "base", doc: "run name used in logs" },
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
  eval_steps: { type: "integer", range: { min: 1 }, default: 200, doc: "evaluate every N optimizer steps" },
  eval_accumulation_steps: {
    type: "integer",
    default: null,
    nullable: true,
    unsupported: "evaluation sums on the device in one pass",
    doc: "(HF Trainer) move eval outputs to the CPU every N steps",
  },
  per_device_eval_batch_size: { type: "integer", range: { min: 1 }, default: 2, doc: "sequences per evaluation batch" },
  logging_steps: { type: "integer", range: { min: 1 }, default: 10, doc: "log every N optimizer steps" },
  save_strategy: {
    type: "string",
    default: "steps",
    choices: ["steps", "epoch", "no"],
    doc: "when to save checkpoints",
  },
  save_steps: { type: "integer", range: { min: 1 }, default: 1000, doc: "save every N optimizer steps" },
  save_total_limit: { type: "integer", range: { min: 0 }, default: 4, doc: "keep at most N checkpoints" },
} as const satisfies Record<string, KeySpec>;

/** LoRA adapters on a frozen model (PEFT's settings). */
export const LORA_KEYS = {
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
    doc:
      "LoRA settings: r (16), lora_alpha (32), lora_dropout (0.05), target_modules (per architecture), bias " +
      "(none), modules_to_save",
  },
} as const satisfies Record<string, KeySpec>;

/** What is optimised: SFT, or learning from ranked replies (reward models, DPO; src/pref). */
export const PREF_KEYS = {
  stage: {
    type: "string",
    default: "sft",
    choices: ["sft", "rm", "dpo"],
    doc:
      "sft (the LM loss on assistant tokens), rm (a reward model: OA's ranking loss over ranked replies) or " +
      "dpo (Direct Preference Optimization); rm and dpo read oasst_export's rankings, preference_pairs files",
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
    doc:
      "stage dpo: the reference model's folder (same tokenizer); default: the starting model (with LoRA: the " +
      "base, adapters off)",
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
    doc:
      "ranked replies kept per oasst group, best first (OA's max_replies); DPO trains on every better/worse " +
      "pair among them",
  },
  max_prompt_length: {
    type: "integer",
    range: { min: 1 },
    default: null,
    nullable: true,
    doc:
      "preference stages: a pair longer than max_length keeps this many prompt tokens (its last), then the " +
      "replies are cut (default max_length / 2)",
  },
} as const satisfies Record<string, KeySpec>;

/**
 * OA keys for model patches and features oasft does not implement: read, and noted when set away from their defaults.
 */
export const OA_KEYS = {
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
  superhot: {
    type: "boolean",
    default: false,
    unsupported: "OA's SuperHOT RoPE patch (set rope_scaling in the model's config.json instead)",
    doc: "(OA) RoPE scaling",
  },
} as const satisfies Record<string, KeySpec>;

/** The groups, in the order the help lists them. */
export const KEY_GROUPS = {
  model: MODEL_KEYS,
  data: DATA_KEYS,
  format: FORMAT_KEYS,
  optim: OPTIM_KEYS,
  parallel: PARALLEL_KEYS,
  run: RUN_KEYS,
  lora: LORA_KEYS,
  pref: PREF_KEYS,
  oa: OA_KEYS,
} as const;
