// The micro-batches a run trains on: each epoch's deterministic order of samples (fresh truncation
// windows), padded as OA does or packed into rows, and their tensors on the device.
import * as torch from "../torch/index.js";
import { epochIndices } from "../data/mix.js";
import { Rng } from "../data/rng.js";
import type { Settings } from "../sft/config.js";
import { bestFitDecreasing, packBatch, padBatch, type Batch } from "../sft/collate.js";
import { splitSample, type SftData } from "../sft/data.js";
import type { EncodedSample } from "../sft/encode.js";

/**
 * The micro-batches of one epoch, deterministic for (seed, epoch): the epoch's sample order (with
 * fraction/size subsets), a fresh truncation window per sample, then OA's padded batches or packed rows.
 */
export function epochBatches(
  data: SftData,
  cfg: Settings<"format" | "data">,
  microBatchSize: number,
  epoch: number,
): Batch[] {
  const order = epochIndices(data.datasets, epoch, cfg.rng_seed);
  const samples: EncodedSample[] = order.map(([d, i]) => {
    const ds = data.datasets[d]!;
    return splitSample(data, cfg, ds, i, "train", epoch);
  });
  const pad = data.tokenizer.padId;
  const batches: Batch[] = [];
  if (cfg.packing) {
    // Attention costs grow with the row width, so most samples go into rows of a shorter width W and
    // a micro-batch takes max_length / W times more of them (the same token slots, B × max_length);
    // the few samples longer than W get rows of max_length.
    const width = packingRowLength(
      samples.map((s) => s.inputIds.length),
      cfg,
    );
    const short = samples.map((_, i) => i).filter((i) => samples[i]!.inputIds.length <= width);
    const long = samples.map((_, i) => i).filter((i) => samples[i]!.inputIds.length > width);
    const groups: Array<{ bins: number[][]; rows: number }> = [
      {
        bins: bestFitDecreasing(
          short.map((i) => samples[i]!.inputIds.length),
          width,
        ).map((b) => b.map((k) => short[k]!)),
        rows: microBatchSize * Math.max(1, Math.floor(cfg.max_length / width)),
      },
      {
        bins: bestFitDecreasing(
          long.map((i) => samples[i]!.inputIds.length),
          cfg.max_length,
        ).map((b) => b.map((k) => long[k]!)),
        rows: microBatchSize,
      },
    ];
    const rng = new Rng(cfg.rng_seed, `pack/${epoch}`);
    for (const g of groups) {
      rng.shuffle(g.bins);
      for (let i = 0; i < g.bins.length; i += g.rows)
        batches.push(
          packBatch(
            g.bins.slice(i, i + g.rows).map((b) => b.map((k) => samples[k]!)),
            pad,
          ),
        );
    }
    rng.shuffle(batches);
  } else {
    for (let i = 0; i < samples.length; i += microBatchSize)
      batches.push(padBatch(samples.slice(i, i + microBatchSize), pad));
  }
  return batches;
}

/** The packed row width: packing_row_length, else the 90th-percentile length rounded up to a power of two (≥ 64). */
export function packingRowLength(lengths: number[], cfg: Settings<"format" | "data">): number {
  const set = cfg.packing_row_length;
  if (set !== null) return Math.min(set, cfg.max_length);
  const sorted = [...lengths].sort((a, b) => a - b);
  const p90 = sorted[Math.floor(0.9 * (sorted.length - 1))] ?? cfg.max_length;
  return Math.min(cfg.max_length, Math.max(64, 2 ** Math.ceil(Math.log2(Math.max(1, p90)))));
}

/** Tokens of a batch that carry a label (trained). */
export const trainedIn = (b: Batch) =>
  b.labels.reduce((n, row) => n + row.reduce((m, l) => m + (l !== -100 ? 1 : 0), 0), 0);

/** A batch's tensors on `device`; for CUDA they go through pinned host memory, so the copy is asynchronous. */
export function tensorsOf(b: Batch, device: string) {
  const t = (x: number[][]) => {
    const host = torch.tensor(x, { dtype: "int64" });
    return device === "cpu" ? host : host.pinMemory().toDevice(device, true);
  };
  return {
    inputIds: t(b.inputIds),
    attentionMask: t(b.attentionMask),
    labels: t(b.labels),
    ...(b.segmentIds ? { segmentIds: t(b.segmentIds), positionIds: t(b.positionIds!) } : {}),
  };
}
