// Scaled dot-product attention over heads, with grouped-query attention (several query heads share a
// key/value head, as HF's repeat_kv) and HF's masking: hidden keys get the dtype's minimum, never −inf,
// so a query that sees no key (a left pad) gets a uniform row instead of NaN.
//
// Shapes: b batch, n query heads, g kv heads (n % g = 0), s queries, S keys, d head dim.
import * as torch from "../torch/index.js";

/**
 * Which attention runs: "auto" (libtorch's fused scaled_dot_product_attention on CUDA where the addon has
 * it, the composite below elsewhere), "sdpa" (the fused op on every device that has it) or "composite"
 * (the reference: HF's eager attention). OASFT_ATTENTION sets the starting value.
 */
export type AttentionImpl = "auto" | "sdpa" | "composite";

let impl: AttentionImpl = parseImpl(process.env.OASFT_ATTENTION ?? "auto", "OASFT_ATTENTION");

function parseImpl(value: string, where: string): AttentionImpl {
  if (value !== "auto" && value !== "sdpa" && value !== "composite") {
    throw new Error(`${where}=${value}: expected auto, sdpa or composite`);
  }
  if (value === "sdpa" && !torch.features.sdpa) {
    throw new Error(
      `${where}=sdpa: this libtorch (${torch.version()}) has no scaled_dot_product_attention (2.1 or later)`,
    );
  }
  return value;
}

/** Sets the attention implementation; returns the previous one (tests compare the two paths). */
export function setAttentionImpl(next: AttentionImpl): AttentionImpl {
  const previous = impl;
  impl = parseImpl(next, "attention");
  return previous;
}

/** Whether the fused op serves attention on `device` (never when the probabilities are wanted). */
export function useSdpa(device: string, wantProbs = false): boolean {
  if (wantProbs || impl === "composite" || !torch.features.sdpa) return false;
  return impl === "sdpa" || device.startsWith("cuda");
}

export interface AttentionOptions {
  /** [b, 1, s, S] bool, true = hidden; undefined = every key visible. */
  hidden: torch.Tensor | undefined;
  /**
   * `hidden` is exactly the causal mask of a forward with no past, padding or packing: the fused op
   * then runs its causal kernel (flash attention on CUDA) with no mask tensor at all.
   */
  causal?: boolean;
  /** Multiplies q·kᵀ (1/√d). */
  scale: number;
  /** Gemma 2's attn_logit_softcapping: scores → cap·tanh(scores / cap) before the mask (composite only). */
  softcap?: number | null;
  /** Dropout on the probabilities (training only). */
  dropout?: number;
  training?: boolean;
  wantProbs?: boolean;
}

/** q [b, n, s, d], k/v [b, g, S, d] → context [b, s, n·d] (heads concatenated) and the probabilities. */
export function attention(
  q: torch.Tensor,
  k: torch.Tensor,
  v: torch.Tensor,
  o: AttentionOptions,
): { context: torch.Tensor; probs?: torch.Tensor } {
  const [b, n, s, d] = q.shape as [number, number, number, number];
  const g = k.size(1);
  const S = k.size(2);
  if (g !== n) {
    // Query head h reads kv head ⌊h / (n/g)⌋: each kv head repeated n/g times in place.
    const rep = (t: torch.Tensor) =>
      t
        .unsqueeze(2)
        .expand([b, g, n / g, S, d])
        .reshape([b, n, S, d]);
    k = rep(k);
    v = rep(v);
  }
  if (!o.softcap && useSdpa(q.device, o.wantProbs)) {
    const mask = o.causal ? undefined : o.hidden && additiveMask(o.hidden, q.dtype, q.device);
    const dropout = o.training && o.dropout ? o.dropout : 0;
    const out = torch.sdpa(q, k, v, { mask, dropout, causal: o.causal && s > 1, scale: o.scale });
    return { context: out.transpose(1, 2).reshape([b, s, n * d]) };
  }
  let scores = q.matmul(k.transpose(2, 3)).mul(o.scale); // [b, n, s, S]
  if (o.softcap) scores = scores.div(o.softcap).tanh().mul(o.softcap);
  const inputDtype = scores.dtype;
  if (inputDtype === "float16") scores = scores.to("float32"); // fp16's min is not "masked" enough
  if (o.hidden) scores = scores.maskedFill(o.hidden, torch.FLOAT_MIN[scores.dtype]!);
  let probs = scores.softmax(-1, "float32");
  if (probs.dtype !== inputDtype) probs = probs.to(inputDtype);
  const used = o.training && o.dropout ? torch.dropout(probs, o.dropout, true) : probs;
  const context = used
    .matmul(v)
    .transpose(1, 2)
    .reshape([b, s, n * d]);
  return { context, ...(o.wantProbs ? { probs } : {}) };
}

/**
 * A bool mask (true = hidden) as the additive mask the fused op takes: 0 where visible, HIDDEN_BIAS
 * where hidden.
 */
export function additiveMask(hidden: torch.Tensor, dtype: torch.DType, device: string): torch.Tensor {
  return torch.zeros(hidden.shape, { dtype, device }).maskedFill(hidden, hiddenBias(dtype));
}

/**
 * The additive bias of a hidden key: half the dtype's minimum. HF fills with the minimum itself so that a
 * query that sees no key (a left pad) gets a uniform row instead of NaN; the fused kernels multiply scores
 * by log2(e) inside, where the minimum overflows to −inf and such rows no longer come out uniform (seen
 * on an H200: pad-query rows differed from HF's). Half the minimum stays finite and still absorbs q·kᵀ.
 */
export function hiddenBias(dtype: torch.DType): number {
  return torch.FLOAT_MIN[dtype]! / 2;
}

/**
 * `hidden` (true = hidden; [b, 1, s, S], or undefined) with a sliding window added: the query at cache
 * index past + i sees only keys past + i − window + 1 … past + i (itself and window − 1 before it), by
 * index in the sequence, not by position id, as HF's Mistral/Qwen2 masks. Applies to one-token decode
 * steps too, whose mask is otherwise padding only.
 */
export function withSlidingWindow(
  hidden: torch.Tensor | undefined,
  s: number,
  past: number,
  window: number,
  device: string,
): torch.Tensor {
  const S = past + s;
  // key j hidden from query i when j ≤ past + i − window, i.e. tril with diagonal past − window.
  const outside = torch
    .ones([s, S], { dtype: "bool", device })
    .tril(past - window)
    .unsqueeze(0)
    .unsqueeze(0);
  return hidden ? hidden.logicalOr(outside) : outside;
}

/** Whether no window of `windows` (null = full attention) hides anything within `length` positions. */
export function windowsCover(windows: ReadonlyArray<number | null>, length: number): boolean {
  return windows.every((w) => w === null || w >= length);
}

/** One layer's mask: what attention() takes as `hidden` and `causal`. */
export interface LayerMask {
  hidden: torch.Tensor | undefined;
  causal: boolean;
}

/**
 * The masks of a forward whose layers have sliding windows (`windows[i]`, null = full attention): the
 * forward's own mask under null, and one windowed mask per distinct window, each made once.
 */
export function windowedMasks(
  base: LayerMask & { s: number; past: number },
  windows: ReadonlyArray<number | null>,
  device: string,
): Map<number | null, LayerMask> {
  const masks = new Map<number | null, LayerMask>([[null, { hidden: base.hidden, causal: base.causal }]]);
  for (const w of windows) {
    if (w !== null && !masks.has(w))
      masks.set(w, { hidden: withSlidingWindow(base.hidden, base.s, base.past, w, device), causal: false });
  }
  return masks;
}
