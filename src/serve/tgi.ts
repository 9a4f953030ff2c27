// Hugging Face TGI's API as a fastify plugin: POST /generate (details, decoder_input_details,
// top_n_tokens, best_of), POST /generate_stream, and the bare POST / older clients use.
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from "fastify";
import type { GenerationResult } from "../generate/engine.js";
import type { SamplingParams } from "../generate/sampling.js";
import { bestOf, bestOfRequest } from "./best-of.js";
import { sse, sseHeaders, type ServeContext } from "./context.js";
import { completionLogprobs, scoredTokens } from "./logprobs.js";
import { ApiError, asBody, tgiSampling, tgiTopN } from "./protocol.js";

type Body = Record<string, unknown>;
type TgiToken = { id: number; text: string; logprob: number; special: boolean };

/** TGI's finish reasons: the token budget, one of the request's stop strings, or the EOS token. */
function tgiFinish(r: { finishReason: string; stopSequence: boolean }): string {
  return r.finishReason === "length" ? "length" : r.stopSequence ? "stop_sequence" : "eos_token";
}

export const tgiRoutes: FastifyPluginAsync<{ ctx: ServeContext }> = async (app, { ctx }) => {
  const generate = (req: FastifyRequest, reply: FastifyReply) => tgiGenerate(ctx, reply, asBody(req.body));
  const stream = (req: FastifyRequest, reply: FastifyReply) => tgiStream(ctx, reply, asBody(req.body));
  app.post("/generate", generate);
  app.post("/generate_stream", stream);
  // TGI's bare route (older HF clients post to the base URL): a stream when the body asks for one.
  app.post("/", async (req, reply) =>
    (req.body as { stream?: unknown } | null)?.stream === true ? stream(req, reply) : generate(req, reply),
  );
};

async function tgiPrompt(ctx: ServeContext, body: Body) {
  if (typeof body.inputs !== "string" || !body.inputs)
    throw new ApiError(400, "'inputs' must be a non-empty string", "inputs");
  return { text: body.inputs, ids: await ctx.tok.encode(body.inputs) };
}

/** TGI keeps the stop sequence that ended a generation in its text (OpenAI's API drops it). */
async function tgiText(ctx: ServeContext, r: GenerationResult, params: SamplingParams): Promise<string> {
  if (!r.stopSequence) return r.text;
  const decoded = await ctx.tok.decode(r.tokens, false);
  const rest = decoded.startsWith(r.text) ? decoded.slice(r.text.length) : "";
  const matched = (params.stop ?? []).filter((x) => rest.startsWith(x)).sort((a, b) => b.length - a.length)[0];
  return r.text + (matched ?? "");
}

async function tgiGenerate(ctx: ServeContext, reply: FastifyReply, body: Body) {
  const { tok } = ctx;
  const params = tgiSampling(body, ctx.limits);
  const topN = tgiTopN(body);
  const parameters = (body.parameters ?? {}) as Body;
  // TGI validates best_of with 422: it needs sampling and cannot stream.
  const n = bestOfRequest(parameters.best_of, params, false, "best_of", 422);
  const prompt = await tgiPrompt(ctx, body);
  const chosen = (await bestOf(ctx, reply, [prompt.ids], params, n))[0]!;
  const r = chosen.best;
  const full = parameters.return_full_text === true;
  const text = (full ? prompt.text : "") + (await tgiText(ctx, r, params));
  if (parameters.details !== true) return { generated_text: text };
  // TGI's decoder_input_details: the prompt's tokens with their log-probabilities (the first has none).
  let prefill: Array<{ id: number; text: string; logprob: number | null }> = [];
  if (parameters.decoder_input_details === true) {
    const lp = await completionLogprobs(ctx.model, tok, prompt.ids, [], 0, prompt.ids);
    prefill = prompt.ids.map((id, i) => ({ id, text: lp.tokens[i]!, logprob: lp.token_logprobs[i] ?? null }));
  }
  const tgiToken = async (id: number, logprob: number): Promise<TgiToken> => ({
    id,
    text: await tok.decode([id], false),
    logprob,
    special: tok.isSpecial(id),
  });
  const tokensOf = (c: GenerationResult) => Promise.all(c.tokens.map((id, i) => tgiToken(id, c.logprobs[i]!)));
  // top_n_tokens: the n most likely tokens at each generated position, as TGI lists them.
  const topTokens =
    topN > 0
      ? await Promise.all(
          (await scoredTokens(ctx.model, [...prompt.ids, ...r.tokens], prompt.ids.length, topN)).map((row) =>
            Promise.all(row.top.map(([id, logprob]) => tgiToken(id, logprob))),
          ),
        )
      : undefined;
  const seedOf = (i: number) => (n > 1 ? chosen.seed + i : (params.seed ?? null));
  const others = chosen.candidates.map((c, i) => ({ c, i })).filter(({ i }) => i !== chosen.index);
  const bestOfSequences = await Promise.all(
    others.map(async ({ c, i }) => ({
      generated_text: (full ? prompt.text : "") + (await tgiText(ctx, c, params)),
      finish_reason: tgiFinish(c),
      generated_tokens: c.tokens.length,
      seed: seedOf(i),
      prefill,
      tokens: await tokensOf(c),
    })),
  );
  return {
    generated_text: text,
    details: {
      finish_reason: tgiFinish(r),
      generated_tokens: r.tokens.length,
      seed: seedOf(chosen.index),
      prefill,
      tokens: await tokensOf(r),
      ...(topTokens ? { top_tokens: topTokens } : {}),
      ...(n > 1 ? { best_of_sequences: bestOfSequences } : {}),
    },
  };
}

/**
 * As TGI: one event per token, the last one carrying generated_text and details. Each event is held
 * back until the next token arrives, so the last can be completed; text the engine held back (an
 * incomplete character, a possible stop string) joins the last token's text.
 */
async function tgiStream(ctx: ServeContext, reply: FastifyReply, body: Body) {
  const params = tgiSampling(body, ctx.limits);
  if (tgiTopN(body) > 0) {
    throw new ApiError(
      422,
      "Input validation error: `top_n_tokens` is not available with streaming here",
      "top_n_tokens",
    );
  }
  bestOfRequest(((body.parameters ?? {}) as Body).best_of, params, true, "best_of", 422);
  const prompt = await tgiPrompt(ctx, body);
  let n = 0;
  let pending: { index: number; token: TgiToken } | undefined;
  const result = ctx.generate(reply, prompt.ids, params, (e) => {
    if (e.id < 0) {
      if (pending) pending.token.text += e.text;
      return;
    }
    if (pending) sse(reply, { ...pending, generated_text: null, details: null });
    pending = { index: ++n, token: { id: e.id, text: e.text, logprob: e.logprob, special: e.special } };
  });
  sseHeaders(reply);
  try {
    const r = await result;
    const details = { finish_reason: tgiFinish(r), generated_tokens: r.tokens.length, seed: params.seed ?? null };
    const text = await tgiText(ctx, r, params);
    if (pending) pending.token.text += text.slice(r.text.length); // the stop sequence, kept as TGI keeps it
    if (pending) sse(reply, { ...pending, generated_text: text, details });
    else sse(reply, { index: 0, token: null, generated_text: text, details });
  } catch (err) {
    sse(reply, { error: (err as Error).message, error_type: "generation" });
  }
  reply.raw.end();
}
