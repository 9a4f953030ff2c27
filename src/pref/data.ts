// Preference data of a config (stages rm and dpo): each dataset's ranked groups (OA's oasst reward-model
// threads, a user's chosen/rejected pairs), split into train/validation by group, rendered in the chat
// template SFT trains in, the last reply's tokens marked as the only trained ones, cut as TRL cuts
// pairs (the prompt loses its head first, the replies are kept), then grouped for the stage: DPO
// trains on pairs (every better/worse pair of a group), a reward model on whole groups.
import { capItems, epochIndices, randomSplit, parseDatasetEntries, type DatasetEntry } from "../data/mix.js";
import { datasetLoader } from "../data/registry.js";
import { optNumber, type RankedGroup } from "../data/dataset.js";
import { DataError } from "../data/io.js";
import { Rng } from "../data/rng.js";
import { composeConfig, ConfigError, type Settings } from "../sft/config.js";
import type { CausalLM } from "../models/index.js";
import { encodeConversations } from "../sft/data.js";
import type { EncodedSample } from "../sft/encode.js";
import { ChatTemplateError, type ChatTokenizer } from "../tokenizer/index.js";

/** Candidates of one unit, best first: a pair (DPO) or a group of up to max_replies (reward model). */
export interface PrefUnit {
  candidates: EncodedSample[];
  where: string;
  /** DPO: each candidate's reply log-probability under the reference model (filled before training). */
  ref?: number[];
}

export interface PrefDataset {
  name: string;
  train: PrefUnit[];
  val: PrefUnit[];
  dropped: Record<string, number>;
  files: string[];
  fraction?: number;
  size?: number;
}

export interface PrefData {
  tokenizer: ChatTokenizer;
  datasets: PrefDataset[];
  /** Units whose prompt or replies were cut to max_length. */
  truncated: number;
}

export type PrefStage = "rm" | "dpo";

/**
 * The micro-batches of one epoch, deterministic for (seed, epoch): the datasets' training units in the
 * epoch's order (fraction/size subsets as SFT's), `size` units per micro-batch, built by `batch`.
 */
export function unitBatches<B>(
  data: PrefData,
  seed: number,
  size: number,
  epoch: number,
  batch: (units: PrefUnit[]) => B,
): B[] {
  const order = epochIndices(data.datasets, epoch, seed);
  const out: B[] = [];
  for (let i = 0; i < order.length; i += size) {
    out.push(batch(order.slice(i, i + size).map(([d, k]) => data.datasets[d]!.train[k]!)));
  }
  return out;
}

/** The mask's last run of trained positions: the last reply (earlier assistant turns are context). */
function lastReplyOnly(mask: boolean[]): { mask: boolean[]; promptLength: number } {
  let end = mask.length - 1;
  while (end >= 0 && !mask[end]) end--;
  let start = end;
  while (start > 0 && mask[start - 1]) start--;
  // Position t predicts token t + 1: the reply's first token is at start + 1.
  return { mask: mask.map((m, t) => m && t >= start && end >= 0), promptLength: start + 1 };
}

/**
 * TRL's rule for a unit longer than max_length: the prompt keeps its last max_prompt_length tokens,
 * then each reply keeps what fits after it. Returns the samples and whether anything was cut.
 */
function truncateUnit(
  parts: Array<{ ids: number[]; mask: boolean[]; promptLength: number }>,
  maxLength: number,
  maxPrompt: number,
): { samples: EncodedSample[]; cut: boolean } {
  const longest = Math.max(...parts.map((p) => p.ids.length - p.promptLength));
  const cut = parts.some((p) => p.promptLength + longest > maxLength);
  const samples = parts.map((p) => {
    if (!cut) return { inputIds: p.ids, labelMask: p.mask };
    const from = Math.max(0, p.promptLength - Math.min(p.promptLength, maxPrompt));
    const inputIds = p.ids.slice(from, from + maxLength);
    const labelMask = p.mask.slice(from, from + maxLength);
    labelMask[labelMask.length - 1] = false; // the last position predicts nothing
    return { inputIds, labelMask };
  });
  return { samples, cut };
}

/** Encodes groups in the run's chat template; every candidate must keep a trained reply token. */
async function encodeGroups(
  groups: RankedGroup[],
  tok: ChatTokenizer,
  cfg: Settings<"data" | "format" | "pref">,
  label: string,
  counts: { truncated: number },
): Promise<PrefUnit[]> {
  const flat = groups.flatMap((g) => g.candidates);
  const rng = new Rng(cfg.rng_seed, `${label}/format`);
  let encoded;
  try {
    encoded = await encodeConversations(flat, tok, { ...cfg, label_masking: true }, rng, label);
  } catch (err) {
    if (err instanceof ChatTemplateError) throw new DataError(label, err.message);
    throw err;
  }
  const maxPrompt = cfg.max_prompt_length ?? Math.floor(cfg.max_length / 2);
  let k = 0;
  return groups.map((g) => {
    const parts = g.candidates.map(() => {
      const e = encoded[k++]!;
      return { ids: e.ids, ...lastReplyOnly(e.mask) };
    });
    const { samples, cut } = truncateUnit(parts, cfg.max_length, maxPrompt);
    if (cut) counts.truncated++;
    samples.forEach((s, i) => {
      if (!s.labelMask.some(Boolean)) {
        const why = `no reply token survives (empty reply, or max_length ${cfg.max_length} too small)`;
        throw new DataError(g.where, `candidate ${i}: ${why}`);
      }
    });
    return { candidates: samples, where: g.where };
  });
}

/**
 * Ranked groups as units for scoring with a trained reward model: in its tokenizer's chat template, with
 * the default settings, cut to the model's length (its positions, else the tokenizer's, else 2,048).
 */
export async function encodeForScoring(
  groups: RankedGroup[],
  model: CausalLM,
  tok: ChatTokenizer,
  label: string,
): Promise<PrefUnit[]> {
  const maxLength = model.config.maxPositions ?? tok.modelMaxLength ?? 2048;
  const cfg = { ...composeConfig([], []).config, max_length: maxLength };
  const kept = groups.map((g) => ({ ...g, candidates: g.candidates.slice(0, cfg.max_replies) }));
  return encodeGroups(kept, tok, cfg, label, { truncated: 0 });
}

/** DPO's pairs of a group: every (better, worse) pair among its first max_replies replies. */
function pairsOf(unit: PrefUnit): PrefUnit[] {
  const out: PrefUnit[] = [];
  for (let i = 0; i < unit.candidates.length; i++) {
    for (let j = i + 1; j < unit.candidates.length; j++) {
      const where = `${unit.where} (replies ${i} > ${j})`;
      out.push({ candidates: [unit.candidates[i]!, unit.candidates[j]!], where });
    }
  }
  return out;
}

async function loadEntry(entry: DatasetEntry, cfg: Settings<"data" | "format" | "pref">, label: string) {
  const loader = datasetLoader(entry.name);
  if (!loader.loadRanked) {
    throw new ConfigError(
      `dataset ${entry.name} has no ranked replies for stage ${cfg.stage}; ` +
        "use oasst_export, preference_pairs or oasft_demo",
    );
  }
  const name = entry.name.toLowerCase();
  return loader.loadRanked(entry.options, {
    name,
    cacheDir: cfg.cache_dir,
    rng: new Rng(cfg.rng_seed, `${label}/load`),
    formatVersion: cfg.format_version,
  });
}

/** The config's preference datasets, split by group, encoded, grouped for the stage. */
export async function preparePrefData(
  cfg: Settings<"data" | "format" | "pref">,
  tokenizer: ChatTokenizer,
  stage: PrefStage,
): Promise<PrefData> {
  const entries = parseDatasetEntries([...cfg.datasets, ...cfg.datasets_extra], "config › datasets");
  if (!entries.length) throw new ConfigError("the config has no datasets");
  tokenizer.useTemplate(cfg.chat_template);
  const counts = { truncated: 0 };
  const datasets: PrefDataset[] = [];
  const seen = new Map<string, number>();
  for (const entry of entries) {
    const n = (seen.get(entry.name) ?? 0) + 1;
    seen.set(entry.name, n);
    const label = n === 1 ? entry.name : `${entry.name}#${n}`;
    const opt = (k: string, b: { min?: number; max?: number; integer?: boolean }) =>
      optNumber(entry.options, k, entry.name, b);
    const loaded = await loadEntry(entry, cfg, label);
    const dropped = { ...loaded.dropped };
    const groups = loaded.groups.map((g) => ({ ...g, candidates: g.candidates.slice(0, cfg.max_replies) }));
    const splitRng = new Rng(cfg.rng_seed, `${label}/split`);
    const valSplit = opt("val_split", { min: 0, max: 1 }) ?? 0.2;
    let [train, val] = valSplit > 0 ? randomSplit(groups, valSplit, splitRng) : [groups, []];
    val = capItems(val, opt("max_val_set", { min: 0, integer: true }), splitRng, "max_val_set", dropped);
    train = capItems(train, opt("max_train_set", { min: 0, integer: true }), splitRng, "max_train_set", dropped);
    if (cfg.eval_size !== null && val.length > cfg.eval_size) {
      dropped.eval_size = val.length - cfg.eval_size;
      val = val.slice(0, cfg.eval_size);
    }
    const units = async (xs: RankedGroup[], split: string) => {
      const enc = await encodeGroups(xs, tokenizer, cfg, `${label} ${split}`, counts);
      return stage === "dpo" ? enc.flatMap(pairsOf) : enc;
    };
    const fraction = opt("fraction", { min: Number.MIN_VALUE, max: 1 });
    const size = opt("size", { min: 1, integer: true });
    datasets.push({
      name: label,
      train: await units(train, "train"),
      val: await units(val, "val"),
      dropped,
      files: loaded.files,
      ...(fraction !== undefined ? { fraction } : {}),
      ...(size !== undefined ? { size } : {}),
    });
  }
  return { tokenizer, datasets, truncated: counts.truncated };
}
