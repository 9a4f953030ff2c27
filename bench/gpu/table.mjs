#!/usr/bin/env node
// The ratio table of a GPU run: bench/gpu/run.sh's bench.jsonl (oasft bench lines and the HF peer's,
// ../shared/gpu/peer_hf_cuda.py) → one markdown row per shape, ours against the peer from the same run.
//   node bench/gpu/table.mjs bench/results/<run>/bench.jsonl
import { readFileSync } from "node:fs";

const parse = (line) => {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
};
const rows = readFileSync(process.argv[2], "utf8")
  .split("\n")
  .filter((l) => l.startsWith("{"))
  .map(parse)
  .filter(Boolean);
const f = (x, d = 0) => (x === undefined ? "–" : x.toFixed(d));
const ours = rows.filter((r) => r.impl === "oasft");
const peers = rows.filter((r) => r.impl === "hf-transformers");
console.log("| work | oasft tok/s | peer tok/s | speed | oasft MFU | oasft peak GB | peer peak GB | memory |");
console.log("|---|---:|---:|---:|---:|---:|---:|---:|");
for (const o of ours.filter((r) => r.task === "train")) {
  const p = peers.find((r) => r.task === "train" && r.seq === o.seq_len && r.batch === o.batch_size);
  const what = `train bf16 b${o.batch_size}×${o.seq_len}${o.grad_ckpt ? " ckpt" : ""} (${o.attention})`;
  const speed = p ? `**${f(o.tokens_per_s / p.tokens_per_s, 2)}x**` : "–";
  const mem = p ? `${f(o.peak_mem_gb / p.peak_mem_gb, 2)}x` : "–";
  console.log(
    `| ${what} | ${f(o.tokens_per_s)} | ${f(p?.tokens_per_s)} | ${speed} | ${f(o.mfu_6N_vs_989T * 100, 1)}% | ` +
      `${f(o.peak_mem_gb, 1)} | ${f(p?.peak_mem_gb, 1)} | ${mem} |`,
  );
}
const peerGen = peers.find((r) => r.task === "generate");
for (const o of ours.filter((r) => r.task === "generate")) {
  const vs = o.dtype === "float32" && peerGen ? `**${f(o.tokens_per_s / peerGen.tokens_per_s, 2)}x**` : "–";
  const what = `greedy decode b1, ${o.dtype} weights${o.decode_step ? ` (${o.decode_step})` : ""}`;
  console.log(
    `| ${what} | ${f(o.tokens_per_s)} | ${f(peerGen?.tokens_per_s)} (fp32) | ${vs} | | ` +
      `${f(o.peak_mem_gb, 1)} | | |`,
  );
}
