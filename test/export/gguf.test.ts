// GGUF export checked by llama.cpp itself (node-llama-cpp's prebuilt binaries): the demo BLOOM runs
// there with oasft's greedy tokens, GPT-NeoX and LLaMA with oasft's next-token probabilities; the
// metadata reads back with @huggingface/gguf; q8_0 and binary16 match hand computations.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { gguf } from "@huggingface/gguf";
import {
  getLlama,
  LlamaLogLevel,
  type ControlledEvaluateInputItem,
  type Llama,
  type LlamaModel,
  type Token,
} from "node-llama-cpp";
import * as torch from "../../src/torch/index.js";
import { loadCausalLM, type CausalLM } from "../../src/models/index.js";
import { ChatTokenizer, renderChat } from "../../src/tokenizer/index.js";
import { generateGreedy } from "../../src/generate/greedy.js";
import { f32ToF16Bits, quantizeQ8_0, writeGguf } from "../../src/export/gguf-file.js";
import { CLI, REPO, SHARED } from "../helpers.js";

const tmp = () => mkdtempSync(join(tmpdir(), "oasft-gguf-"));
const oasft = (...args: string[]) => {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 600_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
};
const PROMPTS = [
  "What is the capital of Italy?",
  "What is 23 + 19?",
  "How many minutes are in 4 hours?",
  "What is a meme, and what's the history behind this word?",
  "Can you recommend a good book?",
];

describe("the format's arithmetic, by hand", () => {
  test("binary16 rounds to nearest even, with subnormals, overflow and signed zero", () => {
    assert.equal(f32ToF16Bits(1), 0x3c00);
    assert.equal(f32ToF16Bits(-2), 0xc000);
    assert.equal(f32ToF16Bits(65504), 0x7bff);
    assert.equal(f32ToF16Bits(65520), 0x7c00, "halfway to 2^16 rounds up to infinity");
    assert.equal(f32ToF16Bits(2 ** -24), 0x0001, "the smallest subnormal");
    assert.equal(f32ToF16Bits(2 ** -25), 0x0000, "half of it ties to even: zero");
    assert.equal(f32ToF16Bits(3 * 2 ** -25), 0x0002, "1.5 units ties to even: 2");
    assert.equal(f32ToF16Bits(1 + 2 ** -11), 0x3c00, "a tie between 1 and the next binary16 goes to the even one");
    assert.equal(f32ToF16Bits(1 + 3 * 2 ** -11), 0x3c02);
    assert.equal(f32ToF16Bits(-0), 0x8000);
  });

  test("q8_0: d = max|x| / 127 in binary16, q = round(x / d) with halves away from zero", () => {
    // Block 1: x_j = j − 16 for j < 32, max |x| = 16 → d = 16/127, q_j = round((j − 16) · 127/16).
    // Block 2: all zero → d = 0, q = 0. Block 3: 127 at one place and ±0.5 steps of d elsewhere.
    const x = new Float32Array(96);
    for (let j = 0; j < 32; j++) x[j] = j - 16;
    x[64] = 127;
    x[65] = 2.5;
    x[66] = -2.5;
    x[67] = 0.4999;
    const q = quantizeQ8_0(x);
    assert.equal(q.length, 3 * 34);
    assert.equal(q.readUInt16LE(0), f32ToF16Bits(16 / 127));
    const expected1 = [
      -127, -119, -111, -103, -95, -87, -79, -71, -64, -56, -48, -40, -32, -24, -16, -8, 0, 8, 16, 24, 32, 40, 48, 56,
      64, 71, 79, 87, 95, 103, 111, 119,
    ];
    assert.deepEqual(
      [...q.subarray(2, 34)].map((b) => (b << 24) >> 24),
      expected1,
    );
    assert.equal(q.readUInt16LE(34), 0);
    assert.ok(q.subarray(36, 68).every((b) => b === 0));
    assert.equal(q.readUInt16LE(68), 0x3c00, "d = 1");
    assert.deepEqual(
      [...q.subarray(70, 74)].map((b) => (b << 24) >> 24),
      [127, 3, -3, 0],
    );
  });

  test("a failed write leaves neither the file nor its temporary behind; a missing folder is named", () => {
    const dir = tmp();
    const out = join(dir, "m.gguf");
    const tensor = (fail: boolean) => ({
      name: "t",
      shape: [4],
      type: "f32" as const,
      data: () => {
        if (fail) throw new Error("disk full");
        return new Uint8Array(16);
      },
    });
    assert.throws(
      () =>
        writeGguf(
          out,
          [["general.architecture", { type: "str", value: "x" }]],
          [tensor(false), { ...tensor(true), name: "u" }],
        ),
      /disk full/,
    );
    assert.deepEqual(readdirSync(dir), []);
    assert.throws(() => writeGguf(join(dir, "no/such/m.gguf"), [], []), /the folder .*no\/such does not exist/);
  });
});

describe("llama.cpp runs what oasft exports", () => {
  let llama: Llama;
  let work: string;
  let demo: string;
  const loaded: LlamaModel[] = [];

  before(async () => {
    llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
    work = tmp();
    demo = join(work, "demo");
    const r = oasft("demo", "--steps", "60", "--out", demo);
    assert.equal(r.code, 0, r.err);
  });
  after(async () => {
    for (const m of loaded) await m.dispose();
    await llama?.dispose();
  });

  const load = async (path: string) => {
    const m = await llama.loadModel({ modelPath: path });
    loaded.push(m);
    return m;
  };

  /** Greedy continuations, up to and including EOS (llama.cpp stops there), by oasft and by llama.cpp. */
  async function continuations(model: CausalLM, tok: ChatTokenizer, path: string, newTokens: number) {
    const lm = await load(path);
    const ctx = await lm.createContext({ contextSize: 512, threads: 2 });
    const rows: Array<{ ours: number[]; theirs: number[]; llamaTokens: number[]; prompt: number[] }> = [];
    for (const p of PROMPTS) {
      const text = renderChat([{ role: "user", content: p }], { eos: tok.eos, addGenerationPrompt: true });
      const prompt = await tok.encode(text);
      const out = torch.scope(() =>
        generateGreedy(model, {
          inputIds: torch.tensor([prompt], { dtype: "int64" }),
          maxNewTokens: newTokens,
        }).toNumbers(),
      );
      let ours = out.slice(prompt.length);
      const eos = ours.indexOf(tok.eosId);
      if (eos >= 0) ours = ours.slice(0, eos + 1);
      const seq = ctx.getSequence();
      const theirs: number[] = [];
      for await (const t of seq.evaluate(prompt as Token[], { temperature: 0 })) {
        theirs.push(t);
        if (theirs.length >= newTokens) break;
      }
      // llama.cpp ends the stream at EOS without yielding it.
      if (theirs.length < newTokens && ours.at(-1) === tok.eosId) theirs.push(tok.eosId);
      seq.dispose();
      rows.push({ ours, theirs, prompt, llamaTokens: lm.tokenize(text, true) as number[] });
    }
    await ctx.dispose();
    return rows;
  }

  test(
    "the demo BLOOM in f32: llama.cpp's greedy continuation of 5 OA prompts equals oasft's, token for token " +
      "(32 tokens)",
    async () => {
      const file = join(work, "demo-f32.gguf");
      const r = oasft("export", "gguf", "--model", demo, "--out", file);
      assert.equal(r.code, 0, r.err);
      const model = loadCausalLM(demo);
      const tok = ChatTokenizer.load(demo);
      try {
        for (const row of await continuations(model, tok, file, 32)) {
          assert.deepEqual(row.theirs, row.ours);
          assert.deepEqual(
            row.llamaTokens,
            row.prompt,
            "llama.cpp tokenizes the OA prompt as oasft does (special tokens parsed)",
          );
        }
      } finally {
        model.dispose();
      }
    },
  );

  test("f16 and q8_0: at least 4 of 5 prompts give oasft's first 16 tokens", async () => {
    const model = loadCausalLM(demo);
    const tok = ChatTokenizer.load(demo);
    try {
      for (const type of ["f16", "q8_0"]) {
        const file = join(work, `demo-${type}.gguf`);
        const r = oasft("export", "gguf", "--model", demo, "--out", file, "--type", type);
        assert.equal(r.code, 0, r.err);
        const rows = await continuations(model, tok, file, 16);
        const same = rows.filter((row) => JSON.stringify(row.theirs) === JSON.stringify(row.ours)).length;
        assert.ok(same >= 4, `${type}: ${same} of 5 prompts agree`);
      }
    } finally {
      model.dispose();
    }
  });

  test(
    "the metadata reads back (@huggingface/gguf): chat template, special ids, hyperparameters, " + "tensor types",
    async () => {
      const { metadata, tensorInfos } = await gguf(join(work, "demo-q8_0.gguf"), { allowLocalFile: true });
      const meta = metadata as unknown as Record<string, unknown>;
      const config = JSON.parse(readFileSync(join(demo, "config.json"), "utf8"));
      const tcfg = JSON.parse(readFileSync(join(demo, "tokenizer_config.json"), "utf8"));
      const tokJson = JSON.parse(readFileSync(join(demo, "tokenizer.json"), "utf8"));
      const idOf = (content: string) => tokJson.added_tokens.find((a: { content: string }) => a.content === content).id;
      assert.equal(meta["general.architecture"], "bloom");
      assert.equal(meta["general.file_type"], 7);
      assert.equal(meta["tokenizer.chat_template"], tcfg.chat_template);
      assert.equal(meta["tokenizer.ggml.eos_token_id"], idOf(tcfg.eos_token));
      assert.equal(meta["tokenizer.ggml.padding_token_id"], idOf(tcfg.pad_token));
      assert.equal(meta["tokenizer.ggml.model"], "gpt2");
      assert.equal((meta["tokenizer.ggml.tokens"] as string[]).length, config.vocab_size);
      const types = meta["tokenizer.ggml.token_type"] as number[];
      assert.equal(types[idOf("<|prompter|>")], 3, "OA's tags are control tokens");
      assert.equal(meta["bloom.block_count"], config.n_layer);
      assert.equal(meta["bloom.embedding_length"], config.hidden_size);
      assert.equal(meta["bloom.attention.head_count"], config.n_head);
      // As llama.cpp's converter: context_length is seq_length, else the hidden size; the tied output
      // projection is written as output.weight (older llama.cpp, ollama and LM Studio need it).
      assert.equal(meta["bloom.context_length"], config.seq_length ?? config.hidden_size);
      const output = tensorInfos.find((t) => t.name === "output.weight");
      const embd = tensorInfos.find((t) => t.name === "token_embd.weight");
      assert.ok(output && embd, "output.weight and token_embd.weight are both there");
      assert.deepEqual(output.shape.map(Number), embd.shape.map(Number));
      const type = (name: string) => tensorInfos.find((t) => t.name === name)?.dtype;
      assert.equal(type("blk.0.attn_qkv.weight"), 8, "matrices in q8_0");
      assert.equal(type("blk.0.attn_qkv.bias"), 0, "biases in f32");
      assert.equal(type("output_norm.weight"), 0, "norms in f32");
      assert.equal(
        tensorInfos
          .find((t) => t.name === "blk.0.attn_qkv.weight")
          ?.shape.map(Number)
          .join(),
        `${config.hidden_size},${3 * config.hidden_size}`,
        "dims innermost first",
      );
    },
  );

  for (const family of ["pythia", "llama", "llama3", "qwen2", "mistral", "qwen3", "gemma2"]) {
    test(
      `${family}: llama.cpp's next-token probabilities equal oasft's within 0.01 (the QKV and rotary ` + `layouts)`,
      async () => {
        // A wide init (std 0.3) makes attention peaked, so a wrong head or rotary layout moves the output.
        const dir = tmp();
        const cfg = {
          ...JSON.parse(readFileSync(join(REPO, `configs/${family}-tiny.json`), "utf8")),
          initializer_range: 0.3,
        };
        writeFileSync(join(dir, "config.json"), JSON.stringify(cfg));
        const init = oasft(
          "init",
          "--config",
          join(dir, "config.json"),
          "--tokenizer",
          join(SHARED, "data/tokenizers/oasst-tiny-bpe"),
          "--out",
          join(dir, "m"),
        );
        assert.equal(init.code, 0, init.err);
        const file = join(dir, "m.gguf");
        const r = oasft("export", "gguf", "--model", join(dir, "m"), "--out", file);
        assert.equal(r.code, 0, r.err);
        const model = loadCausalLM(join(dir, "m")).eval();
        const tok = ChatTokenizer.load(join(dir, "m"));
        try {
          const text = renderChat(
            [{ role: "user", content: "What is the capital of Italy? Tell me more about it, please." }],
            { eos: tok.eos, addGenerationPrompt: true },
          );
          const ids = await tok.encode(text);
          const lm = await load(file);
          const ctx = await lm.createContext({ contextSize: 256, threads: 2 });
          const input = ids.map((t, i): ControlledEvaluateInputItem =>
            i === ids.length - 1 ? [t as Token, { generateNext: { probabilities: true } }] : (t as Token),
          );
          const res = await ctx.getSequence().controlledEvaluate(input);
          const theirs = res.at(-1)!.next!.probabilities!;
          const ours = torch.scope(() =>
            torch.noGrad(() =>
              model
                .forward({ inputIds: torch.tensor([ids], { dtype: "int64" }), logits: "last" })
                .logits.view([-1])
                .softmax(-1)
                .toNumbers(),
            ),
          );
          const worst = ours.reduce((w, p, i) => Math.max(w, Math.abs(p - (theirs.get(i as Token) ?? 0))), 0);
          assert.ok(worst <= 0.01, `max |Δp| = ${worst}`);
          assert.ok(Math.max(...ours) > 0.05, "the distribution is peaked enough to tell layouts apart");
          await ctx.dispose();
        } finally {
          model.dispose();
        }
      },
    );
  }

  test("bad input: an unsupported --type, a missing output folder, an architecture variant llama.cpp lacks", () => {
    const t = oasft("export", "gguf", "--model", demo, "--out", join(work, "x.gguf"), "--type", "q4_0");
    assert.equal(t.code, 2);
    assert.match(t.err, /--type q4_0: expected one of f32, f16, q8_0/);
    const f = oasft("export", "gguf", "--model", demo, "--out", join(work, "missing/x.gguf"));
    assert.notEqual(f.code, 0);
    assert.match(f.err, /missing.*does not exist/);
    const dir = tmp();
    const cfg = {
      ...JSON.parse(readFileSync(join(REPO, "configs/bloom-tiny.json"), "utf8")),
      apply_residual_connection_post_layernorm: true,
    };
    writeFileSync(join(dir, "config.json"), JSON.stringify(cfg));
    assert.equal(
      oasft(
        "init",
        "--config",
        join(dir, "config.json"),
        "--tokenizer",
        join(SHARED, "data/tokenizers/oasst-tiny-bpe"),
        "--out",
        join(dir, "m"),
      ).code,
      0,
    );
    const v = oasft("export", "gguf", "--model", join(dir, "m"), "--out", join(dir, "m.gguf"));
    assert.notEqual(v.code, 0);
    assert.match(v.err, /apply_residual_connection_post_layernorm/);
    assert.ok(!existsSync(join(dir, "m.gguf")));
    assert.equal(v.err.trim().split("\n").length, 1, "a one-line error");
  });
});
