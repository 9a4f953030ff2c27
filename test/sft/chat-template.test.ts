// Training in a model's own chat template. `oasft data export` on a messages file, in three families'
// formats: every sample's text equals Python jinja2's rendering (transformers' own renderer and
// settings: an independent implementation), and its trained tokens are exactly each assistant
// reply (trimmed where the template trims) followed by the template's end-of-turn token. Then a tiny
// model fine-tuned with `chat_template: model` keeps the template, stops on its end of turn, and
// serves chat completions in it.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { gguf } from "@huggingface/gguf";
import { exportGguf } from "../../src/export/gguf.js";
import { loadCausalLM } from "../../src/models/index.js";
import { buildServer } from "../../src/serve/server.js";
import { ChatTemplateError, ChatTokenizer, renderWithSpans, resolveChatTemplate } from "../../src/tokenizer/index.js";
import { CLI, REPO } from "../helpers.js";
import { STYLES, templateTokenizer, type TemplateStyle } from "../tokenizer/chat-fixtures.js";

type Msg = { role: string; content: string };
const work = mkdtempSync(join(tmpdir(), "oasft-template-"));

const CHATS: Msg[][] = [
  [
    { role: "system", content: "You are terse." },
    { role: "user", content: "What is the capital of Italy?" },
    { role: "assistant", content: "The capital of Italy is Rome." },
  ],
  // The second reply also appears in the user turn before it: the span must be the reply's own.
  [
    { role: "user", content: "Hello" },
    { role: "assistant", content: "Hello! How can I help?" },
    { role: "user", content: "Say Rome." },
    { role: "assistant", content: "Rome." },
  ],
  // A reply spelled like the role name, and one with non-BMP characters and trailing spaces.
  [
    { role: "user", content: "Who are you?" },
    { role: "assistant", content: "assistant" },
    { role: "user", content: "Grüße? 東京" },
    { role: "assistant", content: "Grüße aus Zürich 😀 東京  " },
  ],
];

/** Python jinja2 as transformers sets it up (sandboxed, trim_blocks, lstrip_blocks, raise_exception). */
function renderWithPython(
  template: string,
  tokens: Record<string, string>,
  chats: Msg[][],
  generationPrompt = false,
): string[] | undefined {
  const script = [
    "import json, sys",
    "from jinja2.sandbox import ImmutableSandboxedEnvironment",
    "from jinja2.exceptions import TemplateError",
    "def raise_exception(m): raise TemplateError(m)",
    "req = json.load(sys.stdin)",
    "env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)",
    "env.globals['raise_exception'] = raise_exception",
    "t = env.from_string(req['template'])",
    "out = [t.render(messages=c, add_generation_prompt=req['gen'], **req['tokens']) for c in req['chats']]",
    "print(json.dumps(out))",
  ].join("\n");
  const r = spawnSync("python3", ["-c", script], {
    input: JSON.stringify({ template, tokens, chats, gen: generationPrompt }),
    encoding: "utf8",
  });
  if (r.status !== 0) {
    if (/No module named 'jinja2'|ENOENT/.test(r.stderr + String(r.error ?? ""))) return undefined;
    throw new Error(`python3 jinja2: ${r.stderr}`);
  }
  return JSON.parse(r.stdout) as string[];
}

function tokensOf(style: TemplateStyle): Record<string, string> {
  const s = STYLES[style];
  return { ...(s.bos ? { bos_token: s.bos } : {}), eos_token: s.eos, pad_token: s.pad };
}

function writeChats(dir: string, chats: Msg[][]): string {
  const file = join(dir, "chats.jsonl");
  writeFileSync(file, chats.map((messages) => JSON.stringify({ messages })).join("\n") + "\n");
  return file;
}

/** A config block in `dir/configs/run.yaml` (the CLI reads blocks from the working folder's configs/). */
function writeConfig(dir: string, block: Record<string, unknown>): void {
  mkdirSync(join(dir, "configs"), { recursive: true });
  writeFileSync(
    join(dir, "configs", "run.yaml"),
    `run:\n${Object.entries(block)
      .map(([k, v]) => `  ${k}: ${JSON.stringify(v)}`)
      .join("\n")}\n`,
  );
}

const oasft = (cwd: string, ...args: string[]) =>
  spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: "utf8", timeout: 300_000 });

describe("chat_template: model, in three families' formats", () => {
  for (const style of ["chatml", "llama3", "gemma"] as const) {
    test(
      `${style}: exported samples render as jinja2 does, and train exactly each reply and its end ` + `of turn`,
      async (t) => {
        const s = STYLES[style];
        const chats = style === "gemma" ? CHATS.map((c) => c.filter((m) => m.role !== "system")) : CHATS;
        const expectedTexts = renderWithPython(s.template, tokensOf(style), chats);
        if (!expectedTexts) return t.skip("python3 with jinja2 is not installed (apt-get install python3-jinja2)");
        const dir = join(work, style);
        const tokDir = templateTokenizer(join(dir, "tok"), style);
        writeConfig(dir, {
          tokenizer_name: tokDir,
          chat_template: "model",
          max_length: 4096,
          random_offset_probability: 0,
          datasets: [{ messages: { input_file_path: writeChats(dir, chats), val_split: 0 } }],
        });
        const out = join(dir, "samples.jsonl");
        const r = oasft(dir, "data", "export", "--configs", "defaults", "run", "--split", "train", "--out", out);
        assert.equal(r.status, 0, r.stderr);
        const tok = ChatTokenizer.load(tokDir, { oaTokens: false });
        const rows = readFileSync(out, "utf8")
          .trim()
          .split("\n")
          .map((l) => JSON.parse(l) as { input_ids: number[]; label_mask: number[] });
        assert.equal(rows.length, chats.length);
        for (const row of rows) {
          const text = await tok.decode(row.input_ids);
          const k = expectedTexts.indexOf(text);
          assert.ok(k >= 0, `a sample's text is none of jinja2's renderings: ${JSON.stringify(text)}`);
          // Runs of trained targets (label_mask[j − 1] trains token j), decoded.
          const runs: number[][] = [];
          row.input_ids.forEach((id, j) => {
            if (j === 0 || !row.label_mask[j - 1]) return;
            if (j >= 2 && row.label_mask[j - 2]) runs.at(-1)!.push(id);
            else runs.push([id]);
          });
          const trained = await Promise.all(runs.map((ids) => tok.decode(ids)));
          const replies: string[] = chats[k]!.filter((m) => m.role === "assistant").map(
            (m) => (s.trims ? m.content.trim() : m.content) + s.endOfTurn,
          );
          assert.deepEqual(trained, replies);
        }
      },
    );
  }

  test(
    "a template that drops a reply, a missing template, a role the template refuses: errors " + "naming them",
    async () => {
      const tokDir = templateTokenizer(join(work, "bad"), "chatml");
      const tok = ChatTokenizer.load(tokDir, { oaTokens: false });
      const src = tok.templateSource();
      const redacting = join(work, "redacting.jinja");
      writeFileSync(
        redacting,
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}" +
          "{% if m['role'] == 'assistant' %}(redacted){% else %}{{ m['content'] }}{% endif %}{{ '<|im_end|>\\n' " +
          "}}{% endfor %}",
      );
      const chat = [
        { role: "user" as const, content: "Hi" },
        { role: "assistant" as const, content: "Hello there" },
      ];
      assert.throws(
        () => renderWithSpans(resolveChatTemplate(redacting, src), chat, tok.specialTokens, "chats.jsonl:3"),
        (e: Error) =>
          e instanceof ChatTemplateError &&
          /chats\.jsonl:3: chat template .*redacting\.jinja, message 1 \(assistant\): .*rewrites or drops/.test(
            e.message,
          ),
      );
      const noTemplate = join(work, "no-template");
      mkdirSync(noTemplate, { recursive: true });
      writeFileSync(join(noTemplate, "tokenizer.json"), readFileSync(join(tokDir, "tokenizer.json")));
      writeFileSync(join(noTemplate, "tokenizer_config.json"), JSON.stringify({ eos_token: "<|im_end|>" }));
      const plain = ChatTokenizer.load(noTemplate, { oaTokens: false });
      assert.throws(
        () => plain.useTemplate("model"),
        /chat_template: model, but .*no-template\/tokenizer_config\.json has no chat_template/,
      );
      const gemma = ChatTokenizer.load(templateTokenizer(join(work, "gemma-bad"), "gemma"), { oaTokens: false });
      assert.throws(
        () => gemma.template.render([{ role: "system", content: "x" }, ...chat], false),
        /System role not supported/,
      );
    },
  );
});

test(
  "fine-tuned with chat_template: model, a model keeps the template, stops on its end of turn, and serves " +
    "chat in it",
  async (t) => {
    const s = STYLES.chatml;
    // A base model's tokenizer: eos is <|endoftext|>, and the template's <|im_end|> ends each turn.
    const dir = join(work, "finetune");
    const tokDir = templateTokenizer(join(dir, "tok"), "chatml");
    const cfgPath = join(tokDir, "tokenizer_config.json");
    writeFileSync(
      cfgPath,
      JSON.stringify({ ...JSON.parse(readFileSync(cfgPath, "utf8")), eos_token: "<|endoftext|>" }),
    );
    const out = join(dir, "out");
    writeConfig(dir, {
      model_name: join(REPO, "configs/qwen2-tiny.json"),
      tokenizer_name: tokDir,
      chat_template: "model",
      output_dir: out,
      datasets: [{ messages: { input_file_path: writeChats(dir, CHATS), val_split: 0 } }],
      dtype: "fp32",
      max_steps: 2,
      gradient_accumulation_steps: 1,
      per_device_train_batch_size: 2,
      max_length: 128,
      warmup_steps: 1,
      logging_steps: 1,
      eval_steps: 100,
      device: "cpu",
      save_strategy: "no",
    });
    const train = oasft(dir, "train", "--configs", "defaults", "run");
    assert.equal(train.status, 0, train.stderr);
    const saved = JSON.parse(readFileSync(join(out, "tokenizer_config.json"), "utf8"));
    assert.equal(saved.chat_template, s.template);
    const tokenizer = ChatTokenizer.load(out);
    const imEnd = tokenizer.tok.tokenToId("<|im_end|>")!;
    const generation = JSON.parse(readFileSync(join(out, "generation_config.json"), "utf8"));
    assert.ok(
      Array.isArray(generation.eos_token_id) && generation.eos_token_id.includes(imEnd),
      JSON.stringify(generation),
    );
    assert.ok(tokenizer.stopIds.has(imEnd) && tokenizer.stopIds.has(tokenizer.eosId));
    assert.equal(tokenizer.added.length, 0, "no OA tokens are added in the model's own template");

    const messages = [
      { role: "system", content: "You are terse." },
      { role: "user", content: "What is the capital of Italy?" },
    ];
    const rendered = renderWithPython(s.template, tokensOf("chatml"), [messages], true);
    if (!rendered) return t.skip("python3 with jinja2 is not installed");
    const model = loadCausalLM(out);
    const { app } = buildServer({ model, tokenizer, modelId: "tiny", maxBatch: 2, maxQueue: 4, maxTokens: 64 });
    try {
      const post = async (path: string, body: unknown) => {
        const res = await app.inject({ method: "POST", url: path, payload: body as Record<string, unknown> });
        assert.equal(res.statusCode, 200, res.body);
        return res.json() as {
          choices: Array<{ message?: { content: string }; text?: string }>;
          usage: { prompt_tokens: number };
        };
      };
      const chat = await post("/v1/chat/completions", { messages, max_tokens: 6, temperature: 0 });
      const plain = await post("/v1/completions", { prompt: rendered[0], max_tokens: 6, temperature: 0 });
      assert.equal(chat.usage.prompt_tokens, plain.usage.prompt_tokens);
      assert.equal(chat.choices[0]!.message!.content, plain.choices[0]!.text);
      // The GGUF file carries the same template, and the end of turn as llama.cpp's eot token.
      const file = join(dir, "model.gguf");
      exportGguf(model, out, file, { type: "f32" });
      const metadata = (await gguf(file, { allowLocalFile: true })).metadata as unknown as Record<string, unknown>;
      assert.equal(metadata["tokenizer.chat_template"], s.template);
      assert.equal(metadata["tokenizer.ggml.eot_token_id"], imEnd);
      assert.equal(metadata["tokenizer.ggml.eos_token_id"], tokenizer.eosId);
    } finally {
      await app.close();
      model.dispose();
    }
  },
);
