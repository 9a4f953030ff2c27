// `oasft eval --tasks rm`: a reward model's pairwise accuracy on ranked replies (an oasst export's
// reward-model groups, or a preference_pairs file): the fraction of ordered pairs (better, worse) whose
// rewards are in the annotators' order, as OA reports its reward models.
import { join } from "node:path";
import { oasstExport } from "../data/datasets/oasst.js";
import { preferencePairs } from "../data/datasets/preference.js";
import { readRecords, asObject } from "../data/io.js";
import { Rng } from "../data/rng.js";
import { encodeForScoring } from "../pref/data.js";
import { groupBatch, rightPairs, scoreBatch } from "../pref/rm.js";
import type { CausalLM } from "../models/index.js";
import type { ChatTokenizer } from "../tokenizer/index.js";

export interface RmEvalOptions {
  model: CausalLM;
  tokenizer: ChatTokenizer;
  /** An oasst export (tree or message lines) or a preference_pairs file. */
  file: string;
  limit?: number;
  batchSize?: number;
  device: string;
  /** Called with the number of groups once they are read, then after each scored group (progress). */
  onStart?: (groups: number) => void;
  onGroup?: () => void;
}

/** The ranked groups of a file, read by the loader its first record calls for. */
async function rankedGroups(file: string) {
  const first = (await readRecords(file))[0];
  const o = first ? asObject(first) : {};
  const treeLine = "prompt" in o && typeof o.prompt === "object" && !Array.isArray(o.prompt);
  const oasst = "message_tree_id" in o || "message_id" in o || treeLine;
  const loader = oasst ? oasstExport : preferencePairs;
  const name = oasst ? "oasst_export" : "preference_pairs";
  const ctx = { name, cacheDir: ".", rng: new Rng(0, "rm-eval"), formatVersion: "head" as const };
  return (await loader.loadRanked!({ input_file_path: file }, ctx)).groups;
}

export async function evaluateRewardModel(o: RmEvalOptions) {
  if (!o.model.hasScoreHead) {
    throw new Error(
      "--tasks rm needs a reward model: a folder in the sequence-classification layout (oasft train --stage rm)",
    );
  }
  const groups = (await rankedGroups(o.file)).slice(0, o.limit ?? Infinity);
  o.onStart?.(groups.length);
  // Rendered as the reward model was trained: the folder's chat template, its max length.
  const units = await encodeForScoring(groups, o.model, o.tokenizer, o.file);
  const rows: Array<{ where: string; rewards: number[]; right: number; pairs: number }> = [];
  // One group per batch by default: replies differ widely in length, and padding a batch to its
  // longest reply costs more than it saves.
  const size = o.batchSize ?? 1;
  for (let i = 0; i < units.length; i += size) {
    const chunk = units.slice(i, i + size);
    const rewards = scoreBatch(o.model, groupBatch(chunk, o.tokenizer.padId), { precision: "fp32", device: o.device });
    let at = 0;
    for (const u of chunk) {
      const r = rewards.slice(at, at + u.candidates.length);
      at += u.candidates.length;
      rows.push({ where: u.where, rewards: r, ...rightPairs(r, [r.length]) });
      o.onGroup?.();
    }
  }
  const right = rows.reduce((n, r) => n + r.right, 0);
  const pairs = rows.reduce((n, r) => n + r.pairs, 0);
  return { accuracy: pairs ? right / pairs : 0, pairs, groups: rows.length, rows };
}

export const defaultRmData = (dataDir: string) => join(dataDir, "oasst/en_100_tree.jsonl");
