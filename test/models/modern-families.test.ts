// The families people fine-tune today against the outputs of Hugging Face's own code, with each README's
// tolerances (tied configs with larger init 1e-4, Gemma 2 2e-5, the others 1e-5): Qwen2/2.5 (q/k/v
// biases, tied), Mistral (sliding window), Qwen3 (q/k norms, explicit head_dim), Llama 3.x (llama3 rope
// scaling, tied) and Gemma 2 (soft-capping, (1 + w) norms, alternating windows): ../shared/golden-qwen2,
// golden-mistral, golden-qwen3, golden-llama3, golden-gemma2. Pad positions are compared only where
// HF's positions are reproducible (real tokens), as test/models/families.test.ts does.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { createCausalLM, loadCausalLM, saveCausalLM } from "../../src/models/index.js";
import { LlamaForCausalLM } from "../../src/models/llama.js";
import { LayeredKVCache } from "../../src/models/kv-cache.js";
import { llama3RopeFactors } from "../../src/models/gguf-layout.js";
import { generateGreedy } from "../../src/generate/greedy.js";
import { prefill } from "../../src/generate/prefill.js";
import { computeParity } from "../../src/eval/parity.js";
import { SHARED, worstExcess } from "../helpers.js";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";

const SETS = [
  ["golden-qwen2", "tiny_v128_h48_l2_nh4_kv2_i80_tied", 1e-4],
  ["golden-qwen2", "small_v128_h48_l3_nh6_kv2_i80_untied_theta1e4", 1e-5],
  ["golden-mistral", "tiny_v128_h48_l2_nh4_kv2_i64_sw5", 1e-5],
  ["golden-mistral", "small_v128_h48_l3_nh6_kv3_i80_sw8_theta1e6", 1e-5],
  ["golden-qwen3", "tiny_v128_h48_l2_nh4_kv2_hd16_i80_tied", 1e-4],
  ["golden-qwen3", "small_v128_h48_l3_nh6_kv2_hd8_i80_untied_theta1e4", 1e-5],
  ["golden-llama3", "tiny_v128_h48_l2_nh4_kv2_i96_tied_l3f32_orig64", 1e-4],
  ["golden-llama3", "small_v128_h48_l3_nh4_kv1_i64_untied_l3f8_orig64", 1e-5],
  ["golden-gemma2", "tiny_v128_h32_l3_nh2_kv1_hd16_qpas24_sw4_cap0.5_2", 2e-5],
  ["golden-gemma2", "small_v128_h48_l2_nh4_kv2_hd16_qpas16_sw6_cap50_30", 2e-5],
] as const;

/** max |a − b| − (atol + rtol·|b|) over positions where mask [b, s] is 1 (a, b: [b, s, ...]). */
function excessAtReal(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, atol: number): number {
  return torch.scope(() => {
    let m = mask.eq(1);
    while (m.ndim < a.ndim) m = m.unsqueeze(-1);
    const diff = a.to("float64").sub(b.to("float64")).abs().sub(atol);
    return diff.maskedFill(m.logicalNot(), -1).max().item();
  });
}

for (const [set, name, atol] of SETS) {
  describe(`${set} parity: ${name}`, () => {
    const dir = join(SHARED, set, name);
    const { tensors: g } = torch.loadSafetensors(join(dir, "tensors.safetensors"));
    for (const t of g.values()) t.keep();

    test(
      `logits at real tokens (right, left, no mask) within ${atol}; loss, every gradient, one AdamW step, ` +
        `greedy tokens`,
      () => {
        const out = computeParity(dir, g);
        for (const kind of ["right", "left"]) {
          const mask = g.get(`inputs.${kind}.attention_mask`)!;
          assert.ok(
            excessAtReal(out.get(`logits.${kind}`)!, g.get(`logits.${kind}`)!, mask, atol) <= 0,
            `logits.${kind}`,
          );
        }
        assert.ok(worstExcess(out.get("logits.nomask")!, g.get("logits.nomask")!, atol) <= 0, "logits.nomask");
        const goldens = JSON.parse(readFileSync(join(dir, "goldens.json"), "utf8")) as { train: { loss: number } };
        assert.ok(Math.abs(out.get("loss.right")!.item() - goldens.train.loss) <= 1e-5, "loss");
        const { tensors: grads } = torch.loadSafetensors(join(dir, "grads.safetensors"));
        const { tensors: after } = torch.loadSafetensors(join(dir, "params_after_adamw.safetensors"));
        assert.equal(
          grads.size,
          [...out.keys()].filter((k) => k.startsWith("grad.")).length,
          "one gradient per stored parameter",
        );
        for (const [n, grad] of grads) {
          assert.ok(worstExcess(out.get(`grad.${n}`)!, grad, 2e-6, 1e-3) <= 0, `grad.${n}`);
          // Chained into AdamW: 1e-6 where |g| ≥ 1e-6, a sanity bound elsewhere (the READMEs' rule).
          torch.scope(() => {
            const diff = out.get(`adamw.${n}`)!.sub(after.get(n)!).abs();
            assert.ok(diff.maskedFill(grad.abs().lt(1e-6), 0).max().item() <= 1e-6, `adamw.${n}`);
            assert.ok(diff.max().item() <= 2e-3, `adamw.${n} (sanity)`);
          });
        }
        for (const k of ["gen.single.tokens", "gen.batch_left_padded.tokens"])
          assert.deepEqual(out.get(k)!.toNumbers(), g.get(k)!.toNumbers(), k);
        torch.disposeAll([out, grads, after]);
      },
    );

    test("greedy step logits with and without the cache; the KV cache after prefill at real positions", () => {
      const model = loadCausalLM(dir).eval();
      for (const kind of ["single", "batch_left_padded"] as const) {
        const stepLogits = g.get(`gen.${kind}.step_logits`)!;
        for (const useCache of [true, false]) {
          torch.scope(() => {
            let worst = -Infinity;
            generateGreedy(model, {
              inputIds: g.get(`gen.${kind}.prompt_ids`)!,
              attentionMask: g.get(`gen.${kind}.attention_mask`),
              maxNewTokens: 20,
              useCache,
              onStepLogits: (logits, step) => {
                worst = Math.max(worst, worstExcess(logits, stepLogits.select(0, step), atol));
              },
            });
            assert.ok(worst <= 0, `${kind} step logits (cache ${useCache})`);
          });
        }
      }
      torch.noGrad(() =>
        torch.scope(() => {
          const mask = g.get("gen.batch_left_padded.attention_mask")!;
          const cache = model.newCache() as LayeredKVCache;
          prefill(model, { inputIds: g.get("gen.batch_left_padded.prompt_ids")!, attentionMask: mask, cache });
          const real = mask.unsqueeze(1); // [b, 1, S] → broadcast over heads and head dims below
          for (let l = 0; l < model.blocks.length; l++) {
            const { keys, values } = cache.read(l); // [b, g, S, d]
            for (const [what, got] of [
              ["key", keys],
              ["value", values],
            ] as const) {
              const want = g.get(`gen.batch_left_padded.prefill_past.${l}.${what}`)!;
              const excess = excessAtReal(got.transpose(1, 2), want.transpose(1, 2), real.squeeze(1), atol);
              assert.ok(excess <= 0, `layer ${l} ${what}`);
            }
          }
          cache.dispose();
        }),
      );
      model.dispose();
    });
  });
}

test("a saved model of each new family reloads with the same logits and HF's architecture name", () => {
  const cases = [
    ["golden-qwen2/tiny_v128_h48_l2_nh4_kv2_i80_tied", "Qwen2ForCausalLM"],
    ["golden-mistral/tiny_v128_h48_l2_nh4_kv2_i64_sw5", "MistralForCausalLM"],
    ["golden-qwen3/tiny_v128_h48_l2_nh4_kv2_hd16_i80_tied", "Qwen3ForCausalLM"],
    ["golden-llama3/tiny_v128_h48_l2_nh4_kv2_i96_tied_l3f32_orig64", "LlamaForCausalLM"],
    ["golden-gemma2/tiny_v128_h32_l3_nh2_kv1_hd16_qpas24_sw4_cap0.5_2", "Gemma2ForCausalLM"],
  ] as const;
  for (const [folder, arch] of cases) {
    const model = loadCausalLM(join(SHARED, folder)).eval();
    const out = join(mkdtempSync(join(tmpdir(), "oasft-fam-")), "m");
    saveCausalLM(model, out);
    const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as Record<string, unknown>;
    assert.deepEqual(config.architectures, [arch], folder);
    const original = JSON.parse(readFileSync(join(SHARED, folder, "config.json"), "utf8")) as Record<string, unknown>;
    for (const key of ["attention_bias", "head_dim"])
      assert.equal(key in config, key in original, `${folder}: ${key} written only where the file had it`);
    const again = loadCausalLM(out).eval();
    torch.noGrad(() =>
      torch.scope(() => {
        const ids = torch.tensor([[5, 17, 42, 99, 7, 8, 1, 2, 3]], { dtype: "int64" });
        assert.ok(
          worstExcess(again.forward({ inputIds: ids }).logits, model.forward({ inputIds: ids }).logits, 0) <= 0,
          folder,
        );
      }),
    );
    model.dispose();
    again.dispose();
  }
});

test("bad configs of the new families name the key and the file", () => {
  const qwen2 = JSON.parse(
    readFileSync(join(SHARED, "golden-qwen2/tiny_v128_h48_l2_nh4_kv2_i80_tied/config.json"), "utf8"),
  );
  assert.throws(
    () => createCausalLM({ ...qwen2, layer_types: ["full_attention"] }, {}, "q.json"),
    /q\.json › layer_types: has 1 entries for 2 layers/,
  );
  assert.throws(
    () => createCausalLM({ ...qwen2, num_key_value_heads: 3 }, {}, "q.json"),
    /q\.json › num_key_value_heads: num_attention_heads=4 is not divisible/,
  );
  const mistral = JSON.parse(
    readFileSync(join(SHARED, "golden-mistral/tiny_v128_h48_l2_nh4_kv2_i64_sw5/config.json"), "utf8"),
  );
  assert.throws(
    () => createCausalLM({ ...mistral, sliding_window: 0 }, {}, "m.json"),
    /m\.json › sliding_window: must be a positive integer or null/,
  );
  const llama3 = JSON.parse(
    readFileSync(join(SHARED, "golden-llama3/tiny_v128_h48_l2_nh4_kv2_i96_tied_l3f32_orig64/config.json"), "utf8"),
  );
  const scaling = llama3.rope_scaling as Record<string, unknown>;
  assert.throws(
    () => createCausalLM({ ...llama3, rope_scaling: { ...scaling, rope_type: "yarn" } }, {}, "l.json"),
    /l\.json › rope_scaling\.rope_type: expected "linear", "dynamic" or "llama3", got "yarn" \(not implemented\)/,
  );
  assert.throws(
    () => createCausalLM({ ...llama3, rope_scaling: { ...scaling, high_freq_factor: 0.5 } }, {}, "l.json"),
    /rope_scaling\.high_freq_factor: must exceed low_freq_factor/,
  );
  const qwen3 = JSON.parse(
    readFileSync(join(SHARED, "golden-qwen3/tiny_v128_h48_l2_nh4_kv2_hd16_i80_tied/config.json"), "utf8"),
  );
  assert.throws(
    () => createCausalLM({ ...qwen3, head_dim: 15 }, {}, "q3.json"),
    /q3\.json › head_dim: head dim 15 must be even/,
  );
  const model = createCausalLM(qwen3) as LlamaForCausalLM;
  assert.equal(model.llamaConfig.head_dim, 16, "explicit head_dim, not hidden / heads");
  model.dispose();
});

test("llama3 rope factors for GGUF (llama.cpp's rope_freqs) equal HF's scaling: unscaled / scaled frequency", () => {
  for (const name of [
    "tiny_v128_h48_l2_nh4_kv2_i96_tied_l3f32_orig64",
    "small_v128_h48_l3_nh4_kv1_i64_untied_l3f8_orig64",
  ]) {
    const dir = join(SHARED, "golden-llama3", name);
    const model = loadCausalLM(dir) as LlamaForCausalLM;
    const c = model.llamaConfig;
    const scaling = c.rope_scaling!;
    assert.equal(scaling.type, "llama3");
    const { tensors: g } = torch.loadSafetensors(join(dir, "tensors.safetensors"));
    const scaled = g.get("rotary.inv_freq")!.toNumbers();
    const factors = llama3RopeFactors(
      c.head_dim,
      c.rope_theta,
      scaling as Extract<typeof scaling, { type: "llama3" }>,
    ).toNumbers();
    scaled.forEach((f, j) => {
      const unscaled = 1 / c.rope_theta ** ((2 * j) / c.head_dim);
      assert.ok(
        Math.abs(unscaled / f / factors[j]! - 1) < 1e-5,
        `${name} frequency ${j}: ${unscaled / f} vs ${factors[j]}`,
      );
    });
    assert.ok(factors.some((x) => x === 1) && factors.some((x) => x === scaling.factor), "both outer bands occur");
    model.dispose();
    torch.disposeAll(g);
  }
});
