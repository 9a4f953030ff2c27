// The OA prompt format and label masks, token by token, on real samples and OA's own tokenizer.
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, test } from "node:test";
import { loadDatasetMix } from "../../src/data/mix.js";
import { Rng } from "../../src/data/rng.js";
import { ChatTokenizer } from "../../src/tokenizer/index.js";
import { formatConversation, formatPrompt, type FormatOptions } from "../../src/sft/format.js";
import { labelMaskFor, lintSample, truncateSample, withPrefix } from "../../src/sft/encode.js";
import { padBatch } from "../../src/sft/collate.js";
import { SHARED } from "../helpers.js";

const DATA = join(SHARED, "data");
const tok = ChatTokenizer.load(join(DATA, "tokenizers/oasst-tiny-bpe"), { family: "pythia" });
const EOS = "<|endoftext|>";
const fmt = (over: Partial<FormatOptions> = {}): FormatOptions => ({
  eos: EOS,
  formatVersion: "head",
  useSystemTag: false,
  systemPropertyDropout: 0.5,
  systemAddLength: false,
  rng: new Rng(1),
  ...over,
});
const mask = (ids: number[], over: Partial<Parameters<typeof labelMaskFor>[2]> = {}) =>
  labelMaskFor(ids, tok, { formatVersion: "head", labelMasking: true, trainOnPreamble: false, ...over });

describe("formatting", () => {
  test("eos after every message, no separators; the inference prompt ends with <|assistant|>", () => {
    const c = {
      messages: [
        { role: "prompter" as const, text: "Hi" },
        { role: "assistant" as const, text: "Hello!" },
        { role: "prompter" as const, text: "More?" },
        { role: "assistant" as const, text: "Sure." },
      ],
    };
    assert.equal(
      formatConversation(c, fmt()).join(""),
      `<|prompter|>Hi${EOS}<|assistant|>Hello!${EOS}<|prompter|>More?${EOS}<|assistant|>Sure.${EOS}`,
    );
    assert.equal(formatPrompt([{ role: "prompter", text: "Q" }], "</s>"), "<|prompter|>Q</s><|assistant|>");
    const withSystem = { ...c, systemMessage: "Be brief." };
    assert.ok(formatConversation(withSystem, fmt()).join("").startsWith(`<|system|>Be brief.${EOS}<|prompter|>Hi`));
  });

  test(
    "system tag (HEAD): the reply's properties between prompt and reply, context last; May-2023: a " + "leading tag",
    () => {
      const c = {
        messages: [
          { role: "prompter" as const, text: "Q" },
          {
            role: "assistant" as const,
            text: "one two three four five six",
            lang: "en",
            quality: 0.75,
            context: "ctx",
          },
        ],
        legacyProperties: { context: "ctx" },
      };
      const tagged = formatConversation(
        c,
        fmt({ useSystemTag: true, systemPropertyDropout: 0, systemAddLength: true }),
      ).join("");
      const m = /^<\|prompter\|>Q<\|endoftext\|><\|system\|>([\s\S]*)\n<\|endoftext\|><\|assistant\|>/.exec(tagged);
      assert.ok(m, tagged);
      const lines = m![1]!.split("\n");
      assert.deepEqual([...lines].sort(), ["context: ctx", "lang: en", "length: 2", "quality: 0.8"].sort());
      assert.equal(lines.at(-1), "context: ctx");
      assert.equal(
        formatConversation(c, fmt({ useSystemTag: true, systemPropertyDropout: 1 })).join(""),
        `<|prompter|>Q${EOS}<|assistant|>${c.messages[1]!.text}${EOS}`,
      );
      assert.equal(
        formatConversation(c, fmt()).join("").includes("<|system|>"),
        false,
        "HEAD without use_system_tag drops the context",
      );
      const starts = Array.from({ length: 200 }, (_, i) =>
        formatConversation(c, fmt({ formatVersion: "may2023", rng: new Rng(i) }))
          .join("")
          .startsWith(`<|system|>context: ctx\n${EOS}<|prompter|>Q`),
      );
      const share = starts.filter(Boolean).length / starts.length;
      assert.ok(share > 0.35 && share < 0.65, `May-2023 keeps each field with p=0.5: ${share}`);
    },
  );
});

describe("label masks", () => {
  test("OA's reference case: the trained tokens decode to '<|assistant|>Dummy Answer.'", async () => {
    const ids = await tok.encode(`<|prompter|>Dummy Question?${EOS}<|assistant|>Dummy Answer.${EOS}`);
    const s = truncateSample(ids, mask(ids), { maxLength: 100, randomOffsetProbability: 0 }, new Rng(0));
    assert.equal(
      await tok.decode(
        s.inputIds.filter((_, t) => s.labelMask[t]),
        false,
      ),
      "<|assistant|>Dummy Answer.",
    );
    assert.equal(s.labelMask.at(-1), false, "the last position is never trained");
  });

  test(
    "token by token on real multi-turn oasst threads: exactly the assistant messages (role token and eos " +
      "included)",
    async () => {
      const [d] = await loadDatasetMix(
        [{ name: "oasst_export", options: { input_file_path: "oasst/en_100_tree.jsonl", val_split: 0 } }],
        { seed: 1, cacheDir: DATA, formatVersion: "head" },
      );
      const multi = d!.train.filter((c) => c.messages.length >= 4).slice(0, 25);
      assert.equal(multi.length, 25);
      for (const c of multi) {
        const parts = formatConversation(c, fmt());
        const ids = await tok.encode(parts.join(""));
        // Independent expectation: each message tokenised on its own (role tokens split the text anyway).
        const expected: boolean[] = [];
        for (const [i, p] of parts.entries()) for (const _ of await tok.encode(p)) expected.push(i % 2 === 1);
        assert.equal(ids.length, expected.length);
        assert.deepEqual(mask(ids), expected);
        assert.deepEqual(lintSample(ids, mask(ids), tok, "head"), []);
      }
    },
  );

  test(
    "tokens before the first role token: untrained by default, trained with train_on_preamble (OA's −1 % " + "2 == 1)",
    async () => {
      const ids = await tok.encode(`<|system|>Be brief.${EOS}<|prompter|>Q${EOS}<|assistant|>A${EOS}`);
      const preamble = ids.indexOf(tok.prompterId);
      assert.ok(preamble > 2);
      assert.ok(
        mask(ids)
          .slice(0, preamble)
          .every((m) => !m),
      );
      assert.ok(
        mask(ids, { trainOnPreamble: true })
          .slice(0, preamble)
          .every((m) => m),
      );
    },
  );

  test("May-2023 masking counts <|system|> as message 0: assistant messages are the even indices > 0", async () => {
    const ids = await tok.encode(`<|system|>lang: en\n${EOS}<|prompter|>Q${EOS}<|assistant|>A${EOS}`);
    const m = mask(ids, { formatVersion: "may2023" });
    const a = ids.indexOf(tok.assistantId);
    assert.deepEqual(
      m,
      ids.map((_, t) => t >= a),
    );
  });

  test(
    "label_masking: false trains everything; lint flags samples with nothing trained or an untrained " + "reply eos",
    async () => {
      const ids = await tok.encode(`<|prompter|>Q${EOS}<|assistant|>A${EOS}`);
      assert.ok(mask(ids, { labelMasking: false }).every(Boolean));
      const none = ids.map(() => false);
      assert.deepEqual(
        lintSample(ids, none, tok, "head")
          .map((p) => p.rule)
          .sort(),
        ["eos_not_trained", "no_trained_token"],
      );
      const noAssistant = await tok.encode(`<|prompter|>Q${EOS}`);
      assert.ok(lintSample(noAssistant, mask(noAssistant), tok, "head").some((p) => p.rule === "no_assistant_token"));
    },
  );
});

describe("truncation, prefix, padding", () => {
  const ids = Array.from({ length: 100 }, (_, i) => 1000 + i);
  const full = ids.map((_, i) => i % 3 === 0);

  test("a random window keeps the whole-sequence mask aligned; offsets span [0, L − max] inclusive", () => {
    const rng = new Rng(3);
    const starts = new Set<number>();
    for (let k = 0; k < 3000; k++) {
      const s = truncateSample(ids, full, { maxLength: 90, randomOffsetProbability: 1 }, rng);
      const start = s.inputIds[0]! - 1000;
      starts.add(start);
      assert.equal(s.inputIds.length, 90);
      s.labelMask.slice(0, -1).forEach((m, t) => assert.equal(m, full[start + t]));
      assert.equal(s.labelMask.at(-1), false);
    }
    assert.deepEqual(
      [...starts].sort((a, b) => a - b),
      Array.from({ length: 11 }, (_, i) => i),
    );
  });

  test("head truncation with probability 1 − p; the system prefix is untrained and fits in max_length", () => {
    const heads = Array.from(
      { length: 1000 },
      (_, k) =>
        truncateSample(ids, full, { maxLength: 50, randomOffsetProbability: 0.8 }, new Rng(k)).inputIds[0] === 1000,
    );
    const share = heads.filter(Boolean).length / heads.length;
    assert.ok(share > 0.15 && share < 0.3, `head share ${share} (0.2 + 0.8/51)`);
    const prefixed = withPrefix(
      truncateSample(ids, full, { maxLength: 40, randomOffsetProbability: 0 }, new Rng(0)),
      [7, 8, 9],
    );
    assert.equal(prefixed.inputIds.length, 43);
    assert.deepEqual(prefixed.labelMask.slice(0, 3), [false, false, false]);
  });

  test("right padding to a multiple of 16 with shifted labels (−100 where not trained)", () => {
    const b = padBatch(
      [
        { inputIds: [5, 6, 7], labelMask: [false, true, false] },
        { inputIds: Array(17).fill(4), labelMask: Array(17).fill(true) },
      ],
      1,
    );
    assert.deepEqual(
      b.inputIds.map((r) => r.length),
      [32, 32],
    );
    assert.deepEqual(b.inputIds[0]!.slice(0, 4), [5, 6, 7, 1]);
    assert.deepEqual(b.attentionMask[0]!.slice(0, 4), [1, 1, 1, 0]);
    assert.deepEqual(b.labels[0]!.slice(0, 4), [-100, -100, 7, -100]);
    assert.equal(b.tokens, 20);
  });
});
