// A served model as the eval's LM (lm-eval's local-completions): an OpenAI-compatible /v1/completions
// endpoint (oasft serve, vLLM, TGI's OpenAI route) is sent token ids, tokenized here with the model's
// tokenizer. Log-likelihoods come from echo with logprobs and no new tokens; generations from plain
// completions with the harness's stop strings.
import type { SamplingParams } from "../generate/sampling.js";
import type { ChatTokenizer } from "../tokenizer/index.js";
import { TokenizedLM } from "./lm.js";

export interface RemoteOptions {
  /** The API root, e.g. http://127.0.0.1:8080/v1 (a URL without /v1 gets it). */
  baseUrl: string;
  /** The served model's name (sent as `model`); absent: the server's only model. */
  model?: string;
  apiKey?: string;
  chat?: boolean;
  /** Requests in flight at once (the server queues the rest). */
  concurrency?: number;
  /** The model's max length (default: the tokenizer's model_max_length, else 2,048). */
  maxLength?: number;
}

type Completion = { choices: Array<{ text: string; logprobs: { token_logprobs: Array<number | null> } | null }> };

export class RemoteLM extends TokenizedLM {
  readonly describe: string;
  private readonly url: string;
  private inFlight = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(
    tokenizer: ChatTokenizer,
    readonly o: RemoteOptions,
  ) {
    super(tokenizer, o.chat ?? false, o.maxLength ?? tokenizer.modelMaxLength ?? 2048);
    const root = o.baseUrl.replace(/\/+$/, "");
    this.url = `${/\/v1$/.test(root) ? root : `${root}/v1`}/completions`;
    this.describe = this.url;
  }

  /** One POST, at most `concurrency` at a time; an HTTP error names the URL, the status and the server's message. */
  private async post(body: Record<string, unknown>): Promise<Completion> {
    const limit = this.o.concurrency ?? 8;
    if (this.inFlight >= limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.inFlight++;
    try {
      const headers: Record<string, string> = { "content-type": "application/json" };
      if (this.o.apiKey) headers.authorization = `Bearer ${this.o.apiKey}`;
      const payload = { ...(this.o.model ? { model: this.o.model } : {}), ...body };
      let res: Response;
      try {
        res = await fetch(this.url, { method: "POST", headers, body: JSON.stringify(payload) });
      } catch (err) {
        throw new Error(`--base-url ${this.url}: ${(err as Error).message}`, { cause: err });
      }
      const text = await res.text();
      if (!res.ok) {
        const message = (() => {
          try {
            return (JSON.parse(text) as { error?: { message?: string } }).error?.message ?? text;
          } catch {
            return text;
          }
        })();
        throw new Error(`--base-url ${this.url}: HTTP ${res.status}: ${message.slice(0, 300)}`);
      }
      return JSON.parse(text) as Completion;
    } finally {
      this.inFlight--;
      this.waiting.shift()?.();
    }
  }

  protected async complete(ids: number[], params: SamplingParams): Promise<string> {
    const sampled = params.doSample === true;
    const body = {
      prompt: ids,
      max_tokens: params.maxNewTokens,
      temperature: sampled ? (params.temperature ?? 1) : 0,
      ...(sampled && params.topP !== undefined ? { top_p: params.topP } : {}),
      ...(sampled && params.topK ? { top_k: params.topK } : {}),
      ...(params.seed !== undefined ? { seed: params.seed } : {}),
      ...(params.stop?.length ? { stop: params.stop } : {}),
    };
    return (await this.post(body)).choices[0]!.text;
  }

  /** The context followed by each continuation, echoed with log-probabilities; the continuation's summed. */
  protected async scoreContinuations(ids: number[], continuations: number[][]): Promise<number[]> {
    const r = await this.post({
      prompt: continuations.map((c) => [...ids, ...c]),
      echo: true,
      max_tokens: 0,
      logprobs: 0,
      temperature: 0,
    });
    return continuations.map((c, k) => {
      const lps = r.choices[k]?.logprobs?.token_logprobs;
      if (!lps) throw new Error(`--base-url ${this.url}: the server returned no logprobs for an echoed prompt`);
      return lps.slice(lps.length - c.length).reduce<number>((sum, lp) => sum + (lp ?? 0), 0);
    });
  }

  dispose(): void {}
}
