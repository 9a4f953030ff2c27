// Request validation and parameter mapping for the OpenAI and TGI APIs. Every problem becomes an
// ApiError naming the field, which the server answers with 400 and a JSON body.
import type { SamplingParams } from "../generate/sampling.js";
import type { Json } from "../util/config-error.js";
import { describeNumber, keepsRule, type NumberRule } from "../util/validate.js";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param?: string,
    readonly type = "invalid_request_error",
  ) {
    super(message);
  }
}

export function asBody(body: unknown): Json {
  if (!body || typeof body !== "object" || Array.isArray(body))
    throw new ApiError(400, "the request body must be a JSON object");
  return body as Json;
}

function num(o: Json, field: string, rule: NumberRule = {}): number | undefined {
  const v = o[field];
  if (v === undefined || v === null) return undefined;
  if (!keepsRule(v, rule)) {
    throw new ApiError(400, `'${field}' must be ${describeNumber(rule)}, got ${JSON.stringify(v)}`, field);
  }
  return v;
}

function bool(o: Json, field: string): boolean | undefined {
  const v = o[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw new ApiError(400, `'${field}' must be a boolean, got ${JSON.stringify(v)}`, field);
  return v;
}

function stops(o: Json, field: string): string[] | undefined {
  const v = o[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v === "string") return [v];
  if (Array.isArray(v) && v.length <= 16 && v.every((s) => typeof s === "string")) return v as string[];
  throw new ApiError(400, `'${field}' must be a string or a list of at most 16 strings`, field);
}

export interface Limits {
  /** Largest max_tokens / max_new_tokens a request may ask for. */
  maxTokens: number;
}

/**
 * OpenAI sampling fields → SamplingParams (temperature 0 or absent top-level sampling = greedy, as OpenAI's default
 * temperature 1 samples).
 */
export function openaiSampling(o: Json, limits: Limits, defaultMax: number): SamplingParams {
  const maxNewTokens =
    num(o, "max_tokens", { min: 0, max: limits.maxTokens, integer: true }) ??
    num(o, "max_completion_tokens", { min: 0, max: limits.maxTokens, integer: true }) ??
    defaultMax;
  const temperature = num(o, "temperature", { min: 0, max: 2 }) ?? 1;
  const n = num(o, "n", { min: 1, max: 1, integer: true });
  void n;
  const p: SamplingParams = { maxNewTokens, doSample: temperature > 0, temperature };
  const topP = num(o, "top_p", { min: 0, max: 1 });
  if (topP !== undefined) p.topP = topP; // 0 keeps only the best token: greedy
  const topK = num(o, "top_k", { min: 0, integer: true });
  if (topK) p.topK = topK;
  const rep = num(o, "repetition_penalty", { min: 0.01, max: 10 });
  if (rep !== undefined) p.repetitionPenalty = rep;
  const seed = num(o, "seed", { integer: true });
  if (seed !== undefined) p.seed = seed;
  const stop = stops(o, "stop");
  if (stop) p.stop = stop;
  return p;
}

/** TGI's `parameters` → SamplingParams (do_sample defaults to false, as TGI). */
export function tgiSampling(o: Json, limits: Limits): SamplingParams {
  const params = (o.parameters ?? {}) as Json;
  if (typeof params !== "object" || Array.isArray(params))
    throw new ApiError(400, "'parameters' must be an object", "parameters");
  const doSample = bool(params, "do_sample") ?? false;
  // TGI answers 422 to a request it cannot validate, and refuses a budget of no tokens.
  const maxNewTokens = num(params, "max_new_tokens", { min: 0, max: limits.maxTokens, integer: true }) ?? 20;
  if (maxNewTokens === 0)
    throw new ApiError(
      422,
      "Input validation error: `max_new_tokens` must be strictly greater than 0",
      "max_new_tokens",
    );
  const p: SamplingParams = { maxNewTokens, doSample };
  const temperature = num(params, "temperature", { min: 0, max: 100 });
  if (temperature !== undefined) p.temperature = temperature;
  const topK = num(params, "top_k", { min: 0, integer: true });
  if (topK) p.topK = topK;
  const topP = num(params, "top_p", { min: 0, max: 1 });
  if (topP !== undefined) p.topP = topP; // 0 keeps only the best token: greedy
  const typicalP = num(params, "typical_p", { min: 0, max: 1 });
  if (typicalP !== undefined && typicalP > 0) p.typicalP = typicalP;
  const rep = num(params, "repetition_penalty", { min: 0.01, max: 10 });
  if (rep !== undefined) p.repetitionPenalty = rep;
  const seed = num(params, "seed", { min: 0, integer: true });
  if (seed !== undefined) p.seed = seed;
  const stop = stops(params, "stop");
  if (stop) p.stop = stop;
  return p;
}

/** TGI's top_n_tokens: 0-5 alternatives per generated token (TGI's default --max-top-n-tokens is 5). */
export function tgiTopN(o: Json): number {
  const params = (o.parameters ?? {}) as Json;
  const v = params.top_n_tokens;
  if (v === undefined || v === null) return 0;
  if (!(typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 5)) {
    throw new ApiError(422, "Input validation error: `top_n_tokens` must be an integer in [0, 5]", "top_n_tokens");
  }
  return v;
}

export interface ChatMessage {
  role: "system" | "user" | "assistant" | "tool";
  content: string;
}

/**
 * OpenAI messages. In OA's format: an optional first system message, then user/assistant turns
 * ending with a user turn. In a model's own template (`oaRules` false) the roles may also be tool
 * and come in any order: the template itself says what it accepts (raise_exception is a 400).
 */
export function chatMessages(o: Json, oaRules = true): ChatMessage[] {
  const list = o.messages;
  if (!Array.isArray(list) || !list.length)
    throw new ApiError(400, "'messages' must be a non-empty list of {role, content}", "messages");
  const roles = oaRules ? ["system", "user", "assistant"] : ["system", "user", "assistant", "tool"];
  const out = list.map((m, i) => {
    const role = (m as Json)?.role;
    let content = (m as Json)?.content;
    // The content-parts form: [{type: "text", text}].
    if (Array.isArray(content))
      content = content.map((part) => ((part as Json)?.type === "text" ? (part as Json).text : undefined)).join("");
    if (typeof role !== "string" || !roles.includes(role)) {
      throw new ApiError(
        400,
        `messages[${i}].role must be ${roles.map((r) => `"${r}"`).join(", ")}, got ${JSON.stringify(role)}`,
        `messages[${i}].role`,
      );
    }
    if (typeof content !== "string")
      throw new ApiError(400, `messages[${i}].content must be a string`, `messages[${i}].content`);
    if (oaRules && role === "system" && i !== 0)
      throw new ApiError(400, `messages[${i}]: a system message must come first`, `messages[${i}].role`);
    return { role, content } as ChatMessage;
  });
  if (!oaRules) return out;
  const turns = out.filter((m) => m.role !== "system");
  turns.forEach((m, i) => {
    if (m.role !== (i % 2 === 0 ? "user" : "assistant"))
      throw new ApiError(
        400,
        `messages: turns must alternate user/assistant, starting with user (turn ${i} is ${m.role})`,
        "messages",
      );
  });
  if (!turns.length || turns.at(-1)!.role !== "user")
    throw new ApiError(400, "messages: the last message must be from the user", "messages");
  return out;
}
