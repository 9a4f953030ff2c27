// The engine's token picking (pickNextTokens): rows with different parameters picked together in batched
// ops. Checked against hand-computed draws on a five-token distribution, and against nextToken, the
// one-row picker whose draws are JavaScript arithmetic, on random logits (the repetition penalty is the
// same code in both: the hand-computed test checks it).
import assert from "node:assert/strict";
import { test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { Rng } from "../../src/data/rng.js";
import { nextToken, pickNextTokens, type SamplingParams } from "../../src/generate/sampling.js";

/** A generator that returns the given uniform numbers in turn. */
const fixed = (...u: number[]) => ({ next: () => u.shift()! }) as unknown as Rng;

const P = [0.5, 0.25, 0.15, 0.07, 0.03];

test("top-p, top-k, temperature and the repetition penalty pick what a hand computation gives, rows mixed", () => {
  const sample = (o: Partial<SamplingParams>) => ({ maxNewTokens: 1, doSample: true, ...o });
  // [params, u, expected id, why]
  const cases: Array<[SamplingParams, number | undefined, number, string]> = [
    // top_p 0.8 keeps 0, 1, 2 (mass before 2 is 0.75 < 0.8): cumulative 5/9, 5/6, 1.
    [sample({ topP: 0.8 }), 0.55, 0, "u below 5/9"],
    [sample({ topP: 0.8 }), 0.56, 1, "u past 5/9"],
    [sample({ topP: 0.8 }), 0.84, 2, "u past 5/6"],
    [sample({ topP: 0.8 }), 0.9999, 2, "tokens 3 and 4 are cut"],
    // top_k 2: 2/3, 1/3.
    [sample({ topK: 2 }), 0.66, 0, "u below 2/3"],
    [sample({ topK: 2 }), 0.67, 1, "u past 2/3"],
    // Temperature 0.5 squares the probabilities: 0.25 / 0.3408 = 0.7336 first.
    [sample({ temperature: 0.5 }), 0.73, 0, "u below 0.7336"],
    [sample({ temperature: 0.5 }), 0.74, 1, "u past 0.7336"],
    // No truncation: cumulative 0.5, 0.75, 0.9, 0.97, 1.
    [sample({}), 0.96, 3, "u between 0.9 and 0.97"],
    [{ maxNewTokens: 1 }, undefined, 0, "greedy"],
  ];
  const logits = torch.tensor(
    cases.map(() => P.map(Math.log)),
    { dtype: "float32" },
  );
  const rows = cases.map(([params, u]) => ({ params, history: [], rng: u === undefined ? undefined : fixed(u) }));
  const picked = pickNextTokens(logits, rows);
  picked.forEach((p, i) => {
    assert.equal(p.id, cases[i]![2], cases[i]![3]);
    assert.ok(Math.abs(p.logprob - Math.log(P[p.id]!)) < 1e-6, `${cases[i]![3]}: logprob of the model's distribution`);
  });
});

test("the repetition penalty divides seen positive scores and multiplies seen negative ones, per row", () => {
  const logits = torch.tensor([1.0, 0.9, -0.5, -0.6, 0.2, 0.85, -3, -3, -3, -3], { dtype: "float32", shape: [2, 5] });
  const greedy = (repetitionPenalty: number) => ({ maxNewTokens: 1, repetitionPenalty });
  const picked = pickNextTokens(logits, [
    { params: greedy(2), history: [0], rng: undefined }, // 1.0 → 0.5: 0.9 wins
    { params: greedy(1), history: [0], rng: undefined }, // factor 1: unchanged, 0.85 wins
  ]);
  assert.deepEqual(
    picked.map((p) => p.id),
    [1, 0],
  );
  // The log-probability is the model's, before the penalty: log softmax of row 0 at token 1.
  const z = [1.0, 0.9, -0.5, -0.6, 0.2].reduce((a, v) => a + Math.exp(v), 0);
  assert.ok(Math.abs(picked[0]!.logprob - (0.9 - Math.log(z))) < 1e-6);
});

test("batched picks equal nextToken's, one row at a time, on random logits and assorted parameters", () => {
  torch.manualSeed(5);
  const params: SamplingParams[] = [
    { maxNewTokens: 1 },
    { maxNewTokens: 1, doSample: true },
    { maxNewTokens: 1, doSample: true, temperature: 0.7, topK: 20 },
    { maxNewTokens: 1, doSample: true, topP: 0.9 },
    { maxNewTokens: 1, doSample: true, temperature: 1.3, topK: 8, topP: 0.6, repetitionPenalty: 1.2 },
    { maxNewTokens: 1, repetitionPenalty: 1.5 },
    { maxNewTokens: 1, doSample: true, typicalP: 0.8 },
    { maxNewTokens: 1, doSample: true, temperature: 0 },
  ];
  // 50 tokens: the draws finish in JavaScript; 3000: four sampled rows × 3000 run the batched tail.
  for (let trial = 0; trial < 20; trial++) {
    const V = trial % 2 ? 3000 : 50;
    const logits = torch.randn([params.length, V]).mul(3).keep();
    const history = params.map((_, i) => [i, (i * 7 + trial) % V, 3]);
    const rows = (seed: number) => params.map((p, i) => ({ params: p, history: history[i]!, rng: new Rng(seed + i) }));
    const batched = pickNextTokens(logits, rows(trial * 100));
    const one = rows(trial * 100).map((r, i) => nextToken(logits.select(0, i), r.history, r.params, r.rng));
    assert.deepEqual(
      batched.map((p) => p.id),
      one.map((p) => p.id),
      `trial ${trial}`,
    );
    batched.forEach((p, i) => assert.ok(Math.abs(p.logprob - one[i]!.logprob) < 1e-5));
    logits.dispose();
  }
});
