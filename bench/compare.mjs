#!/usr/bin/env node
// Side-by-side throughput: `oasft bench` against the PyTorch eager peer (../shared/bench/peer_torch_bloom.py)
// on the 23M and 160M BLOOM configs, training in fp32 and bf16 autocast, and batch-1 greedy decoding.
//
//   node bench/compare.mjs [--repeats 3] [--configs bloom-23m,bloom-160m] [--python /usr/bin/python3]
//
// Both run on this machine with the same threads (all cores) and the same libtorch/BLAS; each cell
// runs the two alternately `repeats` times and compares medians, because these shared machines
// drift by ±10% between runs. Needs Debian's python3-torch for the peer (apt-get install -y python3-torch).
// Prints a markdown table of ratios (ours / peer; > 1 is better for tokens/s, < 1 for memory).
import { execFileSync } from "node:child_process";
import { cpus } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const shared = resolve(repo, "../shared/bench");
const { values } = parseArgs({
  options: {
    repeats: { type: "string", default: "3" },
    configs: { type: "string", default: "bloom-23m,bloom-160m" },
    python: { type: "string", default: "/usr/bin/python3" },
    "seq-len": { type: "string", default: "256" },
    "batch-size": { type: "string", default: "4" },
  },
});
const repeats = Number(values.repeats);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function run(cmd, args) {
  const out = execFileSync(cmd, args, { encoding: "utf8", maxBuffer: 1 << 20, stdio: ["ignore", "pipe", "inherit"] });
  return JSON.parse(out.trim().split("\n").pop());
}

function cell(task, config, extra) {
  const cfg = join(shared, "configs", `${config}.json`);
  const ours = [],
    peer = [];
  for (let i = 0; i < repeats; i++) {
    ours.push(run(process.execPath, [join(repo, "bin/oasft.js"), "bench", task, "--model-config", cfg, ...extra]));
    peer.push(run(values.python, [join(shared, "peer_torch_bloom.py"), task, "--config", cfg, ...extra]));
  }
  const tps = (rs) => median(rs.map((r) => r.tokens_per_s));
  const rss = (rs) => median(rs.map((r) => r.peak_rss_mb));
  return { ours: tps(ours), peer: tps(peer), oursRss: rss(ours), peerRss: rss(peer) };
}

const rows = [];
for (const config of values.configs.split(",")) {
  const shape = ["--seq-len", values["seq-len"], "--batch-size", values["batch-size"]];
  for (const bf16 of [false, true]) {
    const r = cell("train", config, bf16 ? [...shape, "--bf16"] : shape);
    rows.push({
      what: `train ${bf16 ? "bf16" : "fp32"} (b${values["batch-size"]}×${values["seq-len"]})`,
      config,
      ...r,
    });
    console.error(JSON.stringify(rows.at(-1)));
  }
  const g = cell("generate", config, ["--batch-size", "1", "--prompt-len", "32", "--new-tokens", "64"]);
  rows.push({ what: "generate b1 (32+64)", config, ...g });
  console.error(JSON.stringify(rows.at(-1)));
}

const f = (x, d = 0) => x.toFixed(d);
console.log(`machine: ${cpus().length}× ${cpus()[0]?.model ?? "cpu"}, medians of ${repeats} alternating runs\n`);
console.log("| config | work | oasft tok/s | peer tok/s | speed ratio | oasft peak MB | peer peak MB | memory ratio |");
console.log("|---|---|---:|---:|---:|---:|---:|---:|");
for (const r of rows) {
  console.log(
    `| ${r.config} | ${r.what} | ${f(r.ours)} | ${f(r.peer)} | **${f(r.ours / r.peer, 2)}x** | ${f(r.oursRss)} | ` +
      `${f(r.peerRss)} | ${f(r.oursRss / r.peerRss, 2)}x |`,
  );
}
