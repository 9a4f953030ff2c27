// The model interface's seams: nothing above src/models knows an architecture, the optimizer groups
// come from module types, caches come from the model, and every model command takes --device.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { createCausalLM, knownModelTypes, loadCausalLM } from "../../src/models/index.js";
import { CLI, GOLDEN, GOLDEN_MODELS, REPO, maxAbsDiff } from "../helpers.js";

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sourceFiles(path) : path.endsWith(".ts") ? [path] : [];
  });
}

test("no file above src/models imports an architecture file or names BLOOM's internals", () => {
  const src = join(REPO, "src");
  const offenders: string[] = [];
  for (const file of sourceFiles(src)) {
    const rel = relative(src, file);
    if (rel.startsWith("models/")) continue;
    const text = readFileSync(file, "utf8");
    for (const [what, pattern] of [
      [
        "imports an architecture file",
        /from\s+["'][^"']*models\/(bloom|gpt-neox|llama|mistral|qwen2|qwen3|gemma2)[^"']*["']/,
      ],
      ["names a BLOOM class", /\bBloom[A-Z]\w*/],
      ["reads BLOOM config keys", /\bconfig\.(n_head|n_layer|hidden_dropout|attention_dropout|apply_residual)/],
      ["reaches into BLOOM's modules", /\.transformer\.(h|word_embeddings|ln_f)\b/],
      ["uses ALiBi", /\balibi/i],
    ] as const) {
      if (pattern.test(text)) offenders.push(`${rel}: ${what}`);
    }
  }
  assert.deepEqual(offenders, []);
  // models/index.ts lists the architecture files and re-exports the generic API only.
  const index = readFileSync(join(src, "models/index.ts"), "utf8");
  assert.match(index, /^import "\.\/bloom\.js";$/m);
  assert.doesNotMatch(index, /export[^;]*from "\.\/bloom\.js"/);
  assert.deepEqual(knownModelTypes(), ["bloom", "gemma2", "gpt_neox", "llama", "mistral", "qwen2", "qwen3"]);
});

test("AdamW's no-decay group is every bias and every LayerNorm weight, by module type", () => {
  const model = createCausalLM(JSON.parse(readFileSync(join(GOLDEN, GOLDEN_MODELS[1], "config.json"), "utf8")));
  const { decay, noDecay } = model.decayGroups();
  // HF's rule for BLOOM, written out: LayerNorm modules are word_embeddings_layernorm, each block's
  // input_layernorm and post_attention_layernorm, and ln_f; every Linear has a bias except lm_head.
  const isNoDecay = (n: string) =>
    n.endsWith(".bias") || /(word_embeddings_layernorm|input_layernorm|post_attention_layernorm|ln_f)\.weight$/.test(n);
  for (const [n] of noDecay) assert.ok(isNoDecay(n), `${n} should take weight decay`);
  for (const [n] of decay) assert.ok(!isNoDecay(n), `${n} should not take weight decay`);
  assert.equal(decay.length + noDecay.length, model.namedParameters().length);
  assert.ok(decay.some(([n]) => n === "lm_head.weight") && noDecay.some(([n]) => n === "transformer.ln_f.bias"));
  model.dispose();
});

test("a cache from model.newCache() gives the logits of a full forward, and survives row selection", () => {
  const model = loadCausalLM(join(GOLDEN, GOLDEN_MODELS[0])).eval();
  torch.noGrad(() =>
    torch.scope(() => {
      const ids = torch.tensor(
        [
          [5, 17, 42, 99, 7, 8, 3],
          [11, 12, 13, 14, 15, 16, 17],
        ],
        { dtype: "int64" },
      );
      const full = model.forward({ inputIds: ids }).logits; // [2, 7, v]
      const cache = model.newCache({ batch: 2, capacity: 4 }); // grows past its first capacity
      try {
        model.forward({ inputIds: ids.narrow(1, 0, 4), cache });
        assert.equal(cache.length, 4);
        const step = model.forward({ inputIds: ids.narrow(1, 4, 3), cache }).logits;
        assert.ok(maxAbsDiff(step, full.narrow(1, 4, 3)) < 1e-5);
        // Keep row 1 only: decoding on continues that row alone.
        cache.selectRows([1]);
        const next = torch.tensor([[18]], { dtype: "int64" });
        const alone = model.forward({ inputIds: torch.cat([ids.narrow(0, 1, 1), next], 1) }).logits.narrow(1, 7, 1);
        assert.ok(maxAbsDiff(model.forward({ inputIds: next, cache }).logits, alone) < 1e-5);
      } finally {
        cache.dispose();
      }
    }),
  );
  model.dispose();
});

const MODEL_COMMANDS = ["train", "serve", "chat", "eval", "parity", "bench", "init", "demo", "export"];

test("--device is in the help of every command that loads or makes a model", () => {
  for (const name of MODEL_COMMANDS) {
    const r = spawnSync(process.execPath, [CLI, name, "--help"], { encoding: "utf8" });
    assert.equal(r.status, 0, `${name}: ${r.stderr}`);
    assert.match(r.stdout, /--device/, `oasft ${name} --help`);
  }
});

test(
  "a device or dtype that does not exist is a one-line usage error naming the flag",
  { skip: torch.cudaIsAvailable() && "this machine has CUDA" },
  () => {
    const golden = join(GOLDEN, GOLDEN_MODELS[0]);
    const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
    for (const device of ["cuda", "cuda:7"]) {
      const r = run("chat", "--model", golden, "--device", device);
      assert.equal(r.status, 2, r.stderr);
      assert.match(
        r.stderr.trim(),
        new RegExp(`^oasft chat: --device ${device}: no CUDA device .*; use --device cpu$`),
      );
    }
    const gpu = run(
      "init",
      "--config",
      join(golden, "config.json"),
      "--out",
      join(REPO, "dist/never"),
      "--device",
      "gpu",
    );
    assert.equal(gpu.status, 2);
    assert.match(gpu.stderr, /--device gpu: expected auto, cpu, cuda or cuda:N/);
    const fp8 = run("serve", "--model", golden, "--dtype", "fp8");
    assert.equal(fp8.status, 2);
    assert.match(fp8.stderr.trim(), /^oasft serve: --dtype fp8: expected fp32, bf16 or fp16/);
    const bench = run("bench", "generate", "--model-config", join(golden, "config.json"), "--device", "cuda:1");
    assert.equal(bench.status, 2);
    assert.match(bench.stderr, /--device cuda:1: no CUDA device/);
  },
);

test("the trainer and the optimizers call no raw addon entry: the tensor API has what they need", () => {
  const offenders = sourceFiles(join(REPO, "src/train")).filter((f) => /torch\.native\b/.test(readFileSync(f, "utf8")));
  assert.deepEqual(
    offenders.map((f) => relative(REPO, f)),
    [],
  );
});
