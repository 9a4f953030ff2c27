#!/usr/bin/env node
// Batch-1 greedy decoding on the CPU: oasft (libtorch, fp32 and bf16 weights) against llama.cpp
// (node-llama-cpp's prebuilt binaries) running oasft's own GGUF export of the same model, in f32 and q8_0.
//
//   node bench/gguf.mjs [--config ../shared/bench/configs/bloom-160m.json] [--repeats 3] [--prompt-len 32]
//                       [--new-tokens 64]
//
// The same work as `oasft bench generate`: a random-init model, a random prompt, greedy new tokens
// (EOS forbidden on the llama.cpp side so both make every token), timed end to end including the
// prompt. Both use every core this process may use; the runs alternate and medians are compared.
// Prints one JSON line per engine and a ratio line (oasft / llama.cpp; > 1 means oasft is faster).
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { getLlama, LlamaLogLevel, TokenBias } from "node-llama-cpp";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const { values } = parseArgs({
  options: {
    config: { type: "string", default: resolve(repo, "../shared/bench/configs/bloom-160m.json") },
    repeats: { type: "string", default: "3" },
    "prompt-len": { type: "string", default: "32" },
    "new-tokens": { type: "string", default: "64" },
  },
});
const repeats = Number(values.repeats);
const promptLen = Number(values["prompt-len"]);
const newTokens = Number(values["new-tokens"]);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const torch = await import(join(repo, "dist/src/torch/index.js"));
const { loadCausalLM } = await import(join(repo, "dist/src/models/index.js"));
const { generateGreedy } = await import(join(repo, "dist/src/generate/index.js"));
const threads = torch.getNumThreads();

const work = mkdtempSync(join(tmpdir(), "oasft-bench-gguf-"));
try {
  const cli = (...args) =>
    execFileSync(process.execPath, [join(repo, "bin/oasft.js"), ...args], { stdio: ["ignore", "ignore", "inherit"] });
  const dir = join(work, "model");
  cli(
    "init",
    "--config",
    values.config,
    "--tokenizer",
    resolve(repo, "../shared/data/tokenizers/oasst-tiny-bpe"),
    "--out",
    dir,
  );
  for (const type of ["f32", "q8_0"])
    cli("export", "gguf", "--model", dir, "--out", join(work, `${type}.gguf`), "--type", type);

  const model = loadCausalLM(dir).eval();
  const model16 = loadCausalLM(dir, { dtype: "bfloat16" }).eval();
  torch.manualSeed(0);
  const prompt = torch.randint(0, model.config.vocabSize, [1, promptLen]).keep();
  const promptIds = prompt.toNumbers();
  const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
  const engines = {};
  for (const type of ["f32", "q8_0"]) {
    const lm = await llama.loadModel({ modelPath: join(work, `${type}.gguf`) });
    const ctx = await lm.createContext({ contextSize: promptLen + newTokens + 8, threads });
    const bias = new TokenBias(lm.tokenizer);
    if (lm.tokens.eos !== null) bias.set(lm.tokens.eos, "never");
    engines[type] = { lm, ctx, bias };
  }

  const oasftRun = (m) => {
    const t0 = performance.now();
    generateGreedy(m, { inputIds: prompt, maxNewTokens: newTokens }).dispose();
    return (performance.now() - t0) / 1000;
  };
  const llamaRun = async ({ ctx, bias }) => {
    const seq = ctx.getSequence();
    const t0 = performance.now();
    let n = 0;
    for await (const _ of seq.evaluate(promptIds, { temperature: 0, tokenBias: bias })) if (++n >= newTokens) break;
    const s = (performance.now() - t0) / 1000;
    seq.dispose();
    if (n < newTokens) throw new Error(`llama.cpp stopped after ${n} tokens`);
    return s;
  };

  oasftRun(model);
  oasftRun(model16);
  for (const e of Object.values(engines)) await llamaRun(e); // warm-up
  const times = { oasft: [], oasft16: [], f32: [], q8_0: [] };
  for (let i = 0; i < repeats; i++) {
    times.oasft.push(oasftRun(model));
    times.oasft16.push(oasftRun(model16));
    times.f32.push(await llamaRun(engines.f32));
    times.q8_0.push(await llamaRun(engines.q8_0));
  }
  const rate = (xs) => newTokens / median(xs);
  const base = {
    task: "generate",
    batch_size: 1,
    prompt_len: promptLen,
    new_tokens: newTokens,
    threads,
    config: values.config,
  };
  console.log(JSON.stringify({ ...base, impl: "oasft", weights: "fp32", tokens_per_s: rate(times.oasft) }));
  console.log(JSON.stringify({ ...base, impl: "oasft", weights: "bf16", tokens_per_s: rate(times.oasft16) }));
  console.log(JSON.stringify({ ...base, impl: "llama.cpp", weights: "f32", tokens_per_s: rate(times.f32) }));
  console.log(JSON.stringify({ ...base, impl: "llama.cpp", weights: "q8_0", tokens_per_s: rate(times.q8_0) }));
  console.log(
    JSON.stringify({
      ratio_oasft_fp32_vs_llama_f32: rate(times.oasft) / rate(times.f32),
      ratio_oasft_fp32_vs_llama_q8_0: rate(times.oasft) / rate(times.q8_0),
      ratio_oasft_bf16_vs_llama_q8_0: rate(times.oasft16) / rate(times.q8_0),
    }),
  );
  for (const { ctx, lm } of Object.values(engines)) {
    await ctx.dispose();
    await lm.dispose();
  }
  await llama.dispose();
  model.dispose();
  model16.dispose();
  prompt.dispose();
} finally {
  rmSync(work, { recursive: true, force: true });
}
