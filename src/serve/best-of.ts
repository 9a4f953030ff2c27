// best_of: N sampled candidates of one prompt, admitted together, and the best one returned. OpenAI's
// completions and TGI rank candidates by log-probability per token; a chat completion served with
// --reward-model is ranked by the reward model instead (what a reward model is for: best-of-n).
import type { FastifyReply } from "fastify";
import type { GenerationResult } from "../generate/engine.js";
import type { SamplingParams } from "../generate/sampling.js";
import type { ServeContext } from "./context.js";
import { ApiError } from "./protocol.js";

/** Most candidates one request may ask for (each is a running sequence). */
export const MAX_BEST_OF = 16;

export interface BestOf {
  best: GenerationResult;
  /** Every candidate, in seed order (seed, seed + 1, ...). */
  candidates: GenerationResult[];
  scores: number[];
  index: number;
  seed: number;
  scoredBy: "reward_model" | "mean_logprob";
}

/** best_of from a request (`where` names the field as the API spells it); 1 when absent. */
export function bestOfRequest(
  value: unknown,
  params: SamplingParams,
  stream: boolean,
  where: string,
  status = 400,
): number {
  if (value === undefined || value === null) return 1;
  if (!(typeof value === "number" && Number.isInteger(value) && value >= 1 && value <= MAX_BEST_OF)) {
    throw new ApiError(
      status,
      `'${where}' must be an integer in [1, ${MAX_BEST_OF}], got ${JSON.stringify(value)}`,
      where,
    );
  }
  if (value > 1 && !params.doSample) {
    throw new ApiError(
      status,
      `'${where}' > 1 needs sampling: greedy decoding gives ${value} identical candidates`,
      where,
    );
  }
  if (value > 1 && stream)
    throw new ApiError(status, `'${where}' > 1 cannot be streamed: the best is known at the end`, where);
  return value;
}

/** Mean log-probability per generated token (OpenAI's "highest log probability per token"). */
export const meanLogprob = (r: GenerationResult) =>
  r.tokens.length ? r.logprobs.reduce((s, x) => s + x, 0) / r.tokens.length : -Infinity;

/**
 * N candidates of each prompt (seeds seed..seed + N − 1), admitted together (a 429 never leaves part of
 * a request running), each prompt's ranked by `rank` (default: mean log-probability).
 */
export async function bestOf(
  ctx: ServeContext,
  reply: FastifyReply,
  prompts: number[][],
  params: SamplingParams,
  n: number,
  rank?: (candidates: GenerationResult[]) => Promise<number[]>,
): Promise<BestOf[]> {
  const seed = params.seed ?? Math.floor(Math.random() * 2 ** 31);
  // One candidate keeps the request's own parameters (no seed of its own when it gave none).
  const each = (i: number) => (n > 1 ? { ...params, seed: seed + i } : params);
  const requests = prompts.flatMap((promptIds) =>
    Array.from({ length: n }, (_, i) => ({ promptIds, params: each(i) })),
  );
  const all = await Promise.all(ctx.startEach(reply, requests));
  return Promise.all(
    prompts.map(async (_, k) => {
      const candidates = all.slice(k * n, (k + 1) * n);
      const scores = rank && n > 1 ? await rank(candidates) : candidates.map(meanLogprob);
      const index = scores.indexOf(Math.max(...scores));
      const scoredBy = rank ? ("reward_model" as const) : ("mean_logprob" as const);
      return { best: candidates[index]!, candidates, scores, index, seed, scoredBy };
    }),
  );
}
