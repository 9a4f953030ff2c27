// The GPU tier (`npm run test:gpu`): the same invariants as the CPU suite, on a CUDA device. Every
// test skips cleanly where libtorch sees no GPU, so the tier can run anywhere; on a GPU machine it is
// one command (see README, "GPU checks"). Tolerances follow ../shared/golden/README.md (fp32: 1e-4
// on logits, cuBLAS may reorder sums) and the trainer's own invariants.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import * as torch from "../src/torch/index.js";
import { loadCausalLM } from "../src/models/index.js";
import { generateGreedy } from "../src/generate/greedy.js";
import { computeParity } from "../src/eval/parity.js";
import { composeConfig } from "../src/sft/config.js";
import { train } from "../src/train/trainer.js";
import { buildServer } from "../src/serve/server.js";
import { ChatTokenizer } from "../src/tokenizer/index.js";
import { GOLDEN, GOLDEN_MODELS, REPO, SHARED, loadGolden, maxAbsDiff, worstExcess } from "../test/helpers.js";

const cuda = torch.cudaIsAvailable();
const skip = !cuda && "no CUDA device";
const tmp = () => mkdtempSync(join(tmpdir(), "oasft-gpu-"));

for (const name of GOLDEN_MODELS) {
  test(`golden parity on CUDA: logits, loss, every gradient, one AdamW step, greedy tokens (${name})`, { skip }, () => {
    const dir = join(GOLDEN, name);
    const g = loadGolden(name, "tensors.safetensors");
    const goldens = JSON.parse(readFileSync(join(dir, "goldens.json"), "utf8")) as { train: { loss: number } };
    const out = computeParity(dir, g, { device: "cuda" });
    for (const [key, t] of out) assert.ok(t.device.startsWith("cuda"), `${key} computed on ${t.device}`);
    const host = (k: string) => out.get(k)!.toDevice("cpu");
    // The CPU suite's tolerances (../shared/golden/README.md): fp32 on CUDA (no TF32) meets them too.
    for (const kind of ["right", "left", "nomask"])
      assert.ok(maxAbsDiff(host(`logits.${kind}`), g.get(`logits.${kind}`)!) < 1e-5, kind);
    assert.ok(Math.abs(host("loss.right").item() - goldens.train.loss) < 1e-5);
    const after = loadGolden(name, "params_after_adamw.safetensors");
    for (const [n, grad] of loadGolden(name, "grads.safetensors")) {
      assert.ok(worstExcess(host(`grad.${n}`), grad, 2e-6, 1e-3) <= 0, `grad.${n}`);
      assert.ok(maxAbsDiff(host(`adamw.${n}`), after.get(n)!) <= 1e-4, `adamw.${n}`);
    }
    for (const k of ["gen.single.tokens", "gen.batch_left_padded.tokens"])
      assert.deepEqual(host(k).toNumbers(), g.get(k)!.toNumbers(), k);
  });
}

test(
  "a CUDA forward of several tokens without an attention mask; greedy with and without the cache agree",
  { skip },
  () => {
    const model = loadCausalLM(join(GOLDEN, GOLDEN_MODELS[0]), { device: "cuda" }).eval();
    const cpu = loadCausalLM(join(GOLDEN, GOLDEN_MODELS[0])).eval();
    torch.noGrad(() =>
      torch.scope(() => {
        const ids = torch.tensor([[5, 17, 42, 99, 7, 8]], { dtype: "int64" });
        const gpu = model.forward({ inputIds: ids.toDevice("cuda") }).logits.toDevice("cpu");
        assert.ok(worstExcess(gpu, cpu.forward({ inputIds: ids }).logits, 1e-4, 1e-4) <= 0);
        const prompt = ids.toDevice("cuda");
        const cached = generateGreedy(model, { inputIds: prompt, maxNewTokens: 12 }).toNumbers();
        const uncached = generateGreedy(model, { inputIds: prompt, maxNewTokens: 12, useCache: false }).toNumbers();
        assert.deepEqual(cached, uncached);
      }),
    );
    model.dispose();
    cpu.dispose();
  },
);

const runArgs = (out: string, dtype: string, extra: string[] = []) => [
  "--cache_dir",
  join(SHARED, "data"),
  "--model_name",
  join(REPO, "configs/bloom-tiny.json"),
  "--output_dir",
  out,
  "--dtype",
  dtype,
  "--device",
  "cuda",
  "--gradient_accumulation_steps",
  "2",
  "--per_device_train_batch_size",
  "4",
  "--learning_rate",
  "2e-3",
  "--warmup_steps",
  "2",
  "--eval_steps",
  "1000",
  "--logging_steps",
  "1",
  "--max_length",
  "128",
  "--packing",
  ...extra,
];
const losses = (out: string) =>
  readFileSync(join(out, "log.jsonl"), "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { type: string; loss: number })
    .filter((r) => r.type === "train")
    .map((r) => r.loss);

for (const dtype of ["bf16", "fp16"]) {
  test(
    `train on CUDA in ${dtype} (fp16 with loss scaling); a checkpoint resumes with the uninterrupted losses`,
    { skip },
    async () => {
      const blocks = ["defaults", "shared-sample", "tiny-tokenizer"];
      const whole = tmp();
      await train(composeConfig(blocks, runArgs(whole, dtype, ["--max_steps", "6", "--save_steps", "3"])).config, {
        progress: false,
      });
      const full = losses(whole);
      assert.equal(full.length, 6);
      assert.ok(full.every(Number.isFinite), `losses ${full}`);
      const resumed = tmp();
      await train(composeConfig(blocks, runArgs(resumed, dtype, ["--max_steps", "3", "--save_steps", "3"])).config, {
        progress: false,
      });
      const args = runArgs(resumed, dtype, [
        "--max_steps",
        "6",
        "--save_steps",
        "3",
        "--resume_from_checkpoint",
        "latest",
      ]);
      await train(composeConfig(blocks, args).config, { progress: false });
      assert.deepEqual(losses(resumed), full);
    },
  );
}

test("a served chat completion on CUDA", { skip }, async () => {
  // A model folder whose embedding covers the tokenizer (init grows it), as the CPU server tests make.
  const { spawnSync } = await import("node:child_process");
  const dir = join(tmp(), "model");
  const tok = join(SHARED, "data/tokenizers/oasst-tiny-bpe");
  const init = spawnSync(
    process.execPath,
    [
      join(REPO, "bin/oasft.js"),
      "init",
      "--config",
      join(GOLDEN, GOLDEN_MODELS[1], "config.json"),
      "--tokenizer",
      tok,
      "--out",
      dir,
      "--device",
      "cpu",
    ],
    { encoding: "utf8" },
  );
  assert.equal(init.status, 0, init.stderr);
  const model = loadCausalLM(dir, { device: "cuda" });
  const tokenizer = ChatTokenizer.load(dir);
  const { app } = buildServer({ model, tokenizer, modelId: "gpu", maxBatch: 4, maxQueue: 8, maxTokens: 32 });
  const base = await app.listen({ host: "127.0.0.1", port: 0 });
  try {
    const res = await fetch(`${base}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: "Hello" }], max_tokens: 8 }),
    });
    assert.equal(res.status, 200);
    const body = (await res.json()) as {
      choices: Array<{ message: { content: string } }>;
      usage: { completion_tokens: number };
    };
    assert.ok(body.usage.completion_tokens >= 1);
  } finally {
    await app.close();
    model.dispose();
  }
});

test("ZeRO-3 over NCCL in a one-process world gives the losses of a plain CUDA run (1e-4)", { skip }, async () => {
  const { spawnSync } = await import("node:child_process");
  const run = (out: string, env: NodeJS.ProcessEnv, extra: string[] = []) => {
    const args = [
      join(REPO, "bin/oasft.js"),
      "train",
      "--configs",
      "defaults",
      "shared-sample",
      "tiny-tokenizer",
      "--cache_dir",
      join(SHARED, "data"),
      "--model_name",
      join(REPO, "configs/bloom-tiny.json"),
      "--output_dir",
      out,
      "--dtype",
      "fp32",
      "--device",
      "cuda",
      "--per_device_train_batch_size",
      "8",
      "--gradient_accumulation_steps",
      "2",
      "--max_length",
      "64",
      "--max_steps",
      "6",
      "--learning_rate",
      "2e-3",
      "--warmup_steps",
      "2",
      "--eval_steps",
      "1000",
      "--logging_steps",
      "1",
      "--save_strategy",
      "no",
      ...extra,
    ];
    const r = spawnSync(process.execPath, args, { env: { ...process.env, ...env }, encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    return readFileSync(join(out, "log.jsonl"), "utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l))
      .filter((x) => x.type === "train")
      .map((x) => x.loss as number);
  };
  const plain = run(tmp(), {});
  const env = {
    RANK: "0",
    WORLD_SIZE: "1",
    LOCAL_RANK: "0",
    LOCAL_WORLD_SIZE: "1",
    MASTER_ADDR: "127.0.0.1",
    MASTER_PORT: "29577",
  };
  const zero3 = run(tmp(), env, ["--zero_stage", "3", "--dist_backend", "nccl"]);
  assert.equal(zero3.length, plain.length);
  zero3.forEach((l, i) => assert.ok(Math.abs(l - plain[i]!) <= 1e-4, `step ${i + 1}: ${l} vs ${plain[i]}`));
});

test(
  "fp16 on CUDA for a family that overflows it: the trainer's note suggests bf16 and the summary counts skipped steps",
  { skip },
  async () => {
    const { spawnSync } = await import("node:child_process");
    const out = tmp();
    const r = spawnSync(
      process.execPath,
      [
        join(REPO, "bin/oasft.js"),
        "train",
        "--configs",
        "defaults",
        "shared-sample",
        "tiny-tokenizer",
        "--cache_dir",
        join(SHARED, "data"),
        "--model_name",
        join(REPO, "configs/qwen2-tiny.json"),
        "--output_dir",
        out,
        "--dtype",
        "fp16",
        "--device",
        "cuda",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--max_length",
        "64",
        "--eval_steps",
        "1000",
        "--save_strategy",
        "no",
      ],
      { encoding: "utf8" },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /note: fp16: Qwen models .*--dtype bf16/);
    const summary = JSON.parse(readFileSync(join(out, "summary.json"), "utf8")) as { fp16_skipped_steps?: number };
    assert.equal(typeof summary.fp16_skipped_steps, "number");
  },
);
