// Hugging Face model folders: create, save, load (single file, sharded, other dtypes) and every kind of bad folder.
import assert from "node:assert/strict";
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { createCausalLM, loadCausalLM, readSafetensorsHeaderOf, saveCausalLM } from "./checkpoint-helpers.js";
import { GOLDEN, GOLDEN_MODELS, maxAbsDiff, param } from "../helpers.js";

const work = mkdtempSync(join(tmpdir(), "oasft-ckpt-"));
const tinyConfig = JSON.parse(readFileSync(join(GOLDEN, GOLDEN_MODELS[0], "config.json"), "utf8")) as Record<
  string,
  unknown
>;
const untiedConfig = JSON.parse(readFileSync(join(GOLDEN, GOLDEN_MODELS[1], "config.json"), "utf8")) as Record<
  string,
  unknown
>;

test("a new model saved and loaded again has identical weights; tied models store no lm_head", () => {
  for (const [name, cfg] of [
    ["tied", tinyConfig],
    ["untied", untiedConfig],
  ] as const) {
    torch.manualSeed(3);
    const model = createCausalLM(cfg);
    const dir = join(work, name);
    saveCausalLM(model, dir);
    for (const f of ["config.json", "generation_config.json", "model.safetensors"])
      assert.ok(existsSync(join(dir, f)), f);
    const names = [...readSafetensorsHeaderOf(join(dir, "model.safetensors")).keys()];
    assert.equal(names.includes("lm_head.weight"), name === "untied");
    const again = loadCausalLM(dir);
    const a = new Map(model.namedParameters());
    for (const [n, p] of again.namedParameters()) assert.equal(maxAbsDiff(p, a.get(n)!), 0, n);
    // HF init: LayerNorm (1, 0), biases 0, weights ~ N(0, 0.02).
    const std = torch.scope(() =>
      param(model, "transformer.word_embeddings.weight").to("float64").pow(2).mean().sqrt().item(),
    );
    assert.ok(Math.abs(std - 0.02) < 0.002, `embedding std ${std}`);
    assert.equal(param(model, "transformer.ln_f.weight").sum().item(), model.config.hiddenSize);
    model.dispose();
    again.dispose();
  }
});

test("sharded checkpoints (model.safetensors.index.json) load like single files", () => {
  const golden = join(GOLDEN, GOLDEN_MODELS[1]);
  const model = loadCausalLM(golden);
  const dir = join(work, "sharded");
  saveCausalLM(model, dir, { maxShardBytes: 100_000 });
  const index = JSON.parse(readFileSync(join(dir, "model.safetensors.index.json"), "utf8"));
  const shards = new Set(Object.values(index.weight_map as Record<string, string>));
  assert.ok(shards.size > 1, `expected several shards, got ${shards.size}`);
  assert.ok(!existsSync(join(dir, "model.safetensors")));
  const again = loadCausalLM(dir);
  const a = new Map(model.namedParameters());
  for (const [n, p] of again.namedParameters()) assert.equal(maxAbsDiff(p, a.get(n)!), 0, n);
  model.dispose();
  again.dispose();
});

test("weights are cast to the requested dtype on load; bf16 still predicts like fp32", () => {
  const golden = join(GOLDEN, GOLDEN_MODELS[1]);
  const ref = loadCausalLM(golden);
  const bf16 = loadCausalLM(golden, { dtype: "bfloat16" });
  assert.equal(bf16.lmHeadWeight.dtype, "bfloat16");
  torch.noGrad(() =>
    torch.scope(() => {
      const ids = torch.tensor([[5, 17, 42, 99, 7, 8]], { dtype: "int64" });
      const a = ref.forward({ inputIds: ids }).logits;
      const b = bf16.forward({ inputIds: ids }).logits.to("float32");
      assert.ok(maxAbsDiff(a, b) < 0.05, "bf16 logits close to fp32");
    }),
  );
  // fp16 has no CPU matmul kernels in libtorch 1.13 (it is a GPU dtype there), but loads and converts exactly.
  const fp16 = loadCausalLM(golden, { dtype: "float16" });
  torch.scope(() => {
    const w = param(fp16, "transformer.h.0.self_attention.dense.weight");
    assert.equal(w.dtype, "float16");
    assert.equal(maxAbsDiff(w, param(ref, "transformer.h.0.self_attention.dense.weight").to("float16")), 0);
  });
  for (const m of [ref, bf16, fp16]) m.dispose();
});

test("HF checkpoints without the transformer. prefix, or with a tied lm_head copy, load", () => {
  const golden = join(GOLDEN, GOLDEN_MODELS[0]);
  const dir = join(work, "noprefix");
  mkdirSync(dir, { recursive: true });
  copyFileSync(join(golden, "config.json"), join(dir, "config.json"));
  torch.scope(() => {
    const { tensors } = torch.loadSafetensors(join(golden, "model.safetensors"));
    const renamed: Array<[string, torch.Tensor]> = [...tensors].map(([n, t]) => [n.replace(/^transformer\./, ""), t]);
    renamed.push(["lm_head.weight", tensors.get("transformer.word_embeddings.weight")!]);
    torch.saveSafetensors(join(dir, "model.safetensors"), renamed);
  });
  const a = loadCausalLM(dir);
  const b = loadCausalLM(golden);
  assert.equal(
    maxAbsDiff(
      param(a, "transformer.h.1.mlp.dense_4h_to_h.weight"),
      param(b, "transformer.h.1.mlp.dense_4h_to_h.weight"),
    ),
    0,
  );
  a.dispose();
  b.dispose();
});

test("bad model folders: clear errors naming the file, the key or the tensor", () => {
  const golden = join(GOLDEN, GOLDEN_MODELS[0]);
  const make = (name: string, edit: (dir: string) => void) => {
    const dir = join(work, name);
    cpSync(golden, dir, { recursive: true });
    edit(dir);
    return dir;
  };
  assert.throws(() => loadCausalLM(join(work, "nope")), /nope: not a folder/);
  assert.throws(
    () => loadCausalLM(make("noconfig", (d) => writeFileSync(join(d, "config.json"), "{ not json"))),
    /noconfig\/config\.json: not valid JSON/,
  );
  assert.throws(
    () =>
      loadCausalLM(
        make("gpt2", (d) =>
          writeFileSync(join(d, "config.json"), JSON.stringify({ ...tinyConfig, model_type: "gpt99" })),
        ),
      ),
    /config\.json › model_type: unknown model_type 'gpt99'.*Known: bloom/,
  );
  assert.throws(
    () =>
      loadCausalLM(
        make("badtype", (d) =>
          writeFileSync(join(d, "config.json"), JSON.stringify({ ...tinyConfig, n_head: "four" })),
        ),
      ),
    /config\.json › n_head: expected a number, got "four"/,
  );
  assert.throws(
    () =>
      loadCausalLM(
        make("badheads", (d) => writeFileSync(join(d, "config.json"), JSON.stringify({ ...tinyConfig, n_head: 5 }))),
      ),
    /hidden_size: 64 is not divisible by n_head=5/,
  );
  assert.throws(
    () => loadCausalLM(make("noweights", (d) => writeFileSync(join(d, "model.safetensors"), ""))),
    /model\.safetensors: not a valid safetensors file/,
  );
  assert.throws(
    () =>
      loadCausalLM(
        make("wrongshape", (d) =>
          writeFileSync(join(d, "config.json"), JSON.stringify({ ...tinyConfig, vocab_size: 300 })),
        ),
      ),
    /model\.safetensors › transformer\.word_embeddings\.weight: shape \[256,64\] does not match the model's \[300,64\]/,
  );
  assert.throws(
    () =>
      loadCausalLM(
        make("morelayers", (d) => writeFileSync(join(d, "config.json"), JSON.stringify({ ...tinyConfig, n_layer: 3 }))),
      ),
    /model\.safetensors: missing tensors transformer\.h\.2\./,
  );
  assert.throws(
    () =>
      loadCausalLM(
        make("fewerlayers", (d) =>
          writeFileSync(join(d, "config.json"), JSON.stringify({ ...tinyConfig, n_layer: 1 })),
        ),
      ),
    /model\.safetensors: unexpected tensors transformer\.h\.1\./,
  );
  const empty = join(work, "empty");
  mkdirSync(empty, { recursive: true });
  copyFileSync(join(golden, "config.json"), join(empty, "config.json"));
  assert.throws(
    () => loadCausalLM(empty),
    /empty: no weights \(expected model\.safetensors or model\.safetensors\.index\.json/,
  );
});
