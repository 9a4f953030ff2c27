// BLOOM against Hugging Face's own outputs (../shared/golden), with the tolerances its README gives.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { loadCausalLM } from "../../src/models/index.js";
import { alibiSlopes } from "../../src/models/bloom.js";
import { generateGreedy } from "../../src/generate/index.js";
import { AdamW } from "../../src/train/index.js";
import { computeParity, PARITY_ADAMW } from "../../src/eval/parity.js";
import { GOLDEN, GOLDEN_MODELS, assertGradsAndAdamw, loadGolden, maxAbsDiff, worstExcess } from "../helpers.js";

test("ALiBi slopes equal HF's build_alibi_tensor for every head count it lists", () => {
  const golden = JSON.parse(readFileSync(join(GOLDEN, "alibi_slopes.json"), "utf8")).slopes as Record<string, number[]>;
  assert.ok(Object.keys(golden).length >= 10);
  for (const [n, expected] of Object.entries(golden)) {
    const got = torch.scope(() => alibiSlopes(Number(n)).toNumbers());
    assert.equal(got.length, expected.length, `n_head=${n}`);
    got.forEach((v, i) =>
      assert.ok(
        Math.abs(v - expected[i]!) <= 2e-7 * Math.abs(expected[i]!),
        `n_head=${n} slope ${i}: ${v} vs ${expected[i]}`,
      ),
    );
  }
});

for (const name of GOLDEN_MODELS) {
  describe(`BLOOM parity: ${name}`, () => {
    const dir = join(GOLDEN, name);
    const g = loadGolden(name, "tensors.safetensors");
    const goldens = JSON.parse(readFileSync(join(dir, "goldens.json"), "utf8"));
    const nLayer = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")).n_layer as number;

    test("logits, hidden states and attention probabilities (right-, left-padded, no mask) within 1e-5", () => {
      const model = loadCausalLM(dir).eval();
      torch.noGrad(() =>
        torch.scope(() => {
          for (const kind of ["right", "left"] as const) {
            const out = model.forward({
              inputIds: g.get(`inputs.${kind}.input_ids`)!,
              attentionMask: g.get(`inputs.${kind}.attention_mask`)!,
              outputHiddenStates: true,
              outputAttentions: true,
            });
            assert.ok(maxAbsDiff(out.logits, g.get(`logits.${kind}`)!) < 1e-5, `logits.${kind}`);
            assert.equal(out.hiddenStates!.length, nLayer + 1);
            out.hiddenStates!.forEach((h, k) =>
              assert.ok(maxAbsDiff(h, g.get(`hidden_states.${kind}.${k}`)!) < 1e-5, `hidden_states.${kind}.${k}`),
            );
            out.attentions!.forEach((a, l) =>
              assert.ok(maxAbsDiff(a, g.get(`attentions.${kind}.${l}`)!) < 1e-5, `attentions.${kind}.${l}`),
            );
          }
          const nomask = model.forward({ inputIds: g.get("inputs.nomask.input_ids")! });
          assert.ok(maxAbsDiff(nomask.logits, g.get("logits.nomask")!) < 1e-5, "logits.nomask");
          // Left-pad query rows see no key: HF's float-min fill makes them uniform, never NaN.
          const left = model.forward({
            inputIds: g.get("inputs.left.input_ids")!,
            attentionMask: g.get("inputs.left.attention_mask")!,
          });
          assert.equal(left.logits.isnan().any().item(), 0);
        }),
      );
      model.dispose();
    });

    test("loss, every gradient, one AdamW step (train mode, right-padded batch)", () => {
      const model = loadCausalLM(dir).train();
      const grads = loadGolden(name, "grads.safetensors");
      const after = loadGolden(name, "params_after_adamw.safetensors");
      torch.scope(() => {
        const { loss } = model.forward({
          inputIds: g.get("inputs.right.input_ids")!,
          attentionMask: g.get("inputs.right.attention_mask")!,
          labels: g.get("inputs.right.labels")!,
        });
        assert.ok(Math.abs(loss!.item() - goldens.train.loss) < 1e-5, `loss ${loss!.item()} vs ${goldens.train.loss}`);
        loss!.backward();
      });
      assertGradsAndAdamw(
        model.namedParameters(),
        grads,
        after,
        () => new AdamW(model.parameters(), PARITY_ADAMW).step(),
        1e-4,
      );
      model.dispose();
    });

    test("AdamW alone (golden weights + golden grads, fused and composite) within 2e-7", () => {
      const grads = loadGolden(name, "grads.safetensors");
      const after = loadGolden(name, "params_after_adamw.safetensors");
      for (const fused of [true, false]) {
        const model = loadCausalLM(dir);
        for (const [n, p] of model.namedParameters()) p.grad = grads.get(n)!;
        new AdamW(model.parameters(), { ...PARITY_ADAMW, fused }).step();
        torch.scope(() => {
          for (const [n, p] of model.namedParameters())
            assert.ok(maxAbsDiff(p, after.get(n)!) <= 2e-7, `${fused ? "fused" : "composite"} ${n}`);
        });
        model.dispose();
      }
    });

    test("greedy generation, with and without the cache, single and left-padded batch", () => {
      const model = loadCausalLM(dir);
      for (const kind of ["single", "batch_left_padded"] as const) {
        const inputIds = g.get(`gen.${kind}.prompt_ids`)!;
        const attentionMask = g.get(`gen.${kind}.attention_mask`);
        const expected = g.get(`gen.${kind}.tokens`)!.toNumbers();
        const stepLogits = g.get(`gen.${kind}.step_logits`)!;
        for (const useCache of [true, false]) {
          torch.scope(() => {
            let worst = 0;
            const tokens = generateGreedy(model, {
              inputIds,
              attentionMask,
              maxNewTokens: 20,
              useCache,
              onStepLogits: (logits, step) => {
                worst = Math.max(worst, maxAbsDiff(logits, stepLogits.select(0, step)));
              },
            });
            assert.deepEqual(tokens.toNumbers(), expected, `${kind} tokens (cache ${useCache})`);
            assert.ok(worst < 1e-5, `${kind} step logits (cache ${useCache}): ${worst}`);
          });
        }
      }
      model.dispose();
    });

    test("computeParity (the `oasft parity` command) reproduces every golden output", () => {
      const inputs = g;
      const out = computeParity(dir, inputs);
      const grads = loadGolden(name, "grads.safetensors");
      const after = loadGolden(name, "params_after_adamw.safetensors");
      for (const kind of ["right", "left", "nomask"])
        assert.ok(maxAbsDiff(out.get(`logits.${kind}`)!, g.get(`logits.${kind}`)!) < 1e-5);
      assert.deepEqual(out.get("loss.right")!.shape, [1]);
      assert.ok(Math.abs(out.get("loss.right")!.item() - goldens.train.loss) < 1e-5);
      for (const [n, grad] of grads) {
        assert.ok(worstExcess(out.get(`grad.${n}`)!, grad, 2e-6, 1e-3) <= 0, `grad.${n}`);
        assert.ok(maxAbsDiff(out.get(`adamw.${n}`)!, after.get(n)!) <= 1e-4, `adamw.${n}`);
      }
      assert.deepEqual(out.get("gen.single.tokens")!.toNumbers(), g.get("gen.single.tokens")!.toNumbers());
      assert.deepEqual(
        out.get("gen.batch_left_padded.tokens")!.toNumbers(),
        g.get("gen.batch_left_padded.tokens")!.toNumbers(),
      );
      torch.disposeAll(out);
    });
  });
}
