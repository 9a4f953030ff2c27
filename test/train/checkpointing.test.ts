// Gradient checkpointing gives the same loss and gradients as a plain backward (1e-6), with dropout
// on or off, padded or packed; and it leaves the RNG where a plain step leaves it.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { loadCausalLM, type CausalLMInput } from "../../src/models/index.js";
import type { BloomForCausalLM } from "../../src/models/bloom.js";
import { packBatch } from "../../src/sft/collate.js";
import { Rng } from "../../src/data/rng.js";
import { GOLDEN, GOLDEN_MODELS, loadGolden, maxAbsDiff } from "../helpers.js";

/** Two packed rows of three samples with random tokens and label masks. */
function packedInput(vocab: number): CausalLMInput {
  const rng = new Rng("checkpointing");
  const sample = (len: number) => ({
    inputIds: Array.from({ length: len }, () => rng.int(0, vocab - 1)),
    labelMask: Array.from({ length: len }, (_, t) => t < len - 1 && rng.next() < 0.7),
  });
  const b = packBatch([[sample(9), sample(5)], [sample(12)]], 0);
  const t = (x: number[][]) => torch.tensor(x, { dtype: "int64" }).keep();
  return {
    inputIds: t(b.inputIds),
    attentionMask: t(b.attentionMask),
    labels: t(b.labels),
    segmentIds: t(b.segmentIds!),
    positionIds: t(b.positionIds!),
  };
}

for (const name of GOLDEN_MODELS) {
  test(
    `gradient checkpointing: same loss and every gradient within 1e-6 (${name}, dropout 0 and 0.1, padded and ` +
      `packed)`,
    () => {
      const g = loadGolden(name, "tensors.safetensors");
      const padded = {
        inputIds: g.get("inputs.right.input_ids")!,
        attentionMask: g.get("inputs.right.attention_mask")!,
        labels: g.get("inputs.right.labels")!,
      };
      const run = (input: CausalLMInput, checkpoint: boolean, dropout: number) => {
        const model = loadCausalLM(join(GOLDEN, name)).train() as BloomForCausalLM;
        Object.assign(model.bloomConfig, { hidden_dropout: dropout, attention_dropout: dropout });
        torch.manualSeed(11);
        const { loss } = model.trainStep(input, { gradientCheckpointing: checkpoint, gradScale: 3 });
        // The next random draw: checkpointing must leave the generator where the plain step does.
        const after = torch.scope(() => torch.rand([4]).toNumbers());
        const grads = new Map(model.namedParameters().map(([n, p]) => [n, p.grad!.keep()]));
        return { loss, grads, model, after };
      };
      for (const [kind, input] of [
        ["padded", padded],
        ["packed", packedInput(250)],
      ] as const) {
        for (const dropout of [0, 0.1]) {
          const plain = run(input, false, dropout);
          const ckpt = run(input, true, dropout);
          const what = `${kind}, dropout ${dropout}`;
          assert.ok(Math.abs(plain.loss - ckpt.loss) <= 1e-6, `loss ${plain.loss} vs ${ckpt.loss} (${what})`);
          assert.equal(ckpt.grads.size, plain.grads.size);
          for (const [n, gp] of plain.grads)
            assert.ok(maxAbsDiff(gp, ckpt.grads.get(n)!) <= 1e-6, `grad ${n} (${what})`);
          assert.deepEqual(ckpt.after, plain.after, `RNG after the step (${what})`);
          for (const r of [plain, ckpt]) {
            r.model.dispose();
            for (const t of r.grads.values()) t.dispose();
          }
        }
      }
    },
  );
}
