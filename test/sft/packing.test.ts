// Packing: best-fit-decreasing bins, and per-token losses identical to running each sample alone.
import assert from "node:assert/strict";
import { basename, join } from "node:path";
import { test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { loadCausalLM } from "../../src/models/index.js";
import { Rng } from "../../src/data/rng.js";
import { bestFitDecreasing, packBatch, padBatch, usefulTokenFraction } from "../../src/sft/collate.js";
import type { EncodedSample } from "../../src/sft/encode.js";
import { GOLDEN, GOLDEN_MODELS, SHARED } from "../helpers.js";

test("best-fit decreasing: every sample once, no bin over capacity, tight on a known case", () => {
  const rng = new Rng(5);
  const lengths = Array.from({ length: 300 }, () => rng.int(1, 200));
  const bins = bestFitDecreasing(lengths, 256);
  assert.deepEqual(
    bins.flat().sort((a, b) => a - b),
    lengths.map((_, i) => i),
  );
  for (const b of bins) assert.ok(b.reduce((n, i) => n + lengths[i]!, 0) <= 256);
  const lower = Math.ceil(lengths.reduce((a, b) => a + b, 0) / 256);
  assert.ok(bins.length <= Math.ceil(lower * 1.1) + 1, `${bins.length} bins vs lower bound ${lower}`);
  assert.deepEqual(
    bestFitDecreasing([6, 4, 5, 5, 3, 7], 10).map((b) => b.length),
    [2, 2, 2],
  );
  assert.throws(() => bestFitDecreasing([11], 10), /does not fit max_length 10/);
  const f = usefulTokenFraction([200, 10, 10, 10], 2, 256);
  assert.ok(f.packed > f.padded);
});

// BLOOM (ALiBi positions), GPT-NeoX (partial rotary) and LLaMA with grouped-query attention (rotary):
// positions restart at every packed sample, whatever the position scheme.
const MODELS = [
  ...GOLDEN_MODELS.map((m) => join(GOLDEN, m)),
  join(SHARED, "golden-neox/tiny_v320_h64_l2_nh4_rp025_parallel"),
  join(SHARED, "golden-llama-gqa/tiny_v320_h96_l2_nh6_kv2_i256"),
];

for (const dir of MODELS) {
  const name = basename(dir);
  test(`packed rows give every token the loss it has alone (${name}, within 1e-5)`, () => {
    const model = loadCausalLM(dir).eval();
    const vocab = model.config.vocabSize;
    const rng = new Rng(name);
    const samples: EncodedSample[] = [23, 9, 31, 14, 5].map((len) => ({
      inputIds: Array.from({ length: len }, () => rng.int(0, vocab - 1)),
      labelMask: Array.from({ length: len }, (_, t) => t < len - 1 && rng.next() < 0.7),
    }));
    const perTokenLoss = (b: ReturnType<typeof padBatch>) =>
      torch.noGrad(() =>
        torch.scope(() => {
          const t = (x: number[][]) => torch.tensor(x, { dtype: "int64" });
          const out = model.forward({
            inputIds: t(b.inputIds),
            attentionMask: t(b.attentionMask),
            segmentIds: b.segmentIds && t(b.segmentIds),
            positionIds: b.positionIds && t(b.positionIds),
          });
          const [rows, s, v] = out.logits.shape as [number, number, number];
          const labels = t(b.labels);
          // Loss at t predicts labels[t + 1].
          const shifted = torch.cat([labels.narrow(1, 1, s - 1), torch.full([rows, 1], -100, { dtype: "int64" })], 1);
          return torch
            .crossEntropy(out.logits.reshape([rows * s, v]), shifted.view([rows * s]), { reduction: "none" })
            .toNumbers();
        }),
      );
    const alone = samples.map((s) => perTokenLoss(padBatch([s], 0, 1)).slice(0, s.inputIds.length));
    const bins = bestFitDecreasing(
      samples.map((s) => s.inputIds.length),
      48,
    );
    assert.ok(bins.length < samples.length, "some samples share a row");
    const packed = packBatch(
      bins.map((b) => b.map((i) => samples[i]!)),
      0,
    );
    const losses = perTokenLoss(packed);
    const width = packed.inputIds[0]!.length;
    let checked = 0;
    bins.forEach((bin, row) => {
      let offset = 0;
      for (const i of bin) {
        const n = samples[i]!.inputIds.length;
        for (let t = 0; t < n; t++) {
          const want = alone[i]![t]!;
          const got = losses[row * width + offset + t]!;
          assert.ok(Math.abs(got - want) <= 1e-5, `sample ${i} token ${t}: packed ${got} vs alone ${want}`);
          if (want !== 0) checked++;
        }
        offset += n;
      }
    });
    assert.ok(checked > 30, `${checked} trained tokens compared`);
    model.dispose();
  });
}
