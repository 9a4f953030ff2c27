// What every route plugin of `oasft serve` works over: the model, its tokenizer and engine, the
// request limits, the names it answers to, and the helpers that admit requests to the engine and
// write server-sent events. buildServer makes one; each plugin receives it.
import type { FastifyReply } from "fastify";
import type { CausalLM } from "../models/index.js";
import type { ChatTurn } from "../data/conversation.js";
import {
  Engine,
  type EngineOptions,
  type GenerationRequest,
  type GenerationResult,
  type TokenEvent,
} from "../generate/engine.js";
import type { SamplingParams } from "../generate/sampling.js";
import { ChatTemplateError, type ChatTokenizer } from "../tokenizer/index.js";
import { ApiError, type ChatMessage, type Limits } from "./protocol.js";

/** What ranks best-of-n candidates of a chat: a reward model (oasft train --stage rm). */
export interface ReplyScorer {
  score(context: ChatTurn[], replies: string[]): Promise<number[]>;
}

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
  /** Ranks chat completions' best_of candidates (without one, they are ranked by mean token log-probability). */
  scorer?: ReplyScorer;
  /** Test seam passed to the engine (EngineOptions.fault). */
  fault?: EngineOptions["fault"];
}

export interface ServeContext {
  readonly o: ServerOptions;
  readonly model: CausalLM;
  readonly tok: ChatTokenizer;
  readonly engine: Engine;
  readonly limits: Limits;
  /** Requests served per route, for /metrics. */
  readonly httpCounts: Map<string, number>;
  /**
   * Queues requests (all or none) and returns their results; a full queue throws QueueFullError
   * here, before any byte of the response is sent. The response closing before they finished (the
   * client went away) cancels them; one listener per response, none left on keep-alive sockets.
   */
  startEach(reply: FastifyReply, requests: GenerationRequest[]): Array<Promise<GenerationResult>>;
  /** startEach with one set of parameters for every prompt. */
  start(
    reply: FastifyReply,
    prompts: number[][],
    params: SamplingParams,
    onToken?: (e: TokenEvent) => void,
  ): Array<Promise<GenerationResult>>;
  generate(
    reply: FastifyReply,
    promptIds: number[],
    params: SamplingParams,
    onToken?: (e: TokenEvent) => void,
  ): Promise<GenerationResult>;
  /** A chat in the served template; what the template itself refuses (raise_exception) is the client's 400. */
  encodeChat(messages: ChatMessage[]): Promise<number[]>;
}

export function serveContext(o: ServerOptions): ServeContext {
  const engine = new Engine(o.model, o.tokenizer, {
    maxBatch: o.maxBatch ?? 16,
    maxQueue: o.maxQueue ?? 64,
    // A server always bounds prompts: the model's context, or 4,096 tokens for models without one
    // (relative position schemes).
    maxInputTokens: o.maxInputTokens ?? o.model.config.maxPositions ?? 4096,
    ...(o.maxBatchTokens ? { maxBatchTokens: o.maxBatchTokens } : {}),
    ...(o.fault ? { fault: o.fault } : {}),
  });
  const startEach: ServeContext["startEach"] = (reply, requests) => {
    const handles = engine.submitAll(requests);
    reply.raw.once("close", () => {
      if (!reply.raw.writableFinished) for (const h of handles) h.cancel();
    });
    return handles.map((h) => h.result);
  };
  const start: ServeContext["start"] = (reply, prompts, params, onToken) =>
    startEach(
      reply,
      prompts.map((promptIds) => ({ promptIds, params, ...(onToken ? { onToken } : {}) })),
    );
  return {
    o,
    model: o.model,
    tok: o.tokenizer,
    engine,
    limits: { maxTokens: o.maxTokens ?? 2048 },
    httpCounts: new Map(),
    startEach,
    start,
    generate: (reply, promptIds, params, onToken) => start(reply, [promptIds], params, onToken)[0]!,
    encodeChat: async (messages) => {
      try {
        return await o.tokenizer.encodeChatPrompt(messages);
      } catch (err) {
        if (err instanceof ChatTemplateError) throw new ApiError(400, err.message, "messages");
        throw err;
      }
    },
  };
}

/** OpenAI's error object; `code` is a short machine-readable reason. */
export function errorBody(message: string, type: string, code: string, param: string | null = null) {
  return { error: { message, type, param, code } };
}

export function sseHeaders(reply: FastifyReply): void {
  reply.hijack();
  reply.raw.writeHead(200, {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    connection: "keep-alive",
  });
}

export const sse = (reply: FastifyReply, data: unknown) =>
  reply.raw.write(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);
