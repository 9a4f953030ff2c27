// Every family through the whole pipeline, as a user runs it: `oasft train` (2 steps, packing) on
// the shared samples, the trained folder served (an OpenAI chat completion), then `oasft eval` on MMLU.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { createCausalLM, loadCausalLM } from "../../src/models/index.js";
import { buildServer } from "../../src/serve/server.js";
import { ChatTokenizer } from "../../src/tokenizer/index.js";
import { CLI, REPO, SHARED } from "../helpers.js";
import { llamaStyleTokenizer } from "../tokenizer/fixtures.js";

const work = mkdtempSync(join(tmpdir(), "oasft-families-"));
const oasft = (...args: string[]) =>
  spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 300_000 });

const FAMILIES = [
  { name: "bloom", config: "configs/bloom-tiny.json", tokenizer: ["--tokenizer_family", "bloom"] },
  { name: "gpt_neox", config: "configs/pythia-tiny.json", tokenizer: ["--tokenizer_family", "pythia"] },
  {
    name: "llama",
    config: "configs/llama-tiny.json",
    tokenizer: ["--tokenizer_name", llamaStyleTokenizer(join(work, "llama-tok")), "--tokenizer_family", "llama"],
  },
  // The families people fine-tune today, in the OA format with the shared tokenizer (their own chat
  // templates are the chat_template key's business).
  { name: "qwen2", config: "configs/qwen2-tiny.json", tokenizer: [] },
  { name: "mistral", config: "configs/mistral-tiny.json", tokenizer: [] },
  { name: "qwen3", config: "configs/qwen3-tiny.json", tokenizer: [] },
  { name: "gemma2", config: "configs/gemma2-tiny.json", tokenizer: [] },
];

for (const f of FAMILIES) {
  test(`${f.name}: oasft train (packing) → a served chat completion → oasft eval mmlu`, async () => {
    const out = join(work, f.name);
    const train = oasft(
      "train",
      "--configs",
      "defaults",
      "shared-sample",
      "tiny-tokenizer",
      "--cache_dir",
      join(SHARED, "data"),
      "--model_name",
      join(REPO, f.config),
      ...f.tokenizer,
      "--output_dir",
      out,
      "--dtype",
      "fp32",
      "--packing",
      "--max_steps",
      "2",
      "--gradient_accumulation_steps",
      "1",
      "--per_device_train_batch_size",
      "2",
      "--max_length",
      "128",
      "--warmup_steps",
      "1",
      "--logging_steps",
      "1",
      "--eval_steps",
      "100",
      "--eval_size",
      "4",
      "--device",
      "cpu",
    );
    assert.equal(train.status, 0, train.stderr);
    const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
    assert.equal(config.model_type, f.name);
    const tokConfig = JSON.parse(readFileSync(join(out, "tokenizer_config.json"), "utf8"));
    assert.match(tokConfig.chat_template, /<\|prompter\|>/);

    const model = loadCausalLM(out);
    const tokenizer = ChatTokenizer.load(out);
    const { app } = buildServer({ model, tokenizer, modelId: f.name, maxBatch: 4, maxQueue: 8, maxTokens: 64 });
    const base = await app.listen({ host: "127.0.0.1", port: 0 });
    try {
      const res = await fetch(`${base}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          messages: [{ role: "user", content: "What is the capital of Italy?" }],
          max_tokens: 6,
          temperature: 0,
        }),
      });
      assert.equal(res.status, 200);
      const body = (await res.json()) as {
        choices: Array<{ message: { role: string } }>;
        usage: { completion_tokens: number };
      };
      assert.equal(body.choices[0]!.message.role, "assistant");
      assert.ok(body.usage.completion_tokens >= 1 && body.usage.completion_tokens <= 6);
    } finally {
      await app.close();
      model.dispose();
    }

    const evalOut = join(work, `${f.name}-eval`);
    const ev = oasft(
      "eval",
      "--model",
      out,
      "--tasks",
      "mmlu",
      "--limit",
      "2",
      "--only",
      "abstract_algebra,anatomy",
      "--out",
      evalOut,
      "--device",
      "cpu",
    );
    assert.equal(ev.status, 0, ev.stderr);
    const results = JSON.parse(readFileSync(join(evalOut, "results.json"), "utf8"));
    const mmlu = JSON.stringify(results);
    assert.match(mmlu, /mmlu/);
    assert.ok(existsSync(join(evalOut, "mmlu.jsonl")));
    assert.equal(readFileSync(join(evalOut, "mmlu.jsonl"), "utf8").trim().split("\n").length, 4);
  });
}

test(
  "fp16 advice: Qwen and Gemma 2 models say to use bf16 (the trainer prints it for fp16 runs on CUDA); others " +
    "say nothing",
  () => {
    const advice = (config: string) => {
      const model = createCausalLM(JSON.parse(readFileSync(join(REPO, config), "utf8")));
      const text = model.fp16Advice;
      model.dispose();
      return text;
    };
    for (const config of ["configs/qwen2-tiny.json", "configs/qwen3-tiny.json", "configs/gemma2-tiny.json"])
      assert.match(advice(config) ?? "", /--dtype bf16/, config);
    for (const config of ["configs/bloom-tiny.json", "configs/llama-tiny.json", "configs/mistral-tiny.json"])
      assert.equal(advice(config), null, config);
  },
);
