#!/usr/bin/env node
// LoRA against a full fine-tune on the same model and batch (issue: LoRA step ≤ 0.7x a full step),
// with the optimizer state each holds. Runs alternate, medians of their timed steps are compared.
//
//   node bench/lora.mjs [--model-config ../shared/bench/configs/bloom-160m.json] [--repeats 3] [--steps 4]
import { execFileSync } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const { values } = parseArgs({
  options: {
    "model-config": { type: "string", default: resolve(repo, "../shared/bench/configs/bloom-160m.json") },
    repeats: { type: "string", default: "3" },
    steps: { type: "string", default: "4" },
    "seq-len": { type: "string", default: "256" },
  },
});
const run = (lora) =>
  JSON.parse(
    execFileSync(
      process.execPath,
      [
        join(repo, "bin/oasft.js"),
        "bench",
        "train",
        "--model-config",
        values["model-config"],
        "--seq-len",
        values["seq-len"],
        "--batch-size",
        "4",
        "--steps",
        values.steps,
        "--warmup",
        "1",
        ...(lora ? ["--lora"] : []),
      ],
      { encoding: "utf8" },
    ).trim(),
  );
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const full = [];
const lora = [];
for (let i = 0; i < Number(values.repeats); i++) {
  full.push(run(false));
  lora.push(run(true));
}
const f = median(full.map((r) => r.step_s));
const l = median(lora.map((r) => r.step_s));
console.log(
  `| ${values["model-config"].split("/").pop()} b4×${values["seq-len"]} | full fine-tune | LoRA r16 | ratio |`,
);
console.log("|---|---:|---:|---:|");
console.log(
  `| step time (s, median of ${values.repeats} runs) | ${f.toFixed(3)} | ${l.toFixed(3)} | ` +
    `**${(l / f).toFixed(2)}x** |`,
);
console.log(
  `| optimizer state (MB) | ${full[0].optimizer_state_mb.toFixed(1)} | ${lora[0].optimizer_state_mb.toFixed(1)} | ` +
    `${(lora[0].optimizer_state_mb / full[0].optimizer_state_mb).toFixed(3)}x |`,
);
console.log(
  `| peak RSS (MB) | ${median(full.map((r) => r.peak_rss_mb)).toFixed(0)} | ` +
    `${median(lora.map((r) => r.peak_rss_mb)).toFixed(0)} | |`,
);
