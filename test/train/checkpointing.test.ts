// Gradient checkpointing gives the same loss and gradients as a plain backward (1e-6), packed or not.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { loadCausalLM } from "../../src/models/index.js";
import type { BloomForCausalLM } from "../../src/models/bloom.js";
import { GOLDEN, GOLDEN_MODELS, loadGolden, maxAbsDiff } from "../helpers.js";

for (const name of GOLDEN_MODELS) {
  test(`gradient checkpointing: same loss and every gradient within 1e-6 (${name}, with dropout)`, () => {
    const g = loadGolden(name, "tensors.safetensors");
    const input = { inputIds: g.get("inputs.right.input_ids")!, attentionMask: g.get("inputs.right.attention_mask")!, labels: g.get("inputs.right.labels")! };
    const run = (checkpoint: boolean, dropout: number) => {
      const model = loadCausalLM(join(GOLDEN, name)).train() as BloomForCausalLM;
      Object.assign(model.bloomConfig, { hidden_dropout: dropout, attention_dropout: dropout });
      torch.manualSeed(11);
      const { loss } = model.trainStep(input, { gradientCheckpointing: checkpoint, gradScale: 3 });
      const grads = new Map(model.namedParameters().map(([n, p]) => [n, p.grad!.keep()]));
      return { loss, grads, model };
    };
    for (const dropout of [0, 0.1]) {
      const plain = run(false, dropout);
      const ckpt = run(true, dropout);
      assert.ok(Math.abs(plain.loss - ckpt.loss) <= 1e-6, `loss ${plain.loss} vs ${ckpt.loss}`);
      assert.equal(ckpt.grads.size, plain.grads.size);
      for (const [n, gp] of plain.grads) assert.ok(maxAbsDiff(gp, ckpt.grads.get(n)!) <= 1e-6, `grad ${n} (dropout ${dropout})`);
      for (const r of [plain, ckpt]) { r.model.dispose(); for (const t of r.grads.values()) t.dispose(); }
    }
  });
}
