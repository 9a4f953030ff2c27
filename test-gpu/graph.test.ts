// Captured decode steps as CUDA graphs (native/graph.h), on a CUDA device (skipped elsewhere): from its second
// replay a GPU tape launches one graph, and what it computes equals the plain replay's, bit for bit, step
// after step, with and without padding; the serving engine's tokens are the same either way.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import * as torch from "../src/torch/index.js";
import { loadCausalLM, type CausalLM } from "../src/models/index.js";
import { FixedDecoder } from "../src/generate/captured.js";
import { prefill } from "../src/generate/prefill.js";
import { Engine } from "../src/generate/engine.js";
import { ChatTokenizer } from "../src/tokenizer/index.js";
import { GOLDEN, GOLDEN_MODELS, SHARED, initTinyModel } from "../test/helpers.js";

const skip = !torch.cudaIsAvailable()
  ? "no CUDA device"
  : !torch.features.cudaGraph
    ? "the addon was built without CUDA graphs"
    : false;

/**
 * Runs `fn` with OASFT_CUDA_GRAPH set to `on` ("1" or "0"), then restores it; for an async `fn`, once
 * its promise settles (the addon reads the variable at each replay).
 */
function withGraphs<T>(on: boolean, fn: () => T): T {
  const before = process.env.OASFT_CUDA_GRAPH;
  const restore = () => {
    if (before === undefined) delete process.env.OASFT_CUDA_GRAPH;
    else process.env.OASFT_CUDA_GRAPH = before;
  };
  process.env.OASFT_CUDA_GRAPH = on ? "1" : "0";
  let out: T;
  try {
    out = fn();
  } catch (err) {
    restore();
    throw err;
  }
  if (out instanceof Promise) return out.finally(restore) as T;
  restore();
  return out;
}

/** `n` greedy steps through a FixedDecoder: each step's logits (on the host) and the tape's graph state. */
function decode(model: CausalLM, ids: number[][], mask: number[][] | undefined, n: number) {
  return torch.noGrad(() =>
    torch.scope(() => {
      const b = ids.length;
      const inputIds = torch.tensor(ids, { dtype: "int64", device: "cuda" });
      const attentionMask = mask && torch.tensor(mask, { dtype: "int64", device: "cuda" });
      const cache = model.newCache({ batch: b, capacity: ids[0]!.length + n + 1 });
      let next = prefill(model, { inputIds, attentionMask, cache }).select(1, 0).argmax(-1, true);
      const decoder = FixedDecoder.open(model, cache, { batch: b, attentionMask })!;
      const logits: Float32Array[] = [];
      for (let i = 0; i < n; i++) {
        const out = decoder.step(next).logits;
        logits.push(out.to("float32").toDevice("cpu").toArray() as Float32Array);
        next = out.argmax(-1, true);
      }
      const graph = decoder.tape!.info.graph;
      decoder.close();
      cache.dispose();
      return { logits, graph };
    }),
  );
}

for (const dir of [join(GOLDEN, GOLDEN_MODELS[0]), join(SHARED, "golden-llama/tiny_v320_h64_l2_nh4_i176")]) {
  test(`CUDA graph replays equal plain replays bit for bit (${dir.split("/").pop()})`, { skip }, () => {
    const model = loadCausalLM(dir, { device: "cuda" }).eval();
    const cases: Array<[number[][], number[][] | undefined]> = [
      [[[5, 17, 42, 99, 7]], undefined],
      [
        [
          [0, 0, 42, 99, 7],
          [5, 17, 42, 99, 8],
        ],
        [
          [0, 0, 1, 1, 1],
          [1, 1, 1, 1, 1],
        ],
      ],
    ];
    for (const [ids, mask] of cases) {
      const graphs = withGraphs(true, () => decode(model, ids, mask, 8));
      const plain = withGraphs(false, () => decode(model, ids, mask, 8));
      assert.equal(graphs.graph, "graph", "the tape became a graph");
      assert.equal(plain.graph, "");
      graphs.logits.forEach((l, i) => assert.deepEqual(l, plain.logits[i], `step ${i}`));
    }
    model.dispose();
  });
}

test(
  "the serving engine on CUDA: the same tokens with and without graphs, rows joining and leaving",
  { skip },
  async () => {
    const dir = initTinyModel(join(mkdtempSync(join(tmpdir(), "oasft-graph-")), "m"), GOLDEN_MODELS[0]);
    const model = loadCausalLM(dir, { device: "cuda" });
    const tokenizer = ChatTokenizer.load(dir);
    const requests = [5, 9, 3, 12, 7].map((n, i) => ({
      promptIds: Array.from({ length: n }, (_, k) => 10 + ((k * 7 + i * 13) % 200)),
      params: { maxNewTokens: [20, 6, 12, 3, 15][i]! },
    }));
    const run = (on: boolean) =>
      withGraphs(on, async () => {
        const engine = new Engine(model, tokenizer, { maxBatch: 2 });
        return (await Promise.all(engine.submitAll(requests).map((h) => h.result))).map((r) => r.tokens);
      });
    assert.deepEqual(await run(true), await run(false));
    model.dispose();
  },
);
