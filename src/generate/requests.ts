// What the engine is asked and what it answers: a request (prompt ids, sampling), its token events
// and result, the engine's options and statistics, and the error of a full queue.
import type { Rng } from "../data/rng.js";
import type { SamplingParams } from "./sampling.js";
import type { TextStream } from "./text-stream.js";

export type FinishReason = "stop" | "length" | "eos" | "cancelled";

export interface TokenEvent {
  id: number;
  /** Model log-probability of the token. */
  logprob: number;
  /** New text since the previous event (may be "" while a character or a stop string is incomplete). */
  text: string;
  special: boolean;
}

export interface GenerationResult {
  text: string;
  tokens: number[];
  logprobs: number[];
  finishReason: FinishReason;
  /** The generation ended on one of the request's stop strings (finishReason is then "stop"). */
  stopSequence: boolean;
  promptTokens: number;
}

export interface GenerationRequest {
  promptIds: number[];
  params: SamplingParams;
  onToken?: (e: TokenEvent) => void;
}

/** Upper bounds (seconds) of the latency histogram's buckets. */
export const LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Counts one request's latency into the histogram (cumulative buckets, as Prometheus's). */
export function observeLatency(h: EngineStats["latency"], seconds: number): void {
  h.buckets.forEach((b, i) => {
    if (seconds <= b) h.counts[i]!++;
  });
  h.sum += seconds;
  h.count++;
}

export class QueueFullError extends Error {
  constructor(size: number) {
    super(`the queue is full (${size} requests waiting); retry later`);
    this.name = "QueueFullError";
  }
}

export interface EngineOptions {
  /** Sequences decoded together (default 16). */
  maxBatch?: number;
  /** Requests waiting for a slot before new ones are refused (default 64). */
  maxQueue?: number;
  /** Longest prompt + generation (default: the model's maxPositions; unlimited when it has none). */
  maxTotalTokens?: number;
  /** Longest prompt (default: maxTotalTokens, else the model's maxPositions, else unlimited). */
  maxInputTokens?: number;
  /** Prompt + generation tokens of all running sequences together; admission waits below it (default: unlimited). */
  maxBatchTokens?: number;
  /**
   * Decode steps replayed from a captured tape, one per batch-size bucket (src/generate/batch.ts); false
   * runs every step from JavaScript over a growing cache; "eager-fixed" runs the captured path's fixed-shape
   * steps from JavaScript (the reference the replays equal). Default: on, unless OASFT_CAPTURE=0.
   */
  capture?: boolean | "eager-fixed";
  /** Test seam: called at each engine stage ("prefill", "step") so a test can make it fail. */
  fault?: (stage: "prefill" | "step", rows: number) => void;
}

export interface EngineStats {
  requests: number;
  generatedTokens: number;
  promptTokens: number;
  running: number;
  queued: number;
  /** Seconds from submit to the end of finished requests: a cumulative histogram (never decreases). */
  latency: { buckets: number[]; counts: number[]; sum: number; count: number };
}

/** A request in the engine: its state from admission to its answer. */
export interface Row {
  req: GenerationRequest;
  history: number[];
  generated: number[];
  logprobs: number[];
  stream: TextStream;
  rng: Rng | undefined;
  cancelled: boolean;
  /** Set when the row should leave the batch. */
  done?: FinishReason;
  started: number;
  resolve: (r: GenerationResult) => void;
  reject: (e: Error) => void;
}

/** What sampling reads of a row. */
export const sampled = (r: Row) => ({ params: r.req.params, history: r.history, rng: r.rng });

export interface GenerationHandle {
  result: Promise<GenerationResult>;
  /** Frees the slot at the next token boundary; the result resolves with finishReason "cancelled". */
  cancel(): void;
}
