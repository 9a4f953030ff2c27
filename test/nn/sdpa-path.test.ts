// The fused-attention path (libtorch's scaled_dot_product_attention, used on CUDA with libtorch 2.x)
// checked on any libtorch: the op itself is stood in by its documented definition
// (softmax(q·kᵀ·scale + mask)·v, the causal mask top-left aligned), so what is tested here is
// everything around it that oasft owns: BLOOM's ALiBi folded into one additive bias, the padding and
// packing masks as additive masks, the causal flag, key layouts out of the KV cache, GQA. Against
// Hugging Face's goldens, as the composite path is (test/models). The GPU tier compares the real op.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { loadCausalLM } from "../../src/models/index.js";
import { setAttentionImpl, useSdpa } from "../../src/nn/index.js";
import { generateGreedy } from "../../src/generate/greedy.js";
import { computeParity } from "../../src/eval/parity.js";
import { GOLDEN, SHARED, worstExcess } from "../helpers.js";

type H = torch.Handle;
const native = torch.native as unknown as Record<string, unknown>;
const features = torch.features as { sdpa: boolean };

/** torch.nn.functional.scaled_dot_product_attention as its documentation defines it. */
function definition(qh: H, kh: H, vh: H, maskh: H | undefined, _dropout: number, causal: boolean, scale: number): H {
  const wrap = (h: H) => new torch.Tensor(torch.native.view(h, torch.native.shape(h)));
  return torch
    .scope(() => {
      const q = wrap(qh);
      const k = wrap(kh);
      let scores = q.matmul(k.transpose(-2, -1)).mul(scale);
      const [s, S] = [q.size(-2), k.size(-2)];
      if (causal) scores = scores.maskedFill(torch.ones([s, S], { dtype: "bool" }).triu(1), -Infinity);
      if (maskh) scores = scores.add(wrap(maskh));
      return scores.softmax(-1, "float32").to(q.dtype).matmul(wrap(vh));
    })
    .keep().handle;
}

const SETS = [
  [GOLDEN, "tiny_v256_h64_l2_nh4"],
  [GOLDEN, "small_v300_h96_l3_nh6_untied"],
  [join(SHARED, "golden-neox"), "tiny_v320_h64_l2_nh4_rp025_parallel"],
  [join(SHARED, "golden-llama"), "small_v320_h80_l3_nh5_i216_eps1e-6"],
  [join(SHARED, "golden-llama-gqa"), "tiny_v320_h96_l2_nh6_kv2_i256"],
] as const;

describe("the fused-attention path, with the op stood in by its definition, reproduces Hugging Face's goldens", () => {
  const saved = { sdpa: native.sdpa, feature: features.sdpa };
  let previous: ReturnType<typeof setAttentionImpl>;
  before(() => {
    if (!saved.sdpa) native.sdpa = definition;
    features.sdpa = true;
    previous = setAttentionImpl("sdpa");
  });
  after(() => {
    setAttentionImpl(previous);
    native.sdpa = saved.sdpa;
    features.sdpa = saved.feature;
  });

  for (const [root, name] of SETS) {
    test(`${name}: logits of real tokens, every gradient, greedy tokens with and without the cache`, () => {
      assert.ok(useSdpa("cpu"), "the fused path is selected");
      const dir = join(root, name);
      const { tensors: g } = torch.loadSafetensors(join(dir, "tensors.safetensors"));
      const out = computeParity(dir, g);
      const real = (kind: string) => g.get(`inputs.${kind}.attention_mask`)!.unsqueeze(-1).to("float64");
      for (const kind of ["right", "left"]) {
        const diff = out
          .get(`logits.${kind}`)!
          .to("float64")
          .sub(g.get(`logits.${kind}`)!)
          .abs()
          .mul(real(kind));
        assert.ok(diff.max().item() < 1e-5, `logits.${kind}`);
      }
      assert.ok(worstExcess(out.get("logits.nomask")!, g.get("logits.nomask")!, 1e-5) <= 0, "logits.nomask");
      const { tensors: grads } = torch.loadSafetensors(join(dir, "grads.safetensors"));
      for (const [n, grad] of grads) assert.ok(worstExcess(out.get(`grad.${n}`)!, grad, 2e-6, 1e-3) <= 0, `grad.${n}`);
      for (const k of ["gen.single.tokens", "gen.batch_left_padded.tokens"]) {
        assert.deepEqual(out.get(k)!.toNumbers(), g.get(k)!.toNumbers(), k);
      }
      const model = loadCausalLM(dir).eval();
      torch.noGrad(() =>
        torch.scope(() => {
          const prompt = {
            inputIds: g.get("gen.batch_left_padded.prompt_ids")!,
            attentionMask: g.get("gen.batch_left_padded.attention_mask"),
          };
          const uncached = generateGreedy(model, { ...prompt, maxNewTokens: 12, useCache: false }).toNumbers();
          assert.deepEqual(generateGreedy(model, { ...prompt, maxNewTokens: 12 }).toNumbers(), uncached);
        }),
      );
      model.dispose();
      torch.disposeAll([out, g, grads]);
    });
  }

  test("packed rows: each sample's logits equal its logits alone", () => {
    const model = loadCausalLM(join(GOLDEN, "tiny_v256_h64_l2_nh4")).eval();
    torch.noGrad(() =>
      torch.scope(() => {
        const a = [5, 17, 42, 99, 7];
        const b = [8, 9, 10];
        const alone = (ids: number[]) => model.forward({ inputIds: torch.tensor([ids], { dtype: "int64" }) }).logits;
        const packed = model.forward({
          inputIds: torch.tensor([[...a, ...b]], { dtype: "int64" }),
          segmentIds: torch.tensor([[1, 1, 1, 1, 1, 2, 2, 2]], { dtype: "int64" }),
          positionIds: torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]], { dtype: "int64" }),
        }).logits;
        assert.ok(worstExcess(packed.narrow(1, 0, a.length), alone(a), 1e-5) <= 0, "first sample");
        assert.ok(worstExcess(packed.narrow(1, a.length, b.length), alone(b), 1e-5) <= 0, "second sample");
      }),
    );
    model.dispose();
  });
});
