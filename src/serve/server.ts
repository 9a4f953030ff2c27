// `oasft serve`: one model behind OpenAI- and TGI-compatible HTTP APIs, with the continuous-batching
// engine, SSE streaming, a bounded queue (429), Prometheus metrics, an optional API key, and the chat
// page at /. Built on fastify (body limits, JSON parsing errors answered as 400, never a crash).
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import { createHash, randomUUID, timingSafeEqual } from "node:crypto";
import * as torch from "../torch/index.js";
import type { CausalLM } from "../models/index.js";
import { Engine, QueueFullError, type EngineOptions, type TokenEvent } from "../generate/engine.js";
import type { SamplingParams } from "../generate/sampling.js";
import { ChatTemplateError, type ChatTokenizer } from "../tokenizer/index.js";
import { prefillYielding } from "../generate/prefill.js";
import { ApiError, asBody, chatMessages, openaiSampling, tgiSampling, tgiTopN, type ChatMessage } from "./protocol.js";
import { chatPage } from "./page.js";

export interface ServerOptions {
  model: CausalLM;
  tokenizer: ChatTokenizer;
  /** The name reported by /v1/models and /info. */
  modelId: string;
  /** Other names a request's `model` may give (vLLM's --served-model-name); any other name is a 404. */
  aliases?: string[];
  apiKey?: string;
  maxTokens?: number;
  maxBatch?: number;
  maxQueue?: number;
  /** Request bodies larger than this are refused with 413 (default 1 MiB). */
  bodyLimit?: number;
  /** Longest prompt in tokens (default: the model's context, else 4096); longer ones get 400 before any compute. */
  maxInputTokens?: number;
  /** Tokens (prompt + generation budget) of all running sequences together (default: unlimited). */
  maxBatchTokens?: number;
  /** A whole request (headers and body) must arrive within this many ms (default 30 s). */
  requestTimeoutMs?: number;
  /** Test seam passed to the engine (EngineOptions.fault). */
  fault?: EngineOptions["fault"];
}

/** OpenAI's error object; `code` is a short machine-readable reason. */
function errorBody(message: string, type: string, code: string, param: string | null = null) {
  return { error: { message, type, param, code } };
}

/** Constant-time comparison of the presented key with the configured one (hashes of equal length). */
function keyMatches(header: string | undefined, key: string): boolean {
  const m = /^bearer\s+(.+)$/i.exec(header ?? "");
  if (!m) return false;
  const a = createHash("sha256").update(m[1]!.trim()).digest();
  const b = createHash("sha256").update(key).digest();
  return timingSafeEqual(a, b);
}


function sseHeaders(reply: FastifyReply): void {
  reply.hijack();
  reply.raw.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
}
const sse = (reply: FastifyReply, data: unknown) => reply.raw.write(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);

export function buildServer(o: ServerOptions): { app: FastifyInstance; engine: Engine } {
  const engine = new Engine(o.model, o.tokenizer, {
    maxBatch: o.maxBatch ?? 16, maxQueue: o.maxQueue ?? 64,
    // A server always bounds prompts: the model's context, or 4,096 tokens for models without one (relative position schemes).
    maxInputTokens: o.maxInputTokens ?? o.model.config.maxPositions ?? 4096,
    ...(o.maxBatchTokens ? { maxBatchTokens: o.maxBatchTokens } : {}),
    ...(o.fault ? { fault: o.fault } : {}),
  });
  const limits = { maxTokens: o.maxTokens ?? 2048 };
  const tok = o.tokenizer;
  // requestTimeout bounds a slowly trickled body; a long generation is not a slow request (it streams).
  const app = Fastify({ bodyLimit: o.bodyLimit ?? 1 << 20, logger: false, requestTimeout: o.requestTimeoutMs ?? 30_000 });
  const counters = { http: new Map<string, number>() };
  const page = chatPage(tok.eos);

  app.addHook("onRequest", async (req, reply) => {
    const key = `${req.method} ${req.routeOptions.url ?? "unknown"}`;
    counters.http.set(key, (counters.http.get(key) ?? 0) + 1);
    const open = req.url === "/" || req.url === "/health" || req.url === "/metrics";
    if (o.apiKey && !open && !keyMatches(req.headers.authorization, o.apiKey)) {
      await reply.code(401).send(errorBody("missing or wrong API key (Authorization: Bearer KEY)", "authentication_error", "invalid_api_key"));
    }
  });

  app.setErrorHandler(async (err: Error & { statusCode?: number; code?: string }, _req, reply) => {
    if (err instanceof ApiError) return reply.code(err.status).send(errorBody(err.message, err.type, err.status === 400 ? "invalid_value" : "error", err.param ?? null));
    // Decided before any byte of the response: a client (OpenAI's included) sees 429 and retries.
    if (err instanceof QueueFullError) return reply.code(429).header("retry-after", "1").send(errorBody(err.message, "rate_limit_error", "rate_limit_exceeded"));
    // fastify's own errors (bad JSON, body too large) carry their status; engine RangeErrors are bad requests.
    if (!err.statusCode && err instanceof RangeError) return reply.code(400).send(errorBody(err.message, "invalid_request_error", "invalid_value"));
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    const json = err.code === "FST_ERR_CTP_INVALID_JSON_BODY" || /JSON/.test(err.message);
    const message = json ? `the body is not valid JSON: ${err.message}` : err.message;
    const code = status === 413 ? "body_too_large" : json ? "invalid_json" : status === 500 ? "server_error" : "invalid_request";
    return reply.code(status).send(errorBody(message, status === 500 ? "server_error" : "invalid_request_error", code));
  });

  // A known route asked with another method: 405 with Allow, not 404.
  const POST_ROUTES = new Set(["/", "/v1/chat/completions", "/v1/completions", "/generate", "/generate_stream"]);
  const GET_ROUTES = new Set(["/", "/health", "/info", "/metrics", "/v1/models"]);
  app.setNotFoundHandler(async (req, reply) => {
    const path = req.url.split("?")[0]!;
    const allow = [...(GET_ROUTES.has(path) ? ["GET"] : []), ...(POST_ROUTES.has(path) ? ["POST"] : [])];
    if (allow.length) return reply.code(405).header("allow", allow.join(", ")).send(errorBody(`${req.method} is not allowed on ${path}; use ${allow.join(" or ")}`, "invalid_request_error", "method_not_allowed"));
    return reply.code(404).send(errorBody(`no route ${req.method} ${path}`, "invalid_request_error", "not_found"));
  });

  const encode = async (text: string) => tok.encode(text);
  // A chat in the served template; what the template itself refuses (raise_exception) is the client's 400.
  const encodeChat = async (messages: ChatMessage[]) => {
    try {
      return await tok.encodeChatPrompt(messages);
    } catch (err) {
      if (err instanceof ChatTemplateError) throw new ApiError(400, err.message, "messages");
      throw err;
    }
  };

  /**
   * Queues requests (all or none) and returns their results; a full queue throws QueueFullError
   * here, before any byte of the response is sent. The response closing before they finished (the
   * client went away) cancels them; one listener per response, none left on keep-alive sockets.
   */
  const start = (reply: FastifyReply, prompts: number[][], params: SamplingParams, onToken?: (e: TokenEvent) => void) => {
    const handles = engine.submitAll(prompts.map((promptIds) => ({ promptIds, params, ...(onToken ? { onToken } : {}) })));
    reply.raw.once("close", () => { if (!reply.raw.writableFinished) for (const h of handles) h.cancel(); });
    return handles.map((h) => h.result);
  };
  const generate = (reply: FastifyReply, promptIds: number[], params: SamplingParams, onToken?: (e: TokenEvent) => void) =>
    start(reply, [promptIds], params, onToken)[0]!;

  // ----- the page and service routes -------------------------------------------------------------
  app.get("/", async (_req, reply) => reply.type("text/html; charset=utf-8").send(page));
  app.get("/health", async () => ({ status: "ok" }));
  // TGI's budget per request: the model's context (or --max-input-tokens + --max-tokens without one).
  const maxTotal = Number.isFinite(engine.maxTotalTokens) ? engine.maxTotalTokens : engine.maxInputTokens + limits.maxTokens;
  app.get("/info", async () => ({
    model_id: o.modelId, model_dtype: o.model.dtype, model_device_type: o.model.device, max_total_tokens: maxTotal,
    max_input_tokens: Math.min(engine.maxInputTokens, maxTotal - 1), max_top_n_tokens: 5,
    max_new_tokens: limits.maxTokens, max_batch_size: o.maxBatch ?? 16, max_concurrent_requests: (o.maxBatch ?? 16) + (o.maxQueue ?? 64),
    version: "oasft", router: "oasft", vocab_size: o.model.config.vocabSize,
  }));
  app.get("/v1/models", async () => ({ object: "list", data: [{ id: o.modelId, object: "model", created: 0, owned_by: "oasft" }] }));
  app.get("/metrics", async (_req, reply) => {
    const s = engine.stats;
    const lines = [
      "# HELP oasft_requests_total Generation requests accepted.", "# TYPE oasft_requests_total counter", `oasft_requests_total ${s.requests}`,
      "# HELP oasft_generated_tokens_total Tokens generated.", "# TYPE oasft_generated_tokens_total counter", `oasft_generated_tokens_total ${s.generatedTokens}`,
      "# HELP oasft_prompt_tokens_total Prompt tokens processed.", "# TYPE oasft_prompt_tokens_total counter", `oasft_prompt_tokens_total ${s.promptTokens}`,
      "# HELP oasft_queue_depth Requests waiting for a batch slot.", "# TYPE oasft_queue_depth gauge", `oasft_queue_depth ${s.queued}`,
      "# HELP oasft_running Sequences in the running batch.", "# TYPE oasft_running gauge", `oasft_running ${s.running}`,
      "# HELP oasft_request_latency_seconds Time from arrival to the last token.", "# TYPE oasft_request_latency_seconds histogram",
      ...s.latency.buckets.map((b, i) => `oasft_request_latency_seconds_bucket{le="${b}"} ${s.latency.counts[i]}`),
      `oasft_request_latency_seconds_bucket{le="+Inf"} ${s.latency.count}`,
      `oasft_request_latency_seconds_sum ${s.latency.sum}`, `oasft_request_latency_seconds_count ${s.latency.count}`,
      "# HELP oasft_http_requests_total HTTP requests by route.", "# TYPE oasft_http_requests_total counter",
      ...[...counters.http].map(([k, v]) => `oasft_http_requests_total{route="${k}"} ${v}`),
    ];
    return reply.type("text/plain; version=0.0.4").send(lines.join("\n") + "\n");
  });

  // ----- OpenAI ----------------------------------------------------------------------------------------
  // A `model` naming something else is a 404 in OpenAI's shape, as OpenAI and vLLM answer.
  const servedNames = new Set([o.modelId, ...(o.aliases ?? [])]);
  const checkModel = (body: Record<string, unknown>) => {
    if (body.model === undefined || body.model === null) return;
    if (typeof body.model !== "string" || !servedNames.has(body.model)) {
      throw new ApiError(404, `The model \`${String(body.model)}\` does not exist (this server serves ${[...servedNames].join(", ")}).`, "model");
    }
  };

  app.post("/v1/chat/completions", async (req, reply) => {
    const body = asBody(req.body);
    checkModel(body);
    const messages: ChatMessage[] = chatMessages(body, tok.template.oa);
    const params = openaiSampling(body, limits, 256);
    const wanted = chatLogprobsRequest(body);
    const includeUsage = streamIncludeUsage(body);
    const promptIds = await encodeChat(messages);
    const id = `chatcmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    if (body.stream === true) {
      const base = { id, object: "chat.completion.chunk", created, model: o.modelId, ...(includeUsage ? { usage: null } : {}) };
      const chunk = (delta: Record<string, unknown>, finish: string | null, logprobs?: unknown) =>
        ({ ...base, choices: [{ index: 0, delta, ...(wanted ? { logprobs: logprobs ?? null } : {}), finish_reason: finish }] });
      // A streamed token's log-probability is the one it was chosen with (top alternatives: non-streamed only).
      const result = generate(reply, promptIds, params, (e) => {
        if (!e.text && !(wanted && e.id >= 0)) return;
        const lp = wanted && e.id >= 0 ? { content: [logprobEntry(e.text, e.logprob, [])] } : undefined;
        sse(reply, chunk({ content: e.text }, null, lp));
      });
      sseHeaders(reply);
      sse(reply, chunk({ role: "assistant", content: "" }, null));
      try {
        const r = await result;
        sse(reply, chunk({}, r.finishReason === "length" ? "length" : "stop"));
        if (includeUsage) {
          const usage = { prompt_tokens: r.promptTokens, completion_tokens: r.tokens.length, total_tokens: r.promptTokens + r.tokens.length };
          sse(reply, { ...base, choices: [], usage });
        }
        sse(reply, "[DONE]");
      } catch (err) {
        sse(reply, errorBody((err as Error).message, "server_error", "generation_failed"));
      }
      reply.raw.end();
      return;
    }
    const r = await generate(reply, promptIds, params);
    const logprobs = wanted ? await chatLogprobs(o.model, tok, promptIds, r.tokens, wanted.top) : undefined;
    return {
      id, object: "chat.completion", created, model: o.modelId,
      choices: [{
        index: 0, message: { role: "assistant", content: r.text }, ...(wanted ? { logprobs } : {}),
        finish_reason: r.finishReason === "length" ? "length" : "stop",
      }],
      usage: { prompt_tokens: r.promptTokens, completion_tokens: r.tokens.length, total_tokens: r.promptTokens + r.tokens.length },
    };
  });

  app.post("/v1/completions", async (req, reply) => {
    const body = asBody(req.body);
    checkModel(body);
    const params = openaiSampling(body, limits, 16);
    const prompts = await completionPrompts(body.prompt, tok);
    const echo = body.echo === true;
    const nLogprobs = body.logprobs === undefined || body.logprobs === null ? undefined : Number(body.logprobs);
    if (nLogprobs !== undefined && !(Number.isInteger(nLogprobs) && nLogprobs >= 0 && nLogprobs <= 20)) throw new ApiError(400, "'logprobs' must be an integer in [0, 20]", "logprobs");
    const id = `cmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    if (body.stream === true) {
      if (prompts.length !== 1) throw new ApiError(400, "streaming takes one prompt", "prompt");
      const chunk = (text: string, finish: string | null) => ({ id, object: "text_completion", created, model: o.modelId, choices: [{ index: 0, text, logprobs: null, finish_reason: finish }] });
      const echoed = echo ? await tok.decode(prompts[0]!, false) : undefined;
      let head = echoed;
      const result = generate(reply, prompts[0]!, params, (e) => {
        if (head !== undefined) { sse(reply, chunk(head, null)); head = undefined; } // the echo comes first
        if (e.text) sse(reply, chunk(e.text, null));
      });
      sseHeaders(reply);
      try {
        const r = await result;
        if (head !== undefined) sse(reply, chunk(head, null));
        sse(reply, chunk("", r.finishReason === "length" ? "length" : "stop"));
        sse(reply, "[DONE]");
      } catch (err) {
        sse(reply, errorBody((err as Error).message, "server_error", "generation_failed"));
      }
      reply.raw.end();
      return;
    }
    // All prompts of one request are admitted or refused together (a 429 never leaves half of them running).
    const results = await Promise.all(start(reply, prompts, params));
    const choices = await Promise.all(results.map(async (r, index) => {
      const promptIds = prompts[index]!;
      const text = (echo ? await tok.decode(promptIds, false) : "") + r.text;
      const logprobs = nLogprobs === undefined ? null : await completionLogprobs(o.model, tok, echo ? promptIds : [], r.tokens, nLogprobs, promptIds);
      return { index, text, logprobs, finish_reason: r.finishReason === "length" ? "length" : "stop" };
    }));
    const promptTokens = prompts.reduce((n, p) => n + p.length, 0);
    const completion = results.reduce((n, r) => n + r.tokens.length, 0);
    return { id, object: "text_completion", created, model: o.modelId, choices, usage: { prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion } };
  });

  // ----- TGI -------------------------------------------------------------------------------------------
  const tgiPrompt = async (body: Record<string, unknown>) => {
    if (typeof body.inputs !== "string" || !body.inputs) throw new ApiError(400, "'inputs' must be a non-empty string", "inputs");
    return { text: body.inputs, ids: await encode(body.inputs) };
  };
  const tgiGenerate = async (req: FastifyRequest, reply: FastifyReply) => {
    const body = asBody(req.body);
    const params = tgiSampling(body, limits);
    const topN = tgiTopN(body);
    const prompt = await tgiPrompt(body);
    const r = await generate(reply, prompt.ids, params);
    const parameters = (body.parameters ?? {}) as Record<string, unknown>;
    const full = parameters.return_full_text === true;
    // TGI's decoder_input_details: the prompt's tokens with their log-probabilities (the first has none).
    let prefillTokens: Array<{ id: number; text: string; logprob: number | null }> = [];
    if (parameters.details === true && parameters.decoder_input_details === true) {
      const lp = await completionLogprobs(o.model, tok, prompt.ids, [], 0, prompt.ids);
      prefillTokens = prompt.ids.map((id, i) => ({ id, text: lp.tokens[i]!, logprob: lp.token_logprobs[i] ?? null }));
    }
    const tgiToken = async (id: number, logprob: number) => ({ id, text: await tok.decode([id], false), logprob, special: tok.isSpecial(id) });
    const tokens = await Promise.all(r.tokens.map((id, i) => tgiToken(id, r.logprobs[i]!)));
    // top_n_tokens: the n most likely tokens at each generated position, as TGI lists them.
    const topTokens = topN > 0
      ? await Promise.all((await scoredTokens(o.model, [...prompt.ids, ...r.tokens], prompt.ids.length, topN)).map((row) =>
        Promise.all(row.top.map(([id, logprob]) => tgiToken(id, logprob)))))
      : undefined;
    return {
      generated_text: (full ? prompt.text : "") + (await tgiText(r, params)),
      ...(parameters.details === true ? {
        details: {
          finish_reason: tgiFinish(r), generated_tokens: r.tokens.length, seed: params.seed ?? null, prefill: prefillTokens, tokens,
          ...(topTokens ? { top_tokens: topTokens } : {}),
        },
      } : {}),
    };
  };
  // TGI keeps the stop sequence that ended a generation in its text (OpenAI's API drops it).
  const tgiText = async (r: { text: string; tokens: number[]; stopSequence: boolean }, params: SamplingParams) => {
    if (!r.stopSequence) return r.text;
    const decoded = await tok.decode(r.tokens, false);
    const rest = decoded.startsWith(r.text) ? decoded.slice(r.text.length) : "";
    const matched = (params.stop ?? []).filter((x) => rest.startsWith(x)).sort((a, b) => b.length - a.length)[0];
    return r.text + (matched ?? "");
  };
  const tgiStream = async (req: FastifyRequest, reply: FastifyReply) => {
    const body = asBody(req.body);
    const params = tgiSampling(body, limits);
    if (tgiTopN(body) > 0) throw new ApiError(422, "Input validation error: `top_n_tokens` is not available with streaming here", "top_n_tokens");
    const prompt = await tgiPrompt(body);
    // As TGI: one event per token, the last one carrying generated_text and details. Each event is
    // held back until the next token arrives, so the last can be completed; text the engine held
    // back (an incomplete character, a possible stop string) joins the last token's text.
    let n = 0;
    let pending: { index: number; token: { id: number; text: string; logprob: number; special: boolean } } | undefined;
    const result = generate(reply, prompt.ids, params, (e) => {
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
      const text = await tgiText(r, params);
      if (pending) pending.token.text += text.slice(r.text.length); // the stop sequence, kept as TGI keeps it
      if (pending) sse(reply, { ...pending, generated_text: text, details });
      else sse(reply, { index: 0, token: null, generated_text: text, details });
    } catch (err) {
      sse(reply, { error: (err as Error).message, error_type: "generation" });
    }
    reply.raw.end();
  };
  app.post("/generate", tgiGenerate);
  app.post("/generate_stream", tgiStream);
  // TGI's bare route (older HF clients post to the base URL): a stream when the body asks for one.
  app.post("/", async (req, reply) => ((req.body as { stream?: unknown } | null)?.stream === true ? tgiStream(req, reply) : tgiGenerate(req, reply)));

  return { app, engine };
}

/** TGI's finish reasons: the token budget, one of the request's stop strings, or the EOS token. */
function tgiFinish(r: { finishReason: string; stopSequence: boolean }): string {
  return r.finishReason === "length" ? "length" : r.stopSequence ? "stop_sequence" : "eos_token";
}

/** OpenAI `prompt`: a string, token ids, or a list of either (one choice each). */
async function completionPrompts(prompt: unknown, tok: ChatTokenizer): Promise<number[][]> {
  const isIds = (x: unknown) => Array.isArray(x) && x.length > 0 && x.every((t) => Number.isInteger(t) && t >= 0);
  const list = typeof prompt === "string" || isIds(prompt) ? [prompt] : prompt;
  if (!Array.isArray(list) || !list.length || list.length > 64) throw new ApiError(400, "'prompt' must be a string, a list of token ids, or a list (≤ 64) of either", "prompt");
  return Promise.all(list.map(async (p, i) => {
    if (typeof p === "string" && p) return tok.encode(p);
    if (isIds(p)) {
      const ids = p as number[];
      if (ids.some((t) => t >= tok.vocabSize)) throw new ApiError(400, `prompt[${i}]: token id out of range (vocabulary ${tok.vocabSize})`, "prompt");
      return ids;
    }
    throw new ApiError(400, `prompt[${i}] must be a non-empty string or list of token ids`, "prompt");
  }));
}

/**
 * OpenAI logprobs for [echoed prompt] + generated tokens: tokens, token_logprobs (null for the very
 * first token), top_logprobs (n best per position), text_offset (in characters of the text). The
 * sequence goes through the cache a chunk at a time (prefillYielding), yielding to the event loop
 * between chunks, so a 64-prompt echo batch (what lm-eval sends) does not freeze the server.
 */
/** OpenAI chat's `logprobs` (boolean) and `top_logprobs` (0-20, needs logprobs); undefined when not asked. */
function chatLogprobsRequest(body: Record<string, unknown>): { top: number } | undefined {
  const on = body.logprobs;
  if (on !== undefined && on !== null && typeof on !== "boolean") throw new ApiError(400, "'logprobs' must be true or false", "logprobs");
  const top = body.top_logprobs;
  if (top !== undefined && top !== null) {
    if (!(typeof top === "number" && Number.isInteger(top) && top >= 0 && top <= 20)) throw new ApiError(400, "'top_logprobs' must be an integer in [0, 20]", "top_logprobs");
    if (on !== true) throw new ApiError(400, "'top_logprobs' needs 'logprobs': true", "top_logprobs");
    if (body.stream === true && top > 0) throw new ApiError(400, "'top_logprobs' is not available with streaming here; 'logprobs': true is", "top_logprobs");
  }
  return on === true ? { top: typeof top === "number" ? top : 0 } : undefined;
}

/** stream_options.include_usage: a last chunk with the usage (and `usage: null` on the others), as OpenAI. */
function streamIncludeUsage(body: Record<string, unknown>): boolean {
  const opts = body.stream_options;
  if (opts === undefined || opts === null) return false;
  if (typeof opts !== "object" || Array.isArray(opts)) throw new ApiError(400, "'stream_options' must be an object", "stream_options");
  if (body.stream !== true) throw new ApiError(400, "'stream_options' is only allowed with 'stream': true", "stream_options");
  const include = (opts as Record<string, unknown>).include_usage;
  if (include !== undefined && typeof include !== "boolean") throw new ApiError(400, "'stream_options.include_usage' must be true or false", "stream_options");
  return include === true;
}

/** One token of OpenAI chat's logprobs.content: its text, log-probability, UTF-8 bytes and alternatives. */
function logprobEntry(token: string, logprob: number, top: Array<{ token: string; logprob: number }>) {
  const bytes = (t: string) => [...Buffer.from(t, "utf8")];
  return { token, logprob, bytes: bytes(token), top_logprobs: top.map((t) => ({ ...t, bytes: bytes(t.token) })) };
}

/** The generated tokens' log-probabilities (and `top` alternatives each) in OpenAI chat's shape. */
async function chatLogprobs(model: CausalLM, tok: ChatTokenizer, promptIds: number[], generated: number[], top: number) {
  if (!generated.length) return { content: [] };
  const rows = await scoredTokens(model, [...promptIds, ...generated], promptIds.length, top);
  const text = (id: number) => tok.decode([id], false);
  const content = await Promise.all(rows.map(async (r, i) => {
    const alternatives = await Promise.all(r.top.map(async ([id, logprob]) => ({ token: await text(id), logprob })));
    return logprobEntry(await text(generated[i]!), r.lp, alternatives);
  }));
  return { content };
}

async function completionLogprobs(model: CausalLM, tok: ChatTokenizer, echoed: number[], generated: number[], n: number, promptIds: number[]) {
  const all = [...promptIds, ...generated];
  const from = promptIds.length - echoed.length;
  const rows: Array<{ lp: number | null; top: Array<[number, number]> | null }> = from === 0 ? [{ lp: null, top: null }] : [];
  rows.push(...(await scoredTokens(model, all, Math.max(from, 1), n)));
  const shown = all.slice(from);
  const tokens = await Promise.all(shown.map((id) => tok.decode([id], false)));
  const topLogprobs = await Promise.all(rows.map(async (r) => (r.top === null ? null : Object.fromEntries(await Promise.all(r.top.map(async ([id, v]) => [await tok.decode([id], false), v] as const))))));
  return { tokens, token_logprobs: rows.map((r) => r.lp), top_logprobs: topLogprobs, text_offset: await textOffsets(tok, shown, tokens) };
}

/**
 * Log-probabilities of tokens `all[from..]` under the model (one chunked forward over `all`), each with
 * the `n` most likely alternatives as [id, logprob] pairs.
 */
async function scoredTokens(model: CausalLM, all: number[], from: number, n: number): Promise<Array<{ lp: number; top: Array<[number, number]> }>> {
  const rows: Array<{ lp: number; top: Array<[number, number]> }> = [];
  // Row j of a chunk starting at `start` predicts the token at start + j + 1.
  const collect = (logits: torch.Tensor, start: number) => torch.scope(() => {
    const lp = logits.select(0, 0).to("float32").logSoftmax(-1); // [s, V]
    for (let j = 0; j < lp.size(0); j++) {
      const t = start + j + 1;
      if (t < from || t >= all.length) continue;
      const row = lp.select(0, j);
      const top = n > 0 ? row.topk(n, -1) : undefined;
      const values = top?.values.toNumbers();
      rows.push({ lp: row.select(0, all[t]!).item(), top: top ? top.indices.toNumbers().map((id, k) => [id, values![k]!] as [number, number]) : [] });
    }
  });
  const cache = model.newCache({ batch: 1, capacity: all.length });
  const ids = torch.tensor([all], { dtype: "int64", device: model.device });
  try {
    (await prefillYielding(model, { inputIds: ids, cache, onChunkLogits: collect })).dispose();
  } finally {
    ids.dispose();
    cache.dispose();
  }
  return rows;
}

/**
 * Where each token starts in the decoded text, in characters (code points, as Python's str indexes
 * the text). A byte-level tokenizer's tokens can split a character: its bytes are decoded as one
 * stream, and a character counts where it completes, so the offsets stay on the text.
 */
async function textOffsets(tok: ChatTokenizer, ids: number[], pieces: string[]): Promise<number[]> {
  const offsets: number[] = [];
  let chars = 0;
  if (tok.tokenBytes) {
    const decoder = new TextDecoder("utf-8");
    for (const id of ids) {
      offsets.push(chars);
      chars += [...decoder.decode(tok.tokenBytes(id), { stream: true })].length;
    }
    return offsets;
  }
  for (const p of pieces) {
    offsets.push(chars);
    chars += [...p].length;
  }
  return offsets;
}
