// Captured decoding (src/generate/captured.ts) on every family: the replayed steps equal the same
// fixed-shape steps run eagerly, bit for bit, and the growing cache's greedy decoding up to float
// rounding (the fixed step's attention sums over more, masked, keys). Families whose math reads the
// sequence length (a sliding window shorter than the cache) decode eagerly instead, unchanged.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { loadCausalLM, type CausalLM } from "../../src/models/index.js";
import { generateGreedy } from "../../src/generate/greedy.js";
import { countingTapes, SHARED } from "../helpers.js";

// [family, folder, new tokens]: prompt 3 + new tokens = the cache's slots, within every window here.
const MODELS: Array<[string, string, number?]> = [
  ["bloom", "golden/tiny_v256_h64_l2_nh4"],
  ["gpt_neox", "golden-neox/tiny_v320_h64_l2_nh4_rp025_parallel"],
  ["llama", "golden-llama/tiny_v320_h64_l2_nh4_i176"],
  ["llama (GQA)", "golden-llama-gqa/tiny_v320_h96_l2_nh6_kv2_i256"],
  ["llama 3 rope scaling", "golden-llama3/tiny_v128_h48_l2_nh4_kv2_i96_tied_l3f32_orig64"],
  ["mistral (window 8 ≥ the cache)", "golden-mistral/small_v128_h48_l3_nh6_kv3_i80_sw8_theta1e6"],
  ["qwen2", "golden-qwen2/tiny_v128_h48_l2_nh4_kv2_i80_tied"],
  ["qwen3", "golden-qwen3/tiny_v128_h48_l2_nh4_kv2_hd16_i80_tied"],
  ["gemma2 (window 6 ≥ the cache)", "golden-gemma2/small_v128_h48_l2_nh4_kv2_hd16_qpas16_sw6_cap50_30", 3],
];

type Mode = boolean | "eager-fixed";

async function decode(model: CausalLM, ids: torch.Tensor, mask: torch.Tensor | undefined, capture: Mode, n: number) {
  const logits: Float32Array[] = [];
  const { value: tokens, replays } = await countingTapes(() =>
    torch.scope(() =>
      generateGreedy(model, {
        inputIds: ids,
        attentionMask: mask,
        maxNewTokens: n,
        capture,
        onStepLogits: (l) => logits.push(l.toArray() as Float32Array),
      }).toNumbers(),
    ),
  );
  return { tokens, logits, replays };
}

function maxDiff(a: Float32Array[], b: Float32Array[]): number {
  let m = 0;
  a.forEach((row, i) => row.forEach((x, j) => (m = Math.max(m, Math.abs(x - b[i]![j]!)))));
  return m;
}

for (const [family, folder, N = 4] of MODELS) {
  test(`${family}: replayed decode steps equal eager fixed-shape ones bit for bit, padded or not`, async () => {
    const model = loadCausalLM(join(SHARED, folder)).eval();
    const V = model.config.vocabSize;
    torch.manualSeed(7);
    const single = torch.randint(0, V, [1, 3]).keep();
    const batch = torch.randint(0, V, [2, 3]).keep();
    const mask = torch.tensor([1, 1, 1, 0, 1, 1], { dtype: "int64", shape: [2, 3] }).keep();
    for (const [ids, m] of [
      [single, undefined],
      [batch, mask],
    ] as const) {
      const replayed = await decode(model, ids, m, true, N);
      const eager = await decode(model, ids, m, "eager-fixed", N);
      const growing = await decode(model, ids, m, false, N);
      assert.equal(replayed.replays, N - 2, "step 0 is the prefill, step 1 records, the rest replay");
      assert.equal(eager.replays, 0);
      assert.deepEqual(replayed.tokens, eager.tokens);
      replayed.logits.forEach((l, i) => assert.deepEqual(l, eager.logits[i], `step ${i}: logits differ`));
      assert.deepEqual(replayed.tokens, growing.tokens);
      assert.ok(
        maxDiff(replayed.logits, growing.logits) < 1e-4,
        `fixed vs growing: ${maxDiff(replayed.logits, growing.logits)}`,
      );
    }
    model.dispose();
  });
}

test("a sliding window shorter than the cache keeps the eager, growing decode (same tokens, no tape)", async () => {
  for (const folder of [
    "golden-mistral/tiny_v128_h48_l2_nh4_kv2_i64_sw5",
    "golden-gemma2/tiny_v128_h32_l3_nh2_kv1_hd16_qpas24_sw4_cap0.5_2",
  ]) {
    const model = loadCausalLM(join(SHARED, folder)).eval();
    torch.manualSeed(3);
    const ids = torch.randint(0, model.config.vocabSize, [1, 4]).keep();
    const captured = await decode(model, ids, undefined, true, 6);
    const growing = await decode(model, ids, undefined, false, 6);
    assert.equal(captured.replays, 0, folder);
    assert.deepEqual(captured.tokens, growing.tokens);
    captured.logits.forEach((l, i) => assert.deepEqual(l, growing.logits[i]));
    model.dispose();
  }
});
