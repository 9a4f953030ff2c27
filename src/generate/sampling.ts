// Choosing the next token from a row of logits, as HF's generate() logits processors do, in their
// order: repetition penalty, then (sampling only) temperature, top-k, top-p, typical-p, and a draw.
// The draw uses a seeded generator per request, so a seed reproduces a completion.
import * as torch from "../torch/index.js";
import type { Rng } from "../data/rng.js";

export interface SamplingParams {
  maxNewTokens: number;
  /** false (default): greedy. */
  doSample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  typicalP?: number;
  /** HF's repetition_penalty: > 1 discourages tokens already in the sequence. */
  repetitionPenalty?: number;
  /** Stop when the generated text contains one of these (it is cut from the output). */
  stop?: string[];
  seed?: number;
}

/** Validates sampling parameters; the message names the offending field. */
export function checkSampling(p: SamplingParams): void {
  const bad = (field: string, want: string, got: unknown) =>
    new RangeError(`${field}: expected ${want}, got ${typeof got === "number" ? String(got) : JSON.stringify(got)}`);
  if (!Number.isInteger(p.maxNewTokens) || p.maxNewTokens < 0)
    throw bad("max_new_tokens", "an integer ≥ 0", p.maxNewTokens);
  if (p.temperature !== undefined && !(p.temperature >= 0)) throw bad("temperature", "a number ≥ 0", p.temperature);
  if (p.topK !== undefined && !(Number.isInteger(p.topK) && p.topK >= 0)) throw bad("top_k", "an integer ≥ 0", p.topK);
  if (p.topP !== undefined && !(p.topP >= 0 && p.topP <= 1)) throw bad("top_p", "a number in [0, 1]", p.topP);
  if (p.typicalP !== undefined && !(p.typicalP > 0 && p.typicalP <= 1))
    throw bad("typical_p", "a number in (0, 1]", p.typicalP);
  if (p.repetitionPenalty !== undefined && !(p.repetitionPenalty > 0))
    throw bad("repetition_penalty", "a number > 0", p.repetitionPenalty);
}

/**
 * Greedy: no sampling asked for, a temperature too small to divide by (below ~1e-6 the scaled logits
 * overflow float32 and the draw picks an arbitrary token), or top_p 0 (only the best token is left).
 * OpenAI's convention: temperature 0 means greedy.
 */
export const isGreedy = (p: SamplingParams) =>
  !p.doSample || (p.temperature !== undefined && p.temperature < 1e-5) || p.topP === 0;

/**
 * The next token for one sequence. `logits` is its last-position row [V] (float); `history` holds
 * the prompt and generated ids (for the repetition penalty). Returns the id and its log-probability
 * under the model (before any processing).
 */
export function nextToken(
  logits: torch.Tensor,
  history: number[],
  p: SamplingParams,
  rng: Rng | undefined,
): { id: number; logprob: number } {
  return torch.scope(() => {
    let scores = logits.to("float32");
    const logprobs = scores.logSoftmax(-1);
    if (p.repetitionPenalty !== undefined && p.repetitionPenalty !== 1 && history.length) {
      const ids = torch.tensor([...new Set(history)], { dtype: "int64", device: scores.device });
      const seen = scores.gather(0, ids);
      // HF: a positive score is divided by the penalty, a negative one multiplied.
      const penalised = torch.where(seen.lt(0), seen.mul(p.repetitionPenalty), seen.div(p.repetitionPenalty));
      scores = scores.clone().indexCopy_(0, ids, penalised);
    }
    let id: number;
    if (isGreedy(p) || !rng) id = scores.argmax(-1).item();
    else id = sample(scores, p, rng);
    return { id, logprob: logprobs.select(0, id).item() };
  });
}

function sample(scores: torch.Tensor, p: SamplingParams, rng: Rng): number {
  const t = p.temperature ?? 1;
  const probsT = scores.div(t).softmax(-1);
  const k = p.topK && p.topK > 0 ? Math.min(p.topK, probsT.size(0)) : probsT.size(0);
  const { values, indices } = probsT.topk(k, -1);
  let probs = values.toNumbers();
  let ids = indices.toNumbers();
  const renorm = () => {
    const z = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((x) => x / z);
  };
  renorm();
  if (p.topP !== undefined && p.topP < 1) {
    // Keep the smallest prefix (by descending probability) whose mass reaches top_p.
    let mass = 0;
    let n = 0;
    while (n < probs.length && mass < p.topP) mass += probs[n++]!;
    probs = probs.slice(0, Math.max(1, n));
    ids = ids.slice(0, probs.length);
    renorm();
  }
  if (p.typicalP !== undefined && p.typicalP < 1) {
    // Typical decoding: keep the tokens whose surprisal is closest to the entropy, up to typical_p mass.
    const entropy = -probs.reduce((a, q) => a + (q > 0 ? q * Math.log(q) : 0), 0);
    const order = probs.map((q, i) => ({ i, d: Math.abs(-Math.log(q) - entropy) })).sort((a, b) => a.d - b.d);
    const keep: number[] = [];
    let mass = 0;
    for (const { i } of order) {
      keep.push(i);
      mass += probs[i]!;
      if (mass >= p.typicalP) break;
    }
    ids = keep.map((i) => ids[i]!);
    probs = keep.map((i) => probs[i]!);
    renorm();
  }
  let u = rng.next();
  for (let i = 0; i < probs.length; i++) {
    u -= probs[i]!;
    if (u < 0) return ids[i]!;
  }
  return ids[ids.length - 1]!;
}

/**
 * What a chat user gets unless they ask otherwise: greedy with OA's inference repetition penalty (1.2),
 * which keeps small models out of loops. `oasft chat` and the demo's replies use it.
 */
export const CHAT_REPETITION_PENALTY = 1.2;

/**
 * Next tokens for a batch of rows from logits [b, V]: plain greedy rows in one argmax and one
 * log-softmax gather for the whole batch; rows with sampling or a repetition penalty one by one.
 */
export function pickNextTokens(
  logits: torch.Tensor,
  rows: Array<{ params: SamplingParams; history: number[]; rng: Rng | undefined }>,
): Array<{ id: number; logprob: number }> {
  const plain = (r: (typeof rows)[number]) => isGreedy(r.params) && (r.params.repetitionPenalty ?? 1) === 1;
  const out: Array<{ id: number; logprob: number }> = new Array(rows.length);
  if (rows.some(plain)) {
    torch.scope(() => {
      const lp = logits.to("float32").logSoftmax(-1);
      const best = lp.argmax(-1, true); // [b, 1]
      const ids = best.toNumbers();
      const lps = lp.gather(1, best).toNumbers();
      rows.forEach((r, i) => {
        if (plain(r)) out[i] = { id: ids[i]!, logprob: lps[i]! };
      });
    });
  }
  rows.forEach((r, i) => {
    if (!plain(r)) out[i] = nextToken(logits.select(0, i), r.history, r.params, r.rng);
  });
  return out;
}
