// The oasft command as a user runs it: a separate process, real files, exit codes and messages.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { CLI, GOLDEN, GOLDEN_MODELS, SHARED, loadGolden, maxAbsDiff } from "../helpers.js";

const work = mkdtempSync(join(tmpdir(), "oasft-cli-"));
function oasft(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test("oasft info reports libtorch, an optimised BLAS, threads and a GEMM rate", () => {
  const r = oasft("info", "--json");
  assert.equal(r.code, 0, r.err);
  const info = JSON.parse(r.out);
  assert.match(info.libtorch, /^\d+\.\d+/);
  assert.notEqual(info.blas, "reference");
  assert.equal(info.threads, info.cpu_cores);
  assert.ok(info.gemm_fp32_gflops > 20, `fp32 GEMM ${info.gemm_fp32_gflops} GFLOP/s`);
  assert.equal(info.malloc, "glibc, mmap/trim threshold 1 GiB");
  const optedOut = spawnSync(process.execPath, [CLI, "info", "--json"], { encoding: "utf8", env: { ...process.env, OASFT_MALLOC_TUNING: "0" } });
  assert.match(JSON.parse(optedOut.stdout).malloc, /OASFT_MALLOC_TUNING=0/);
});

test("oasft init makes a model folder from any config; oasft parity matches HF on the golden model", () => {
  const tokenizer = join(SHARED, "data/tokenizers");
  const out = join(work, "model");
  const r = oasft("init", "--config", join(GOLDEN, GOLDEN_MODELS[1], "config.json"), "--out", out, "--seed", "5");
  assert.equal(r.code, 0, r.err);
  for (const f of ["config.json", "generation_config.json", "model.safetensors"]) assert.ok(existsSync(join(out, f)), f);
  assert.equal(oasft("init", "--config", join(GOLDEN, GOLDEN_MODELS[1], "config.json"), "--out", out).code, 2, "refuses to overwrite");
  assert.ok(existsSync(tokenizer));

  const golden = join(GOLDEN, GOLDEN_MODELS[1]);
  const file = join(work, "parity.safetensors");
  const p = oasft("parity", "--model", golden, "--inputs", join(golden, "tensors.safetensors"), "--out", file);
  assert.equal(p.code, 0, p.err);
  const { tensors } = torch.loadSafetensors(file);
  const g = loadGolden(GOLDEN_MODELS[1], "tensors.safetensors");
  assert.ok(maxAbsDiff(tensors.get("logits.left")!, g.get("logits.left")!) < 1e-5);
  assert.deepEqual(tensors.get("gen.batch_left_padded.tokens")!.toNumbers(), g.get("gen.batch_left_padded.tokens")!.toNumbers());
  assert.ok(tensors.has("grad.lm_head.weight") && tensors.has("adamw.transformer.ln_f.bias"));

  // The same command runs on the fresh random model made by init (any BLOOM config works).
  const q = oasft("parity", "--model", out, "--inputs", join(golden, "tensors.safetensors"), "--out", join(work, "p2.safetensors"));
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
  const badModel = oasft("parity", "--model", join(work, "missing"), "--inputs", join(GOLDEN, GOLDEN_MODELS[0], "tensors.safetensors"), "--out", join(work, "x.safetensors"));
  assert.equal(badModel.code, 1);
  assert.match(badModel.err, /missing: not a folder/);
  const badBench = oasft("bench", "train", "--model-config", join(work, "none.json"));
  assert.equal(badBench.code, 1);
  assert.match(badBench.err, /none\.json: missing/);
});

test("oasft bench prints one JSON line with throughput and memory", () => {
  const r = oasft("bench", "train", "--model-config", join(GOLDEN, GOLDEN_MODELS[0], "config.json"), "--seq-len", "16", "--batch-size", "2", "--steps", "2", "--warmup", "1");
  assert.equal(r.code, 0, r.err);
  const line = JSON.parse(r.out.trim());
  assert.ok(line.tokens_per_s > 0 && line.step_s > 0 && line.peak_rss_mb > 0);
  assert.ok(line.loss_last < line.loss_first + 1e-3);
  const gen = JSON.parse(oasft("bench", "generate", "--model-config", join(GOLDEN, GOLDEN_MODELS[0], "config.json"), "--new-tokens", "8", "--steps", "1", "--warmup", "0").out.trim());
  assert.ok(gen.tokens_per_s > 0);
});
