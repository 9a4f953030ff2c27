// Scaled dot-product attention over heads, with grouped-query attention (several query heads share a
// key/value head, as HF's repeat_kv) and HF's masking: hidden keys get the dtype's minimum, never −inf,
// so a query that sees no key (a left pad) gets a uniform row instead of NaN.
//
// Shapes: b batch, n query heads, g kv heads (n % g = 0), s queries, S keys, d head dim.
import * as torch from "../torch/index.js";

export interface AttentionOptions {
  /** [b, 1, s, S] bool, true = hidden; undefined = every key visible. */
  hidden: torch.Tensor | undefined;
  /** Multiplies q·kᵀ (1/√d). */
  scale: number;
  /** Dropout on the probabilities (training only). */
  dropout?: number;
  training?: boolean;
  wantProbs?: boolean;
}

/** q [b, n, s, d], k/v [b, g, S, d] → context [b, s, n·d] (heads concatenated) and the probabilities. */
export function attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: AttentionOptions): { context: torch.Tensor; probs?: torch.Tensor } {
  const [b, n, s, d] = q.shape as [number, number, number, number];
  const g = k.size(1);
  const S = k.size(2);
  if (g !== n) {
    // Query head h reads kv head ⌊h / (n/g)⌋: each kv head repeated n/g times in place.
    const rep = (t: torch.Tensor) => t.unsqueeze(2).expand([b, g, n / g, S, d]).reshape([b, n, S, d]);
    k = rep(k);
    v = rep(v);
  }
  let scores = q.matmul(k.transpose(2, 3)).mul(o.scale); // [b, n, s, S]
  const inputDtype = scores.dtype;
  if (inputDtype === "float16") scores = scores.to("float32"); // fp16's min is not "masked" enough
  if (o.hidden) scores = scores.maskedFill(o.hidden, torch.FLOAT_MIN[scores.dtype]!);
  let probs = scores.softmax(-1, "float32");
  if (probs.dtype !== inputDtype) probs = probs.to(inputDtype);
  const used = o.training && o.dropout ? torch.dropout(probs, o.dropout, true) : probs;
  const context = used.matmul(v).transpose(1, 2).reshape([b, s, n * d]);
  return { context, ...(o.wantProbs ? { probs } : {}) };
}
