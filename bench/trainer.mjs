#!/usr/bin/env node
// `oasft train` on real formatted data, measured two ways (issue: trainer targets):
//   1. throughput: the trainer with packed max_length rows (≈ full rows of real data) against
//      `oasft bench train` (random tokens) on the same model and batch shape — target ≥ 0.9x;
//   2. packing: trained (assistant) tokens per second with packing against OA-style padded batches
//      on the oasst + dolly + ShareGPT samples — target ≥ 3x.
//
//   node bench/trainer.mjs [--steps 12] [--model-config ../shared/bench/configs/bloom-23m.json]
//
// Runs alternate and report medians of the logged windows after the first; run nothing else meanwhile.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const shared = resolve(repo, "../shared");
const cli = join(repo, "bin/oasft.js");
const { values } = parseArgs({
  options: {
    steps: { type: "string", default: "12" },
    "model-config": { type: "string", default: join(shared, "bench/configs/bloom-23m.json") },
    "pack-model-config": { type: "string", default: join(repo, "configs/bloom-tiny.json") },
    repeats: { type: "string", default: "2" },
  },
});
const steps = Number(values.steps);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const work = mkdtempSync(join(tmpdir(), "oasft-bench-trainer-"));
const DATA = [
  "--cache_dir",
  join(shared, "data"),
  "--tokenizer_name",
  "tokenizers/oasst-tiny-bpe",
  "--tokenizer_family",
  "pythia",
];
// The packing comparison uses GPT-2's real 50k BPE (OA's 783-token test BPE makes every sample ~4x longer).
const DATA_GPT2 = [
  "--cache_dir",
  join(shared, "data"),
  "--tokenizer_name",
  "tokenizers/gpt2-hf",
  "--tokenizer_family",
  "bloom",
];
const MIX =
  "[{oasst_export: {input_file_path: oasst/en_100_tree.jsonl, val_split: 0}}, {dolly15k: {input_file_path: " +
  "dolly/databricks-dolly-15k.jsonl, val_split: 0}}, {vicuna: {input_file_path: sharegpt/dummy_conversation.json, " +
  "val_split: 0}}]";

/**
 * One trainer run; returns tokens/s and trained tokens/s over the whole run after the first two steps
 * (totals over time, not medians of steps: padded batches vary in width from step to step).
 */
function trainRun(name, args, data = DATA) {
  const out = join(work, `${name}-${Math.random().toString(36).slice(2, 8)}`);
  execFileSync(
    process.execPath,
    [
      cli,
      "train",
      "--configs",
      "defaults",
      ...data,
      "--datasets",
      MIX,
      "--output_dir",
      out,
      "--dtype",
      "fp32",
      "--gradient_accumulation_steps",
      "1",
      "--max_steps",
      String(steps),
      "--logging_steps",
      "1",
      "--eval_steps",
      "100000",
      "--save_strategy",
      "no",
      "--warmup_steps",
      "2",
      "--learning_rate",
      "1e-3",
      ...args,
    ],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  const recs = readFileSync(join(out, "log.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l))
    .filter((r) => r.type === "train");
  const first = recs[1];
  const last = recs.at(-1);
  const dt = last.elapsed_s - first.elapsed_s;
  // tokens_per_s is per logged step (logging_steps 1): weight each by its duration to get a total.
  let tokens = 0;
  for (let i = 2; i < recs.length; i++) tokens += recs[i].tokens_per_s * (recs[i].elapsed_s - recs[i - 1].elapsed_s);
  return { tokensPerS: tokens / dt, trainedPerS: (last.trained_tokens - first.trained_tokens) / dt };
}

function benchTrain(modelConfig, seqLen, batch) {
  const out = execFileSync(
    process.execPath,
    [
      cli,
      "bench",
      "train",
      "--model-config",
      modelConfig,
      "--seq-len",
      String(seqLen),
      "--batch-size",
      String(batch),
      "--steps",
      String(Math.max(3, steps - 2)),
      "--warmup",
      "2",
    ],
    { encoding: "utf8" },
  );
  return JSON.parse(out.trim().split("\n").pop());
}

// The model's vocabulary must cover the tokenizer (the trainer grows it otherwise): the peer's config as is.
const rows = [];
const repeats = Number(values.repeats);
{
  const a = [],
    b = [];
  for (let i = 0; i < repeats; i++) {
    a.push(
      trainRun("packed-256", [
        "--model_name",
        values["model-config"],
        "--packing",
        "--max_length",
        "256",
        "--per_device_train_batch_size",
        "4",
      ]).tokensPerS,
    );
    b.push(benchTrain(values["model-config"], 256, 4).tokens_per_s);
  }
  rows.push(
    `| trainer, real data packed in b4×256 rows vs bench train b4×256 ` +
      `(${values["model-config"].split("/").pop()}) | ${median(a).toFixed(0)} tok/s | ${median(b).toFixed(0)} ` +
      `tok/s | ` +
      `**${(median(a) / median(b)).toFixed(2)}x** |`,
  );
}
for (const batch of [8, 16]) {
  const p = [],
    q = [];
  for (let i = 0; i < repeats; i++) {
    p.push(
      trainRun(
        `pack-b${batch}`,
        [
          "--model_name",
          values["pack-model-config"],
          "--packing",
          "--max_length",
          "1024",
          "--per_device_train_batch_size",
          String(batch),
        ],
        DATA_GPT2,
      ).trainedPerS,
    );
    q.push(
      trainRun(
        `pad-b${batch}`,
        [
          "--model_name",
          values["pack-model-config"],
          "--max_length",
          "1024",
          "--per_device_train_batch_size",
          String(batch),
        ],
        DATA_GPT2,
      ).trainedPerS,
    );
  }
  rows.push(
    `| trained tokens/s, packing vs OA padding, b${batch}, max_length 1024, GPT-2 BPE ` +
      `(${values["pack-model-config"].split("/").pop()}) | ${median(p).toFixed(0)} | ${median(q).toFixed(0)} | ` +
      `**${(median(p) / median(q)).toFixed(2)}x** |`,
  );
}
console.log("| comparison | ours | baseline | ratio |\n|---|---:|---:|---:|\n" + rows.join("\n"));
