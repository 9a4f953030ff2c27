// Evaluation memory stays flat: long few-shot prompts are prefilled in chunks through the cache (no
// [prompt × prompt] attention matrix), and the allocator's free pages go back to the system between
// subjects, so one long prompt's peak does not stay resident. A small model must evaluate in well
// under 1 GB, as lm-eval does, however many subjects it runs.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { CLI, REPO, SHARED } from "../helpers.js";

const work = mkdtempSync(join(tmpdir(), "oasft-evalmem-"));
const model = join(work, "model");
const init = spawnSync(
  process.execPath,
  [
    CLI,
    "init",
    "--config",
    join(REPO, "configs/bloom-tiny.json"),
    "--tokenizer",
    join(SHARED, "data/tokenizers/oasst-tiny-bpe"),
    "--tokenizer-family",
    "pythia",
    "--out",
    model,
  ],
  { encoding: "utf8" },
);
assert.equal(init.status, 0, init.stderr);

const SUBJECTS = [
  "abstract_algebra",
  "anatomy",
  "astronomy",
  "business_ethics",
  "college_computer_science",
  "college_biology",
  "high_school_european_history",
  "professional_law",
];

test("resident memory does not grow from subject to subject", () => {
  // A fresh process: its RSS after each subject is the evaluation's alone.
  const script = `
    import { loadCausalLM } from ${JSON.stringify(join(REPO, "dist/src/models/index.js"))};
    import { ChatTokenizer } from ${JSON.stringify(join(REPO, "dist/src/tokenizer/index.js"))};
    import { runEval } from ${JSON.stringify(join(REPO, "dist/src/eval/run.js"))};
    import { localSource } from ${JSON.stringify(join(REPO, "dist/src/eval/sources.js"))};
    const model = loadCausalLM(${JSON.stringify(model)});
    const tokenizer = ChatTokenizer.load(${JSON.stringify(model)});
    const rss = [];
    for (const subject of ${JSON.stringify(SUBJECTS)}) {
      await runEval(["mmlu"], { model, tokenizer, protocol: "lm-eval",
        source: localSource(${JSON.stringify(join(SHARED, "data"))}),
        out: ${JSON.stringify(join(work, "per-subject"))}, limit: 2, only: [subject], progress: false });
      rss.push(process.memoryUsage().rss);
    }
    console.log(JSON.stringify(rss));`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const rss = JSON.parse(r.stdout.trim().split("\n").at(-1)!) as number[];
  const mb = rss.map((b) => Math.round(b / 2 ** 20));
  // The last subjects (history and law) have the longest prompts: they may not leave more behind.
  assert.ok(mb.at(-1)! - mb[0]! < 64, `RSS after each subject (MB): ${mb.join(", ")}`);
});

test("oasft eval --tasks mmlu,bbh,humaneval peaks under 1 GB on a small model", () => {
  const script = `
    import { main } from ${JSON.stringify(join(REPO, "dist/src/cli/main.js"))};
    const code = await main(["eval", "--model", ${JSON.stringify(model)}, "--tasks", "mmlu,bbh,humaneval",
      "--limit", "1",
      "--out", ${JSON.stringify(join(work, "all"))}, "--device", "cpu"]);
    console.log(JSON.stringify({ code, peak: process.resourceUsage().maxRSS * 1024 }));`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const { code, peak } = JSON.parse(r.stdout.trim().split("\n").at(-1)!) as { code: number; peak: number };
  assert.equal(code, 0, r.stderr);
  assert.ok(peak < 2 ** 30, `peak RSS ${(peak / 2 ** 20).toFixed(0)} MB`);
});
