// The engine's running batch (src/generate/batch.ts) on every family: requests join and leave a
// fixed-shape batch whose one recorded step replays on (re-recorded only when the bucket or the capacity
// changes), and what it decodes equals, bit for bit, the same fixed-shape steps run op by op, and, up to
// float rounding, the growing cache's eager steps. A sliding window shorter than the batch's columns
// hands the rows over to the growing cache mid-run, unchanged.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { loadCausalLM, type CausalLM } from "../../src/models/index.js";
import { Engine, type GenerationResult } from "../../src/generate/engine.js";
import { ChatTokenizer } from "../../src/tokenizer/index.js";
import { countingTapes, GOLDEN_MODELS, initTinyModel, SHARED } from "../helpers.js";

const MODELS: Array<[string, string]> = [
  ["bloom", "golden/tiny_v256_h64_l2_nh4"],
  ["gpt_neox", "golden-neox/tiny_v320_h64_l2_nh4_rp025_parallel"],
  ["llama (GQA)", "golden-llama-gqa/tiny_v320_h96_l2_nh6_kv2_i256"],
  ["llama 3 rope scaling", "golden-llama3/tiny_v128_h48_l2_nh4_kv2_i96_tied_l3f32_orig64"],
  ["qwen2", "golden-qwen2/tiny_v128_h48_l2_nh4_kv2_i80_tied"],
  ["qwen3", "golden-qwen3/tiny_v128_h48_l2_nh4_kv2_hd16_i80_tied"],
  // Windows of 8 and 6 columns: the batch starts fixed and hands over to the growing cache when a row
  // would pass the window.
  ["mistral (window 8)", "golden-mistral/small_v128_h48_l3_nh6_kv3_i80_sw8_theta1e6"],
  ["gemma2 (window 6)", "golden-gemma2/small_v128_h48_l2_nh4_kv2_hd16_qpas16_sw6_cap50_30"],
];

const tokenizer = ChatTokenizer.load(
  initTinyModel(join(mkdtempSync(join(tmpdir(), "oasft-batch-")), "m"), GOLDEN_MODELS[0]),
);

/** Requests of the given prompt lengths and budgets (greedy; prompts of ids below `vocab`). */
function requests(vocab: number, prompts: number[], budgets: number[]) {
  return prompts.map((n, i) => ({
    promptIds: Array.from({ length: n }, (_, k) => 3 + ((k * 7 + i * 13) % (vocab - 3))),
    params: { maxNewTokens: budgets[i]! },
  }));
}

async function run(model: CausalLM, capture: boolean | "eager-fixed", reqs: ReturnType<typeof requests>, maxBatch = 2) {
  let steps = 0;
  const fault = (phase: string) => void (phase === "step" && steps++);
  const engine = new Engine(model, tokenizer, { maxBatch, capture, fault });
  const counted = await countingTapes(() => Promise.all(engine.submitAll(reqs).map((h) => h.result)));
  return { ...counted, steps };
}

function assertClose(a: GenerationResult[], b: GenerationResult[], tol: number, what: string): void {
  assert.deepEqual(
    a.map((r) => r.tokens),
    b.map((r) => r.tokens),
    what,
  );
  a.forEach((r, i) =>
    r.logprobs.forEach((lp, t) => {
      const d = Math.abs(lp - b[i]!.logprobs[t]!);
      assert.ok(tol ? d < tol : d === 0, `${what}: request ${i}, token ${t}: ${lp} vs ${b[i]!.logprobs[t]}`);
    }),
  );
}

for (const [family, folder] of MODELS) {
  test(`${family}: engine steps replayed equal eager fixed-shape ones bit for bit as rows join and leave`, async () => {
    const model = loadCausalLM(join(SHARED, folder));
    // Five requests through two rows: rows join mid-run (into freed rows) and leave at different steps.
    const reqs = requests(model.config.vocabSize, [2, 3, 1, 3, 2], [2, 8, 3, 1, 3]);
    const replayed = await run(model, true, reqs);
    const eagerFixed = await run(model, "eager-fixed", reqs);
    const growing = await run(model, false, reqs);
    assert.equal(eagerFixed.records + eagerFixed.replays + growing.records + growing.replays, 0);
    assert.ok(replayed.replays > 0, "some steps replay");
    assertClose(replayed.value, eagerFixed.value, 0, "replayed vs eager fixed");
    assertClose(replayed.value, growing.value, 1e-4, "fixed vs growing");
    model.dispose();
  });
}

test("one recorded step per bucket: joins and leaves replay on; growth and a shrink re-record", async () => {
  const model = loadCausalLM(join(SHARED, "golden/tiny_v256_h64_l2_nh4"));
  // Four rows for six requests: eleven joins and leaves. One layout holds them: bucket 4 by 51 columns, the
  // most the first four rows can fill (prompt width 12 + 39 tokens fed), a later joiner's 7 + 29 within it.
  // It is recorded again when one row is left (bucket 2: a second recording) and when that row, with 4 + 89
  // to go, passes column 51 (the columns grow to its 93: a third). Re-recording at every change would be 12.
  const reqs = requests(256, [5, 9, 3, 12, 7, 4], [40, 12, 25, 6, 30, 90]);
  const replayed = await run(model, true, reqs, 4);
  const growing = await run(model, false, reqs, 4);
  assert.equal(replayed.records, 3);
  assert.equal(replayed.replays, replayed.steps - 3, "every other step replays");
  assertClose(replayed.value, growing.value, 1e-4, "fixed vs growing");
  model.dispose();
});

test("an idle batch keeps its recorded step for the next request, in the bucket that request needs", async () => {
  const model = loadCausalLM(join(SHARED, "golden/tiny_v256_h64_l2_nh4"));
  const engine = new Engine(model, tokenizer, { maxBatch: 4 });
  const submit = (reqs: ReturnType<typeof requests>) =>
    countingTapes(() => Promise.all(engine.submitAll(reqs).map((h) => h.result)));
  await submit(requests(256, [5, 6, 7, 8], [6, 6, 6, 6])); // bucket 4, drained to 2 as rows leave
  const alone = requests(256, [5], [6]);
  assert.equal((await submit(alone)).records, 1, "a lone request: the bucket of 1, recorded once");
  const again = await submit(alone);
  assert.equal(again.records, 0, "the next one joins that layout as is");
  assert.equal(again.replays, 5, "all its steps replay (6 tokens: the first from the prefill, then 5 steps)");
  model.dispose();
});
