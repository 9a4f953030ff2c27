// Prefill in chunks: a prompt of P tokens goes through the KV cache `chunk` tokens at a time, so the
// attention scores of one forward are [b, heads, chunk, past + chunk] instead of [b, heads, P, P].
// A 6,000-token few-shot prompt then needs megabytes, not gigabytes, and the logits are those of one
// forward over the whole prompt (the same keys and positions; float rounding may differ in the last bits).
// prefillSteps does one chunk per step, so async callers (the engine, the server) can yield between them.
import * as torch from "../torch/index.js";
import type { CausalLM, KVCache } from "../models/index.js";

/** Tokens per prefill forward: long enough to keep matrix products efficient, short enough to bound memory. */
export const PREFILL_CHUNK = 512;

export interface PrefillOptions {
  /** [b, P] int64 new tokens (left-padded when rows differ). */
  inputIds: torch.Tensor;
  /** [b, past + P], 1 = real token; covers what the cache already holds. Omitted = no padding. */
  attentionMask?: torch.Tensor;
  cache: KVCache;
  chunk?: number;
  /**
   * Called with each chunk's logits for all its positions [b, s, v] (borrowed: valid during the call)
   * and the chunk's first position. Without it only the last position's logits are computed.
   */
  onChunkLogits?: (logits: torch.Tensor, start: number) => void;
}

/**
 * One chunk per step; the generator returns the last position's logits [b, 1, v], which the caller
 * owns (they join the scope current at the last step, if any). An abandoned generator frees what it holds.
 */
export function* prefillSteps(model: CausalLM, o: PrefillOptions): Generator<void, torch.Tensor> {
  const chunk = o.chunk ?? PREFILL_CHUNK;
  const P = o.inputIds.size(1);
  const past = o.cache.length;
  let last: torch.Tensor | undefined;
  let finished = false;
  try {
    for (let start = 0; start < P; start += chunk) {
      if (start > 0) yield;
      const s = Math.min(chunk, P - start);
      const logits = torch.scope(() => {
        const out = model.forward({
          inputIds: start === 0 && s === P ? o.inputIds : o.inputIds.narrow(1, start, s),
          attentionMask:
            o.attentionMask && (start + s === P ? o.attentionMask : o.attentionMask.narrow(1, 0, past + start + s)),
          cache: o.cache,
          logits: o.onChunkLogits ? "all" : "last",
        }).logits;
        o.onChunkLogits?.(out, start);
        return o.onChunkLogits ? out.narrow(1, s - 1, 1) : out;
      });
      last?.dispose();
      last = logits;
    }
    if (!last) throw new Error("prefill: no tokens");
    finished = true;
    return last;
  } finally {
    // Stopped midway (an error, or the caller gave up): the chunk logits held here are freed.
    if (!finished) last?.dispose();
  }
}

/** Appends the tokens to the cache and returns the last position's logits [b, v] (in the caller's scope). */
export function prefill(model: CausalLM, o: PrefillOptions): torch.Tensor {
  const steps = prefillSteps(model, o);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value.select(1, 0);
  }
}

/** prefillSteps driven asynchronously, yielding to the event loop between chunks (no grad recorded). */
export async function prefillYielding(model: CausalLM, o: PrefillOptions): Promise<torch.Tensor> {
  const steps = prefillSteps(model, o);
  try {
    for (;;) {
      const r = torch.noGrad(() => steps.next());
      if (r.done) return r.value;
      await new Promise((resolve) => setImmediate(resolve));
    }
  } finally {
    steps.return(undefined as never); // an abandoned run frees the chunk logits it held
  }
}
