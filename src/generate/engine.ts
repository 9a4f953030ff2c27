// The generation engine behind chat and serve: continuous batching over one shared KV cache.
// A new request is prefilled alone, then joins the running batch at the next token boundary (its
// cache rows are appended, right-aligned, with left padding); every step decodes one token for all
// rows at once; finished or cancelled rows leave at once. Text is streamed without ever splitting a
// UTF-8 character, and stop strings are held back until they can no longer match.
import { EventEmitter } from "node:events";
import * as torch from "../torch/index.js";
import type { CausalLM, KVCache } from "../models/index.js";
import { Rng } from "../data/rng.js";
import type { ChatTokenizer } from "../tokenizer/index.js";
import { startBatch, type DecodeBatch } from "./batch.js";
import { captureByDefault } from "./captured.js";
import { DecodeThreads } from "./decode-threads.js";
import { prefillYielding } from "./prefill.js";
import { checkSampling, pickNextTokens } from "./sampling.js";
import { TextStream } from "./text-stream.js";

export { TextStream } from "./text-stream.js";
import {
  LATENCY_BUCKETS,
  observeLatency,
  QueueFullError,
  type EngineOptions,
  type EngineStats,
  type FinishReason,
  type GenerationRequest,
  type GenerationResult,
  type GenerationHandle,
  type Row,
  sampled,
} from "./requests.js";

export * from "./requests.js";

export class Engine {
  private readonly maxBatch: number;
  private readonly maxQueue: number;
  private readonly queue: Row[] = [];
  private rows: Row[] = [];
  /** The running rows' cache and decode step (src/generate/batch.ts), in the order of `rows`. */
  private batch: DecodeBatch | undefined;
  /** Decode steps' thread count under foreign load (CPU only). */
  private readonly threads: DecodeThreads | undefined;
  private running = false;
  readonly stats: EngineStats = {
    requests: 0,
    generatedTokens: 0,
    promptTokens: 0,
    running: 0,
    queued: 0,
    latency: { buckets: LATENCY_BUCKETS, counts: LATENCY_BUCKETS.map(() => 0), sum: 0, count: 0 },
  };
  /**
   * What happens to requests, for observers (tests wait on these instead of sleeping):
   * "queued" (a request waits), "admitted" (rows joined the batch), "finished" (FinishReason).
   */
  readonly events = new EventEmitter();

  constructor(
    readonly model: CausalLM,
    readonly tokenizer: ChatTokenizer,
    private readonly o: EngineOptions = {},
  ) {
    this.maxBatch = o.maxBatch ?? 16;
    this.maxQueue = o.maxQueue ?? 64;
    this.threads = DecodeThreads.forDevice(model.device);
    model.eval();
  }

  /** Longest prompt + generation a request may have (Infinity when neither option nor model bounds it). */
  get maxTotalTokens(): number {
    return this.o.maxTotalTokens ?? this.model.config.maxPositions ?? Infinity;
  }

  get maxInputTokens(): number {
    return this.o.maxInputTokens ?? this.o.maxTotalTokens ?? this.model.config.maxPositions ?? Infinity;
  }

  /** Checks a request before anything runs: a RangeError names the limit it breaks. */
  private check(req: GenerationRequest): void {
    checkSampling(req.params);
    if (!req.promptIds.length) throw new RangeError("prompt: expected at least one token");
    if (req.promptIds.length > this.maxInputTokens) {
      throw new RangeError(
        `the prompt has ${req.promptIds.length} tokens; this server takes at most ${this.maxInputTokens} ` +
          `(--max-input-tokens)`,
      );
    }
    const limit = this.o.maxTotalTokens ?? this.model.config.maxPositions;
    if (limit && req.promptIds.length + req.params.maxNewTokens > limit) {
      throw new RangeError(
        `prompt + max_new_tokens = ${req.promptIds.length + req.params.maxNewTokens} exceeds the limit of ` +
          `${limit} tokens`,
      );
    }
    if (this.o.maxBatchTokens && req.promptIds.length + req.params.maxNewTokens > this.o.maxBatchTokens) {
      throw new RangeError(
        `prompt + max_new_tokens = ${req.promptIds.length + req.params.maxNewTokens} exceeds --max-batch-tokens ` +
          `${this.o.maxBatchTokens}`,
      );
    }
  }

  /**
   * Several requests admitted or refused as a whole (a multi-prompt completion): all checked, then
   * all queued, or a QueueFullError with nothing queued.
   */
  submitAll(reqs: GenerationRequest[]): GenerationHandle[] {
    for (const r of reqs) this.check(r);
    if (this.queue.length + reqs.length > this.maxQueue) throw new QueueFullError(this.queue.length);
    return reqs.map((r) => this.enqueue(r));
  }

  submit(req: GenerationRequest): GenerationHandle {
    return this.submitAll([req])[0]!;
  }

  private enqueue(req: GenerationRequest): GenerationHandle {
    let row!: Row;
    const result = new Promise<GenerationResult>((resolve, reject) => {
      row = {
        req,
        history: [...req.promptIds],
        generated: [],
        logprobs: [],
        stream: new TextStream(this.tokenizer, req.params.stop ?? []),
        rng: req.params.doSample
          ? new Rng(req.params.seed ?? Math.floor(Math.random() * 2 ** 31), "sampling")
          : undefined,
        cancelled: false,
        started: performance.now(),
        resolve,
        reject,
      };
    });
    this.queue.push(row);
    this.stats.requests++;
    this.stats.promptTokens += req.promptIds.length;
    this.stats.queued = this.queue.length;
    this.events.emit("queued", this.queue.length);
    // The loop starts on the next turn of the event loop: the caller sees the handle (and can send
    // its response headers) before the first token arrives.
    if (!this.running) {
      this.running = true;
      setImmediate(() => void this.loop());
    }
    return {
      result,
      cancel: () => {
        row.cancelled = true;
      },
    };
  }

  /** The decode loop: runs while there is work, yielding to the event loop between tokens. */
  private async loop(): Promise<void> {
    this.running = true;
    try {
      while (this.rows.length || this.queue.length) {
        await this.admit();
        if (this.rows.length) {
          try {
            await this.step();
          } catch (err) {
            // A decoding step failed (out of memory, a device error): the running rows share one
            // cache, so they fail together, each with the cause; waiting requests go on.
            this.failRunning(err as Error);
          }
        }
        await new Promise((r) => setImmediate(r));
      }
    } catch (err) {
      // Anything else (a bug): no request may be left waiting for an answer that never comes.
      this.failRunning(err as Error);
      for (const r of this.queue.splice(0)) this.fail(r, err as Error);
    } finally {
      this.threads?.release();
      this.running = false;
      this.stats.running = this.rows.length;
      this.stats.queued = this.queue.length;
    }
  }

  /** Fails every running row with `err` (their shared cache is dropped). */
  private failRunning(err: Error): void {
    const rows = this.rows;
    this.rows = [];
    this.batch?.dispose();
    this.batch = undefined;
    for (const r of rows) this.fail(r, err);
    this.stats.running = 0;
  }

  private fail(row: Row, err: Error): void {
    row.reject(err);
    this.events.emit("finished", "error");
  }

  /** Tokens the running rows may still hold: prompt + generation budget. */
  private batchTokens(rows: Row[]): number {
    return rows.reduce((n, r) => n + r.req.promptIds.length + r.req.params.maxNewTokens, 0);
  }

  /**
   * Prefills the waiting requests that fit (batch size and --max-batch-tokens), as one left-padded
   * batch, and appends them to the running batch. A failed prefill fails those requests only.
   */
  private async admit(): Promise<void> {
    const joining: Row[] = [];
    let tokens = this.batchTokens(this.rows);
    while (this.queue.length && this.rows.length + joining.length < this.maxBatch) {
      const next = this.queue[0]!;
      const need = next.req.promptIds.length + next.req.params.maxNewTokens;
      // Admission keeps the batch under its token budget; a lone request always fits (checked at submit).
      if (this.o.maxBatchTokens && tokens + need > this.o.maxBatchTokens && this.rows.length + joining.length > 0)
        break;
      const row = this.queue.shift()!;
      if (row.cancelled) this.finish(row, "cancelled");
      else if (row.req.params.maxNewTokens === 0) this.finish(row, "length");
      else {
        joining.push(row);
        tokens += need;
      }
    }
    this.stats.queued = this.queue.length;
    if (!joining.length) return;
    const width = Math.max(...joining.map((r) => r.history.length));
    const masks = joining.map((r) => [
      ...new Array<number>(width - r.history.length).fill(0),
      ...r.history.map(() => 1),
    ]);
    const own = this.model.newCache({ batch: joining.length, capacity: width + 16 });
    let picks: Array<{ id: number; logprob: number }>;
    try {
      this.o.fault?.("prefill", joining.length);
      picks = await this.prefillJoining(joining, width, masks, own);
    } catch (err) {
      own.dispose();
      for (const r of joining) this.fail(r, err as Error);
      return;
    }
    // Join the batch: the new rows go after the running ones.
    // A row feeds each token it generates but the last (the first comes from the prefill).
    const budgets = joining.map((r) => r.req.params.maxNewTokens - 1);
    if (this.batch) this.batch.join(own, masks, budgets);
    else {
      const capture = this.o.capture ?? captureByDefault;
      this.batch = startBatch(this.model, own, masks, budgets, { maxBatch: this.maxBatch, capture });
    }
    this.rows.push(...joining);
    this.stats.running = this.rows.length;
    this.events.emit("admitted", joining.length);
    for (let i = 0; i < joining.length; i++) await this.accept(joining[i]!, picks[i]!);
    this.retire();
  }

  /**
   * The joining prompts through their new cache a chunk at a time, yielding to the event loop
   * between chunks (prefillYielding): a long prompt does not freeze /health, streams or disconnects.
   */
  private async prefillJoining(
    joining: Row[],
    width: number,
    masks: number[][],
    cache: KVCache,
  ): Promise<Array<{ id: number; logprob: number }>> {
    const device = this.model.device;
    const rows = joining.map((r) => [
      ...new Array<number>(width - r.history.length).fill(this.tokenizer.padId),
      ...r.history,
    ]);
    const ids = torch.tensor(rows, { dtype: "int64", device }).keep();
    const padded = joining.some((r) => r.history.length < width);
    const mask = padded ? torch.tensor(masks, { dtype: "int64", device }).keep() : undefined;
    let last: torch.Tensor | undefined;
    try {
      last = await prefillYielding(this.model, { inputIds: ids, attentionMask: mask, cache });
      const logits = last;
      return torch.noGrad(() => torch.scope(() => pickNextTokens(logits.select(1, 0), joining.map(sampled))));
    } finally {
      for (const t of [ids, mask, last]) t?.dispose();
    }
  }

  /** One token for every running row. */
  private async step(): Promise<void> {
    const b = this.rows.length;
    this.o.fault?.("step", b);
    const batch = this.batch!;
    const tokens = this.rows.map((r) => r.history.at(-1)!);
    const picks = torch.noGrad(() =>
      torch.scope(() => {
        const decode = () => batch.step(tokens);
        const { logits, greedy } = this.threads ? this.threads.step(decode) : decode();
        return pickNextTokens(logits, this.rows.map(sampled), greedy);
      }),
    );
    for (let i = 0; i < b; i++) await this.accept(this.rows[i]!, picks[i]!);
    this.retire();
  }

  /** Records a row's new token and streams its text; marks the row done when it should stop. */
  private async accept(row: Row, pick: { id: number; logprob: number }): Promise<void> {
    row.history.push(pick.id);
    // eos, generation_config.json's other eos ids, and the chat template's end of turn all end a reply.
    const eos = this.tokenizer.stopIds.has(pick.id);
    const special = eos || this.tokenizer.isSpecial(pick.id);
    if (!eos) {
      row.generated.push(pick.id);
      row.logprobs.push(pick.logprob);
    }
    this.stats.generatedTokens++;
    const { delta, stopAt } = eos ? { delta: "", stopAt: undefined } : await row.stream.push(pick.id);
    row.req.onToken?.({ id: pick.id, logprob: pick.logprob, text: delta, special });
    if (stopAt !== undefined) row.done = "stop";
    else if (eos) row.done = "eos";
    else if (row.generated.length >= row.req.params.maxNewTokens) row.done = "length";
  }

  /** Removes finished and cancelled rows from the batch (and the padding no row needs any more). */
  private retire(): void {
    const keep: number[] = [];
    this.rows.forEach((r, i) => {
      const done = r.done ?? (r.cancelled ? "cancelled" : undefined);
      if (done) this.finish(r, done);
      else keep.push(i);
    });
    if (keep.length === this.rows.length) return;
    this.rows = keep.map((i) => this.rows[i]!);
    this.batch!.keep(keep);
    // An idle SlotBatch stays: the next request joins its layout, and its recorded step, as is.
    if (!keep.length && !this.batch!.reusable) {
      this.batch!.dispose();
      this.batch = undefined;
    }
    this.stats.running = this.rows.length;
  }

  private finish(row: Row, reason: FinishReason): void {
    const tail = reason === "stop" ? "" : row.stream.flush();
    if (tail) row.req.onToken?.({ id: -1, logprob: 0, text: tail, special: false });
    let text = row.stream.text.replace(/\uFFFD$/, "");
    if (reason === "stop") {
      const at = Math.min(...(row.req.params.stop ?? []).map((s) => (s ? text.indexOf(s) : -1)).filter((x) => x >= 0));
      if (Number.isFinite(at)) text = text.slice(0, at);
    }
    const seconds = (performance.now() - row.started) / 1000;
    observeLatency(this.stats.latency, seconds);
    row.resolve({
      text,
      tokens: row.generated,
      logprobs: row.logprobs,
      finishReason: reason === "eos" ? "stop" : reason,
      stopSequence: reason === "stop",
      promptTokens: row.req.promptIds.length,
    });
    this.events.emit("finished", reason);
  }
}
