// Dataset loaders on the real files in ../shared/data, the hub cache layout, splits and caps.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test, describe } from "node:test";
import { gzipSync } from "node:zlib";
import { parquetWriteBuffer } from "hyparquet-writer";
import { loadDatasetMix, epochIndices, type DatasetEntry } from "../../src/data/mix.js";
import { checkConversation, type Conversation } from "../../src/data/conversation.js";
import { TRANSLATION_PROMPTS } from "../../src/data/datasets/translation.js";
import { SHARED } from "../helpers.js";

const DATA = join(SHARED, "data");
const tmp = () => mkdtempSync(join(tmpdir(), "oasft-data-"));
const load = (entries: DatasetEntry[], seed = 1, cacheDir = DATA) =>
  loadDatasetMix(entries, { seed, cacheDir, formatVersion: "head" });
const one = (name: string, options: Record<string, unknown> = {}) => [{ name, options }];
const firstTexts = (cs: Conversation[]) => cs.map((c) => c.messages[0]!.text);

describe("oasst_export", () => {
  test(
    "every leaf thread of the 100 real trees (538; 17 with deleted/synthetic messages dropped), split " + "by tree",
    async () => {
      const [d] = await load(one("oasst_export", { input_file_path: "oasst/en_100_tree.jsonl", val_split: 0.05 }));
      assert.equal(d!.train.length + d!.val.length, 538);
      assert.deepEqual(d!.dropped, { thread_deleted_or_synthetic: 17 });
      for (const c of [...d!.train, ...d!.val]) {
        checkConversation(c, "thread");
        assert.equal(c.messages.at(-1)!.role, "assistant");
      }
      // Threads of one tree share its root prompt: no root appears on both sides of the split.
      const trainRoots = new Set(firstTexts(d!.train));
      assert.ok(firstTexts(d!.val).every((t) => !trainRoots.has(t)));
      assert.equal(new Set(firstTexts(d!.val)).size, 5, "5 of 100 trees held out");
      assert.equal(
        d!.train.reduce((n, c) => n + c.messages.length, 0) + d!.val.reduce((n, c) => n + c.messages.length, 0),
        1792,
      );
    },
  );

  test("the split is deterministic for a seed and changes with it", async () => {
    const opts = { input_file_path: "oasst/en_100_tree.jsonl", val_split: 0.05 };
    const [a] = await load(one("oasst_export", opts), 7);
    const [b] = await load(one("oasst_export", opts), 7);
    const [c] = await load(one("oasst_export", opts), 8);
    assert.deepEqual(firstTexts(a!.val), firstTexts(b!.val));
    assert.notDeepEqual(firstTexts(a!.val), firstTexts(c!.val));
  });

  test(
    "top_k: 1 keeps the threads of rank-0 replies only (98), the root-message file and .gz read " + "the same",
    async () => {
      const [k] = await load(
        one("oasst_export", { input_file_path: "oasst/en_100_tree.jsonl", top_k: 1, val_split: 0 }),
      );
      assert.equal(k!.train.length, 98);
      const [m] = await load(one("oasst_export", { input_file_path: "oasst/en_100_message.jsonl", val_split: 0 }));
      assert.equal(m!.train.length, 538);
      const dir = tmp();
      writeFileSync(join(dir, "trees.jsonl.gz"), gzipSync(readFileSync(join(DATA, "oasst/en_100_tree.jsonl"))));
      const [g] = await load(
        one("oasst_export", { input_file_path: "trees.jsonl.gz", val_split: 0, lang: "en,de" }),
        1,
        dir,
      );
      assert.equal(g!.train.length, 538);
      const [none] = await load(
        one("oasst_export", { input_file_path: "trees.jsonl.gz", val_split: 0, lang: "de" }),
        1,
        dir,
      );
      assert.deepEqual(none!.dropped, { tree_lang: 100 });
    },
  );

  test("hub oasst1 rows (flat messages) from a local hub cache rebuild the same threads, offline", async () => {
    // Flatten the real trees into oasst1's row format inside the hub cache layout.
    const rows: string[] = [];
    for (const line of readFileSync(join(DATA, "oasst/en_100_tree.jsonl"), "utf8").split("\n").filter(Boolean)) {
      const tree = JSON.parse(line);
      const walk = (m: Record<string, unknown>, parent: string | null) => {
        // The sample has no labels; give assistant rows oasst1's parallel-list labels to check their conversion.
        const { replies, ...rest } = m as { replies?: Record<string, unknown>[] };
        const lab = m.role === "assistant" ? { name: ["quality", "humor"], value: [0.75, 0.25], count: [3, 3] } : null;
        rows.push(
          JSON.stringify({
            ...rest,
            parent_id: parent,
            message_tree_id: tree.message_tree_id,
            tree_state: tree.tree_state,
            labels: lab,
          }),
        );
        for (const r of replies ?? []) walk(r, m.message_id as string);
      };
      walk(tree.prompt, null);
    }
    const cache = tmp();
    const repo = join(cache, "datasets--OpenAssistant--oasst1");
    mkdirSync(join(repo, "refs"), { recursive: true });
    mkdirSync(join(repo, "snapshots/0123abcd/data"), { recursive: true });
    writeFileSync(join(repo, "refs/main"), "0123abcd");
    writeFileSync(join(repo, "snapshots/0123abcd/data/train.jsonl"), rows.join("\n") + "\n");
    const saved = { cache: process.env.HF_HUB_CACHE, offline: process.env.HF_HUB_OFFLINE };
    process.env.HF_HUB_CACHE = cache;
    process.env.HF_HUB_OFFLINE = "1";
    try {
      const [d] = await load(one("oasst_export", { val_split: 0 }));
      assert.equal(d!.train.length, 538);
      assert.ok(
        d!.train.every((c) => c.messages[1]!.quality === 0.75 && c.messages[1]!.humor === 0.25),
        "labels become utterance properties",
      );
      await assert.rejects(
        load(one("oasst_export", { val_split: 0, hf_dataset_name: "nobody/missing" })),
        /not in the hub cache.*HF_HUB_OFFLINE/,
      );
    } finally {
      for (const [k, v] of [
        ["HF_HUB_CACHE", saved.cache],
        ["HF_HUB_OFFLINE", saved.offline],
      ] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  test("a malformed line names the file, the line and the field", async () => {
    const dir = tmp();
    const good = readFileSync(join(DATA, "oasst/en_100_tree.jsonl"), "utf8").split("\n")[0]!;
    writeFileSync(
      join(dir, "bad.jsonl"),
      `${good}\n${good}\n{"message_tree_id": "x", "prompt": {"role": "prompter"}\n`,
    );
    await assert.rejects(
      load(one("oasst_export", { input_file_path: "bad.jsonl" }), 1, dir),
      /bad\.jsonl:3: not valid JSON/,
    );
    writeFileSync(
      join(dir, "bad2.jsonl"),
      `${good}\n{"message_tree_id": "x", "tree_state": "ready_for_export", "prompt": {"text": "hi", "role": "user"}}\n`,
    );
    await assert.rejects(
      load(one("oasst_export", { input_file_path: "bad2.jsonl" }), 1, dir),
      /bad2\.jsonl:2: prompt\.role: expected "prompter" or "assistant", got "user"/,
    );
  });
});

describe("the card's other datasets", () => {
  test(
    "dolly15k (Databricks JSONL): 19 records, citations cleaned from the context, context kept for the " + "system tag",
    async () => {
      const [d] = await load(one("dolly15k", { input_file_path: "dolly/databricks-dolly-15k.jsonl", val_split: 0.05 }));
      assert.equal(d!.train.length + d!.val.length, 19);
      assert.equal(d!.val.length, 1, "ceil(0.05 · 19) = 1");
      const withContext = [...d!.train, ...d!.val].filter((c) => c.messages[1]!.context);
      assert.ok(withContext.length >= 5);
      for (const c of withContext) {
        assert.doesNotMatch(c.messages[1]!.context!, /\[\d+\]/);
        assert.equal(c.legacyProperties!.context, c.messages[1]!.context);
      }
    },
  );

  test(
    "dolly15k from OA's hub copy (parquet, INSTRUCTION/RESPONSE) in the hub cache; the word filter drops " +
      "and counts",
    async () => {
      const lines = readFileSync(join(DATA, "dolly/databricks-dolly-15k.jsonl"), "utf8")
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l));
      const instructions = lines.map((r) => r.instruction as string);
      const responses = lines.map((r, i) =>
        i === 0 ? "As an AI language model, I cannot answer." : (r.response as string),
      );
      const buf = parquetWriteBuffer({
        columnData: [
          { name: "INSTRUCTION", data: instructions, type: "STRING" },
          { name: "RESPONSE", data: responses, type: "STRING" },
        ],
      });
      const cache = tmp();
      const snap = join(cache, "datasets--OllieStanley--oa_dolly_15k/snapshots/feedbeef/data");
      mkdirSync(snap, { recursive: true });
      mkdirSync(join(cache, "datasets--OllieStanley--oa_dolly_15k/refs"));
      writeFileSync(join(cache, "datasets--OllieStanley--oa_dolly_15k/refs/main"), "feedbeef\n");
      writeFileSync(join(snap, "train-00000-of-00001.parquet"), Buffer.from(buf));
      process.env.HF_HUB_CACHE = cache;
      try {
        const [d] = await load(one("dolly15k", { val_split: 0 }));
        assert.equal(d!.train.length, 18);
        assert.deepEqual(d!.dropped, { word_filter: 1 });
        assert.equal(d!.train[0]!.messages[0]!.text, instructions[1]);
        const [may] = await load(one("dolly15k", { val_split: 0, format_version: "may2023" }));
        assert.equal(may!.train.length, 19, "May-2023 had no word filter");
      } finally {
        delete process.env.HF_HUB_CACHE;
      }
    },
  );

  test("gsm8k from its folder: train.jsonl for training, test.jsonl as validation", async () => {
    const [d] = await load(one("gsm8k", { input_file_path: "gsm8k" }));
    assert.equal(d!.train.length, 500);
    assert.equal(d!.val.length, 200);
    assert.match(d!.train[0]!.messages[1]!.text, /#### \d+$/);
  });

  test("vicuna (ShareGPT): 500 conversations of 1–3 turns, roles alternating", async () => {
    const [d] = await load(one("vicuna", { input_file_path: "sharegpt/dummy_conversation.json", val_split: 0 }));
    assert.equal(d!.train.length, 500);
    const turns = d!.train.map((c) => c.messages.length / 2).sort();
    assert.deepEqual([...new Set(turns)], [1, 2, 3]);
    d!.train.forEach((c, i) => checkConversation(c, `conversation ${i}`));
  });

  test("wmt2019_zh-en from WMT22's aligned text files: every pair, both directions, OA's templates", async () => {
    const files = ["wmt22/sources/generaltest2022.zh-en.src.zh", "wmt22/references/generaltest2022.zh-en.ref.A.en"];
    const [d] = await load(one("wmt2019_zh-en", { input_file_path: files, val_split: 0 }));
    assert.equal(d!.train.length, 1875);
    const zh = readFileSync(join(DATA, files[0]!), "utf8").split("\n");
    const prompts = d!.train.map((c) => c.messages.at(-2)!.text);
    const toEnglish = prompts.filter((p) =>
      TRANSLATION_PROMPTS.en!.some(
        (t) => p === t.replace("{}", p.slice(t.indexOf("{}"), p.length - (t.length - t.indexOf("{}") - 2))),
      ),
    );
    assert.ok(toEnglish.length > 700 && toEnglish.length < 1200, `about half ask for English: ${toEnglish.length}`);
    const first = d!.train[0]!;
    assert.ok(first.messages[1]!.text === zh[0] || first.messages[0]!.text.includes(zh[0]!));
    const twoTurn = d!.train.filter((c) => c.messages.length === 4).length;
    assert.ok(twoTurn > 250 && twoTurn < 500, `~20% carry a neighbouring pair as history: ${twoTurn}`);
  });

  test("webgpt and joke read their published record formats", async () => {
    const dir = tmp();
    const comparison = (q: string, a0: string, a1: string, s0: number, s1: number) =>
      JSON.stringify({
        question: { full_text: q, dataset: "eli5" },
        quotes_0: {},
        answer_0: a0,
        tokens_0: [],
        score_0: s0,
        quotes_1: {},
        answer_1: a1,
        tokens_1: [],
        score_1: s1,
      });
    writeFileSync(
      join(dir, "webgpt.jsonl"),
      [
        comparison("Why is the sky blue?", "Rayleigh scattering [1].", "Because of the ocean.", 1, -1),
        comparison("Why is the sky blue?", "Scattering of light [2, 3] by air.", "Rayleigh scattering [1].", 0.5, 0),
        comparison("Empty?", "", "x", 0, 0),
      ].join("\n"),
    );
    const [w] = await load(one("webgpt", { input_file_path: "webgpt.jsonl", val_split: 0 }), 1, dir);
    assert.equal(w!.train.length, 1);
    assert.equal(w!.train[0]!.messages[1]!.text, "Scattering of light  by air.");
    assert.deepEqual(w!.dropped, { empty_or_equal_answers: 1 });
    writeFileSync(join(dir, "joke_explaination.jsonl"), `{"joke": "A pun.", "explaination": "It plays on words."}\n`);
    const [j] = await load(one("joke", { val_split: 0 }), 1, dir);
    assert.deepEqual(
      j!.train[0]!.messages.map((m) => m.text),
      ["A pun.", "It plays on words."],
    );
  });

  test("messages JSONL: system message kept, bad roles named by line and field", async () => {
    const dir = tmp();
    writeFileSync(
      join(dir, "chats.jsonl"),
      [
        JSON.stringify({
          messages: [
            { role: "system", content: "Be brief." },
            { role: "user", content: "Hi" },
            { role: "assistant", content: "Hello!" },
          ],
        }),
        JSON.stringify({
          messages: [
            { role: "user", content: "Q" },
            { role: "assistant", content: "A" },
          ],
        }),
      ].join("\n"),
    );
    const [d] = await load(one("messages", { input_file_path: "chats.jsonl", val_split: 0 }), 1, dir);
    assert.equal(d!.train[0]!.systemMessage, "Be brief.");
    writeFileSync(
      join(dir, "bad.jsonl"),
      `${JSON.stringify({
        messages: [
          { role: "user", content: "Q" },
          { role: "bot", content: "A" },
        ],
      })}\n`,
    );
    await assert.rejects(
      load(one("messages", { input_file_path: "bad.jsonl" }), 1, dir),
      /bad\.jsonl:1: messages\[1\]\.role: expected "system", "user", "assistant" or "tool", got "bot"/,
    );
  });

  test(
    "user files: messages with tool turns, alpaca (JSON and gzipped JSONL), and bad records named by file, " +
      "line and field",
    async () => {
      const dir = tmp();
      const withTool = [
        { role: "user", content: "Weather in Rome?" },
        { role: "assistant", content: "Checking." },
        { role: "tool", content: '{"temp": 21}' },
        { role: "assistant", content: "21 °C." },
      ];
      writeFileSync(join(dir, "tool.jsonl"), JSON.stringify({ messages: withTool }) + "\n");
      const [m] = await load(one("messages", { input_file_path: "tool.jsonl", val_split: 0 }), 1, dir);
      // Kept whole for a model's own template; OA's format cannot hold it and says which message.
      assert.deepEqual(m!.train[0]!.chat, withTool);
      assert.match(m!.train[0]!.oaProblem!, /messages\[2\] is a tool message/);

      writeFileSync(
        join(dir, "alpaca.json"),
        JSON.stringify([
          { instruction: "Add the numbers.", input: "2 and 3", output: "5" },
          { instruction: "Name a colour.", input: "", output: "Blue.", system: "Be brief." },
        ]),
      );
      writeFileSync(
        join(dir, "alpaca2.jsonl.gz"),
        gzipSync(JSON.stringify({ instruction: "Say hi.", output: "Hi!" }) + "\n"),
      );
      const [a] = await load(
        one("alpaca", { input_file_path: ["alpaca.json", "alpaca2.jsonl.gz"], val_split: 0 }),
        1,
        dir,
      );
      const byReply = new Map(a!.train.map((c) => [c.messages[1]!.text, c]));
      assert.equal(byReply.get("5")!.messages[0]!.text, "Add the numbers.\n\n2 and 3");
      assert.equal(byReply.get("Blue.")!.messages[0]!.text, "Name a colour.");
      assert.equal(byReply.get("Blue.")!.systemMessage, "Be brief.");
      assert.equal(byReply.get("Hi!")!.messages[0]!.text, "Say hi.");

      const bad = async (name: string, file: string, body: string, pattern: RegExp) => {
        writeFileSync(join(dir, file), body);
        await assert.rejects(load(one(name, { input_file_path: file }), 1, dir), pattern);
      };
      const user = { role: "user", content: "Q" };
      await bad(
        "messages",
        "ends-on-user.jsonl",
        `${JSON.stringify({ messages: [user, { role: "assistant", content: "A" }] })}\n` +
          `${JSON.stringify({ messages: [user] })}\n`,
        /ends-on-user\.jsonl:2: messages: the conversation ends on a user message, not an assistant reply/,
      );
      await bad(
        "messages",
        "not-string.jsonl",
        `${JSON.stringify({ messages: [user, { role: "assistant", content: ["A"] }] })}\n`,
        /not-string\.jsonl:1: messages\[1\]\.content: expected a string/,
      );
      await bad(
        "alpaca",
        "no-output.jsonl",
        `${JSON.stringify({ instruction: "Q" })}\n`,
        /no-output\.jsonl:1: field 'output' is missing/,
      );
      await bad(
        "alpaca",
        "number.jsonl",
        `${JSON.stringify({ instruction: 3, output: "A" })}\n`,
        /number\.jsonl:1: field 'instruction': expected a string, got 3/,
      );
    },
  );
});

describe("the mix", () => {
  test("unknown datasets list the known ones; unknown options list the allowed ones", async () => {
    await assert.rejects(
      load(one("dolly15", {})),
      /unknown dataset 'dolly15'\. Did you mean: dolly15k\?.*Known: .*gsm8k/,
    );
    await assert.rejects(
      load(one("gsm8k", { input_file_path: "gsm8k", val_splt: 0.1 })),
      /dataset gsm8k: unknown option 'val_splt'\. Known options: .*val_split/,
    );
  });

  test("max_train_set and max_val_set cap at random without replacement, and count what they drop", async () => {
    const [d] = await load(one("gsm8k", { input_file_path: "gsm8k", max_train_set: 120, max_val_set: 30 }));
    assert.equal(d!.train.length, 120);
    assert.equal(d!.val.length, 30);
    assert.deepEqual(d!.dropped, { max_val_set: 170, max_train_set: 380 });
    assert.equal(new Set(firstTexts(d!.train)).size, 120, "no sample twice");
    const [again] = await load(one("gsm8k", { input_file_path: "gsm8k", max_train_set: 120, max_val_set: 30 }));
    assert.deepEqual(firstTexts(again!.train), firstTexts(d!.train));
  });

  test("fraction gives a fresh subset each epoch; a repeated entry is added again under its own name", async () => {
    const mix = await load([
      { name: "gsm8k", options: { input_file_path: "gsm8k", fraction: 0.1 } },
      { name: "gsm8k", options: { input_file_path: "gsm8k", size: 20 } },
    ]);
    assert.deepEqual(
      mix.map((d) => d.name),
      ["gsm8k", "gsm8k#2"],
    );
    const e0 = epochIndices(mix, 0, 1);
    const e1 = epochIndices(mix, 1, 1);
    assert.equal(e0.filter(([d]) => d === 0).length, 50);
    assert.equal(e0.filter(([d]) => d === 1).length, 20);
    assert.notDeepEqual(
      e0
        .filter(([d]) => d === 0)
        .map(([, i]) => i)
        .sort(),
      e1
        .filter(([d]) => d === 0)
        .map(([, i]) => i)
        .sort(),
    );
  });
});

test("a truncated .gz and bytes that are not UTF-8 are errors naming the file (and the line)", async () => {
  const { readJsonl } = await import("../../src/data/io.js");
  const dir = mkdtempSync(join(tmpdir(), "oasft-io-"));
  const lines = Array.from({ length: 50 }, (_, i) => JSON.stringify({ INSTRUCTION: `q${i}`, RESPONSE: `a${i}` })).join(
    "\n",
  );
  const gz = gzipSync(Buffer.from(lines));
  const cut = join(dir, "cut.jsonl.gz");
  writeFileSync(cut, gz.subarray(0, gz.length - 20));
  assert.throws(() => readJsonl(cut), new RegExp(`${cut}: not a complete gzip file .*was the download cut short\\?`));
  const latin1 = join(dir, "latin1.jsonl");
  writeFileSync(
    latin1,
    Buffer.concat([Buffer.from('{"text": "ok"}\n{"text": "caf'), Buffer.from([0xe9]), Buffer.from('"}\n')]),
  );
  assert.throws(() => readJsonl(latin1), new RegExp(`${latin1}:2: bytes that are not UTF-8 \\(at byte 28\\)`));
});
