// The service routes of `oasft serve` as a fastify plugin: the chat page, health, TGI's /info and
// Prometheus metrics.
import type { FastifyPluginAsync } from "fastify";
import { MAX_BEST_OF } from "./best-of.js";
import type { ServeContext } from "./context.js";
import { chatPage } from "./page.js";

export const serviceRoutes: FastifyPluginAsync<{ ctx: ServeContext }> = async (app, { ctx }) => {
  const { engine, o } = ctx;
  const page = chatPage(ctx.tok.eos);
  app.get("/", async (_req, reply) => reply.type("text/html; charset=utf-8").send(page));
  app.get("/health", async () => ({ status: "ok" }));
  // TGI's budget per request: the model's context (or --max-input-tokens + --max-tokens without one).
  const maxTotal = Number.isFinite(engine.maxTotalTokens)
    ? engine.maxTotalTokens
    : engine.maxInputTokens + ctx.limits.maxTokens;
  app.get("/info", async () => ({
    model_id: o.modelId,
    model_dtype: o.model.dtype,
    model_device_type: o.model.device,
    max_total_tokens: maxTotal,
    max_input_tokens: Math.min(engine.maxInputTokens, maxTotal - 1),
    max_top_n_tokens: 5,
    max_best_of: MAX_BEST_OF,
    max_new_tokens: ctx.limits.maxTokens,
    max_batch_size: o.maxBatch ?? 16,
    max_concurrent_requests: (o.maxBatch ?? 16) + (o.maxQueue ?? 64),
    version: "oasft",
    router: "oasft",
    vocab_size: o.model.config.vocabSize,
  }));
  app.get("/metrics", async (_req, reply) => reply.type("text/plain; version=0.0.4").send(metrics(ctx)));
};

/** Prometheus' text format: counters, gauges and the latency histogram. */
function metrics(ctx: ServeContext): string {
  const s = ctx.engine.stats;
  const metric = (name: string, type: string, help: string, ...values: string[]) => [
    `# HELP ${name} ${help}`,
    `# TYPE ${name} ${type}`,
    ...values,
  ];
  const lat = "oasft_request_latency_seconds";
  const lines = [
    ...metric("oasft_requests_total", "counter", "Generation requests accepted.", `oasft_requests_total ${s.requests}`),
    ...metric(
      "oasft_generated_tokens_total",
      "counter",
      "Tokens generated.",
      `oasft_generated_tokens_total ${s.generatedTokens}`,
    ),
    ...metric(
      "oasft_prompt_tokens_total",
      "counter",
      "Prompt tokens processed.",
      `oasft_prompt_tokens_total ${s.promptTokens}`,
    ),
    ...metric("oasft_queue_depth", "gauge", "Requests waiting for a batch slot.", `oasft_queue_depth ${s.queued}`),
    ...metric("oasft_running", "gauge", "Sequences in the running batch.", `oasft_running ${s.running}`),
    ...metric(
      lat,
      "histogram",
      "Time from arrival to the last token.",
      ...s.latency.buckets.map((b, i) => `${lat}_bucket{le="${b}"} ${s.latency.counts[i]}`),
      `${lat}_bucket{le="+Inf"} ${s.latency.count}`,
      `${lat}_sum ${s.latency.sum}`,
      `${lat}_count ${s.latency.count}`,
    ),
    ...metric(
      "oasft_http_requests_total",
      "counter",
      "HTTP requests by route.",
      ...[...ctx.httpCounts].map(([k, v]) => `oasft_http_requests_total{route="${k}"} ${v}`),
    ),
  ];
  return lines.join("\n") + "\n";
}
