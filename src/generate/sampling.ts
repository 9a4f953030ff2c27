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

type PickRow = { params: SamplingParams; history: number[]; rng: Rng | undefined };

/** A row picked by argmax: greedy parameters, or no generator to sample with. */
const greedyRow = (r: PickRow) => isGreedy(r.params) || !r.rng;

/** The tokens a row's top-k keeps of a `V`-token vocabulary (all of them without top_k). */
const topKOf = (p: SamplingParams, V: number) => (p.topK && p.topK > 0 ? Math.min(p.topK, V) : V);

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
    const row = { params: p, history, rng };
    const x = logits.to("float32");
    const logprobs = x.logSoftmax(-1);
    const scores = penalised(x.unsqueeze(0), [row]).squeeze(0);
    let id: number;
    if (greedyRow(row)) id = scores.argmax(-1).item();
    else id = sample(scores, p, rng!);
    return { id, logprob: logprobs.select(0, id).item() };
  });
}

function sample(scores: torch.Tensor, p: SamplingParams, rng: Rng): number {
  const t = p.temperature ?? 1;
  const probsT = scores.div(t).softmax(-1);
  const { values, indices } = probsT.topk(topKOf(p, probsT.size(0)), -1);
  return finishDraw(values.toNumbers(), indices.toNumbers(), p, rng);
}

/**
 * The draw from a row's top-k probabilities (`probs`, most likely first, and their `ids`), in float64
 * JavaScript: renormalised, cut to top_p, then to typical_p, and the first token whose cumulative
 * probability passes the row's next uniform number.
 */
function finishDraw(probs: number[], ids: number[], p: SamplingParams, rng: Rng): number {
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

/** typical_p needs a per-row sort by surprise: those rows are picked one by one (nextToken). */
const batchable = (p: SamplingParams) => p.typicalP === undefined || p.typicalP >= 1;

/**
 * Next tokens for a batch of rows from logits [b, V], each row with its own parameters, in a handful of
 * batched ops whatever the mix: the repetition penalty as a gather/scatter over the rows' seen ids, greedy
 * rows by one argmax, sampled rows by one softmax, top-k, top-p and draw (the uniform numbers come from the
 * rows' own generators, one per token, as nextToken draws them). Rows with typical_p go one by one.
 * `greedy` [b, 2] (per row its argmax id and log-probability), where the decode step made it, serves the
 * plain greedy rows with no op of theirs. Returns per row the id and its log-probability under the model
 * (before any processing).
 */
export function pickNextTokens(
  logits: torch.Tensor,
  rows: PickRow[],
  greedy?: torch.Tensor,
): Array<{ id: number; logprob: number }> {
  const out: Array<{ id: number; logprob: number }> = new Array(rows.length);
  const plain = (r: PickRow) => greedyRow(r) && (r.params.repetitionPenalty ?? 1) === 1;
  const made = greedy && rows.some(plain) ? greedy.toNumbers() : undefined;
  const batched: number[] = [];
  rows.forEach((r, i) => {
    if (made && plain(r)) out[i] = { id: made[2 * i]!, logprob: made[2 * i + 1]! };
    else if (batchable(r.params)) batched.push(i);
    else out[i] = nextToken(logits.select(0, i), r.history, r.params, r.rng);
  });
  if (!batched.length) return out;
  torch.scope(() => {
    const all = batched.length === rows.length;
    const idx = all ? undefined : torch.tensor(batched, { dtype: "int64", device: logits.device });
    const x = (idx ? logits.indexSelect(0, idx) : logits).to("float32");
    const picked = pickBatched(
      x,
      batched.map((i) => rows[i]!),
    );
    batched.forEach((i, j) => (out[i] = picked[j]!));
  });
  return out;
}

/** pickNextTokens for rows without typical_p: `x` [n, V] float32. */
function pickBatched(x: torch.Tensor, rows: PickRow[]): Array<{ id: number; logprob: number }> {
  const device = x.device;
  const lp = x.logSoftmax(-1);
  const scores = penalised(x, rows);
  const greedy = rows.map(greedyRow);
  let ids: torch.Tensor; // [n, 1]
  if (greedy.every(Boolean)) ids = scores.argmax(-1, true);
  else if (!greedy.some(Boolean)) ids = draw(scores, rows);
  else {
    const rowsOf = (want: boolean) => greedy.flatMap((g, i) => (g === want ? [i] : []));
    const [g, s] = [rowsOf(true), rowsOf(false)];
    const at = (list: number[]) => torch.tensor(list, { dtype: "int64", device });
    ids = torch.zeros([rows.length, 1], { dtype: "int64", device });
    ids.indexCopy_(0, at(g), scores.indexSelect(0, at(g)).argmax(-1, true));
    ids.indexCopy_(
      0,
      at(s),
      draw(
        scores.indexSelect(0, at(s)),
        s.map((i) => rows[i]!),
      ),
    );
  }
  const picked = ids.toNumbers();
  const logprobs = lp.gather(1, ids).toNumbers();
  return picked.map((id, i) => ({ id, logprob: logprobs[i]! }));
}

/**
 * HF's repetition penalty on every row of `x` [n, V] that asks for one (a row's seen ids: its prompt and its
 * reply so far): negative scores times the penalty, positive ones divided by it. Other rows' factor is 1
 * (exactly no change); `x` itself is returned when no row has a penalty.
 */
function penalised(x: torch.Tensor, rows: PickRow[]): torch.Tensor {
  const factor = rows.map((r) => (r.history.length ? (r.params.repetitionPenalty ?? 1) : 1));
  if (factor.every((f) => f === 1)) return x;
  const seen = rows.map((r, i) => (factor[i] === 1 ? [0] : [...new Set(r.history)]));
  const width = Math.max(...seen.map((s) => s.length));
  // Rows are padded with their own first id: a repeated index writes the same value again.
  const padded = seen.map((s) => [...s, ...new Array<number>(width - s.length).fill(s[0]!)]);
  const device = x.device;
  const idx = torch.tensor(padded, { dtype: "int64", device });
  const f = torch.tensor(factor, { dtype: "float32", device, shape: [rows.length, 1] });
  const old = x.gather(1, idx);
  return x.clone().scatter_(1, idx, torch.where(old.lt(0), old.mul(f), old.div(f)));
}

/** Up to this many top-k probabilities (rows × k), draws finish in JavaScript rather than in batched ops. */
const JS_DRAW_MAX = 8192;

/**
 * Sampled rows' draws ([m, 1] ids) from `scores` [m, V]: softmax at each row's temperature, its top-k, its
 * top-p (the fewest most likely tokens whose mass reaches p), renormalised, and the first token whose
 * cumulative probability passes the row's uniform number: nextToken's rule, batched.
 */
function draw(scores: torch.Tensor, rows: PickRow[]): torch.Tensor {
  const device = scores.device;
  const m = rows.length;
  const column = (v: number[], dtype: "float32" | "int64" = "float32") =>
    torch.tensor(v, { dtype, device, shape: [m, 1] });
  const probs = scores.div(column(rows.map((r) => r.params.temperature ?? 1))).softmax(-1);
  const V = probs.size(1);
  const ks = rows.map((r) => topKOf(r.params, V));
  const K = Math.max(...ks);
  const top = probs.topk(K, -1); // sorted, most likely first
  if (m * K <= JS_DRAW_MAX) {
    // Few enough: each row's draw in JavaScript, as nextToken makes it (fewer ops than the batched tail).
    const [values, indices] = [top.values.toNumbers(), top.indices.toNumbers()];
    const ids = rows.map((r, i) =>
      finishDraw(values.slice(i * K, i * K + ks[i]!), indices.slice(i * K, i * K + ks[i]!), r.params, r.rng!),
    );
    return column(ids, "int64");
  }
  let values = top.values;
  const ranks = torch.arange(0, K, 1, { device });
  if (ks.some((k) => k < K)) values = values.maskedFill(ranks.ge(column(ks, "int64")), 0);
  values = values.div(values.sum([1], true));
  if (rows.some((r) => r.params.topP !== undefined && r.params.topP < 1)) {
    // A token stays while the mass before it is below p (so the first always stays); p = 2 keeps all.
    const p = column(rows.map((r) => (r.params.topP !== undefined && r.params.topP < 1 ? r.params.topP : 2)));
    values = values.maskedFill(values.cumsum(1).sub(values).ge(p), 0);
    values = values.div(values.sum([1], true));
  }
  const u = column(rows.map((r) => r.rng!.next()));
  const passed = values.cumsum(1).le(u).sum([1], true); // tokens whose cumulative mass is ≤ u
  // Rounding can leave the last cumulative sum a hair below u: then the last token that kept any mass.
  const last = values.gt(0).sum([1], true).sub(1);
  return top.indices.gather(1, passed.minimum(last));
}
