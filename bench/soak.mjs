#!/usr/bin/env node
// A soak run of `oasft serve` (not a test): mixed traffic on 127.0.0.1 for a bounded time, then
// latency percentiles per kind, errors by status, and the server's RSS over time.
//
//   node bench/soak.mjs --model runs/demo [--minutes 2] [--concurrency 8]
//
// Traffic: short and long chat completions, streams (a quarter aborted midway), echo-logprob batches
// as lm-eval sends them, prompts over the input limit, malformed bodies. Only loopback is used.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const { values } = parseArgs({
  options: {
    model: { type: "string", default: join(repo, "runs/demo") },
    minutes: { type: "string", default: "2" },
    concurrency: { type: "string", default: "8" },
    port: { type: "string", default: "18181" },
  },
});
const url = `http://127.0.0.1:${values.port}`;
const server = spawn(
  process.execPath,
  [
    join(repo, "bin/oasft.js"),
    "serve",
    "--model",
    values.model,
    "--port",
    values.port,
    "--max-input-tokens",
    "1024",
    "--max-tokens",
    "128",
  ],
  { stdio: ["ignore", "pipe", "inherit"] },
);
await new Promise((r) => server.stdout.once("data", r)); // "oasft serve: ... on http://..."

const rssMb = () => {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${server.pid}/status`, "utf8"))[1]) / 1024;
  } catch {
    return NaN;
  }
};
const post = (path, body, signal) =>
  fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
    signal,
  });
const chat = (content, max, stream = false) => ({
  messages: [{ role: "user", content }],
  max_tokens: max,
  temperature: 0,
  stream,
});
const KINDS = {
  short: () => post("/v1/chat/completions", chat("What is the capital of Italy?", 16)),
  long: () => post("/v1/chat/completions", chat("Tell me about Rome. ".repeat(40), 64)),
  stream: () => post("/v1/chat/completions", chat("Count to ten.", 64, true)),
  aborted: async () => {
    const ac = new AbortController();
    const res = await post("/v1/chat/completions", chat("Write a story.", 128, true), ac.signal);
    const reader = res.body.getReader();
    await reader.read();
    ac.abort();
    return { status: 499, text: async () => "" };
  },
  logprobs: () =>
    post("/v1/completions", {
      prompt: Array.from({ length: 16 }, (_, i) => `Question ${i}: the answer is`),
      max_tokens: 0,
      echo: true,
      logprobs: 1,
    }),
  too_long: () => post("/v1/chat/completions", chat("word ".repeat(3000), 8)),
  malformed: () => post("/v1/chat/completions", "{ not json"),
};
const names = Object.keys(KINDS);
const weights = { short: 5, long: 2, stream: 3, aborted: 1, logprobs: 1, too_long: 1, malformed: 1 };
const pool = names.flatMap((n) => Array(weights[n]).fill(n));
const stats = Object.fromEntries(names.map((n) => [n, { ms: [], status: {} }]));
const rss = [];
const end = Date.now() + Number(values.minutes) * 60_000;
const sampler = setInterval(
  () => rss.push([Math.round((Date.now() - (end - Number(values.minutes) * 60_000)) / 1000), rssMb()]),
  5000,
);

async function worker(seed) {
  let i = seed;
  while (Date.now() < end) {
    i = (i * 1103515245 + 12345) % 2 ** 31;
    const kind = pool[Math.floor(i / 65536) % pool.length]; // the high bits: an LCG's low bits cycle fast
    const t0 = performance.now();
    let status;
    try {
      const res = await KINDS[kind]();
      await res.text();
      status = res.status;
    } catch (err) {
      status = err.name === "AbortError" ? 499 : `error:${err.cause?.code ?? err.message}`;
    }
    const s = stats[kind];
    s.ms.push(performance.now() - t0);
    s.status[status] = (s.status[status] ?? 0) + 1;
  }
}
await Promise.all(Array.from({ length: Number(values.concurrency) }, (_, k) => worker(k + 1)));
clearInterval(sampler);
const metrics = await (await fetch(`${url}/metrics`)).text();
server.kill("SIGTERM");

const pct = (xs, p) =>
  xs.length ? [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))].toFixed(0) : "-";
console.log(`soak: ${values.minutes} min, ${values.concurrency} clients, ${values.model}\n`);
console.log("| kind | requests | p50 ms | p95 ms | p99 ms | statuses |");
console.log("|---|---:|---:|---:|---:|---|");
for (const n of names) {
  const s = stats[n];
  console.log(
    `| ${n} | ${s.ms.length} | ${pct(s.ms, 0.5)} | ${pct(s.ms, 0.95)} | ${pct(s.ms, 0.99)} | ${Object.entries(s.status)
      .map(([k, v]) => `${k}×${v}`)
      .join(" ")} |`,
  );
}
console.log(`\nserver RSS (s: MB): ${rss.map(([t, m]) => `${t}: ${m.toFixed(0)}`).join(", ")}`);
console.log(
  `queue depth at the end: ${/^oasft_queue_depth (\d+)$/m.exec(metrics)?.[1]}, running: ` +
    `${/^oasft_running (\d+)$/m.exec(metrics)?.[1]}`,
);
