// The GPU fast paths against their composite references, on a CUDA device (skipped elsewhere):
// libtorch's scaled_dot_product_attention against HF-style eager attention for every family (fp32
// within the golden READMEs' CUDA tolerance, bf16 within bf16 rounding), the fused multi-tensor AdamW
// against the composite step, bf16 decoding with and without the cache, and the allocator statistics.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import * as torch from "../src/torch/index.js";
import { loadCausalLM } from "../src/models/index.js";
import { setAttentionImpl } from "../src/nn/index.js";
import { generateGreedy } from "../src/generate/greedy.js";
import { AdamW } from "../src/train/index.js";
import { GOLDEN, SHARED, worstExcess } from "../test/helpers.js";

const cuda = torch.cudaIsAvailable();
const skip = !cuda
  ? "no CUDA device"
  : !torch.features.sdpa
    ? "this libtorch has no scaled_dot_product_attention"
    : false;

// The device bundle carries the BLOOM goldens and the tiny model of every other set.
const SETS = [
  join(GOLDEN, "tiny_v256_h64_l2_nh4"),
  join(GOLDEN, "small_v300_h96_l3_nh6_untied"),
  join(SHARED, "golden-neox/tiny_v320_h64_l2_nh4_rp025_parallel"),
  join(SHARED, "golden-llama/tiny_v320_h64_l2_nh4_i176"),
  join(SHARED, "golden-llama-gqa/tiny_v320_h96_l2_nh6_kv2_i256"),
];

/** Logits at real tokens and every gradient of one training step, under the given attention. */
function run(dir: string, impl: "sdpa" | "composite", dtype: torch.DType) {
  const previous = setAttentionImpl(impl);
  try {
    const model = loadCausalLM(dir, { device: "cuda" }).train();
    const { tensors: g } = torch.loadSafetensors(join(dir, "tensors.safetensors"));
    const on = (k: string) => g.get(k)!.toDevice("cuda");
    const mask = on("inputs.left.attention_mask");
    const input = { inputIds: on("inputs.left.input_ids"), attentionMask: mask };
    const amp = (fn: () => void) => (dtype === "float32" ? fn() : torch.autocast("cuda", dtype, fn));
    let logits!: torch.Tensor;
    amp(() => {
      logits = torch
        .noGrad(() => model.forward(input).logits.to("float32").mul(mask.unsqueeze(-1)))
        .toDevice("cpu")
        .keep();
      model.trainStep({ ...input, labels: on("inputs.left.input_ids").maskedFill(mask.eq(0), -100) });
    });
    const grads = new Map(model.namedParameters().map(([n, p]) => [n, p.grad!.toDevice("cpu").keep()]));
    model.dispose();
    torch.disposeAll(g);
    return { logits, grads };
  } finally {
    setAttentionImpl(previous);
  }
}

for (const dir of SETS) {
  test(
    `fused attention equals the composite on CUDA, fp32 and bf16: ${dir.split("/").slice(-2).join("/")}`,
    { skip },
    () => {
      torch.scope(() => {
        const ref = run(dir, "composite", "float32");
        const fast = run(dir, "sdpa", "float32");
        assert.ok(worstExcess(fast.logits, ref.logits, 1e-4, 1e-4) <= 0, "fp32 logits");
        for (const [n, g] of ref.grads)
          assert.ok(worstExcess(fast.grads.get(n)!, g, 1e-5, 1e-3) <= 0, `fp32 grad ${n}`);
        const refBf = run(dir, "composite", "bfloat16");
        const fastBf = run(dir, "sdpa", "bfloat16");
        assert.ok(worstExcess(fastBf.logits, refBf.logits, 3e-2, 3e-2) <= 0, "bf16 logits");
        torch.disposeAll([ref, fast, refBf, fastBf]);
      });
    },
  );
}

test(
  "fused CUDA AdamW equals the composite step within fp32 rounding (three steps, two groups)",
  { skip: !cuda && "no CUDA device" },
  () => {
    assert.ok(torch.features.fusedAdamw, "this libtorch has _fused_adamw_");
    torch.manualSeed(1);
    const shapes = [[64, 32], [32], [7, 5, 3]];
    const make = () => shapes.map((s) => torch.randn(s, { device: "cuda" }).keep());
    const a = make();
    const b = a.map((t) => t.clone().keep());
    const groups = (ps: torch.Tensor[], fused: boolean) =>
      new AdamW([{ params: ps.slice(0, 2) }, { params: ps.slice(2), weightDecay: 0 }], {
        lr: 1e-2,
        weightDecay: 0.1,
        fused,
      });
    const fast = groups(a, true);
    const ref = groups(b, false);
    for (let step = 0; step < 3; step++) {
      const grads = shapes.map((s) => torch.randn(s, { device: "cuda" }).keep());
      a.forEach((p, i) => {
        p.grad = grads[i];
      });
      b.forEach((p, i) => {
        p.grad = grads[i]!.clone();
      });
      fast.step();
      ref.step();
    }
    a.forEach((p, i) =>
      assert.ok(worstExcess(p.toDevice("cpu"), b[i]!.toDevice("cpu"), 1e-6, 1e-6) <= 0, `param ${i}`),
    );
    torch.disposeAll([a, b]);
  },
);

test(
  "bf16 weights: each cached decoding step's logits equal one uncached forward's (bf16 rounding); the allocator " +
    "reports its peak",
  { skip: !cuda && "no CUDA device" },
  () => {
    const model = loadCausalLM(join(GOLDEN, "tiny_v256_h64_l2_nh4"), { device: "cuda", dtype: "bfloat16" }).eval();
    torch.noGrad(() =>
      torch.scope(() => {
        const prompt = torch.tensor([[5, 17, 42, 99, 7, 8]], { dtype: "int64" }).toDevice("cuda");
        const steps: torch.Tensor[] = [];
        const onStepLogits = (logits: torch.Tensor) => {
          steps.push(logits.to("float32").toDevice("cpu").keep());
        };
        const tokens = generateGreedy(model, { inputIds: prompt, maxNewTokens: 16, onStepLogits });
        const whole = model.forward({ inputIds: tokens }).logits.to("float32").toDevice("cpu");
        steps.forEach((step, i) => {
          assert.ok(
            worstExcess(step.reshape([-1]), whole.select(1, prompt.size(1) - 1 + i).reshape([-1]), 5e-2, 2e-2) <= 0,
            `step ${i}`,
          );
        });
        torch.disposeAll(steps);
      }),
    );
    model.dispose();
    const mem = torch.cudaMemory("cuda");
    assert.ok(mem && mem.peak > 0 && mem.peak >= mem.allocated, `allocator statistics ${JSON.stringify(mem)}`);
  },
);
