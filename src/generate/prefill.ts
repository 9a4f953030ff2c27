// Prefill in chunks: a prompt of P tokens goes through the KV cache `chunk` tokens at a time, so the
// attention scores of one forward are [b, heads, chunk, past + chunk] instead of [b, heads, P, P].
// A 6,000-token few-shot prompt then needs megabytes, not gigabytes, and the logits are those of one
// forward over the whole prompt (the same keys and positions; float rounding may differ in the last bits).
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
}

/** Appends the tokens to the cache and returns the last position's logits [b, v] (in the caller's scope). */
export function prefill(model: CausalLM, o: PrefillOptions): torch.Tensor {
  const chunk = o.chunk ?? PREFILL_CHUNK;
  const P = o.inputIds.size(1);
  const past = o.cache.length;
  let last: torch.Tensor | undefined;
  for (let start = 0; start < P; start += chunk) {
    const s = Math.min(chunk, P - start);
    const logits = torch.scope(() => model.forward({
      inputIds: start === 0 && s === P ? o.inputIds : o.inputIds.narrow(1, start, s),
      attentionMask: o.attentionMask && (start + s === P ? o.attentionMask : o.attentionMask.narrow(1, 0, past + start + s)),
      cache: o.cache,
      logits: "last",
    }).logits);
    last?.dispose();
    last = logits;
  }
  if (!last) throw new Error("prefill: no tokens");
  return last.select(1, 0);
}
