// The server under pressure: limits checked before any compute, 429 before the response starts
// (streaming too) with Retry-After, multi-prompt requests admitted whole, a fault in one request
// failing that request only, /health answering while a long prompt is prefilled, and protocol details.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { loadCausalLM } from "../../src/models/index.js";
import { buildServer } from "../../src/serve/server.js";
import { ChatTokenizer } from "../../src/tokenizer/index.js";
import { CLI, GOLDEN, GOLDEN_MODELS, SHARED } from "../helpers.js";

const dir = join(mkdtempSync(join(tmpdir(), "oasft-pressure-")), "model");
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

async function serve(o: Partial<Parameters<typeof buildServer>[0]> = {}) {
  const s = buildServer({ model, tokenizer, modelId: "p", maxBatch: 4, maxQueue: 8, maxTokens: 256, ...o });
  const url = await s.app.listen({ host: "127.0.0.1", port: 0 });
  return { ...s, url };
}
const post = (url: string, path: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });

describe("limits and admission", () => {
  let s: Awaited<ReturnType<typeof serve>>;
  before(async () => {
    s = await serve({ maxInputTokens: 64, maxBatch: 1, maxQueue: 1 });
  });
  after(async () => {
    await s.app.close();
  });

  test("a prompt over the input limit is a 400 naming the limit, before any compute", async () => {
    const before = s.engine.stats.promptTokens;
    const res = await post(s.url, "/v1/chat/completions", {
      messages: [{ role: "user", content: "word ".repeat(500) }],
      stream: true,
    });
    assert.equal(res.status, 400);
    const body = (await res.json()) as { error: { message: string; code: string } };
    assert.match(body.error.message, /this server takes at most 64 \(--max-input-tokens\)/);
    assert.equal(body.error.code, "invalid_value");
    assert.equal(s.engine.stats.promptTokens, before, "nothing was queued");
  });

  test(
    "a full queue answers 429 with Retry-After, for streaming requests too, and a multi-prompt request is " +
      "refused whole",
    async () => {
      const next = (event: string) => new Promise<void>((r) => s.engine.events.once(event, () => r()));
      const admitted = next("admitted");
      const running = post(s.url, "/generate", { inputs: "a", parameters: { max_new_tokens: 200 } });
      await admitted;
      const queued = next("queued");
      const waiting = post(s.url, "/generate", { inputs: "b", parameters: { max_new_tokens: 2 } });
      await queued;
      const streaming = await post(s.url, "/v1/chat/completions", {
        messages: [{ role: "user", content: "hi" }],
        stream: true,
      });
      assert.equal(streaming.status, 429);
      assert.equal(streaming.headers.get("retry-after"), "1");
      assert.equal(((await streaming.json()) as { error: { code: string } }).error.code, "rate_limit_exceeded");
      const requests = s.engine.stats.requests;
      const batch = await post(s.url, "/v1/completions", { prompt: ["x", "y"], max_tokens: 2 });
      assert.equal(batch.status, 429);
      assert.equal(s.engine.stats.requests, requests, "no prompt of the refused batch was queued");
      await Promise.all([running, waiting]);
    },
  );
});

test("a fault in a prefill fails that request with a 500 naming the cause; the others are answered", async () => {
  let armed = true;
  const s = await serve({
    fault: (stage) => {
      if (stage === "prefill" && armed) {
        armed = false;
        throw new Error("simulated allocation failure");
      }
    },
  });
  try {
    const bad = await post(s.url, "/generate", { inputs: "first", parameters: { max_new_tokens: 3 } });
    assert.equal(bad.status, 500);
    assert.match(((await bad.json()) as { error: { message: string } }).error.message, /simulated allocation failure/);
    const good = await post(s.url, "/generate", { inputs: "second", parameters: { max_new_tokens: 3 } });
    assert.equal(good.status, 200);
  } finally {
    await s.app.close();
  }
});

test(
  "a fault in a decoding step ends the running streams with an error event and [no hang]; later " + "requests work",
  async () => {
    let steps = 0;
    // The first decoding step fails: a random model may end its reply (eos) after a couple of tokens.
    const s = await serve({
      fault: (stage) => {
        if (stage === "step" && ++steps === 1) throw new Error("simulated device error");
      },
    });
    try {
      const stream = await post(s.url, "/v1/chat/completions", {
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 20,
        stream: true,
      });
      const text = await stream.text();
      assert.match(text, /simulated device error/);
      const after = await post(s.url, "/generate", { inputs: "again", parameters: { max_new_tokens: 2 } });
      assert.equal(after.status, 200);
    } finally {
      await s.app.close();
    }
  },
);

test("/health answers while a long prompt is being prefilled", async () => {
  const s = await serve({ maxInputTokens: 8192 });
  try {
    let healthBeforeDone = false;
    const long = post(s.url, "/generate", {
      inputs: "lorem ipsum dolor ".repeat(700),
      parameters: { max_new_tokens: 1 },
    }).then(async (r) => {
      await r.text();
      return r.status;
    });
    // Ask as soon as the request is queued: the answer must not wait for the whole prefill.
    await new Promise<void>((r) => s.engine.events.once("queued", () => r()));
    const health = fetch(`${s.url}/health`).then((r) => {
      healthBeforeDone = true;
      return r.status;
    });
    const first = await Promise.race([health.then(() => "health"), long.then(() => "long")]);
    assert.equal(await health, 200);
    assert.equal(await long, 200);
    assert.equal(first, "health", "the health check came back first");
    assert.ok(healthBeforeDone);
  } finally {
    await s.app.close();
  }
});

describe("protocol details", () => {
  let s: Awaited<ReturnType<typeof serve>>;
  before(async () => {
    s = await serve({ apiKey: "k3y" });
  });
  after(async () => {
    await s.app.close();
  });
  const auth = { authorization: "bearer k3y" };

  test(
    "a lowercase bearer is accepted; GET on a POST route is 405 with Allow; TGI's bare POST / works; stop " +
      "strings are stop_sequence",
    async () => {
      assert.equal(
        (await post(s.url, "/generate", { inputs: "a", parameters: { max_new_tokens: 1 } }, auth)).status,
        200,
      );
      assert.equal((await post(s.url, "/generate", { inputs: "a" }, { authorization: "Bearer nope" })).status, 401);
      const get = await fetch(`${s.url}/v1/chat/completions`, { headers: auth });
      assert.equal(get.status, 405);
      assert.equal(get.headers.get("allow"), "POST");
      const bare = await post(s.url, "/", { inputs: "a", parameters: { max_new_tokens: 2 } }, auth);
      assert.equal(bare.status, 200);
      assert.ok(typeof ((await bare.json()) as { generated_text: string }).generated_text === "string");
      // A stop string that the first generated token's text starts with.
      const plain = (await (
        await post(s.url, "/generate", { inputs: "Hello", parameters: { max_new_tokens: 4 } }, auth)
      ).json()) as { generated_text: string };
      const stop = plain.generated_text.trim().slice(0, 1);
      if (stop) {
        const r = (await (
          await post(
            s.url,
            "/generate",
            { inputs: "Hello", parameters: { max_new_tokens: 4, stop: [stop], details: true } },
            auth,
          )
        ).json()) as { details: { finish_reason: string } };
        assert.equal(r.details.finish_reason, "stop_sequence");
      }
    },
  );

  test("temperature 1e-40 and top_p 0 act greedy; the latency histogram only grows", async () => {
    const greedy = (await (
      await post(s.url, "/v1/completions", { prompt: "Once", max_tokens: 6, temperature: 0 }, auth)
    ).json()) as { choices: Array<{ text: string }> };
    for (const extra of [{ temperature: 1e-40 }, { temperature: 1, top_p: 0 }]) {
      const r = (await (
        await post(s.url, "/v1/completions", { prompt: "Once", max_tokens: 6, seed: 1, ...extra }, auth)
      ).json()) as { choices: Array<{ text: string }> };
      assert.equal(r.choices[0]!.text, greedy.choices[0]!.text, JSON.stringify(extra));
    }
    const count = async () =>
      Number(/^oasft_request_latency_seconds_count (\d+)$/m.exec(await (await fetch(`${s.url}/metrics`)).text())![1]);
    const a = await count();
    await post(s.url, "/generate", { inputs: "a", parameters: { max_new_tokens: 1 } }, auth);
    assert.equal(await count(), a + 1);
  });

  test("echo text_offset counts characters of the text, non-ASCII included", async () => {
    const prompt = "Grüße, 世界! ok";
    const r = (await (
      await post(s.url, "/v1/completions", { prompt, max_tokens: 0, echo: true, logprobs: 0 }, auth)
    ).json()) as { choices: Array<{ text: string; logprobs: { text_offset: number[]; tokens: string[] } }> };
    const { text_offset: offsets } = r.choices[0]!.logprobs;
    const chars = [...r.choices[0]!.text];
    assert.equal(offsets[0], 0);
    assert.ok(
      offsets.every((o, i) => i === 0 || o >= offsets[i - 1]!),
      "offsets never go back",
    );
    assert.ok(offsets.at(-1)! < chars.length, "the last token starts inside the text");
    assert.equal(
      chars.slice(offsets.at(-1)!).join(""),
      "ok".slice(-chars.slice(offsets.at(-1)!).length),
      "the last token is where the text ends",
    );
  });
});

test("TGI decoder_input_details: the prompt's tokens with log-probabilities equal to echo's", async () => {
  const s = await serve();
  try {
    const r = (await (
      await post(s.url, "/generate", {
        inputs: "Hello there",
        parameters: { max_new_tokens: 2, details: true, decoder_input_details: true },
      })
    ).json()) as { details: { prefill: Array<{ id: number; logprob: number | null }> } };
    const echo = (await (
      await post(s.url, "/v1/completions", { prompt: "Hello there", max_tokens: 0, echo: true, logprobs: 0 })
    ).json()) as { choices: Array<{ logprobs: { token_logprobs: Array<number | null> } }> };
    const ids = await tokenizer.encode("Hello there");
    assert.deepEqual(
      r.details.prefill.map((t) => t.id),
      ids,
    );
    assert.equal(r.details.prefill[0]!.logprob, null);
    assert.deepEqual(
      r.details.prefill.map((t) => t.logprob),
      echo.choices[0]!.logprobs.token_logprobs,
    );
  } finally {
    await s.app.close();
  }
});
