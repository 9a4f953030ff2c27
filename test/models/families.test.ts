// GPT-NeoX and LLaMA (with grouped-query and multi-query attention) against the outputs of Hugging
// Face's own code (../shared/golden-neox, golden-llama, golden-llama-gqa), with those READMEs'
// tolerances. Pad positions are compared only where HF's semantics are reproducible: the READMEs say
// to compare real tokens always (HF's rotary models put pads at other positions, and mask pad query
// rows differently between versions), and every real-token output, gradient and generated token here.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { createCausalLM, loadCausalLM } from "../../src/models/index.js";
import { RotaryEmbedding } from "../../src/nn/index.js";
import { generateGreedy } from "../../src/generate/greedy.js";
import { computeParity, PARITY_ADAMW } from "../../src/eval/parity.js";
import { AdamW } from "../../src/train/index.js";
import { SHARED, assertGradsAndAdamw, maxAbsDiff, worstExcess } from "../helpers.js";

const SETS = [
  ["golden-neox", "tiny_v320_h64_l2_nh4_rp025_parallel"],
  ["golden-neox", "small_v320_h96_l2_nh6_rp1_sequential"],
  ["golden-llama", "tiny_v320_h64_l2_nh4_i176"],
  ["golden-llama", "small_v320_h80_l3_nh5_i216_eps1e-6"],
  ["golden-llama-gqa", "tiny_v320_h96_l2_nh6_kv2_i256"],
  ["golden-llama-gqa", "small_v320_h64_l3_nh4_kv1_i176_eps1e-6_lin2"],
] as const;

function load(dir: string, file: string): Map<string, torch.Tensor> {
  const { tensors } = torch.loadSafetensors(join(dir, file));
  for (const t of tensors.values()) t.keep();
  return tensors;
}

/** max |a − b| over the positions where mask [b, s] is 1 (a, b: [b, s, ...]). */
function diffAtRealTokens(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor): number {
  return torch.scope(() => {
    let m = mask.to("float64");
    while (m.ndim < a.ndim) m = m.unsqueeze(-1);
    return a.to("float64").sub(b.to("float64")).abs().mul(m).max().item();
  });
}

for (const [set, name] of SETS) {
  describe(`${set} parity: ${name}`, () => {
    const dir = join(SHARED, set, name);
    const g = load(dir, "tensors.safetensors");
    const goldens = JSON.parse(readFileSync(join(dir, "goldens.json"), "utf8"));
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    const layers = config.num_hidden_layers as number;

    test(
      "logits and hidden states at real tokens (right, left, left with HF's generate positions, no mask) " +
        "within 1e-5; attentions of real queries",
      () => {
        const model = loadCausalLM(dir).eval();
        torch.noGrad(() =>
          torch.scope(() => {
            for (const kind of ["right", "left"] as const) {
              const mask = g.get(`inputs.${kind}.attention_mask`)!;
              const out = model.forward({
                inputIds: g.get(`inputs.${kind}.input_ids`)!,
                attentionMask: mask,
                outputHiddenStates: true,
                outputAttentions: true,
              });
              assert.ok(diffAtRealTokens(out.logits, g.get(`logits.${kind}`)!, mask) < 1e-5, `logits.${kind}`);
              assert.equal(out.hiddenStates!.length, layers + 1);
              out.hiddenStates!.forEach((h, k) =>
                assert.ok(
                  diffAtRealTokens(h, g.get(`hidden_states.${kind}.${k}`)!, mask) < 1e-5,
                  `hidden_states.${kind}.${k}`,
                ),
              );
              // Attention rows of real queries: [b, n, s, S] → compare with the query mask on dim 2.
              out.attentions!.forEach((a, l) => {
                const q = mask.unsqueeze(1).unsqueeze(-1);
                assert.ok(
                  diffAtRealTokens(
                    a.mul(q),
                    g.get(`attentions.${kind}.${l}`)!.mul(q),
                    mask.unsqueeze(1).expand([mask.size(0), a.size(1), mask.size(1)]),
                  ) < 1e-5,
                  `attentions.${kind}.${l}`,
                );
              });
              assert.equal(out.logits.isnan().any().item(), 0, `no NaN (${kind})`);
            }
            const mask = g.get("inputs.left.attention_mask")!;
            const posids = model.forward({
              inputIds: g.get("inputs.left.input_ids")!,
              attentionMask: mask,
              positionIds: g.get("inputs.left.position_ids")!,
            });
            assert.ok(diffAtRealTokens(posids.logits, g.get("logits.left_posids")!, mask) < 1e-5, "logits.left_posids");
            const nomask = model.forward({ inputIds: g.get("inputs.nomask.input_ids")! });
            assert.ok(maxAbsDiff(nomask.logits, g.get("logits.nomask")!) < 1e-5, "logits.nomask (every position)");
          }),
        );
        model.dispose();
      },
    );

    test("rotary tables equal HF's float32 ones within 2e-6", () => {
      const rot = g.get("rotary.cos")!.size(1);
      const base = (config.rope_theta ?? config.rotary_emb_base ?? 10000) as number;
      const rope = new RotaryEmbedding(rot, base, config.rope_scaling, config.max_position_embeddings);
      torch.scope(() => {
        const { cos, sin } = rope.tables(torch.arange(0, 32).unsqueeze(0), 32);
        assert.ok(maxAbsDiff(cos.select(0, 0).select(0, 0), g.get("rotary.cos")!) < 2e-6);
        assert.ok(maxAbsDiff(sin.select(0, 0).select(0, 0), g.get("rotary.sin")!) < 2e-6);
      });
    });

    test("loss, every gradient, one AdamW step; AdamW alone within 2e-7", () => {
      const grads = load(dir, "grads.safetensors");
      const after = load(dir, "params_after_adamw.safetensors");
      const model = loadCausalLM(dir).train();
      torch.scope(() => {
        const { loss } = model.forward({
          inputIds: g.get("inputs.right.input_ids")!,
          attentionMask: g.get("inputs.right.attention_mask")!,
          labels: g.get("inputs.right.labels")!,
        });
        assert.ok(Math.abs(loss!.item() - goldens.train.loss) < 1e-5, `loss ${loss!.item()} vs ${goldens.train.loss}`);
        loss!.backward();
      });
      // Buffers (rotary inv_freq) are not parameters: one gradient per stored parameter all the same.
      assertGradsAndAdamw(
        model.namedParameters(),
        grads,
        after,
        () => new AdamW(model.parameters(), PARITY_ADAMW).step(),
        2e-3,
      );
      model.dispose();
      const alone = loadCausalLM(dir);
      for (const [n, p] of alone.namedParameters()) p.grad = grads.get(n)!;
      new AdamW(alone.parameters(), PARITY_ADAMW).step();
      torch.scope(() => {
        for (const [n, p] of alone.namedParameters())
          assert.ok(maxAbsDiff(p, after.get(n)!) <= 2e-7, `optimizer alone ${n}`);
      });
      alone.dispose();
    });

    test(
      "greedy generation with and without the cache, single and left-padded batch: the same tokens, step " +
        "logits within 1e-5",
      () => {
        const model = loadCausalLM(dir);
        for (const kind of ["single", "batch_left_padded"] as const) {
          const expected = g.get(`gen.${kind}.tokens`)!.toNumbers();
          const stepLogits = g.get(`gen.${kind}.step_logits`)!;
          for (const useCache of [true, false]) {
            torch.scope(() => {
              let worst = 0;
              const tokens = generateGreedy(model, {
                inputIds: g.get(`gen.${kind}.prompt_ids`)!,
                attentionMask: g.get(`gen.${kind}.attention_mask`),
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
      },
    );

    test("the parity command computes the same for this family", () => {
      const out = computeParity(dir, g);
      const grads = load(dir, "grads.safetensors");
      assert.ok(maxAbsDiff(out.get("logits.nomask")!, g.get("logits.nomask")!) < 1e-5);
      for (const [n, grad] of grads) assert.ok(worstExcess(out.get(`grad.${n}`)!, grad, 2e-6, 1e-3) <= 0, `grad.${n}`);
      assert.deepEqual(
        out.get("gen.batch_left_padded.tokens")!.toNumbers(),
        g.get("gen.batch_left_padded.tokens")!.toNumbers(),
      );
      torch.disposeAll(out);
    });
  });
}

test("bad configs of these families name the key and the file", () => {
  const base = JSON.parse(
    readFileSync(join(SHARED, "golden-llama-gqa/tiny_v320_h96_l2_nh6_kv2_i256/config.json"), "utf8"),
  );
  const make = (patch: Record<string, unknown>) => () => createCausalLM({ ...base, ...patch }, {}, "my/config.json");
  assert.throws(
    make({ num_key_value_heads: 4 }),
    /my\/config\.json › num_key_value_heads: num_attention_heads=6 is not divisible by num_key_value_heads=4/,
  );
  assert.throws(
    make({ rope_scaling: { type: "yarn", factor: 2 } }),
    /my\/config\.json › rope_scaling\.type: expected "linear", "dynamic" or "llama3", got "yarn"/,
  );
  assert.throws(make({ rope_scaling: { type: "linear", factor: 0.5 } }), /rope_scaling\.factor: expected a number > 1/);
  assert.throws(
    make({ hidden_size: 100 }),
    /my\/config\.json › hidden_size: 100 is not divisible by num_attention_heads=6/,
  );
  assert.throws(
    make({ model_type: "falcon" }),
    /my\/config\.json › model_type: unknown model_type 'falcon'.* Known: bloom, gemma2, gpt_neox, llama, mistral, qwen/,
  );
  const neox = JSON.parse(
    readFileSync(join(SHARED, "golden-neox/tiny_v320_h64_l2_nh4_rp025_parallel/config.json"), "utf8"),
  );
  assert.throws(
    () => createCausalLM({ ...neox, rotary_pct: 0.1 }, {}, "neox.json"),
    /neox\.json › rotary_pct: 0\.1 gives 1 rotary dims per head/,
  );
  assert.throws(
    () => createCausalLM({ ...neox, hidden_act: "relu" }, {}, "neox.json"),
    /neox\.json › hidden_act: 'relu' is not supported/,
  );
});
