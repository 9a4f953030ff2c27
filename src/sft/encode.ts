// From formatted text to training samples (dialogue_collator.py's process_one): token ids, the label
// mask by message index, and truncation to max_length by a random window or by the head.
import type { FormatVersion } from "../data/dataset.js";
import type { Rng } from "../data/rng.js";
import type { ChatTokenizer } from "../tokenizer/index.js";

/** A training sample: `labelMask[t]` = the model is trained to predict inputIds[t + 1] from position t. */
export interface EncodedSample {
  inputIds: number[];
  labelMask: boolean[];
}

export interface MaskOptions {
  formatVersion: FormatVersion;
  /** false: train on every token (OA's label_masking: false); the last position is still never trained. */
  labelMasking: boolean;
  /**
   * OA counts message indices from −1 and Python's −1 % 2 == 1 trains every token before the first
   * role token (a LLaMA <s>, a per-conversation system message). We do not by default: a system
   * message is context, not a target. true reproduces OA.
   */
  trainOnPreamble: boolean;
}

/**
 * Message index per token: +1 at every <|prompter|> / <|assistant|> (and, May-2023, <|system|>) token,
 * which carries the new index; −1 before the first one.
 */
export function messageIndices(ids: number[], tok: ChatTokenizer, version: FormatVersion): number[] {
  let i = -1;
  return ids.map((id) => {
    if (id === tok.prompterId || id === tok.assistantId || (version === "may2023" && id === tok.systemId)) i++;
    return i;
  });
}

/** The label mask of a full (untruncated) sequence: tokens of assistant messages, their role token and eos included. */
export function labelMaskFor(ids: number[], tok: ChatTokenizer, o: MaskOptions): boolean[] {
  if (!o.labelMasking) return ids.map(() => true);
  const idx = messageIndices(ids, tok, o.formatVersion);
  const pymod2 = (i: number) => ((i % 2) + 2) % 2; // Python's modulo: -1 % 2 == 1
  if (o.formatVersion === "may2023" && ids[0] === tok.systemId) {
    // May-2023: system = 0, prompter = 1, assistant = 2, ...: assistant messages have even indices > 0.
    return idx.map((i) => i > 0 && i % 2 === 0);
  }
  return idx.map((i) => (i < 0 ? o.trainOnPreamble : pymod2(i) === 1));
}

export interface TruncateOptions {
  maxLength: number;
  /** Probability of a random window (else the first max_length tokens). OA's default is 0.8. */
  randomOffsetProbability: number;
}

/**
 * Cuts a sequence to max_length: with probability p a random window [offset, offset + max_length)
 * (offset uniform in [0, L − max_length], as Python's randint), else the head. The mask was computed
 * on the whole sequence, so it stays right inside the window. The last position is never trained.
 */
export function truncateSample(ids: number[], mask: boolean[], o: TruncateOptions, rng: Rng): EncodedSample {
  let start = 0;
  // OA decides between window and head before it knows the length; draw the same way so streams match.
  const window = rng.next() < o.randomOffsetProbability;
  if (ids.length > o.maxLength && window) start = rng.int(0, ids.length - o.maxLength);
  const inputIds = ids.slice(start, start + o.maxLength);
  const labelMask = mask.slice(start, start + o.maxLength);
  if (labelMask.length) labelMask[labelMask.length - 1] = false;
  return { inputIds, labelMask };
}

/** Prepends OA's global system prefix (use_system_prefix): its tokens are never trained. */
export function withPrefix(sample: EncodedSample, prefixIds: number[]): EncodedSample {
  if (!prefixIds.length) return sample;
  return {
    inputIds: [...prefixIds, ...sample.inputIds],
    labelMask: [...prefixIds.map(() => false), ...sample.labelMask],
  };
}

export interface LintProblem {
  rule: "no_trained_token" | "eos_not_trained" | "no_assistant_token";
  message: string;
}

/**
 * Checks a full (untruncated) sample before any training: it has a trained token, it contains the
 * <|assistant|> token as one id, and the eos closing every assistant reply is a trained target.
 */
export function lintSample(ids: number[], mask: boolean[], tok: ChatTokenizer, version: FormatVersion): LintProblem[] {
  const problems: LintProblem[] = [];
  const trained = mask.slice(0, -1).some(Boolean);
  if (!ids.includes(tok.assistantId))
    problems.push({
      rule: "no_assistant_token",
      message: "no <|assistant|> token: the tokenizer does not map it to one special id",
    });
  if (!trained)
    problems.push({ rule: "no_trained_token", message: "no token is trained (no assistant text survives formatting)" });
  const idx = messageIndices(ids, tok, version);
  const systemFirst = version === "may2023" && ids[0] === tok.systemId;
  const isAssistant = (i: number) => (systemFirst ? i > 0 && i % 2 === 0 : i >= 0 && i % 2 === 1);
  for (let t = 1; t < ids.length; t++) {
    if (ids[t] === tok.eosId && isAssistant(idx[t]!) && !mask[t - 1]) {
      problems.push({
        rule: "eos_not_trained",
        message: `the eos at token ${t}, closing an assistant reply, is not a trained target`,
      });
      break;
    }
  }
  return problems;
}
