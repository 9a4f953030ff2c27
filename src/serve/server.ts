// `oasft serve`: one model behind OpenAI- and TGI-compatible HTTP APIs, with the continuous-batching
// engine, SSE streaming, a bounded queue (429), Prometheus metrics, an optional API key, and the chat
// page at /. Built on fastify (body limits, JSON parsing errors answered as 400, never a crash): this
// file sets what every route shares (the API key, the error shapes, 404/405), and each API is a plugin
// over one ServeContext (openai.ts, tgi.ts, service.ts).
import Fastify, { type FastifyInstance } from "fastify";
import { createHash, timingSafeEqual } from "node:crypto";
import { QueueFullError, type Engine } from "../generate/engine.js";
import { errorBody, serveContext, type ServeContext, type ServerOptions } from "./context.js";
import { openaiRoutes } from "./openai.js";
import { ApiError } from "./protocol.js";
import { serviceRoutes } from "./service.js";
import { tgiRoutes } from "./tgi.js";

export type { ReplyScorer, ServerOptions } from "./context.js";

/** Constant-time comparison of the presented key with the configured one (hashes of equal length). */
function keyMatches(header: string | undefined, key: string): boolean {
  const m = /^bearer\s+(.+)$/i.exec(header ?? "");
  if (!m) return false;
  const a = createHash("sha256").update(m[1]!.trim()).digest();
  const b = createHash("sha256").update(key).digest();
  return timingSafeEqual(a, b);
}

const POST_ROUTES = new Set(["/", "/v1/chat/completions", "/v1/completions", "/generate", "/generate_stream"]);
const GET_ROUTES = new Set(["/", "/health", "/info", "/metrics", "/v1/models"]);

export function buildServer(o: ServerOptions): { app: FastifyInstance; engine: Engine } {
  const ctx = serveContext(o);
  // requestTimeout bounds a slowly trickled body; a long generation is not a slow request (it streams).
  const app = Fastify({
    bodyLimit: o.bodyLimit ?? 1 << 20,
    logger: false,
    requestTimeout: o.requestTimeoutMs ?? 30_000,
  });
  app.addHook("onRequest", async (req, reply) => {
    const key = `${req.method} ${req.routeOptions.url ?? "unknown"}`;
    ctx.httpCounts.set(key, (ctx.httpCounts.get(key) ?? 0) + 1);
    const open = req.url === "/" || req.url === "/health" || req.url === "/metrics";
    if (o.apiKey && !open && !keyMatches(req.headers.authorization, o.apiKey)) {
      const message = "missing or wrong API key (Authorization: Bearer KEY)";
      await reply.code(401).send(errorBody(message, "authentication_error", "invalid_api_key"));
    }
  });
  setErrorHandlers(app);
  const plugin = { ctx } satisfies { ctx: ServeContext };
  void app.register(serviceRoutes, plugin);
  void app.register(openaiRoutes, plugin);
  void app.register(tgiRoutes, plugin);
  return { app, engine: ctx.engine };
}

/** Every error in OpenAI's shape with its status; a known route asked with another method is 405 with Allow. */
function setErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler(async (err: Error & { statusCode?: number; code?: string }, _req, reply) => {
    if (err instanceof ApiError) {
      const code = err.status === 400 ? "invalid_value" : "error";
      return reply.code(err.status).send(errorBody(err.message, err.type, code, err.param ?? null));
    }
    // Decided before any byte of the response: a client (OpenAI's included) sees 429 and retries.
    if (err instanceof QueueFullError) {
      return reply
        .code(429)
        .header("retry-after", "1")
        .send(errorBody(err.message, "rate_limit_error", "rate_limit_exceeded"));
    }
    // fastify's own errors (bad JSON, body too large) carry their status; engine RangeErrors are bad requests.
    if (!err.statusCode && err instanceof RangeError) {
      return reply.code(400).send(errorBody(err.message, "invalid_request_error", "invalid_value"));
    }
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    const json = err.code === "FST_ERR_CTP_INVALID_JSON_BODY" || /JSON/.test(err.message);
    const message = json ? `the body is not valid JSON: ${err.message}` : err.message;
    const code =
      status === 413 ? "body_too_large" : json ? "invalid_json" : status === 500 ? "server_error" : "invalid_request";
    return reply.code(status).send(errorBody(message, status === 500 ? "server_error" : "invalid_request_error", code));
  });
  app.setNotFoundHandler(async (req, reply) => {
    const path = req.url.split("?")[0]!;
    const allow = [...(GET_ROUTES.has(path) ? ["GET"] : []), ...(POST_ROUTES.has(path) ? ["POST"] : [])];
    if (allow.length) {
      const message = `${req.method} is not allowed on ${path}; use ${allow.join(" or ")}`;
      return reply
        .code(405)
        .header("allow", allow.join(", "))
        .send(errorBody(message, "invalid_request_error", "method_not_allowed"));
    }
    return reply.code(404).send(errorBody(`no route ${req.method} ${path}`, "invalid_request_error", "not_found"));
  });
}
