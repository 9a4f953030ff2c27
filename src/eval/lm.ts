// What the eval tasks run on: lm-eval's `LM` interface (loglikelihood, generate_until), implemented by
// the local model (LocalLM: the continuous-batching engine and a KV cache reused across few-shot
// contexts) and by a served model (RemoteLM in remote-lm.ts: an OpenAI completions endpoint). Both
// tokenize here, with the model's tokenizer, so the contexts, the truncation and the per-row records
// (what the model saw) are the same whichever runs the model.
import * as torch from "../torch/index.js";
import type { CausalLM } from "../models/index.js";
import { Engine } from "../generate/engine.js";
import { prefill } from "../generate/prefill.js";
import type { SamplingParams } from "../generate/sampling.js";
import type { ChatTokenizer } from "../tokenizer/index.js";
import type { KVCache } from "../models/index.js";

/**
 * What the model was given for one prompt, as each row records it: the harness's prompt after chat
 * wrapping and left truncation, decoded from the very token ids fed (special tokens shown).
 */
export interface ModelInput {
  input: string;
  input_tokens: number;
  /** Tokens cut from the left to fit the model's length (lm-eval's rule); 0 when none. */
  truncated_tokens: number;
}

export interface GenerateOptions {
  /** Cut each context from the left to leave room for the budget (lm-eval's generate_until); else whole. */
  truncate: boolean;
  /** Called as each prompt's generation completes (progress). */
  onDone?: () => void;
}

export interface LM {
  /** What runs the model, for the results file ("local model", "http://host:port/v1"). */
  readonly describe: string;
  /** Tokens of a prompt as it would be fed (chat-wrapped when asked): instruct-eval's shot budget. */
  countTokens(prompt: string): Promise<number>;
  /** Summed log-likelihood of each continuation after each context (lm-eval's loglikelihood). */
  loglikelihood(
    contexts: string[],
    continuations: string[],
    onContext?: () => void,
  ): Promise<{ scores: number[][]; seen: ModelInput[] }>;
  /** A completion of each prompt, to params.stop or the budget; sampled prompts get seeds seed + i. */
  generateUntil(
    prompts: string[],
    params: SamplingParams,
    o: GenerateOptions,
  ): Promise<{ gens: string[]; seen: ModelInput[] }>;
  dispose(): void;
}

/**
 * The harness logic both backends share: prompts tokenized (chat-wrapped with `chat`), contexts cut
 * from the left as lm-eval cuts them, per-prompt seeds; a backend only completes and scores token ids.
 */
export abstract class TokenizedLM implements LM {
  abstract readonly describe: string;

  constructor(
    readonly tokenizer: ChatTokenizer,
    readonly chat: boolean,
    /** The model's max length as lm-eval sees it. */
    readonly maxLength: number,
  ) {}

  /** The completion of `ids` under `params` (its text, stop strings removed). */
  protected abstract complete(ids: number[], params: SamplingParams): Promise<string>;
  /** Summed log-likelihood of each continuation (token ids) after the context `ids`. */
  protected abstract scoreContinuations(ids: number[], continuations: number[][]): Promise<number[]>;
  abstract dispose(): void;
  /** After a loglikelihood batch: what scoring held (a cache) may go. */
  protected endScoring(): void {}

  private encodePrompt(prompt: string): Promise<number[]> {
    return this.chat
      ? this.tokenizer.encodeChatPrompt([{ role: "user", content: prompt }])
      : this.tokenizer.encode(prompt);
  }

  async countTokens(prompt: string): Promise<number> {
    return (await this.encodePrompt(prompt)).length;
  }

  /** A prompt's token ids as the model gets them (chat-wrapped, the last `keep` kept), and their record. */
  private async modelInput(prompt: string, keep: number): Promise<{ ids: number[]; seen: ModelInput }> {
    const full = await this.encodePrompt(prompt);
    const ids = keep > 0 && full.length > keep ? full.slice(full.length - keep) : full;
    const input = await this.tokenizer.decode(ids);
    return { ids, seen: { input, input_tokens: ids.length, truncated_tokens: full.length - ids.length } };
  }

  async generateUntil(prompts: string[], params: SamplingParams, o: GenerateOptions) {
    // lm-eval keeps the last max_length − max_gen_toks tokens of a context (HF's generate_until).
    const keep = o.truncate ? this.maxLength - params.maxNewTokens : Infinity;
    const inputs = await Promise.all(prompts.map((p) => this.modelInput(p, keep)));
    // Sampled requests each get their own seed, so a run repeats exactly.
    const gens = await Promise.all(
      inputs.map(async ({ ids }, i) => {
        const seeded = params.doSample ? { ...params, seed: (params.seed ?? 0) + i } : params;
        const text = await this.complete(ids, seeded);
        o.onDone?.();
        return text;
      }),
    );
    return { gens, seen: inputs.map((x) => x.seen) };
  }

  async loglikelihood(contexts: string[], continuations: string[], onContext?: () => void) {
    // Continuations are pieces of text, not documents: no BOS in front of " A" (LLaMA's tokenizer adds one).
    const contIds = await Promise.all(continuations.map((c) => this.tokenizer.encodePlain(c)));
    // lm-eval scores (context + continuation)[-(max_length + 1):]: long contexts lose their head.
    const longest = Math.max(...contIds.map((c) => c.length));
    const scores: number[][] = [];
    const seen: ModelInput[] = [];
    try {
      for (const context of contexts) {
        const given = await this.modelInput(context, this.maxLength + 1 - longest);
        seen.push(given.seen);
        scores.push(await this.scoreContinuations(given.ids, contIds));
        onContext?.();
      }
    } finally {
      this.endScoring();
    }
    return { scores, seen };
  }
}

/**
 * The model's max length as lm-eval's HF model sees it: its config's context, else the tokenizer's
 * model_max_length (unless it is transformers' "no limit" value), else 2,048.
 */
export const localMaxLength = (model: CausalLM, tokenizer: ChatTokenizer) =>
  model.config.maxPositions ?? tokenizer.modelMaxLength ?? 2048;

/** The model in this process: generations batched by the engine, contexts scored through a reused KV cache. */
export class LocalLM extends TokenizedLM {
  readonly describe = "local model";
  private readonly engine: Engine;
  private cache: KVCache | undefined;
  /** The token ids the cache holds (the previous context): a new context reuses their longest shared prefix. */
  private cached: number[] = [];

  constructor(
    readonly model: CausalLM,
    tokenizer: ChatTokenizer,
    o: { chat?: boolean; maxBatch?: number } = {},
  ) {
    super(tokenizer, o.chat ?? false, localMaxLength(model, tokenizer));
    this.engine = new Engine(model, tokenizer, { maxBatch: o.maxBatch ?? 8, maxQueue: Number.MAX_SAFE_INTEGER });
  }

  protected async complete(ids: number[], params: SamplingParams): Promise<string> {
    return (await this.engine.submit({ promptIds: ids, params }).result).text;
  }

  /**
   * The context after the cached prefix it shares with the previous one (the few-shot header), then each continuation.
   */
  protected async scoreContinuations(ids: number[], contIds: number[][]): Promise<number[]> {
    const { model } = this;
    const cache = (this.cache ??= model.newCache({ batch: 1, capacity: 512 }));
    let lcp = 0;
    while (lcp < this.cached.length && lcp < ids.length - 1 && this.cached[lcp] === ids[lcp]) lcp++;
    cache.truncate(lcp);
    this.cached = [];
    const scores = torch.noGrad(() =>
      torch.scope(() => {
        const feed = torch.tensor([ids.slice(lcp)], { dtype: "int64", device: model.device });
        // The context through the cache in chunks: memory stays flat however long the few-shot prompt.
        const last = prefill(model, { inputIds: feed, cache }).select(0, 0).to("float32").logSoftmax(-1);
        return contIds.map((c) => {
          if (c.length === 1) return last.select(0, c[0]!).item();
          // A multi-token continuation: its tokens after the cached context, then the cache is cut back.
          const rest = torch.tensor([c.slice(0, -1)], { dtype: "int64", device: model.device });
          const lp = model.forward({ inputIds: rest, cache }).logits.select(0, 0).to("float32").logSoftmax(-1);
          cache.truncate(ids.length);
          return c
            .slice(1)
            .reduce((sum, id, j) => sum + lp.select(0, j).select(0, id).item(), last.select(0, c[0]!).item());
        });
      }),
    );
    this.cached = ids;
    return scores;
  }

  protected override endScoring(): void {
    this.cache?.dispose();
    this.cache = undefined;
    this.cached = [];
  }

  dispose(): void {
    this.endScoring();
  }
}
