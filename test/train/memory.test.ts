// A long run must not grow memory: 2,000 training steps of the tiny golden model, RSS and the count
// of live native tensors measured after the first 200.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { loadCausalLM } from "../../src/models/index.js";
import { AdamW } from "../../src/train/index.js";
import { GOLDEN, GOLDEN_MODELS, loadGolden } from "../helpers.js";

test("2,000 training steps: resident memory grows < 50 MB after step 200, no tensor leaks", () => {
  const model = loadCausalLM(join(GOLDEN, GOLDEN_MODELS[0])).train();
  const g = loadGolden(GOLDEN_MODELS[0], "tensors.safetensors");
  const optimizer = new AdamW(model.parameters(), { lr: 1e-3 });
  const batch = {
    inputIds: g.get("inputs.right.input_ids")!,
    attentionMask: g.get("inputs.right.attention_mask")!,
    labels: g.get("inputs.right.labels")!,
  };
  let rssAt200 = 0;
  let liveAt200 = 0;
  let firstLoss = 0;
  let lastLoss = 0;
  for (let step = 1; step <= 2000; step++) {
    const loss = torch.scope(() => {
      const { loss } = model.forward(batch);
      loss!.backward();
      optimizer.step();
      optimizer.zeroGrad();
      return loss!.item();
    });
    if (step === 1) firstLoss = loss;
    lastLoss = loss;
    if (step === 200) {
      rssAt200 = process.memoryUsage().rss;
      liveAt200 = torch.liveTensors();
    }
  }
  const growthMb = (process.memoryUsage().rss - rssAt200) / 2 ** 20;
  assert.ok(growthMb < 50, `RSS grew ${growthMb.toFixed(1)} MB between step 200 and 2000`);
  assert.equal(torch.liveTensors(), liveAt200, "live native tensors constant");
  assert.ok(lastLoss < firstLoss / 2, `the model learns the batch: ${firstLoss} → ${lastLoss}`);
  optimizer.dispose();
  model.dispose();
});
