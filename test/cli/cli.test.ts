// The oasft command as a user runs it: a separate process, real files, exit codes and messages.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { CLI, GOLDEN, GOLDEN_MODELS, REPO, SHARED, loadGolden, maxAbsDiff } from "../helpers.js";

const work = mkdtempSync(join(tmpdir(), "oasft-cli-"));
function oasft(...args: string[]) {
  // The timeout only stops a hang: nothing here is a speed test.
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 900_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test("oasft info reports libtorch, an optimised BLAS, threads and a GEMM rate", () => {
  const r = oasft("info", "--json");
  assert.equal(r.code, 0, r.err);
  const info = JSON.parse(r.out);
  assert.match(info.libtorch, /^\d+\.\d+/);
  assert.notEqual(info.blas, "reference");
  assert.ok(info.threads >= 1 && info.threads <= availableParallelism(), `threads ${info.threads}`);
  assert.ok(info.gemm_fp32_gflops > 0, "a GEMM rate is measured (its speed is bench/'s business)");
  assert.equal(info.malloc, "glibc, mmap/trim threshold 1 GiB");
  const optedOut = spawnSync(process.execPath, [CLI, "info", "--json"], {
    encoding: "utf8",
    env: { ...process.env, OASFT_MALLOC_TUNING: "0" },
  });
  assert.match(JSON.parse(optedOut.stdout).malloc, /OASFT_MALLOC_TUNING=0/);
  // OMP_NUM_THREADS decides the thread count, as for PyTorch; --threads overrides it.
  for (const n of ["1", "2"]) {
    const r = spawnSync(process.execPath, [CLI, "info", "--json"], {
      encoding: "utf8",
      env: { ...process.env, OMP_NUM_THREADS: n },
    });
    assert.equal(JSON.parse(r.stdout).threads, Number(n));
  }
  const flag = spawnSync(process.execPath, [CLI, "info", "--json", "--threads", "1"], {
    encoding: "utf8",
    env: { ...process.env, OMP_NUM_THREADS: "2" },
  });
  assert.equal(JSON.parse(flag.stdout).threads, 1);
});

test("oasft init makes a model folder from any config; oasft parity matches HF on the golden model", () => {
  const tokenizer = join(SHARED, "data/tokenizers");
  const out = join(work, "model");
  const r = oasft("init", "--config", join(GOLDEN, GOLDEN_MODELS[1], "config.json"), "--out", out, "--seed", "5");
  assert.equal(r.code, 0, r.err);
  for (const f of ["config.json", "generation_config.json", "model.safetensors"])
    assert.ok(existsSync(join(out, f)), f);
  assert.equal(
    oasft("init", "--config", join(GOLDEN, GOLDEN_MODELS[1], "config.json"), "--out", out).code,
    2,
    "refuses to overwrite",
  );
  assert.ok(existsSync(tokenizer));

  const golden = join(GOLDEN, GOLDEN_MODELS[1]);
  const file = join(work, "parity.safetensors");
  const p = oasft("parity", "--model", golden, "--inputs", join(golden, "tensors.safetensors"), "--out", file);
  assert.equal(p.code, 0, p.err);
  const { tensors } = torch.loadSafetensors(file);
  const g = loadGolden(GOLDEN_MODELS[1], "tensors.safetensors");
  assert.ok(maxAbsDiff(tensors.get("logits.left")!, g.get("logits.left")!) < 1e-5);
  assert.deepEqual(
    tensors.get("gen.batch_left_padded.tokens")!.toNumbers(),
    g.get("gen.batch_left_padded.tokens")!.toNumbers(),
  );
  assert.ok(tensors.has("grad.lm_head.weight") && tensors.has("adamw.transformer.ln_f.bias"));

  // The same command runs on the fresh random model made by init (any BLOOM config works).
  const q = oasft(
    "parity",
    "--model",
    out,
    "--inputs",
    join(golden, "tensors.safetensors"),
    "--out",
    join(work, "p2.safetensors"),
  );
  assert.equal(q.code, 0, q.err);
});

test("bad command lines fail with exit 2 and name the flag or the command", () => {
  const unknownFlag = oasft("init", "--confg", "x.json");
  assert.equal(unknownFlag.code, 2);
  assert.match(unknownFlag.err, /--confg/);
  const missing = oasft("parity", "--model", "x");
  assert.equal(missing.code, 2);
  assert.match(missing.err, /--inputs is required/);
  const typo = oasft("inot");
  assert.equal(typo.code, 2);
  assert.match(typo.err, /unknown command 'inot'. Did you mean: info, init\?/);
  const badModel = oasft(
    "parity",
    "--model",
    join(work, "missing"),
    "--inputs",
    join(GOLDEN, GOLDEN_MODELS[0], "tensors.safetensors"),
    "--out",
    join(work, "x.safetensors"),
  );
  assert.equal(badModel.code, 3);
  assert.match(badModel.err, /missing: not a folder/);
  const badBench = oasft("bench", "train", "--model-config", join(work, "none.json"));
  assert.equal(badBench.code, 3);
  assert.match(badBench.err, /none\.json: missing/);
});

test("oasft bench prints one JSON line with throughput and memory", () => {
  const r = oasft(
    "bench",
    "train",
    "--model-config",
    join(GOLDEN, GOLDEN_MODELS[0], "config.json"),
    "--seq-len",
    "16",
    "--batch-size",
    "2",
    "--steps",
    "2",
    "--warmup",
    "1",
  );
  assert.equal(r.code, 0, r.err);
  const line = JSON.parse(r.out.trim());
  assert.ok(line.tokens_per_s > 0 && line.step_s > 0 && line.peak_rss_mb > 0);
  assert.ok(line.loss_last < line.loss_first + 1e-3);
  const gen = JSON.parse(
    oasft(
      "bench",
      "generate",
      "--model-config",
      join(GOLDEN, GOLDEN_MODELS[0], "config.json"),
      "--new-tokens",
      "8",
      "--steps",
      "1",
      "--warmup",
      "0",
    ).out.trim(),
  );
  assert.ok(gen.tokens_per_s > 0);
});

const DATA_ARGS = ["--configs", "defaults", "shared-sample", "tiny-tokenizer", "--cache_dir", join(SHARED, "data")];

test("oasft data stats: per-dataset counts, drops, trained fraction and packing gain on the shared samples", () => {
  const r = oasft("data", "stats", ...DATA_ARGS, "--json");
  assert.equal(r.code, 0, r.err);
  const s = JSON.parse(r.out);
  assert.deepEqual(
    s.datasets.map((d: { dataset: string }) => d.dataset),
    ["oasst_export", "dolly15k", "vicuna", "gsm8k"],
  );
  const oasst = s.datasets[0];
  assert.equal(oasst.train_samples + oasst.val_samples, 538);
  assert.deepEqual(oasst.dropped, { thread_deleted_or_synthetic: 17 });
  assert.deepEqual(s.datasets[3].dropped, { max_val_set: 150 });
  for (const d of s.datasets)
    assert.ok(
      d.trained_token_fraction > 0.3 && d.trained_token_fraction < 0.95,
      `${d.dataset}: ${d.trained_token_fraction}`,
    );
  assert.ok(s.useful_token_fraction.packed > s.useful_token_fraction.padded);
  assert.equal(s.lint_problems, 0);
});

test("oasst data export writes one sample per line; preview marks the trained text", () => {
  const out = join(work, "train.jsonl");
  const r = oasft("data", "export", ...DATA_ARGS, "--split", "val", "--out", out, "--max_length", "128");
  assert.equal(r.code, 0, r.err);
  const lines = readFileSync(out, "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  assert.equal(lines.length, 28 + 1 + 25 + 50);
  for (const l of lines) {
    assert.equal(l.input_ids.length, l.label_mask.length);
    assert.ok(l.input_ids.length <= 128);
    assert.equal(l.label_mask.at(-1), 0);
  }
  const p = oasft("data", "preview", ...DATA_ARGS, "--n", "1");
  assert.equal(p.code, 0, p.err);
  // <|assistant|> itself is not a target (it follows the prompt's eos); the reply and its eos are.
  assert.match(p.out, /<\|prompter\|>[^⟦]*<\|endoftext\|><\|assistant\|>⟦[^⟧]+<\|endoftext\|>⟧/);
});

test("oasft data: a typo in a dataset name or config key is a clear error and exit 3 (bad config)", () => {
  const dir = mkdtempSync(join(tmpdir(), "oasft-cfgdir-"));
  mkdirSync(join(dir, "configs"));
  writeFileSync(
    join(dir, "configs/x.yaml"),
    "mine:\n  datasets:\n    - dolly15:\n        input_file_path: dolly/databricks-dolly-15k.jsonl\n",
  );
  const r = spawnSync(
    process.execPath,
    [CLI, "data", "stats", "--configs", "tiny-tokenizer", "mine", "--cache_dir", join(SHARED, "data")],
    { encoding: "utf8", cwd: dir },
  );
  assert.equal(r.status, 3);
  assert.match(r.stderr, /unknown dataset 'dolly15'\. Did you mean: dolly15k\?/);
  const k = oasft("data", "stats", ...DATA_ARGS, "--max_lenght", "5");
  assert.equal(k.code, 3);
  assert.match(k.err, /--max_lenght: unknown key 'max_lenght'\. Did you mean: max_length/);
  // Nested keys are checked with the top level: every unknown one, in one run.
  writeFileSync(
    join(dir, "configs/y.yaml"),
    "nested:\n  peft_config:\n    r: 8\n    bogus_a: 1\n    bogus_b: 2\n" +
      "  datasets:\n    - dolly15k:\n        wrongopt: 3\n        other_wrong: 4\n",
  );
  const n = spawnSync(
    process.execPath,
    [CLI, "data", "stats", "--configs", "tiny-tokenizer", "nested", "--learning_rat", "1"],
    { encoding: "utf8", cwd: dir },
  );
  assert.equal(n.status, 3);
  assert.match(n.stderr, /3 problems in the config/);
  assert.match(n.stderr, /peft_config \(block nested .*\): unknown key\(s\) bogus_a, bogus_b/);
  assert.match(n.stderr, /dataset dolly15k \(block nested .*\): unknown option\(s\) wrongopt, other_wrong/);
  // A cache_dir that does not exist is named, with the paths looked at.
  const c = spawnSync(
    process.execPath,
    [
      CLI,
      "data",
      "stats",
      "--configs",
      "defaults",
      "shared-sample",
      "tiny-tokenizer",
      "--cache_dir",
      join(dir, "nope"),
    ],
    { encoding: "utf8", cwd: dir },
  );
  assert.equal(c.status, 3);
  assert.match(
    c.stderr,
    /tokenizer_name tokenizers\/oasst-tiny-bpe: not found \(looked at .* and .*nope\/tokenizers\/oasst-tiny-bpe; cache/,
  );
});

test("oasft tokenizer train writes a tokenizer the data commands load", () => {
  const out = join(work, "bpe");
  const r = oasft(
    "tokenizer",
    "train",
    "--vocab-size",
    "800",
    "--out",
    out,
    join(SHARED, "data/oasst/en_100_tree.jsonl"),
  );
  assert.equal(r.code, 0, r.err);
  const s = oasft("data", "stats", ...DATA_ARGS, "--tokenizer_name", out, "--tokenizer_family", "bloom", "--json");
  assert.equal(s.code, 0, s.err);
  assert.equal(JSON.parse(s.out).lint_problems, 0);
});

test("oasft demo (the README's main job) runs end to end on the oasst sample: trains, saves, reloads, replies", () => {
  const out = join(work, "demo");
  const r = oasft("demo", "--steps", "20", "--out", out);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /tokenizer: byte-level BPE, 2048 tokens/);
  const m = /validation loss (\d+\.\d+) vs unigram baseline (\d+\.\d+)/.exec(r.out);
  assert.ok(m, r.out);
  assert.ok(Number(m![1]) < Number(m![2]), "20 steps already beat the unigram baseline");
  assert.equal((r.out.match(/<\|assistant\|> /g) ?? []).length, 4);
  for (const f of ["config.json", "model.safetensors", "tokenizer.json", "log.jsonl", "training.svg", "summary.json"])
    assert.ok(existsSync(join(out, f)), f);
});

test(
  "a hub name resolves from the Hugging Face cache layout (no network); one that is not there names " + "the model",
  () => {
    const cache = mkdtempSync(join(tmpdir(), "oasft-hub-"));
    const commit = "0123456789abcdef0123456789abcdef01234567";
    const snapshot = join(cache, "models--my-org--tiny-chat", "snapshots", commit);
    mkdirSync(join(cache, "models--my-org--tiny-chat", "refs"), { recursive: true });
    writeFileSync(join(cache, "models--my-org--tiny-chat", "refs", "main"), commit);
    const made = oasft(
      "init",
      "--config",
      join(GOLDEN, GOLDEN_MODELS[1], "config.json"),
      "--tokenizer",
      join(SHARED, "data/tokenizers/oasst-tiny-bpe"),
      "--tokenizer-family",
      "pythia",
      "--out",
      snapshot,
    );
    assert.equal(made.code, 0, made.err);
    const env = { ...process.env, HF_HUB_CACHE: cache, HF_HUB_OFFLINE: "1" };
    const saved = join(cache, "conversation.json");
    const input = `/help\n/frobnicate now\nHi\n//slash\n/save ${saved}\n/exit\n`;
    const chat = spawnSync(process.execPath, [CLI, "chat", "--model", "my-org/tiny-chat", "--max-new-tokens", "2"], {
      encoding: "utf8",
      env,
      input,
    });
    assert.equal(chat.status, 0, chat.stderr);
    assert.match(chat.stdout, /\/save FILE +write the conversation/, "/help lists the commands");
    assert.match(chat.stdout, /unknown command \/frobnicate; \/help lists them/);
    // The unknown command was not sent: the conversation holds the two real messages only.
    const { messages } = JSON.parse(readFileSync(saved, "utf8")) as {
      messages: Array<{ role: string; content: string }>;
    };
    assert.deepEqual(
      messages.filter((m) => m.role === "user").map((m) => m.content),
      ["Hi", "/slash"],
    );
    const card = spawnSync(
      process.execPath,
      [CLI, "train", "--configs", "defaults", "bloom-zh-3b", "datasets", "--num_train_epochs", "2"],
      { encoding: "utf8", env },
    );
    assert.equal(card.status, 3);
    assert.match(
      card.stderr,
      /model_name ckip-joint\/bloom-3b-zh: not found \(looked at .*; nor a hub name ORG\/NAME in the Hugging Face /,
    );
  },
);

test("oasft --version, and npx oasft inside the repository, rebuilding nothing", () => {
  const v = oasft("--version");
  assert.equal(v.code, 0);
  assert.match(v.out, /^oasft \d+\.\d+\.\d+ \(node \d+\.\d+\.\d+, libtorch \d+\.\d+/);
  // A fresh npm cache: npx then links the repository into it, as on a user's first `npx oasft`, which
  // runs the install and prepare steps again (a node-gyp rebuild and tsc before this guard).
  const built = ["build/Release/oasft_torch.node", "dist/src/cli/main.js"].map((f) => join(REPO, f));
  const before = built.map((f) => statSync(f).mtimeMs);
  const env = { ...process.env, npm_config_cache: mkdtempSync(join(tmpdir(), "oasft-npm-cache-")) };
  const npx = spawnSync("npx", ["--no-install", "oasft", "--version"], { encoding: "utf8", cwd: REPO, env });
  assert.equal(npx.status, 0, npx.stderr);
  assert.equal(npx.stdout, v.out);
  assert.deepEqual(
    built.map((f) => statSync(f).mtimeMs),
    before,
    "the addon and dist/ are as npm install built them",
  );
});

test(
  "--model on a missing or non-model folder names --model (serve, chat, eval, export); --port out of range is " +
    "a usage error",
  () => {
    const empty = mkdtempSync(join(tmpdir(), "oasft-nomodel-"));
    for (const [dir, why] of [
      [join(empty, "nowhere"), "no such folder"],
      [empty, "not a model folder \\(no config\\.json\\)"],
    ] as const) {
      for (const args of [
        ["serve"],
        ["chat"],
        ["eval", "--tasks", "mmlu", "--out", join(empty, "e")],
        ["export", "gguf", "--out", join(empty, "m.gguf")],
      ]) {
        const r = oasft(...args, "--model", dir);
        assert.equal(r.code, 2, `${args[0]}: ${r.err}`);
        assert.match(r.err, new RegExp(`--model ${dir.replace(/[/.]/g, "\\$&")}: ${why}`), args[0]);
      }
    }
    const port = oasft("serve", "--model", join(GOLDEN, GOLDEN_MODELS[0]), "--port", "99999");
    assert.equal(port.code, 2);
    assert.match(port.err, /--port: expected an integer from 0 to 65535, got '99999'/);
  },
);

test("eval's help says --limit counts per MMLU subject and BBH task", () => {
  const r = oasft("eval", "--help");
  assert.equal(r.code, 0);
  assert.match(
    r.out,
    /--limit N takes the first N items of each subset, as lm-eval's --limit does: of each MMLU subject/,
  );
  assert.match(r.out, /\(57 of them: --limit 5 is 285 questions\)/);
});
