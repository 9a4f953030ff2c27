// Reward models against independent expectations: OA's ranking loss computed by hand, HF's
// sequence-classification layout, accumulation and resume invariants, and accuracy that rises.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import * as torch from "../../src/torch/index.js";
import "../../src/pref/index.js"; // registers the rm and dpo stages
import { loadCausalLM, saveCausalLM, saveRewardModel } from "../../src/models/index.js";
import { rankingLoss } from "../../src/pref/rm.js";
import { RewardScorer } from "../../src/pref/score.js";
import { buildServer } from "../../src/serve/server.js";
import { ChatTokenizer } from "../../src/tokenizer/index.js";
import type { ChatTurn } from "../../src/data/conversation.js";
import { composeConfig } from "../../src/sft/config.js";
import { train } from "../../src/train/trainer.js";
import { CLI, GOLDEN, GOLDEN_MODELS, SHARED, initTinyModel } from "../helpers.js";

const DATA = join(SHARED, "data");
const tmp = () => mkdtempSync(join(tmpdir(), "oasft-rm-"));

describe("the ranking loss", () => {
  test("OA's RMLoss by hand: all ordered pairs per group, the L2 term, the mean over groups", () => {
    const loss = (r: number[], sizes: number[], l2: number) =>
      torch.scope(() => rankingLoss(torch.tensor(r, { dtype: "float32" }), sizes, l2));
    // Rewards 2 > 1 > 0: pairs with d = 1, 2, 1; mean of log(1 + e^−d) = 0.25115046202647273
    assert.ok(Math.abs(loss([2, 1, 0], [3], 0).loss.item() - 0.25115046202647273) < 1e-6);
    // + 0.001 · ½ (r_i² + r_j²) per pair: 0.2528171286931394
    const one = loss([2, 1, 0], [3], 0.001);
    assert.ok(Math.abs(one.loss.item() - 0.2528171286931394) < 1e-6);
    assert.equal(one.accuracy, 1);
    // A second group ranked the wrong way (0 < 1): log(1 + e) + 0.0005; the batch loss is the mean of the two.
    const two = loss([2, 1, 0, 0, 1], [3, 2], 0.001);
    assert.ok(Math.abs(two.loss.item() - 0.783289408105681) < 1e-6);
    assert.equal(two.accuracy, 0.5);
  });
});

describe("reward model training", () => {
  const base = initTinyModel(join(tmp(), "base"));
  const args = (out: string, extra: string[] = []) => [
    "--cache_dir",
    DATA,
    "--model_name",
    base,
    "--output_dir",
    out,
    "--dtype",
    "fp32",
    "--stage",
    "rm",
    "--datasets",
    "[{oasft_demo: {count: 160, val_split: 0.1}}]",
    "--per_device_train_batch_size",
    "4",
    "--gradient_accumulation_steps",
    "1",
    "--learning_rate",
    "1e-3",
    "--warmup_steps",
    "1",
    "--lr_scheduler_type",
    "constant",
    "--eval_steps",
    "1000",
    "--logging_steps",
    "1",
    "--max_length",
    "96",
    ...extra,
  ];
  const run = (out: string, extra: string[] = []) =>
    train(composeConfig(["defaults", "tiny-tokenizer"], args(out, extra)).config, { progress: false, print: () => {} });
  const log = (out: string) =>
    readFileSync(join(out, "log.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const losses = (out: string) =>
    log(out)
      .filter((r) => r.type === "train")
      .map((r) => r.loss as number);

  test(
    "2 × 2 accumulation = one batch of 4; resumed = uninterrupted; held-out pair accuracy rises well " + "above chance",
    async () => {
      const whole = tmp();
      await run(whole, ["--max_steps", "40", "--save_steps", "20", "--eval_steps", "40"]);
      const split = tmp();
      await run(split, [
        "--max_steps",
        "6",
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "2",
      ]);
      losses(split).forEach((l, i) =>
        assert.ok(Math.abs(l - losses(whole)[i]!) < 1e-5, `step ${i + 1}: ${l} vs ${losses(whole)[i]}`),
      );
      const resumed = tmp();
      await run(resumed, ["--max_steps", "20", "--save_steps", "20", "--eval_steps", "40"]);
      await run(resumed, [
        "--max_steps",
        "40",
        "--save_steps",
        "20",
        "--eval_steps",
        "40",
        "--resume_from_checkpoint",
        "latest",
      ]);
      assert.deepEqual(losses(resumed), losses(whole));
      const ev = log(whole).find((r) => r.type === "eval")!;
      const d = (ev.datasets as Record<string, { accuracy: number }>).oasft_demo!;
      assert.ok(d.accuracy >= 0.9, JSON.stringify(d));
      // The result is a sequence-classification folder.
      const config = JSON.parse(readFileSync(join(whole, "config.json"), "utf8")) as Record<string, unknown>;
      assert.deepEqual(config.architectures, ["BloomForSequenceClassification"]);
      // oasft eval --tasks rm scores it on a preference file of the same kind: answers above evasions.
      const pairs = join(tmp(), "pairs.jsonl");
      const lines = [
        ["What is the capital of France?", "The capital of France is Paris.", "I don't know."],
        ["What is 12 + 30?", "12 + 30 = 42.", "Ask someone else."],
        ["What is the capital of Japan?", "The capital of Japan is Tokyo.", "I cannot answer that."],
        ["What is 7 × 6?", "7 × 6 = 42.", "That is not something I can help with."],
      ].map(([prompt, chosen, rejected]) => JSON.stringify({ prompt, chosen, rejected }));
      writeFileSync(pairs, lines.join("\n") + "\n");
      const evalOut = tmp();
      const r = spawnSync(
        process.execPath,
        [CLI, "eval", "--model", whole, "--tasks", "rm", "--rm-data", pairs, "--out", evalOut],
        { encoding: "utf8" },
      );
      assert.equal(r.status, 0, r.stderr);
      const result = (
        JSON.parse(readFileSync(join(evalOut, "results.json"), "utf8")) as {
          results: Array<{ score: number; details: { pairs: number } }>;
        }
      ).results[0]!;
      assert.equal(result.details.pairs, 4);
      assert.ok(result.score >= 0.75, JSON.stringify(result));
      assert.equal(readFileSync(join(evalOut, "rm.jsonl"), "utf8").trim().split("\n").length, 4);
      const notRm = spawnSync(
        process.execPath,
        [CLI, "eval", "--model", base, "--tasks", "rm", "--rm-data", pairs, "--out", tmp()],
        { encoding: "utf8" },
      );
      assert.notEqual(notRm.status, 0);
      assert.match(notRm.stderr, /--tasks rm needs a reward model/);
      // Best-of-n in chat: the reply shown is the one with the highest reward.
      const chat = spawnSync(
        process.execPath,
        [
          CLI,
          "chat",
          "--model",
          base,
          "--reward-model",
          whole,
          "--best-of",
          "3",
          "--temperature",
          "1",
          "--seed",
          "5",
          "--max-new-tokens",
          "8",
        ],
        { encoding: "utf8", input: "What is 2 + 2?\n/exit\n" },
      );
      assert.equal(chat.status, 0, chat.stderr);
      const m = /\(best of 3: reward (-?[\d.]+); all: ([-\d., ]+)\)/.exec(chat.stdout);
      assert.ok(m, chat.stdout);
      assert.equal(Number(m[1]), Math.max(...m[2]!.split(", ").map(Number)));
      // Best-of-n through the server: chat completions ranked by the reward model.
      const scorer = RewardScorer.load(whole, { device: "cpu" });
      const policy = loadCausalLM(base);
      const { app } = buildServer({ model: policy, tokenizer: ChatTokenizer.load(base), modelId: "p", scorer });
      try {
        const messages = [{ role: "user", content: "What is 2 + 2?" }];
        const res = await app.inject({
          method: "POST",
          url: "/v1/chat/completions",
          payload: { messages, temperature: 1, seed: 5, max_tokens: 8, best_of: 3 },
        });
        assert.equal(res.statusCode, 200, res.body);
        const body = res.json() as {
          choices: Array<{ message: { content: string } }>;
          best_of: { scored_by: string; scores: number[]; chosen: number };
        };
        assert.equal(body.best_of.scored_by, "reward_model");
        assert.equal(body.best_of.chosen, body.best_of.scores.indexOf(Math.max(...body.best_of.scores)));
        // The chosen reply, scored on its own, has the reward the server ranked it by.
        const [alone] = await scorer.score(messages as ChatTurn[], [body.choices[0]!.message.content]);
        assert.ok(Math.abs(alone! - body.best_of.scores[body.best_of.chosen]!) < 1e-5);
      } finally {
        await app.close();
        policy.dispose();
        scorer.dispose();
      }
      for (const flags of [
        ["--best-of", "3", "--temperature", "1"],
        ["--best-of", "3", "--reward-model", whole],
      ]) {
        const bad = spawnSync(process.execPath, [CLI, "chat", "--model", base, ...flags], {
          encoding: "utf8",
          input: "",
        });
        assert.equal(bad.status, 2, flags.join(" "));
        assert.match(bad.stderr, /--best-of needs/);
      }
    },
  );

  test(
    "saved in HF's sequence-classification layout: no LM head, score.weight [1, h], one label, pad_token_id; " +
      "it loads back",
    () => {
      // The untied golden BLOOM: its lm_head.weight must not be written.
      const m = loadCausalLM(join(GOLDEN, GOLDEN_MODELS[1]!));
      const lmNames = new Set(m.namedParameters().map(([n]) => n));
      assert.ok(lmNames.has("lm_head.weight"));
      const head = m.scoreHead().weight;
      const dir = join(tmp(), "rm");
      saveRewardModel(m, dir, 3);
      const header = torch.readSafetensorsHeader(join(dir, "model.safetensors"));
      const names = new Set(header.entries.keys());
      const expected = new Set([...lmNames].filter((n) => n !== "lm_head.weight").concat("score.weight"));
      assert.deepEqual([...names].sort(), [...expected].sort());
      assert.deepEqual(header.entries.get("score.weight")!.shape, [1, m.config.hiddenSize]);
      const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
      assert.deepEqual(config.architectures, ["BloomForSequenceClassification"]);
      assert.deepEqual(config.id2label, { 0: "LABEL_0" });
      assert.equal(config.pad_token_id, 3);
      // Loaded back, the rewards are the same; as a plain causal LM the folder is refused (it has no head to generate
      // with).
      const x = torch.tensor(
        [
          [5, 17, 42, 99, 7],
          [8, 9, 10, 3, 3],
        ],
        { dtype: "int64" },
      );
      const rewards = (model: typeof m) =>
        torch.noGrad(() =>
          model
            .eval()
            .rewards(model.finalHidden({ inputIds: x }), [4, 2])
            .toNumbers(),
        );
      const back = loadCausalLM(dir, { scoreHead: true });
      assert.ok(maxDiff(rewards(back), rewards(m)) < 1e-6);
      assert.ok(maxDiff(back.scoreHead().weight.toNumbers(), head.toNumbers()) === 0);
      assert.throws(() => loadCausalLM(dir), /missing tensor lm_head\.weight|unexpected tensor score\.weight/);
      back.dispose();
      // A checkpoint (the causal-LM layout plus score.weight) resumes with its head.
      const ckpt = join(tmp(), "ckpt");
      saveCausalLM(m, ckpt);
      const again = loadCausalLM(ckpt, { scoreHead: true });
      assert.ok(maxDiff(rewards(again), rewards(m)) < 1e-6);
      again.dispose();
      m.dispose();
    },
  );

  test(
    "LoRA reward models: PEFT's SEQ_CLS adapter with the score head; resumed = uninterrupted; " + "it scores",
    async () => {
      const lora = ["--peft_model", "--learning_rate", "1e-2"];
      const whole = tmp();
      await run(whole, [...lora, "--max_steps", "30", "--save_steps", "15", "--eval_steps", "30"]);
      const resumed = tmp();
      await run(resumed, [...lora, "--max_steps", "15", "--save_steps", "15", "--eval_steps", "30"]);
      await run(resumed, [
        ...lora,
        "--max_steps",
        "30",
        "--save_steps",
        "15",
        "--eval_steps",
        "30",
        "--resume_from_checkpoint",
        "latest",
      ]);
      // The head is restored from the adapter on resume: the losses continue exactly.
      assert.deepEqual(losses(resumed), losses(whole));
      const ev = log(whole).find((r) => r.type === "eval")!;
      assert.ok((ev.datasets as Record<string, { accuracy: number }>).oasft_demo!.accuracy >= 0.8, JSON.stringify(ev));
      // PEFT's layout: task_type SEQ_CLS, the score head in modules_to_save, saved under PEFT's key, no base weight.
      const config = JSON.parse(readFileSync(join(whole, "adapter_config.json"), "utf8")) as Record<string, unknown>;
      assert.equal(config.task_type, "SEQ_CLS");
      assert.deepEqual(config.modules_to_save, ["score"]);
      const header = torch.readSafetensorsHeader(join(whole, "adapter_model.safetensors"));
      const names = [...header.entries.keys()];
      assert.deepEqual(header.entries.get("base_model.model.score.weight")?.shape, [1, 64]);
      assert.ok(
        names.every((n) => n === "base_model.model.score.weight" || /\.lora_[AB]\.weight$/.test(n)),
        names.join(),
      );
      // The adapter folder scores as a reward model: as --model (its base from adapter_config.json), as
      // --model BASE --adapter DIR, and in chat's best-of-n.
      const pairs = join(tmp(), "pairs.jsonl");
      writeFileSync(
        pairs,
        [
          ["What is 12 + 30?", "12 + 30 = 42.", "Ask someone else."],
          ["Name a colour.", "Blue.", "I cannot answer that."],
        ]
          .map(([prompt, chosen, rejected]) => JSON.stringify({ prompt, chosen, rejected }))
          .join("\n") + "\n",
      );
      const score = (flags: string[]) => {
        const out = tmp();
        const r = spawnSync(
          process.execPath,
          [CLI, "eval", ...flags, "--tasks", "rm", "--rm-data", pairs, "--out", out],
          { encoding: "utf8" },
        );
        assert.equal(r.status, 0, r.stderr);
        return readFileSync(join(out, "rm.jsonl"), "utf8");
      };
      assert.equal(score(["--model", whole]), score(["--model", base, "--adapter", whole]));
      const chat = spawnSync(
        process.execPath,
        [
          CLI,
          "chat",
          "--model",
          base,
          "--reward-model",
          whole,
          "--best-of",
          "2",
          "--temperature",
          "1",
          "--max-new-tokens",
          "4",
        ],
        { encoding: "utf8", input: "Hi?\n/exit\n" },
      );
      assert.equal(chat.status, 0, chat.stderr);
      assert.match(chat.stdout, /\(best of 2: reward/);
      // A causal LM is not a reward model.
      const plain = spawnSync(
        process.execPath,
        [CLI, "chat", "--model", base, "--reward-model", base, "--best-of", "2", "--temperature", "1"],
        { encoding: "utf8", input: "" },
      );
      assert.notEqual(plain.status, 0);
      assert.match(plain.stderr, /--reward-model .*: not a reward model/);
    },
  );
});

function maxDiff(a: number[], b: number[]): number {
  return Math.max(...a.map((v, i) => Math.abs(v - b[i]!)));
}
