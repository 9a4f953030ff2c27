#!/usr/bin/env node
// Batch-1 greedy decoding against the PyTorch eager peer (../shared/bench/peer_torch_bloom.py), quiet and
// with one busy-looping process beside it: oasft's captured steps (the default), its eager steps
// (OASFT_CAPTURE=0), and under load its adaptive decode threads against a fixed count
// (OASFT_ADAPTIVE_THREADS=0). Runs alternate, so drift hits every column alike; each figure is a median.
// Needs Debian's python3-torch for the peer. Targets (issue 28): captured ≥ 1.3x the peer; under load,
// ≥ 40% of the quiet speed.
//
//   node bench/decode.mjs [--repeats 3] [--config bloom-23m] [--new-tokens 64] [--out FILE.md]
import { execFileSync, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const shared = resolve(repo, "../shared");
const { values } = parseArgs({
  options: {
    repeats: { type: "string", default: "3" },
    config: { type: "string", default: "bloom-23m" },
    "new-tokens": { type: "string", default: "64" },
    python: { type: "string", default: "/usr/bin/python3" },
    out: { type: "string" },
  },
});
const config = join(shared, "bench/configs", `${values.config}.json`);
const shape = ["--batch-size", "1", "--prompt-len", "32", "--new-tokens", values["new-tokens"]];

/** tokens/s of one run: the last stdout line is the bench's JSON. */
function tokensPerSecond(cmd, args, env = {}) {
  const out = execFileSync(cmd, args, { encoding: "utf8", env: { ...process.env, ...env } });
  return JSON.parse(out.trim().split("\n").at(-1)).tokens_per_s;
}

const oasft = (env) => () =>
  tokensPerSecond(
    process.execPath,
    [join(repo, "bin/oasft.js"), "bench", "generate", "--model-config", config, ...shape],
    env,
  );
const peer = () =>
  tokensPerSecond(values.python, [join(shared, "bench/peer_torch_bloom.py"), "generate", "--config", config, ...shape]);

const cells = {
  peer,
  captured: oasft({}),
  eager: oasft({ OASFT_CAPTURE: "0" }),
  "fixed threads": oasft({ OASFT_ADAPTIVE_THREADS: "0" }),
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function measure(names) {
  const runs = Object.fromEntries(names.map((n) => [n, []]));
  for (let r = 0; r < Number(values.repeats); r++) for (const n of names) runs[n].push(cells[n]());
  return Object.fromEntries(names.map((n) => [n, median(runs[n])]));
}

const quiet = measure(["peer", "captured", "eager", "fixed threads"]);
const busy = spawn(process.execPath, ["-e", "for (;;) {}"], { stdio: "ignore" });
let loaded;
try {
  loaded = measure(["peer", "captured", "fixed threads"]);
} finally {
  busy.kill();
}

const f = (x) => x.toFixed(0);
const share = (cell) => (loaded[cell] / quiet[cell]).toFixed(2);
const lines = [
  `Batch-1 greedy decoding, ${values.config}, prompt 32, ${values["new-tokens"]} new tokens, ` +
    `${cpus()[0]?.model ?? "?"} (${cpus().length} CPUs), medians of ${values.repeats} alternating runs ` +
    `(${new Date().toISOString().slice(0, 10)}).`,
  "",
  "| | PyTorch eager peer | oasft captured | oasft eager steps | oasft, fixed threads | captured / peer |",
  "|---|---:|---:|---:|---:|---:|",
  `| quiet, tok/s | ${f(quiet.peer)} | ${f(quiet.captured)} | ${f(quiet.eager)} | ${f(quiet["fixed threads"])} | ` +
    `**${(quiet.captured / quiet.peer).toFixed(2)}x** |`,
  `| one busy process beside it, tok/s | ${f(loaded.peer)} | ${f(loaded.captured)} | | ` +
    `${f(loaded["fixed threads"])} | **${(loaded.captured / loaded.peer).toFixed(2)}x** |`,
  `| loaded / quiet | ${share("peer")} | **${share("captured")}** | | ${share("fixed threads")} | |`,
];
console.log(lines.join("\n"));
console.log(JSON.stringify({ quiet, loaded }));
if (values.out) writeFileSync(values.out, lines.join("\n") + "\n");
