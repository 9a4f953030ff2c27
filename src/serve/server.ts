// `oasft serve`: one model behind OpenAI- and TGI-compatible HTTP APIs, with the continuous-batching
// engine, SSE streaming, a bounded queue (429), Prometheus metrics, an optional API key, and the chat
// page at /. Built on fastify (body limits, JSON parsing errors answered as 400, never a crash).
import Fastify, { type FastifyInstance, type FastifyReply } from "fastify";
import { randomUUID } from "node:crypto";
import * as torch from "../torch/index.js";
import type { CausalLM } from "../models/index.js";
import { Engine, QueueFullError, type TokenEvent } from "../generate/engine.js";
import type { SamplingParams } from "../generate/sampling.js";
import type { ChatTokenizer } from "../tokenizer/index.js";
import { formatPrompt } from "../sft/format.js";
import { ApiError, asBody, chatMessages, openaiSampling, tgiSampling, type ChatMessage } from "./protocol.js";
import { chatPage } from "./page.js";

export interface ServerOptions {
  model: CausalLM;
  tokenizer: ChatTokenizer;
  /** The name reported by /v1/models and /info. */
  modelId: string;
  apiKey?: string;
  maxTokens?: number;
  maxBatch?: number;
  maxQueue?: number;
  /** Request bodies larger than this are refused with 413 (default 1 MiB). */
  bodyLimit?: number;
}

const LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

function sseHeaders(reply: FastifyReply): void {
  reply.hijack();
  reply.raw.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
}
const sse = (reply: FastifyReply, data: unknown) => reply.raw.write(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);

export function buildServer(o: ServerOptions): { app: FastifyInstance; engine: Engine } {
  const engine = new Engine(o.model, o.tokenizer, { maxBatch: o.maxBatch ?? 16, maxQueue: o.maxQueue ?? 64 });
  const limits = { maxTokens: o.maxTokens ?? 2048 };
  const tok = o.tokenizer;
  const app = Fastify({ bodyLimit: o.bodyLimit ?? 1 << 20, logger: false });
  const counters = { http: new Map<string, number>() };
  const page = chatPage(tok.eos);

  app.addHook("onRequest", async (req, reply) => {
    const key = `${req.method} ${req.routeOptions.url ?? "unknown"}`;
    counters.http.set(key, (counters.http.get(key) ?? 0) + 1);
    const open = req.url === "/" || req.url === "/health" || req.url === "/metrics";
    if (o.apiKey && !open && req.headers.authorization !== `Bearer ${o.apiKey}`) {
      await reply.code(401).send({ error: { message: "missing or wrong API key (Authorization: Bearer KEY)", type: "authentication_error" } });
    }
  });

  app.setErrorHandler(async (err: Error & { statusCode?: number; code?: string }, _req, reply) => {
    if (err instanceof ApiError) return reply.code(err.status).send({ error: { message: err.message, type: err.type, param: err.param ?? null } });
    if (err instanceof QueueFullError) return reply.code(429).send({ error: { message: err.message, type: "rate_limit_error" } });
    // fastify's own errors (bad JSON, body too large) carry their status; engine RangeErrors are bad requests.
    if (!err.statusCode && err instanceof RangeError) return reply.code(400).send({ error: { message: err.message, type: "invalid_request_error" } });
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    const message = err.code === "FST_ERR_CTP_INVALID_JSON_BODY" || /JSON/.test(err.message) ? `the body is not valid JSON: ${err.message}` : err.message;
    return reply.code(status).send({ error: { message, type: status === 500 ? "server_error" : "invalid_request_error" } });
  });

  const encode = async (text: string) => tok.encode(text);

  /**
   * Runs a request, streaming token events to `onToken`. The response closing before it finished
   * (the client went away) cancels it; one listener per response, none left on keep-alive sockets.
   */
  const generate = (reply: FastifyReply, promptIds: number[], params: SamplingParams, onToken?: (e: TokenEvent) => void) => {
    const handle = engine.submit({ promptIds, params, ...(onToken ? { onToken } : {}) });
    reply.raw.once("close", () => { if (!reply.raw.writableFinished) handle.cancel(); });
    return handle.result;
  };

  // ----- the page and service routes -------------------------------------------------------------
  app.get("/", async (_req, reply) => reply.type("text/html; charset=utf-8").send(page));
  app.get("/health", async () => ({ status: "ok" }));
  app.get("/info", async () => ({
    model_id: o.modelId, model_dtype: o.model.dtype, model_device_type: o.model.device, max_total_tokens: null,
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
      ...LATENCY_BUCKETS.map((b) => `oasft_request_latency_seconds_bucket{le="${b}"} ${s.latencies.filter((x) => x <= b).length}`),
      `oasft_request_latency_seconds_bucket{le="+Inf"} ${s.latencies.length}`,
      `oasft_request_latency_seconds_sum ${s.latencies.reduce((a, b) => a + b, 0)}`, `oasft_request_latency_seconds_count ${s.latencies.length}`,
      "# HELP oasft_http_requests_total HTTP requests by route.", "# TYPE oasft_http_requests_total counter",
      ...[...counters.http].map(([k, v]) => `oasft_http_requests_total{route="${k}"} ${v}`),
    ];
    return reply.type("text/plain; version=0.0.4").send(lines.join("\n") + "\n");
  });

  // ----- OpenAI ----------------------------------------------------------------------------------------
  app.post("/v1/chat/completions", async (req, reply) => {
    const body = asBody(req.body);
    const messages: ChatMessage[] = chatMessages(body);
    const params = openaiSampling(body, limits, 256);
    const system = messages[0]!.role === "system" ? messages[0]!.content : undefined;
    const turns = messages.filter((m) => m.role !== "system").map((m) => ({ role: m.role === "user" ? "prompter" as const : "assistant" as const, text: m.content }));
    const promptIds = await encode(formatPrompt(turns, tok.eos, system));
    const id = `chatcmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    if (body.stream === true) {
      sseHeaders(reply);
      const chunk = (delta: Record<string, unknown>, finish: string | null) => ({ id, object: "chat.completion.chunk", created, model: o.modelId, choices: [{ index: 0, delta, finish_reason: finish }] });
      sse(reply, chunk({ role: "assistant", content: "" }, null));
      try {
        const r = await generate(reply, promptIds, params, (e) => { if (e.text) sse(reply, chunk({ content: e.text }, null)); });
        sse(reply, chunk({}, r.finishReason === "length" ? "length" : "stop"));
        sse(reply, "[DONE]");
      } catch (err) {
        sse(reply, { error: { message: (err as Error).message } });
      }
      reply.raw.end();
      return;
    }
    const r = await generate(reply, promptIds, params);
    return {
      id, object: "chat.completion", created, model: o.modelId,
      choices: [{ index: 0, message: { role: "assistant", content: r.text }, finish_reason: r.finishReason === "length" ? "length" : "stop" }],
      usage: { prompt_tokens: r.promptTokens, completion_tokens: r.tokens.length, total_tokens: r.promptTokens + r.tokens.length },
    };
  });

  app.post("/v1/completions", async (req, reply) => {
    const body = asBody(req.body);
    const params = openaiSampling(body, limits, 16);
    const prompts = await completionPrompts(body.prompt, tok);
    const echo = body.echo === true;
    const nLogprobs = body.logprobs === undefined || body.logprobs === null ? undefined : Number(body.logprobs);
    if (nLogprobs !== undefined && !(Number.isInteger(nLogprobs) && nLogprobs >= 0 && nLogprobs <= 20)) throw new ApiError(400, "'logprobs' must be an integer in [0, 20]", "logprobs");
    const id = `cmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    if (body.stream === true) {
      if (prompts.length !== 1) throw new ApiError(400, "streaming takes one prompt", "prompt");
      sseHeaders(reply);
      const chunk = (text: string, finish: string | null) => ({ id, object: "text_completion", created, model: o.modelId, choices: [{ index: 0, text, logprobs: null, finish_reason: finish }] });
      try {
        if (echo) sse(reply, chunk(await tok.decode(prompts[0]!, false), null));
        const r = await generate(reply, prompts[0]!, params, (e) => { if (e.text) sse(reply, chunk(e.text, null)); });
        sse(reply, chunk("", r.finishReason === "length" ? "length" : "stop"));
        sse(reply, "[DONE]");
      } catch (err) {
        sse(reply, { error: { message: (err as Error).message } });
      }
      reply.raw.end();
      return;
    }
    const results = await Promise.all(prompts.map((p) => (params.maxNewTokens > 0 ? generate(reply, p, params) : Promise.resolve({ text: "", tokens: [] as number[], logprobs: [] as number[], finishReason: "length" as const, promptTokens: p.length }))));
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
  app.post("/generate", async (req, reply) => {
    const body = asBody(req.body);
    const params = tgiSampling(body, limits);
    const prompt = await tgiPrompt(body);
    const r = await generate(reply, prompt.ids, params);
    const full = ((body.parameters ?? {}) as Record<string, unknown>).return_full_text === true;
    const details = ((body.parameters ?? {}) as Record<string, unknown>).details === true;
    return {
      generated_text: (full ? prompt.text : "") + r.text,
      ...(details ? { details: { finish_reason: r.finishReason === "length" ? "length" : r.finishReason === "stop" && params.stop ? "stop_sequence" : "eos_token", generated_tokens: r.tokens.length, seed: params.seed ?? null, tokens: r.tokens.map((id, i) => ({ id, logprob: r.logprobs[i], special: false })) } } : {}),
    };
  });
  app.post("/generate_stream", async (req, reply) => {
    const body = asBody(req.body);
    const params = tgiSampling(body, limits);
    const prompt = await tgiPrompt(body);
    sseHeaders(reply);
    // As TGI: one event per token, the last one carrying generated_text and details. Each event is
    // held back until the next token arrives, so the last can be completed; text the engine held
    // back (an incomplete character, a possible stop string) joins the last token's text.
    let n = 0;
    let pending: { index: number; token: { id: number; text: string; logprob: number; special: boolean } } | undefined;
    try {
      const r = await generate(reply, prompt.ids, params, (e) => {
        if (e.id < 0) {
          if (pending) pending.token.text += e.text;
          return;
        }
        if (pending) sse(reply, { ...pending, generated_text: null, details: null });
        pending = { index: ++n, token: { id: e.id, text: e.text, logprob: e.logprob, special: e.special } };
      });
      const details = { finish_reason: r.finishReason === "length" ? "length" : "eos_token", generated_tokens: r.tokens.length, seed: params.seed ?? null };
      if (pending) sse(reply, { ...pending, generated_text: r.text, details });
      else sse(reply, { index: 0, token: null, generated_text: r.text, details });
    } catch (err) {
      sse(reply, { error: (err as Error).message, error_type: "generation" });
    }
    reply.raw.end();
  });

  return { app, engine };
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
 * OpenAI logprobs for [echoed prompt] + generated tokens, from one forward pass over the full sequence:
 * tokens, token_logprobs (null for the very first token), top_logprobs (n best per position), text_offset.
 */
async function completionLogprobs(model: CausalLM, tok: ChatTokenizer, echoed: number[], generated: number[], n: number, promptIds: number[]) {
  const all = [...promptIds, ...generated];
  const from = promptIds.length - echoed.length;
  const rows = torch.noGrad(() => torch.scope(() => {
    const lp = model.forward({ inputIds: torch.tensor([all], { dtype: "int64", device: model.device }) }).logits.select(0, 0).to("float32").logSoftmax(-1);
    const positions = all.map((_, t) => t).slice(from);
    return positions.map((t) => {
      if (t === 0) return { lp: null as number | null, top: null as Array<[number, number]> | null };
      const row = lp.select(0, t - 1);
      const top = n > 0 ? row.topk(n, -1) : undefined;
      return {
        lp: row.select(0, all[t]!).item(),
        top: top ? top.indices.toNumbers().map((id, k) => [id, top.values.toNumbers()[k]!] as [number, number]) : [],
      };
    });
  }));
  const tokens = await Promise.all(all.slice(from).map((id) => tok.decode([id], false)));
  let offset = 0;
  const textOffset = tokens.map((t) => { const o = offset; offset += t.length; return o; });
  const topLogprobs = await Promise.all(rows.map(async (r) => (r.top === null ? null : Object.fromEntries(await Promise.all(r.top.map(async ([id, v]) => [await tok.decode([id], false), v] as const))))));
  return { tokens, token_logprobs: rows.map((r) => r.lp), top_logprobs: topLogprobs, text_offset: textOffset };
}
