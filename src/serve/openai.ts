// OpenAI's API as a fastify plugin: POST /v1/chat/completions (streaming, logprobs, best_of),
// POST /v1/completions (token-id prompts, echo, logprobs, best_of), GET /v1/models.
import { randomUUID } from "node:crypto";
import type { FastifyPluginAsync, FastifyReply } from "fastify";
import type { GenerationResult } from "../generate/engine.js";
import type { SamplingParams } from "../generate/sampling.js";
import type { ChatTokenizer } from "../tokenizer/index.js";
import { bestOf, bestOfRequest, type BestOf } from "./best-of.js";
import { errorBody, sse, sseHeaders, type ServeContext } from "./context.js";
import { chatLogprobs, completionLogprobs, logprobEntry } from "./logprobs.js";
import { ApiError, asBody, chatMessages, openaiSampling, type ChatMessage } from "./protocol.js";

type Body = Record<string, unknown>;

const finish = (r: GenerationResult) => (r.finishReason === "length" ? "length" : "stop");
const usageOf = (prompt: number, completion: number) => ({
  prompt_tokens: prompt,
  completion_tokens: completion,
  total_tokens: prompt + completion,
});

export const openaiRoutes: FastifyPluginAsync<{ ctx: ServeContext }> = async (app, { ctx }) => {
  // A `model` naming something else is a 404 in OpenAI's shape, as OpenAI and vLLM answer.
  const servedNames = new Set([ctx.o.modelId, ...(ctx.o.aliases ?? [])]);
  const checkModel = (body: Body) => {
    if (body.model === undefined || body.model === null) return;
    if (typeof body.model !== "string" || !servedNames.has(body.model)) {
      const served = [...servedNames].join(", ");
      throw new ApiError(
        404,
        `The model \`${String(body.model)}\` does not exist (this server serves ${served}).`,
        "model",
      );
    }
  };
  app.get("/v1/models", async () => ({
    object: "list",
    data: [{ id: ctx.o.modelId, object: "model", created: 0, owned_by: "oasft" }],
  }));
  app.post("/v1/chat/completions", async (req, reply) => {
    const body = asBody(req.body);
    checkModel(body);
    const messages: ChatMessage[] = chatMessages(body, ctx.tok.template.oa);
    const params = openaiSampling(body, ctx.limits, 256);
    const n = bestOfRequest(body.best_of, params, body.stream === true, "best_of");
    // Every field is checked before any compute.
    const wanted = chatLogprobsRequest(body);
    const includeUsage = streamIncludeUsage(body);
    const promptIds = await ctx.encodeChat(messages);
    const head = { id: `chatcmpl-${randomUUID()}`, created: Math.floor(Date.now() / 1000), model: ctx.o.modelId };
    if (body.stream === true) return chatStream(ctx, reply, { promptIds, params, wanted, includeUsage }, head);
    return chatCompletion(ctx, reply, { messages, promptIds, params, n, wanted }, head);
  });
  app.post("/v1/completions", async (req, reply) => {
    const body = asBody(req.body);
    checkModel(body);
    return completions(ctx, reply, body);
  });
};

type Head = { id: string; created: number; model: string };

/** A chat completion streamed as OpenAI's chunks (logprobs of the chosen tokens, the usage last when asked). */
async function chatStream(
  ctx: ServeContext,
  reply: FastifyReply,
  q: { promptIds: number[]; params: SamplingParams; wanted: { top: number } | undefined; includeUsage: boolean },
  head: Head,
) {
  const { promptIds, params, wanted, includeUsage } = q;
  const base = { ...head, object: "chat.completion.chunk", ...(includeUsage ? { usage: null } : {}) };
  const chunk = (delta: Body, finishReason: string | null, logprobs?: unknown) => ({
    ...base,
    choices: [{ index: 0, delta, ...(wanted ? { logprobs: logprobs ?? null } : {}), finish_reason: finishReason }],
  });
  // A streamed token's log-probability is the one it was chosen with (top alternatives: non-streamed only).
  const result = ctx.generate(reply, promptIds, params, (e) => {
    if (!e.text && !(wanted && e.id >= 0)) return;
    const lp = wanted && e.id >= 0 ? { content: [logprobEntry(e.text, e.logprob, [])] } : undefined;
    sse(reply, chunk({ content: e.text }, null, lp));
  });
  sseHeaders(reply);
  sse(reply, chunk({ role: "assistant", content: "" }, null));
  try {
    const r = await result;
    sse(reply, chunk({}, finish(r)));
    if (includeUsage) sse(reply, { ...base, choices: [], usage: usageOf(r.promptTokens, r.tokens.length) });
    sse(reply, "[DONE]");
  } catch (err) {
    sse(reply, errorBody((err as Error).message, "server_error", "generation_failed"));
  }
  reply.raw.end();
}

/**
 * A chat completion; with best_of > 1, the best of that many sampled replies (by the reward model the
 * server was started with, else by mean token log-probability), every candidate's score in `best_of`.
 */
async function chatCompletion(
  ctx: ServeContext,
  reply: FastifyReply,
  q: {
    messages: ChatMessage[];
    promptIds: number[];
    params: SamplingParams;
    n: number;
    wanted: { top: number } | undefined;
  },
  head: Head,
) {
  const { wanted, n } = q;
  const scorer = ctx.o.scorer;
  const rank = scorer
    ? (c: GenerationResult[]) =>
        scorer.score(
          q.messages,
          c.map((r) => r.text),
        )
    : undefined;
  const chosen: BestOf | undefined =
    n > 1 ? (await bestOf(ctx, reply, [q.promptIds], q.params, n, rank))[0] : undefined;
  const r = chosen ? chosen.best : await ctx.generate(reply, q.promptIds, q.params);
  const logprobs = wanted ? await chatLogprobs(ctx.model, ctx.tok, q.promptIds, r.tokens, wanted.top) : undefined;
  const generated = chosen ? chosen.candidates.reduce((k, c) => k + c.tokens.length, 0) : r.tokens.length;
  return {
    ...head,
    object: "chat.completion",
    choices: [
      {
        index: 0,
        message: { role: "assistant", content: r.text },
        ...(wanted ? { logprobs } : {}),
        finish_reason: finish(r),
      },
    ],
    usage: usageOf(r.promptTokens, generated),
    ...(chosen ? { best_of: { n, scored_by: chosen.scoredBy, scores: chosen.scores, chosen: chosen.index } } : {}),
  };
}

/** /v1/completions: one choice per prompt (the best of best_of each), or one prompt streamed. */
async function completions(ctx: ServeContext, reply: FastifyReply, body: Body) {
  const { tok } = ctx;
  const params = openaiSampling(body, ctx.limits, 16);
  const n = bestOfRequest(body.best_of, params, body.stream === true, "best_of");
  const prompts = await completionPrompts(body.prompt, tok);
  const echo = body.echo === true;
  const nLogprobs = body.logprobs === undefined || body.logprobs === null ? undefined : Number(body.logprobs);
  if (nLogprobs !== undefined && !(Number.isInteger(nLogprobs) && nLogprobs >= 0 && nLogprobs <= 20)) {
    throw new ApiError(400, "'logprobs' must be an integer in [0, 20]", "logprobs");
  }
  const head = {
    id: `cmpl-${randomUUID()}`,
    object: "text_completion",
    created: Math.floor(Date.now() / 1000),
    model: ctx.o.modelId,
  };
  if (body.stream === true) return completionStream(ctx, reply, prompts, params, echo, head);
  // All prompts of one request are admitted or refused together (a 429 never leaves half of them running).
  const results = await bestOf(ctx, reply, prompts, params, n);
  const choices = await Promise.all(
    results.map(async ({ best: r }, index) => {
      const promptIds = prompts[index]!;
      const text = (echo ? await tok.decode(promptIds, false) : "") + r.text;
      const logprobs =
        nLogprobs === undefined
          ? null
          : await completionLogprobs(ctx.model, tok, echo ? promptIds : [], r.tokens, nLogprobs, promptIds);
      return { index, text, logprobs, finish_reason: finish(r) };
    }),
  );
  const promptTokens = prompts.reduce((k, p) => k + p.length, 0);
  const completion = results.reduce((k, x) => k + x.candidates.reduce((j, c) => j + c.tokens.length, 0), 0);
  return { ...head, choices, usage: usageOf(promptTokens, completion) };
}

async function completionStream(
  ctx: ServeContext,
  reply: FastifyReply,
  prompts: number[][],
  params: SamplingParams,
  echo: boolean,
  head: Body,
) {
  if (prompts.length !== 1) throw new ApiError(400, "streaming takes one prompt", "prompt");
  const chunk = (text: string, finishReason: string | null) => ({
    ...head,
    choices: [{ index: 0, text, logprobs: null, finish_reason: finishReason }],
  });
  let echoed = echo ? await ctx.tok.decode(prompts[0]!, false) : undefined;
  const result = ctx.generate(reply, prompts[0]!, params, (e) => {
    if (echoed !== undefined) {
      sse(reply, chunk(echoed, null));
      echoed = undefined;
    } // the echo comes first
    if (e.text) sse(reply, chunk(e.text, null));
  });
  sseHeaders(reply);
  try {
    const r = await result;
    if (echoed !== undefined) sse(reply, chunk(echoed, null));
    sse(reply, chunk("", finish(r)));
    sse(reply, "[DONE]");
  } catch (err) {
    sse(reply, errorBody((err as Error).message, "server_error", "generation_failed"));
  }
  reply.raw.end();
}

/** OpenAI `prompt`: a string, token ids, or a list of either (one choice each). */
async function completionPrompts(prompt: unknown, tok: ChatTokenizer): Promise<number[][]> {
  const isIds = (x: unknown) => Array.isArray(x) && x.length > 0 && x.every((t) => Number.isInteger(t) && t >= 0);
  const list = typeof prompt === "string" || isIds(prompt) ? [prompt] : prompt;
  if (!Array.isArray(list) || !list.length || list.length > 64) {
    throw new ApiError(400, "'prompt' must be a string, a list of token ids, or a list (≤ 64) of either", "prompt");
  }
  return Promise.all(
    list.map(async (p, i) => {
      if (typeof p === "string" && p) return tok.encode(p);
      if (isIds(p)) {
        const ids = p as number[];
        if (ids.some((t) => t >= tok.vocabSize)) {
          throw new ApiError(400, `prompt[${i}]: token id out of range (vocabulary ${tok.vocabSize})`, "prompt");
        }
        return ids;
      }
      throw new ApiError(400, `prompt[${i}] must be a non-empty string or list of token ids`, "prompt");
    }),
  );
}

/** OpenAI chat's `logprobs` (boolean) and `top_logprobs` (0-20, needs logprobs); undefined when not asked. */
function chatLogprobsRequest(body: Body): { top: number } | undefined {
  const on = body.logprobs;
  if (on !== undefined && on !== null && typeof on !== "boolean")
    throw new ApiError(400, "'logprobs' must be true or false", "logprobs");
  const top = body.top_logprobs;
  if (top !== undefined && top !== null) {
    if (!(typeof top === "number" && Number.isInteger(top) && top >= 0 && top <= 20)) {
      throw new ApiError(400, "'top_logprobs' must be an integer in [0, 20]", "top_logprobs");
    }
    if (on !== true) throw new ApiError(400, "'top_logprobs' needs 'logprobs': true", "top_logprobs");
    if (body.stream === true && top > 0) {
      throw new ApiError(
        400,
        "'top_logprobs' is not available with streaming here; 'logprobs': true is",
        "top_logprobs",
      );
    }
  }
  return on === true ? { top: typeof top === "number" ? top : 0 } : undefined;
}

/** stream_options.include_usage: a last chunk with the usage (and `usage: null` on the others), as OpenAI. */
function streamIncludeUsage(body: Body): boolean {
  const opts = body.stream_options;
  if (opts === undefined || opts === null) return false;
  if (typeof opts !== "object" || Array.isArray(opts))
    throw new ApiError(400, "'stream_options' must be an object", "stream_options");
  if (body.stream !== true)
    throw new ApiError(400, "'stream_options' is only allowed with 'stream': true", "stream_options");
  const include = (opts as Body).include_usage;
  if (include !== undefined && typeof include !== "boolean") {
    throw new ApiError(400, "'stream_options.include_usage' must be true or false", "stream_options");
  }
  return include === true;
}
