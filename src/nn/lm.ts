// The pieces of a causal LM's forward and loss that are the same for every architecture: positions
// from a padding mask, the hidden-key mask (padding, causality, packed samples), and the LM loss, plain
// or in chunks of tokens, with Gemma 2's soft-capping.
import * as torch from "../torch/index.js";

/** HF's default positions: (cumsum(mask) − 1)·mask, so the first real token of a left-padded row is 0. */
export function positionsFromMask(mask: torch.Tensor): torch.Tensor {
  return mask.cumsum(-1).sub(1).mul(mask);
}

/**
 * HF's combined mask [b, 1, s, S], true = masked: key j is hidden from query i when j > i + past
 * (causal) or when key j is padding; with segments, also when j belongs to another packed sample.
 * A single new token (s = 1) needs only the padding part. Made on `device`.
 */
export function hiddenKeys(
  mask: torch.Tensor | undefined,
  s: number,
  past: number,
  device: string,
  segmentIds?: torch.Tensor,
): torch.Tensor | undefined {
  const S = past + s;
  const padding = mask?.eq(0).unsqueeze(1).unsqueeze(1); // [b, 1, 1, S]
  if (s === 1 && !segmentIds) return padding;
  const causal = torch.ones([s, S], { dtype: "bool", device }).triu(past + 1); // [s, S]
  let masked = padding ? padding.logicalOr(causal) : causal.unsqueeze(0).unsqueeze(0);
  if (segmentIds) {
    // Packed samples: a query sees only keys of its own sample (block-diagonal within the causal mask).
    const query = segmentIds.narrow(1, past, s).unsqueeze(2); // [b, s, 1]
    masked = masked.logicalOr(query.ne(segmentIds.unsqueeze(1)).unsqueeze(1)); // [b, 1, s, S]
  }
  return masked;
}

/**
 * HF's causal-LM loss: logits at t predict labels at t+1, mean over labels ≠ −100. The labels are
 * shifted left (and −100 appended) instead of slicing the logits, which avoids copying [b, s, v].
 * Computed in float32 whatever the compute dtype.
 */
export function causalLmLoss(logits: torch.Tensor, labels: torch.Tensor): torch.Tensor {
  const [b, s, v] = logits.shape as [number, number, number];
  const end = torch.full([b, 1], -100, { dtype: "int64", device: labels.device });
  const shifted = torch.cat([labels.narrow(1, 1, s - 1), end], 1);
  const flat = logits.dtype === "float32" ? logits.view([b * s, v]) : logits.reshape([b * s, v]).to("float32");
  return torch.crossEntropy(flat, shifted.view([b * s]), { ignoreIndex: -100 });
}

/**
 * Rows per chunk: about 64 MiB of float32 logits on the CPU (cache-sized), 1 GiB on a GPU. Every chunk
 * also adds a full [v, h] gradient into the head's: on a 3B BLOOM (v 250,880) that is 7.7 GB of memory
 * traffic per chunk, so GPU chunks must be few (measured on an H200: 62 chunks of 66 rows cost a third
 * of a 4×1024 step).
 */
function chunkRows(vocab: number, device: string): number {
  const bytes = device.startsWith("cuda") ? 2 ** 30 : 2 ** 26;
  return Math.min(device.startsWith("cuda") ? 65536 : 4096, Math.max(16, Math.floor(bytes / 4 / vocab)));
}

/**
 * The causal-LM loss of hidden states `h` [b, s, hd] (a leaf that requires grad) through the head
 * `weight` [v, hd], in chunks of rows: each chunk's logits are made, its summed cross entropy is
 * back-propagated at once (scaled by `scale` / trained tokens), and the chunk is freed. h.grad and the
 * head's gradient accumulate; returns the mean loss over trained tokens. Rows with no trained label
 * are skipped entirely.
 */
export function chunkedLmLoss(
  h: torch.Tensor,
  weight: torch.Tensor,
  labels: torch.Tensor,
  scale = 1,
  rows = chunkRows(weight.size(0), h.device),
  softcap: number | null = null,
): number {
  const [b, s, hd] = h.shape as [number, number, number];
  return torch.scope(() => {
    const end = torch.full([b, 1], -100, { dtype: "int64", device: labels.device });
    const targets = torch.cat([labels.narrow(1, 1, s - 1), end], 1).view([b * s]); // position t predicts t + 1
    const trained = targets.ne(-100).toNumbers();
    const count = trained.reduce((n, x) => n + x, 0);
    if (count === 0) return Number.NaN; // HF's mean over no tokens
    const flat = h.view([b * s, hd]);
    // The chunks' sums stay on the device until the end: one host sync per call, not one per chunk.
    const sums: torch.Tensor[] = [];
    for (let start = 0; start < b * s; start += rows) {
      const n = Math.min(rows, b * s - start);
      if (!trained.slice(start, start + n).some(Boolean)) continue;
      sums.push(
        torch.scope(() => {
          const logits = softcapped(torch.linear(flat.narrow(0, start, n), weight), softcap);
          const loss = torch.crossEntropy(
            logits.dtype === "float32" ? logits : logits.to("float32"),
            targets.narrow(0, start, n),
            { reduction: "sum" },
          );
          torch.backward([loss.mul(scale / count)]);
          return loss.detach().to("float64");
        }),
      );
    }
    return torch.stack(sums).sum().item() / count;
  });
}

/** cap·tanh(x / cap) (Gemma 2's soft-capping of attention scores and final logits); x when cap is null. */
export function softcapped(x: torch.Tensor, cap: number | null | undefined): torch.Tensor {
  return cap ? x.div(cap).tanh().mul(cap) : x;
}
