// Batches: OA's right padding to a multiple of 16, or packing several samples into one row with no
// attention across them and positions restarting at each sample (so each token's loss is the same as
// when its sample runs alone).
import type { EncodedSample } from "./encode.js";

/** A batch as plain arrays ([rows][columns]); the trainer turns them into int64 tensors. */
export interface Batch {
  inputIds: number[][];
  attentionMask: number[][];
  /** HF-style next-token labels: labels[t] = inputIds[t] when labelMask[t − 1], else −100. */
  labels: number[][];
  /** Packed rows only: 1, 2, ... per sample, 0 on padding. */
  segmentIds?: number[][];
  /** Packed rows only: position of each token inside its own sample. */
  positionIds?: number[][];
  /** Real (non-padding) tokens in the batch. */
  tokens: number;
}

export const roundUp = (n: number, multiple: number) => Math.ceil(n / multiple) * multiple;

/** HF-style labels of one sample (labels shift by one inside the model's loss). */
export function sampleLabels(s: EncodedSample): number[] {
  return s.inputIds.map((id, t) => (t > 0 && s.labelMask[t - 1] ? id : -100));
}

/** OA's train collator: pad on the right to the longest sample, rounded up to `multiple` (16). */
export function padBatch(samples: EncodedSample[], padId: number, multiple = 16): Batch {
  const width = roundUp(Math.max(1, ...samples.map((s) => s.inputIds.length)), multiple);
  const pad = <T>(xs: T[], v: T) => [...xs, ...new Array<T>(width - xs.length).fill(v)];
  return {
    inputIds: samples.map((s) => pad(s.inputIds, padId)),
    attentionMask: samples.map((s) =>
      pad(
        s.inputIds.map(() => 1),
        0,
      ),
    ),
    labels: samples.map((s) => pad(sampleLabels(s), -100)),
    tokens: samples.reduce((n, s) => n + s.inputIds.length, 0),
  };
}

/**
 * Best-fit decreasing: longest first, each into the bin whose free space is the smallest that fits;
 * a new bin when none fits. Returns bins of sample indices. Lengths must be ≤ capacity.
 */
export function bestFitDecreasing(lengths: number[], capacity: number): number[][] {
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[b]! - lengths[a]! || a - b);
  const bins: number[][] = [];
  const free: number[] = [];
  // Bins sorted by free space (ascending) for a binary search of the tightest fit.
  const byFree: number[] = [];
  const lowerBound = (need: number) => {
    let lo = 0;
    let hi = byFree.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (free[byFree[mid]!]! < need) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  for (const i of order) {
    const len = lengths[i]!;
    if (len > capacity) throw new Error(`packing: a sample of ${len} tokens does not fit max_length ${capacity}`);
    const pos = lowerBound(len);
    let b: number;
    if (pos < byFree.length) {
      b = byFree[pos]!;
      byFree.splice(pos, 1);
    } else {
      b = bins.length;
      bins.push([]);
      free.push(capacity);
    }
    bins[b]!.push(i);
    free[b]! -= len;
    byFree.splice(lowerBound(free[b]!), 0, b);
  }
  return bins;
}

/** One batch of packed rows: each row the concatenation of its samples, padded like padBatch. */
export function packBatch(rows: EncodedSample[][], padId: number, multiple = 16): Batch {
  const width = roundUp(Math.max(1, ...rows.map((r) => r.reduce((n, s) => n + s.inputIds.length, 0))), multiple);
  const batch: Batch = { inputIds: [], attentionMask: [], labels: [], segmentIds: [], positionIds: [], tokens: 0 };
  for (const row of rows) {
    const ids: number[] = [];
    const labels: number[] = [];
    const seg: number[] = [];
    const pos: number[] = [];
    row.forEach((s, k) => {
      ids.push(...s.inputIds);
      labels.push(...sampleLabels(s));
      for (let t = 0; t < s.inputIds.length; t++) {
        seg.push(k + 1);
        pos.push(t);
      }
    });
    batch.tokens += ids.length;
    const fill = width - ids.length;
    batch.inputIds.push([...ids, ...new Array<number>(fill).fill(padId)]);
    batch.attentionMask.push([...ids.map(() => 1), ...new Array<number>(fill).fill(0)]);
    batch.labels.push([...labels, ...new Array<number>(fill).fill(-100)]);
    batch.segmentIds!.push([...seg, ...new Array<number>(fill).fill(0)]);
    batch.positionIds!.push([...pos, ...new Array<number>(fill).fill(0)]);
  }
  return batch;
}

/**
 * The share of batch slots that hold real tokens, for samples taken `batchSize` at a time in the
 * given order with OA's padding, and when packed into max_length rows (`batchSize` rows a batch).
 */
export function usefulTokenFraction(
  lengths: number[],
  batchSize: number,
  maxLength: number,
  multiple = 16,
): { padded: number; packed: number; rowsPadded: number; rowsPacked: number } {
  const real = lengths.reduce((a, b) => a + b, 0);
  let paddedSlots = 0;
  for (let i = 0; i < lengths.length; i += batchSize) {
    const chunk = lengths.slice(i, i + batchSize);
    paddedSlots += chunk.length * roundUp(Math.max(...chunk), multiple);
  }
  const bins = bestFitDecreasing(lengths, maxLength).map((b) => b.reduce((n, i) => n + lengths[i]!, 0));
  let packedSlots = 0;
  for (let i = 0; i < bins.length; i += batchSize) {
    const chunk = bins.slice(i, i + batchSize);
    packedSlots += chunk.length * roundUp(Math.max(...chunk), multiple);
  }
  return {
    padded: real / Math.max(1, paddedSlots),
    packed: real / Math.max(1, packedSlots),
    rowsPadded: lengths.length,
    rowsPacked: bins.length,
  };
}
