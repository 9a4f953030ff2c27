#!/usr/bin/env node
// A DPO step against an SFT step on the same rows (issue: preference learning): oasst's ranked pairs,
// encoded in OA's format, B pairs per micro-batch = 2B rows; the SFT step trains the same rows' reply
// tokens with the LM loss. Each mode runs in its own process (peak RSS is per process); tokens/s counts
// the rows' real tokens. Medians of the timed steps. Run after `npm run build`.
//
//   node bench/dpo.mjs [--model-config ../shared/bench/configs/bloom-23m.json] [--pairs 4] [--steps 6]
//                      [--max-length 256]
import { execFileSync } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { readFileSync } from "node:fs";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const { values } = parseArgs({
  options: {
    "model-config": { type: "string", default: resolve(repo, "../shared/bench/configs/bloom-23m.json") },
    pairs: { type: "string", default: "4" },
    steps: { type: "string", default: "6" },
    "max-length": { type: "string", default: "256" },
    mode: { type: "string" },
  },
});
const dist = (p) => import(join(repo, "dist/src", p));

async function measure(mode) {
  const torch = await dist("torch/index.js");
  const { createCausalLM } = await dist("models/index.js");
  const { composeConfig } = await dist("sft/config.js");
  const { loadConfigTokenizer } = await dist("sft/data.js");
  const { preparePrefData } = await dist("pref/data.js");
  const { dpoObjective, unitBatch } = await dist("pref/dpo.js");
  const { tensorsOf } = await dist("train/batches.js");
  const data = resolve(repo, "../shared/data");
  const cfg = composeConfig(
    ["defaults", "tiny-tokenizer"],
    [
      "--cache_dir",
      data,
      "--stage",
      "dpo",
      "--max_length",
      values["max-length"],
      "--datasets",
      "[{oasst_export: {input_file_path: oasst/en_100_tree.jsonl, val_split: 0}}]",
    ],
  ).config;
  const tokenizer = loadConfigTokenizer(cfg);
  const pref = await preparePrefData(cfg, tokenizer, "dpo");
  const json = JSON.parse(readFileSync(values["model-config"], "utf8"));
  const model = createCausalLM({ ...json, vocab_size: Math.ceil(tokenizer.vocabSize / 16) * 16 }).train();
  const units = pref.datasets[0].train;
  units.forEach((u) => (u.ref = [-100, -100]));
  const B = Number(values.pairs);
  const objective = dpoObjective(pref, cfg, B, "cpu");
  const times = [];
  let tokens = 0;
  for (let s = 0; s < Number(values.steps) + 1; s++) {
    const b = unitBatch(units.slice(s * B, (s + 1) * B), tokenizer.padId);
    const t0 = performance.now();
    if (mode === "dpo") objective.step(model, b, {});
    else torch.scope(() => model.trainStep(tensorsOf(b, "cpu"), {}));
    for (const p of model.parameters()) p.grad?.zero_();
    if (s > 0) {
      times.push((performance.now() - t0) / 1000);
      tokens += b.tokens;
    } // the first step warms up
  }
  const median = [...times].sort((a, b) => a - b)[Math.floor(times.length / 2)];
  const mean = times.reduce((a, b) => a + b, 0) / times.length;
  return {
    mode,
    step_s: median,
    tokens_per_s: tokens / times.length / mean,
    peak_rss_mb: process.resourceUsage().maxRSS / 1024,
  };
}

if (values.mode) {
  console.log(JSON.stringify(await measure(values.mode)));
} else {
  const run = (mode) =>
    JSON.parse(
      execFileSync(
        process.execPath,
        [
          fileURLToPath(import.meta.url),
          "--mode",
          mode,
          "--model-config",
          values["model-config"],
          "--pairs",
          values.pairs,
          "--steps",
          values.steps,
          "--max-length",
          values["max-length"],
        ],
        { encoding: "utf8" },
      )
        .trim()
        .split("\n")
        .at(-1),
    );
  const sft = run("sft");
  const dpo = run("dpo");
  console.log(
    `| ${values["model-config"].split("/").pop()}, ${values.pairs} oasst pairs (${2 * Number(values.pairs)} rows) ` +
      `≤ ${values["max-length"]} tokens | SFT step | DPO step | ratio |`,
  );
  console.log("|---|---:|---:|---:|");
  console.log(
    `| step time (s, median) | ${sft.step_s.toFixed(3)} | ${dpo.step_s.toFixed(3)} | ` +
      `${(dpo.step_s / sft.step_s).toFixed(2)}x |`,
  );
  console.log(
    `| tokens/s | ${sft.tokens_per_s.toFixed(0)} | ${dpo.tokens_per_s.toFixed(0)} | ` +
      `${(dpo.tokens_per_s / sft.tokens_per_s).toFixed(2)}x |`,
  );
  console.log(
    `| peak RSS (MB) | ${sft.peak_rss_mb.toFixed(0)} | ${dpo.peak_rss_mb.toFixed(0)} | ` +
      `${(dpo.peak_rss_mb / sft.peak_rss_mb).toFixed(2)}x |`,
  );
}
