// The HTTP server against real requests on 127.0.0.1: OpenAI and TGI routes, streaming, errors,
// limits, the queue, metrics, 32 concurrent streams against one-at-a-time greedy outputs, and the
// chat page in headless Chromium.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { loadCausalLM } from "../../src/models/index.js";
import { generateGreedy } from "../../src/generate/greedy.js";
import { buildServer } from "../../src/serve/server.js";
import { ChatTokenizer } from "../../src/tokenizer/index.js";
import { formatPrompt } from "../../src/sft/format.js";
import { CLI, GOLDEN, GOLDEN_MODELS, REPO, SHARED } from "../helpers.js";

const dir = join(mkdtempSync(join(tmpdir(), "oasft-serve-")), "model");
const init = spawnSync(
  process.execPath,
  [
    CLI,
    "init",
    "--config",
    join(GOLDEN, GOLDEN_MODELS[1], "config.json"),
    "--tokenizer",
    join(SHARED, "data/tokenizers/oasst-tiny-bpe"),
    "--out",
    dir,
    "--seed",
    "3",
  ],
  { encoding: "utf8" },
);
assert.equal(init.status, 0, init.stderr);
const tokenizer = ChatTokenizer.load(dir);
const model = loadCausalLM(dir);
const { app, engine } = buildServer({
  model,
  tokenizer,
  modelId: "golden-small",
  maxBatch: 8,
  maxQueue: 40,
  maxTokens: 64,
  bodyLimit: 64 * 1024,
});
let base = "";

before(async () => {
  base = await app.listen({ host: "127.0.0.1", port: 0 });
});
after(async () => {
  await app.close();
});

const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${base}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
// Response bodies are JSON of the API's documented shapes; tests read them loosely.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Body = any;
const json = async (res: Response): Promise<Body> => res.json();
async function sseEvents(res: Response): Promise<string[]> {
  const text = await res.text();
  return text
    .split("\n\n")
    .filter(Boolean)
    .map((e) => e.replace(/^data: ?/, ""));
}
/** Greedy continuation computed directly, one request alone. */
function greedyAlone(ids: number[], n: number): number[] {
  return torch.scope(() =>
    generateGreedy(model, {
      inputIds: torch.tensor([ids], { dtype: "int64" }),
      maxNewTokens: n,
      eosTokenId: tokenizer.eosId,
    })
      .toNumbers()
      .slice(ids.length)
      .filter((t) => t !== tokenizer.eosId),
  );
}

describe("OpenAI API", () => {
  test(
    "chat completions: the OA prompt, greedy tokens as generated alone, streaming deltas that add up to the " +
      "same text",
    async () => {
      const messages = [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Hello there" },
      ];
      const res = await post("/v1/chat/completions", { messages, temperature: 0, max_tokens: 12 });
      assert.equal(res.status, 200);
      const body = await json(res);
      const ids = await tokenizer.encode(
        formatPrompt([{ role: "prompter", text: "Hello there" }], tokenizer.eos, "Be brief."),
      );
      assert.equal(body.usage.prompt_tokens, ids.length);
      const alone = greedyAlone(ids, 12);
      assert.equal(
        body.choices[0].message.content,
        (await tokenizer.decode(alone, true)).replace(/\uFFFD$/, ""),
        "an incomplete trailing character is held back",
      );
      const stream = await post("/v1/chat/completions", { messages, temperature: 0, max_tokens: 12, stream: true });
      assert.match(stream.headers.get("content-type") ?? "", /text\/event-stream/);
      const events = await sseEvents(stream);
      assert.equal(events.at(-1), "[DONE]");
      const text = events
        .slice(0, -1)
        .map((e) => JSON.parse(e).choices[0].delta.content ?? "")
        .join("");
      assert.equal(text, body.choices[0].message.content);
    },
  );

  test("completions with echo and logprobs, as lm-eval's local-completions sends them", async () => {
    const prompt = "The quick brown fox";
    const res = await post("/v1/completions", {
      prompt,
      max_tokens: 1,
      temperature: 0,
      logprobs: 1,
      echo: true,
      seed: 1234,
    });
    assert.equal(res.status, 200);
    const c = (await json(res)).choices[0];
    const ids = await tokenizer.encode(prompt);
    assert.ok(c.text.startsWith(prompt));
    const lp = c.logprobs;
    assert.equal(lp.tokens.length, ids.length + 1);
    assert.equal(lp.token_logprobs[0], null);
    // Each logprob is log softmax of the previous position's logits at the token (checked directly).
    const direct = torch.noGrad(() =>
      torch.scope(() =>
        model
          .forward({ inputIds: torch.tensor([ids], { dtype: "int64" }) })
          .logits.select(0, 0)
          .logSoftmax(-1)
          .select(0, 2)
          .select(0, ids[3]!)
          .item(),
      ),
    );
    assert.ok(Math.abs(lp.token_logprobs[3] - direct) < 1e-5);
    const top = lp.top_logprobs[3] as Record<string, number>;
    assert.equal(Object.keys(top).length, 1);
    assert.ok(Object.values(top)[0]! >= lp.token_logprobs[3] - 1e-6);
    // Token-id prompts and a batch of prompts.
    const batch = await json(
      await post("/v1/completions", { prompt: [ids, "Another prompt"], max_tokens: 3, temperature: 0 }),
    );
    assert.equal(batch.choices.length, 2);
    const models = await json(await fetch(`${base}/v1/models`));
    assert.equal(models.data[0].id, "golden-small");
  });
});

describe("OpenAI API: chat log-probabilities, usage in streams, model names", () => {
  test(
    "logprobs/top_logprobs: each generated token's log softmax, its alternatives ranked, bytes " + "as UTF-8",
    async () => {
      const messages = [{ role: "user", content: "Name a colour." }];
      const body = await json(
        await post("/v1/chat/completions", {
          messages,
          temperature: 0,
          max_tokens: 5,
          logprobs: true,
          top_logprobs: 3,
        }),
      );
      const content = body.choices[0].logprobs.content as Array<{
        token: string;
        logprob: number;
        bytes: number[];
        top_logprobs: Array<{ token: string; logprob: number }>;
      }>;
      assert.equal(content.length, body.usage.completion_tokens);
      // Checked directly: log softmax of the position before each generated token (greedy, so it is the top one).
      const ids = await tokenizer.encode(formatPrompt([{ role: "prompter", text: "Name a colour." }], tokenizer.eos));
      const generated = torch.scope(() =>
        generateGreedy(model, {
          inputIds: torch.tensor([ids], { dtype: "int64" }),
          maxNewTokens: 5,
          eosTokenId: tokenizer.eosId,
        })
          .toNumbers()
          .slice(ids.length, ids.length + content.length),
      );
      const direct = torch.noGrad(() =>
        torch.scope(() => {
          const all = torch.tensor([[...ids, ...generated]], { dtype: "int64" });
          const lp = model.forward({ inputIds: all }).logits.select(0, 0).logSoftmax(-1);
          return generated.map((t, i) =>
            lp
              .select(0, ids.length - 1 + i)
              .select(0, t)
              .item(),
          );
        }),
      );
      content.forEach((c, i) => {
        assert.ok(Math.abs(c.logprob - direct[i]!) < 1e-4, `token ${i}: ${c.logprob} vs ${direct[i]}`);
        assert.equal(c.top_logprobs.length, 3);
        assert.ok(
          Math.abs(c.top_logprobs[0]!.logprob - c.logprob) < 1e-4,
          "greedy: the chosen token is the most likely",
        );
        assert.ok(
          c.top_logprobs[0]!.logprob >= c.top_logprobs[1]!.logprob &&
            c.top_logprobs[1]!.logprob >= c.top_logprobs[2]!.logprob,
        );
        assert.deepEqual(c.bytes, [...Buffer.from(c.token, "utf8")]);
      });
      const plain = await json(await post("/v1/chat/completions", { messages, temperature: 0, max_tokens: 5 }));
      assert.equal(plain.choices[0].logprobs, undefined, "no logprobs unless asked");
    },
  );

  test("streaming: logprobs per chunk, and stream_options.include_usage ends with a usage chunk", async () => {
    const messages = [{ role: "user", content: "Name a colour." }];
    const events = await sseEvents(
      await post("/v1/chat/completions", {
        messages,
        temperature: 0,
        max_tokens: 5,
        stream: true,
        logprobs: true,
        stream_options: { include_usage: true },
      }),
    );
    assert.equal(events.at(-1), "[DONE]");
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.ok(
      last.usage.completion_tokens >= 1 &&
        last.usage.total_tokens === last.usage.prompt_tokens + last.usage.completion_tokens,
    );
    assert.ok(
      chunks.slice(0, -1).every((c: Body) => c.usage === null),
      "usage: null on the other chunks",
    );
    const withLogprobs = chunks.filter((c: Body) => c.choices[0]?.logprobs?.content);
    assert.equal(withLogprobs.length, last.usage.completion_tokens);
  });

  test(
    "a model name the server does not serve is a 404 in OpenAI's shape; bad logprobs settings name " + "the field",
    async () => {
      const messages = [{ role: "user", content: "Hi" }];
      const res = await post("/v1/chat/completions", { model: "gpt-4o", messages, max_tokens: 2 });
      assert.equal(res.status, 404);
      const err = await json(res);
      assert.equal(err.error.param, "model");
      assert.match(err.error.message, /The model `gpt-4o` does not exist/);
      assert.equal((await post("/v1/completions", { model: "gpt-4o", prompt: "Hi", max_tokens: 2 })).status, 404);
      assert.equal(
        (await post("/v1/chat/completions", { model: "golden-small", messages, max_tokens: 2 })).status,
        200,
      );
      for (const [bad, param] of [
        [{ top_logprobs: 2 }, "top_logprobs"],
        [{ logprobs: "yes" }, "logprobs"],
        [{ logprobs: true, top_logprobs: 21 }, "top_logprobs"],
        [{ stream_options: { include_usage: true } }, "stream_options"],
      ] as const) {
        const r = await post("/v1/chat/completions", { messages, max_tokens: 2, ...bad });
        assert.equal(r.status, 400, JSON.stringify(bad));
        assert.equal((await json(r)).error.param, param);
      }
    },
  );
});

describe("TGI API", () => {
  test("generate, generate_stream, info, health", async () => {
    const inputs = "<|prompter|>Hi</s><|assistant|>";
    const r = await json(await post("/generate", { inputs, parameters: { max_new_tokens: 8, details: true } }));
    const alone = greedyAlone(await tokenizer.encode(inputs), 8);
    assert.deepEqual(
      r.details.tokens.map((t: { id: number }) => t.id),
      alone,
    );
    const events = (await sseEvents(await post("/generate_stream", { inputs, parameters: { max_new_tokens: 8 } }))).map(
      (e) => JSON.parse(e),
    );
    // One event per generated token, as TGI: the last carries generated_text and details, no extra event.
    assert.deepEqual(
      events.map((e) => e.token.id),
      alone,
    );
    assert.ok(events.every((e) => e.token.id >= 0));
    assert.ok(events.slice(0, -1).every((e) => e.generated_text === null));
    assert.equal(events.at(-1).generated_text, r.generated_text);
    assert.equal(events.at(-1).details.generated_tokens, r.details.generated_tokens);
    assert.equal(events.map((e) => e.token.text).join(""), r.generated_text);
    assert.equal((await json(await fetch(`${base}/info`))).model_id, "golden-small");
    assert.equal((await fetch(`${base}/health`)).status, 200);
  });

  test(
    "TGI's details: top_n_tokens, stop sequences kept in the text, special tokens flagged, /info's " + "budgets, 422s",
    async () => {
      const inputs = "<|prompter|>Hi</s><|assistant|>";
      const r = await json(
        await post("/generate", { inputs, parameters: { max_new_tokens: 6, details: true, top_n_tokens: 3 } }),
      );
      const { tokens, top_tokens: top } = r.details as {
        tokens: Array<{ id: number; logprob: number }>;
        top_tokens: Array<Array<{ id: number; logprob: number; special: boolean }>>;
      };
      assert.equal(top.length, tokens.length);
      tokens.forEach((t, i) => {
        // Greedy: each chosen token is the first of its position's top tokens, with the same log-probability.
        assert.equal(top[i]!.length, 3);
        assert.equal(top[i]![0]!.id, t.id);
        assert.ok(Math.abs(top[i]![0]!.logprob - t.logprob) < 1e-4);
        assert.ok(top[i]![0]!.logprob >= top[i]![1]!.logprob && top[i]![1]!.logprob >= top[i]![2]!.logprob);
      });
      // A stop sequence ends the text it completes, and stays in it (OpenAI's API drops it; TGI keeps it).
      const text = r.generated_text as string;
      const k = [...Array(Math.max(0, text.length - 2)).keys()].find(
        (i) => text.indexOf(text.slice(i, i + 2)) === i && i > 0,
      );
      if (k !== undefined) {
        const stop = text.slice(k, k + 2);
        const stopped = await json(
          await post("/generate", { inputs, parameters: { max_new_tokens: 6, stop: [stop], details: true } }),
        );
        assert.equal(stopped.details.finish_reason, "stop_sequence");
        assert.equal(stopped.generated_text, text.slice(0, k + 2));
        const events = (
          await sseEvents(await post("/generate_stream", { inputs, parameters: { max_new_tokens: 6, stop: [stop] } }))
        ).map((e) => JSON.parse(e));
        assert.equal(events.at(-1).generated_text, text.slice(0, k + 2));
        assert.equal(events.map((e) => e.token.text).join(""), text.slice(0, k + 2));
      }
      // Special tokens are the tokenizer's special ones (TGI flags them in details and top_tokens).
      assert.ok(tokenizer.isSpecial(tokenizer.eosId) && tokenizer.isSpecial(tokenizer.prompterId));
      assert.ok(!tokenizer.isSpecial((await tokenizer.encodePlain("Hi"))[0]!));
      const info = await json(await fetch(`${base}/info`));
      assert.ok(Number.isInteger(info.max_total_tokens) && info.max_input_tokens < info.max_total_tokens);
      for (const parameters of [{ max_new_tokens: 0 }, { max_new_tokens: 2, top_n_tokens: 6 }]) {
        assert.equal((await post("/generate", { inputs, parameters })).status, 422, JSON.stringify(parameters));
      }
    },
  );

  test("sampling with a seed repeats; different seeds differ", async () => {
    const body = (seed: number) => ({
      inputs: "Once upon",
      parameters: {
        max_new_tokens: 16,
        do_sample: true,
        temperature: 1.5,
        top_k: 50,
        top_p: 0.95,
        typical_p: 0.9,
        repetition_penalty: 1.2,
        seed,
      },
    });
    const a = await json(await post("/generate", body(7)));
    const b = await json(await post("/generate", body(7)));
    const c = await json(await post("/generate", body(8)));
    assert.equal(a.generated_text, b.generated_text);
    assert.notEqual(a.generated_text, c.generated_text);
  });
});

describe("best_of", () => {
  test(
    "chat and completions: N seeded candidates, the best by mean token log-probability, equal to that " + "seed alone",
    async () => {
      const messages = [{ role: "user", content: "Tell me something" }];
      const res = await post("/v1/chat/completions", { messages, temperature: 1, seed: 11, max_tokens: 8, best_of: 3 });
      assert.equal(res.status, 200);
      const body = await json(res);
      const { scores, chosen, scored_by: by, n } = body.best_of;
      assert.equal(by, "mean_logprob");
      assert.equal(n, 3);
      assert.equal(scores.length, 3);
      assert.equal(chosen, scores.indexOf(Math.max(...scores)));
      // Candidate i is the request with seed 11 + i: asked alone, it is the same reply, and the mean of
      // its token log-probabilities (reported by logprobs) is the score best_of ranked it by.
      for (let i = 0; i < 3; i++) {
        const alone = await json(
          await post("/v1/chat/completions", { messages, temperature: 1, seed: 11 + i, max_tokens: 8, logprobs: true }),
        );
        const lps = alone.choices[0].logprobs.content.map((t: { logprob: number }) => t.logprob);
        const mean = lps.reduce((a: number, b: number) => a + b, 0) / lps.length;
        assert.ok(Math.abs(mean - scores[i]) < 1e-4, `candidate ${i}: ${mean} vs ${scores[i]}`);
        if (i === chosen) assert.equal(body.choices[0].message.content, alone.choices[0].message.content);
      }
      const completion = await json(
        await post("/v1/completions", {
          prompt: ["Once", "Twice"],
          temperature: 1,
          seed: 2,
          max_tokens: 6,
          best_of: 2,
        }),
      );
      assert.equal(completion.choices.length, 2);
      for (const [field, extra, status] of [
        ["best_of", { temperature: 0 }, 400],
        ["best_of", { stream: true, temperature: 1 }, 400],
      ] as const) {
        const bad = await post("/v1/chat/completions", { messages, max_tokens: 4, best_of: 2, ...extra });
        assert.equal(bad.status, status);
        assert.equal((await json(bad)).error.param, field);
      }
      assert.equal((await post("/v1/completions", { prompt: "x", best_of: 17, temperature: 1 })).status, 400);
    },
  );

  test("TGI: best_of_sequences beside the best; it needs do_sample (422)", async () => {
    const body = await json(
      await post("/generate", {
        inputs: "Hello",
        parameters: { do_sample: true, seed: 4, max_new_tokens: 5, best_of: 3, details: true },
      }),
    );
    assert.equal(body.details.best_of_sequences.length, 2);
    const seeds = [body.details.seed, ...body.details.best_of_sequences.map((s: { seed: number }) => s.seed)].sort();
    assert.deepEqual(seeds, [4, 5, 6]);
    const greedy = await post("/generate", { inputs: "Hello", parameters: { max_new_tokens: 5, best_of: 2 } });
    assert.equal(greedy.status, 422);
  });
});

describe("bad requests and limits", () => {
  test("400 with the field named; malformed JSON; oversized bodies; max_tokens beyond the limit", async () => {
    const bad = async (path: string, body: unknown, status: number, re: RegExp) => {
      const res = await post(path, body);
      assert.equal(res.status, status, path);
      assert.match((await json(res)).error.message, re);
    };
    await bad("/v1/chat/completions", { messages: [{ role: "bot", content: "x" }] }, 400, /messages\[0\]\.role/);
    await bad(
      "/v1/chat/completions",
      { messages: [{ role: "user", content: "x" }], temperature: "hot" },
      400,
      /'temperature' must be a number/,
    );
    await bad(
      "/v1/chat/completions",
      { messages: [{ role: "user", content: "x" }], max_tokens: 100000 },
      400,
      /'max_tokens' must be an integer in \[0, 64\]/,
    );
    await bad("/v1/completions", { prompt: [99999] }, 400, /token id out of range/);
    await bad("/generate", { inputs: 5 }, 400, /'inputs' must be a non-empty string/);
    await bad("/generate", "{not json", 400, /not valid JSON/);
    await bad("/generate", { inputs: "x".repeat(70 * 1024) }, 413, /.+/);
    assert.equal((await fetch(`${base}/health`)).status, 200, "still serving");
  });

  test("an API key guards the API but not the page and health", async () => {
    const guarded = buildServer({ model, tokenizer, modelId: "k", apiKey: "s3cret" });
    const url = await guarded.app.listen({ host: "127.0.0.1", port: 0 });
    try {
      const req = (h: Record<string, string>) =>
        fetch(`${url}/generate`, {
          method: "POST",
          headers: { "content-type": "application/json", ...h },
          body: JSON.stringify({ inputs: "a", parameters: { max_new_tokens: 1 } }),
        });
      assert.equal((await req({})).status, 401);
      assert.equal((await req({ authorization: "Bearer s3cret" })).status, 200);
      assert.equal((await fetch(`${url}/health`)).status, 200);
      assert.equal((await fetch(`${url}/`)).status, 200);
    } finally {
      await guarded.app.close();
    }
  });

  test("a full queue answers 429; a client that disconnects frees its slot", async () => {
    const small = buildServer({ model, tokenizer, modelId: "q", maxBatch: 1, maxQueue: 1, maxTokens: 2048 });
    const url = await small.app.listen({ host: "127.0.0.1", port: 0 });
    // Waits for the engine's own events, never for a time.
    const next = (event: string, want?: unknown) =>
      new Promise<void>((resolve) => {
        const on = (v: unknown) => {
          if (want === undefined || v === want) {
            small.engine.events.off(event, on);
            resolve();
          }
        };
        small.engine.events.on(event, on);
      });
    try {
      const long = () =>
        fetch(`${url}/generate`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ inputs: "a", parameters: { max_new_tokens: 400 } }),
        });
      const running = next("admitted");
      const first = long();
      await running;
      const queued = next("queued");
      const second = long();
      await queued;
      const third = await long();
      assert.equal(third.status, 429);
      await Promise.all([first, second]);
      // Disconnect mid-stream: the running row is cancelled long before its 2,000 tokens.
      const ac = new AbortController();
      const res = await fetch(`${url}/generate_stream`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ inputs: "a", parameters: { max_new_tokens: 2000 } }),
        signal: ac.signal,
      });
      const reader = res.body!.getReader();
      await reader.read();
      const cancelled = next("finished", "cancelled");
      ac.abort();
      await cancelled;
      assert.equal(small.engine.stats.running, 0);
      assert.ok(small.engine.stats.generatedTokens < 400 * 2 + 2000, "the slot was freed before its 2,000 tokens");
    } finally {
      await small.app.close();
    }
  });

  test("/metrics in Prometheus text", async () => {
    const text = await (await fetch(`${base}/metrics`)).text();
    assert.match(text, /^oasft_requests_total \d+$/m);
    assert.match(text, /^oasft_request_latency_seconds_bucket\{le="\+Inf"\} \d+$/m);
    assert.match(text, /^oasft_queue_depth 0$/m);
  });
});

test("32 concurrent streams all complete, each equal to its request made alone (continuous batching)", async () => {
  const prompts = Array.from(
    { length: 32 },
    (_, i) => `<|prompter|>Question number ${i}: ${"why ".repeat(i % 7)}?</s><|assistant|>`,
  );
  const alone = await Promise.all(
    prompts.map(async (p) => greedyAlone(await tokenizer.encode(p), 10 + (prompts.indexOf(p) % 5))),
  );
  const results = await Promise.all(
    prompts.map(async (inputs, i) => {
      const events = (
        await sseEvents(await post("/generate_stream", { inputs, parameters: { max_new_tokens: 10 + (i % 5) } }))
      ).map((e) => JSON.parse(e));
      return events.map((e) => e.token.id as number).filter((id) => id !== tokenizer.eosId);
    }),
  );
  results.forEach((ids, i) => assert.deepEqual(ids, alone[i], `stream ${i}`));
  assert.equal(engine.stats.running, 0);
});

test(
  "the chat page streams a reply in headless Chromium (screenshot saved)",
  { skip: !existsSync("/usr/bin/chromium") && "no /usr/bin/chromium (.ci/run installs it)" },
  async () => {
    const { chromium } = await import("playwright-core");
    const profile = mkdtempSync(join(tmpdir(), "oasft-chromium-"));
    const browser = await chromium.launchPersistentContext(profile, {
      executablePath: "/usr/bin/chromium",
      headless: true,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    try {
      const page = await browser.newPage();
      await page.goto(base + "/");
      await page.fill("#max_tokens", "12");
      await page.fill("#input", "Hello there");
      await page.click("#send");
      await page.waitForFunction('document.querySelector("#status")?.textContent === "done"', null, {
        timeout: 30_000,
      });
      const bubbles = await page.$$eval(".msg", (els) => els.map((e) => [e.className, e.textContent]));
      assert.equal(bubbles.length, 2);
      assert.equal(bubbles[0]![1], "Hello there");
      const expected = await json(
        await post("/v1/chat/completions", {
          messages: [{ role: "user", content: "Hello there" }],
          temperature: 0,
          max_tokens: 12,
        }),
      );
      assert.equal(bubbles[1]![1], expected.choices[0].message.content);
      const shots = join(REPO, "dist", "test-artifacts");
      mkdirSync(shots, { recursive: true });
      await page.screenshot({ path: join(shots, "chat-page.png") });
      assert.ok(existsSync(join(shots, "chat-page.png")));

      // A phone: the input box keeps a usable width, a long word wraps inside its bubble, errors show as a bubble.
      const phone = await browser.newPage();
      await phone.setViewportSize({ width: 375, height: 700 });
      await phone.goto(base + "/");
      const input = await phone.$eval("#input", (e) => e.getBoundingClientRect().width);
      assert.ok(input > 250, `the input box is ${input}px wide on a 375px screen`);
      await phone.fill("#max_tokens", "4");
      await phone.fill("#input", "x".repeat(300));
      await phone.click("#send");
      await phone.waitForFunction('document.querySelector("#status")?.textContent === "done"', null, {
        timeout: 30_000,
      });
      const overflow = await phone.$$eval(".msg", (els) => els.map((e) => e.scrollWidth - e.clientWidth));
      assert.ok(
        overflow.every((d) => d <= 1),
        `bubbles overflow by ${overflow}`,
      );
      await phone.fill("#max_tokens", "99999"); // over the server's limit: the 400 must be visible
      await phone.fill("#input", "again");
      await phone.click("#send");
      await phone.waitForSelector(".msg.error", { timeout: 30_000 });
      await phone.screenshot({ path: join(shots, "chat-page-phone.png") });
    } finally {
      await browser.close();
    }
  },
);

test(
  "oasft chat: a piped conversation streams replies, /save writes the OA-format JSONL, bad flags name " + "the flag",
  () => {
    const saved = join(mkdtempSync(join(tmpdir(), "oasft-chat-")), "chat.jsonl");
    const r = spawnSync(
      process.execPath,
      [CLI, "chat", "--model", dir, "--max-new-tokens", "6", "--system", "Be brief."],
      { encoding: "utf8", input: `Hello there\n/save ${saved}\n/exit\n` },
    );
    assert.equal(r.status, 0, r.stderr);
    const line = JSON.parse(readFileSync(saved, "utf8"));
    assert.deepEqual(
      line.messages.map((m: { role: string }) => m.role),
      ["system", "user", "assistant"],
    );
    assert.ok(
      line.text.startsWith(`<|system|>Be brief.${tokenizer.eos}<|prompter|>Hello there${tokenizer.eos}<|assistant|>`),
    );
    assert.ok(r.stdout.includes(line.messages[2].content), "the streamed reply is the saved one");
    const bad = spawnSync(process.execPath, [CLI, "chat", "--model", dir, "--temperature", "hot"], {
      encoding: "utf8",
      input: "",
    });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--temperature: expected a number ≥ 0, got NaN/);
  },
);

test(
  "oasft chat: /save to an unwritable path keeps the session; Ctrl-C stops a reply, then ends the chat at " +
    "the prompt",
  async () => {
    const good = join(mkdtempSync(join(tmpdir(), "oasft-chat-")), "ok.jsonl");
    const r = spawnSync(process.execPath, [CLI, "chat", "--model", dir, "--max-new-tokens", "4"], {
      encoding: "utf8",
      input: `Hi\n/save /nonexistent-dir/x.jsonl\n/save ${good}\n/exit\n`,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /\(not saved: cannot write \/nonexistent-dir\/x\.jsonl \(ENOENT\); try another path\)/);
    assert.ok(existsSync(good), "the session went on and saved afterwards");

    const child = spawn(
      process.execPath,
      [CLI, "chat", "--model", dir, "--max-new-tokens", "100000", "--context", "200000"],
      { stdio: ["pipe", "pipe", "pipe"] },
    );
    let out = "";
    let step = 0;
    const code = await new Promise<number | null>((resolve) => {
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        // 1: the prompt is up → ask; 2: the reply streams → Ctrl-C; 3: stopped, back at the prompt → Ctrl-C.
        if (step === 0 && out.endsWith("> ")) {
          step = 1;
          child.stdin.write("Tell me a long story\n");
        } else if (step === 1 && out.endsWith("\n> "))
          child.stdin.write("And another one\n"); // that reply ended on its own: ask again
        else if (step === 1 && out.length > out.lastIndexOf("> ") + 2 + 8) {
          step = 2;
          child.kill("SIGINT");
        } else if (step === 2 && /\(stopped\)\n> $/.test(out)) {
          step = 3;
          child.kill("SIGINT");
        }
      });
      child.on("exit", (c) => resolve(c));
    });
    assert.equal(step, 3, out);
    assert.equal(code, 130);
    assert.ok(out.endsWith("> \n"), "the chat ends on a new line");
  },
);
