#!/usr/bin/env node
// `oasft serve` under concurrent streams: aggregate generated tokens/s with N concurrent
// /generate_stream clients against one client, on the 23M bench config (random init, greedy, 64 new
// tokens each). Target: ≥ 4x at 8 streams. Single-stream decode against the PyTorch peer is
// bench/compare.mjs's "generate" row.
//
// --steady: each of the N clients sends 4 requests one after another, of 16 to 96 new tokens (a fixed
// spread), so requests join and leave the running batch all the time (continuous batching's steady state,
// where a decode step recorded per batch-size bucket pays off over one recorded per batch). Each level
// reports the median of --repeats runs.
//
// --model DIR serves a saved folder instead (the GPU run's trained 3B: bench/gpu/card-recipe.sh);
// --device and --dtype pass through to `oasft serve`.
//
//   node bench/serve.mjs [--streams 1,4,8,16] [--new-tokens 64] [--steady] [--model-config ...bloom-23m.json]
//                        [--model DIR] [--device cuda] [--dtype bf16]
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const shared = resolve(repo, "../shared");
const cli = join(repo, "bin/oasft.js");
const { values } = parseArgs({
  options: {
    streams: { type: "string", default: "1,4,8,16" },
    "new-tokens": { type: "string", default: "64" },
    steady: { type: "boolean", default: false },
    repeats: { type: "string", default: "3" },
    "model-config": { type: "string", default: join(shared, "bench/configs/bloom-23m.json") },
    model: { type: "string" },
    device: { type: "string" },
    dtype: { type: "string" },
  },
});
const model = values.model ?? join(mkdtempSync(join(tmpdir(), "oasft-bench-serve-")), "model");
if (!values.model) {
  const tokenizer = join(shared, "data/tokenizers/oasst-tiny-bpe");
  const init = [cli, "init", "--config", values["model-config"], "--tokenizer", tokenizer, "--out", model];
  execFileSync(process.execPath, init, { stdio: "ignore" });
}
const port = 18000 + Math.floor(Math.random() * 1000);
const placement = ["device", "dtype"].flatMap((k) => (values[k] ? [`--${k}`, values[k]] : []));
const serveArgs = [cli, "serve", "--model", model, "--port", String(port), "--max-batch", "32", ...placement];
const server = spawn(process.execPath, serveArgs, { stdio: ["ignore", "pipe", "inherit"] });
await new Promise((r) => server.stdout.once("data", r));
const url = `http://127.0.0.1:${port}`;
const newTokens = Number(values["new-tokens"]);

async function stream(i, maxNew = newTokens) {
  const res = await fetch(`${url}/generate_stream`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      inputs: `<|prompter|>Tell me a story about the number ${i}.<|endoftext|><|assistant|>`,
      parameters: { max_new_tokens: maxNew },
    }),
  });
  const text = await res.text();
  return text.split("\n\n").filter(Boolean).length - 1;
}

/** --steady: client c's requests, one after another, of 16 to 96 new tokens. */
async function client(c) {
  let n = 0;
  for (let k = 0; k < 4; k++) n += await stream(c * 4 + k, 16 + (((c * 4 + k) * 37) % 81));
  return n;
}

const rows = [];
let single;
for (const n of values.streams.split(",").map(Number)) {
  await Promise.all(Array.from({ length: n }, (_, i) => stream(i))); // warm-up at this concurrency
  const rates = [];
  for (let r = 0; r < Number(values.repeats); r++) {
    const t0 = performance.now();
    const counts = await Promise.all(
      Array.from({ length: n }, (_, i) => (values.steady ? client(100 * (r + 1) + i) : stream(100 * (r + 1) + i))),
    );
    rates.push(counts.reduce((a, b) => a + b, 0) / ((performance.now() - t0) / 1000));
  }
  const rate = rates.sort((a, b) => a - b)[rates.length >> 1]; // the median run
  single ??= rate;
  rows.push(`| ${n} | ${rate.toFixed(0)} | ${(rate / n).toFixed(0)} | **${(rate / single).toFixed(2)}x** |`);
}
server.kill("SIGTERM");
console.log(
  `| concurrent streams | aggregate tok/s | per stream tok/s | vs 1 stream ` +
    `|\n|---:|---:|---:|---:|\n${rows.join("\n")}`,
);
