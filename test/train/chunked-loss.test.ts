// The chunked LM head + loss (trainStep's default) against the plain one: the same loss and every
// gradient within 1e-6, in chunks small enough to split every row, with and without gradient
// checkpointing, padded and packed, tied and untied heads.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { loadCausalLM, type CausalLMInput } from "../../src/models/index.js";
import { packBatch } from "../../src/sft/collate.js";
import { Rng } from "../../src/data/rng.js";
import { GOLDEN, GOLDEN_MODELS, SHARED, loadGolden, maxAbsDiff } from "../helpers.js";

function packed(vocab: number): CausalLMInput {
  const rng = new Rng("chunked");
  const sample = (len: number) => ({
    inputIds: Array.from({ length: len }, () => rng.int(0, vocab - 1)),
    labelMask: Array.from({ length: len }, (_, t) => t < len - 1 && rng.next() < 0.5),
  });
  const b = packBatch([[sample(11), sample(6)], [sample(14)], [sample(3)]], 0);
  const t = (x: number[][]) => torch.tensor(x, { dtype: "int64" }).keep();
  return {
    inputIds: t(b.inputIds),
    attentionMask: t(b.attentionMask),
    labels: t(b.labels),
    segmentIds: t(b.segmentIds!),
    positionIds: t(b.positionIds!),
  };
}

const MODELS = [
  ...GOLDEN_MODELS.map((m) => join(GOLDEN, m)),
  join(SHARED, "golden-llama-gqa/tiny_v320_h96_l2_nh6_kv2_i256"),
];

for (const dir of MODELS) {
  test(`chunked loss = plain loss, every gradient within 1e-6 (${dir.split("/").pop()})`, () => {
    const g = loadGolden(GOLDEN_MODELS[0], "tensors.safetensors");
    const padded = {
      inputIds: g.get("inputs.right.input_ids")!,
      attentionMask: g.get("inputs.right.attention_mask")!,
      labels: g.get("inputs.right.labels")!,
    };
    const run = (input: CausalLMInput, chunkedLoss: boolean, gradientCheckpointing: boolean) => {
      const model = loadCausalLM(dir).train();
      const { loss } = model.trainStep(input, { chunkedLoss, gradientCheckpointing, gradScale: 2, lossChunkRows: 5 });
      const grads = new Map(model.namedParameters().map(([n, p]) => [n, p.grad!.keep()]));
      model.dispose();
      return { loss, grads };
    };
    for (const [kind, input] of [
      ["padded", padded],
      ["packed", packed(250)],
    ] as const) {
      for (const ckpt of [false, true]) {
        const plain = run(input, false, ckpt);
        const chunked = run(input, true, ckpt);
        const what = `${kind}, checkpointing ${ckpt}`;
        assert.ok(Math.abs(plain.loss - chunked.loss) <= 1e-6, `loss ${plain.loss} vs ${chunked.loss} (${what})`);
        for (const [n, gp] of plain.grads)
          assert.ok(maxAbsDiff(gp, chunked.grads.get(n)!) <= 1e-6, `grad ${n} (${what})`);
        for (const r of [plain, chunked]) for (const t of r.grads.values()) t.dispose();
      }
    }
  });
}
