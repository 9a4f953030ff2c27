// DPO and preference data against independent expectations: hand-computed losses, ln 2 at step 0,
// finite differences, accumulation and resume invariants, OA's reward-model groups read by a separate
// Python script, and the bad input of TRL's file shapes.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import * as torch from "../../src/torch/index.js";
import "../../src/pref/index.js"; // registers the rm and dpo stages
import { oasstExport } from "../../src/data/datasets/oasst.js";
import { preferencePairs } from "../../src/data/datasets/preference.js";
import { Rng } from "../../src/data/rng.js";
import { loadCausalLM } from "../../src/models/index.js";
import { dpoBatchLoss, dpoLoss, dpoObjective, unitBatch } from "../../src/pref/dpo.js";
import { preparePrefData } from "../../src/pref/data.js";
import { composeConfig } from "../../src/sft/config.js";
import { loadConfigTokenizer } from "../../src/sft/data.js";
import { train } from "../../src/train/trainer.js";
import { CLI, SHARED, initTinyModel } from "../helpers.js";

const DATA = join(SHARED, "data");
const tmp = () => mkdtempSync(join(tmpdir(), "oasft-dpo-"));
const ctx = (name: string) => ({ name, cacheDir: DATA, rng: new Rng(1, "t"), formatVersion: "head" as const });

describe("the DPO loss", () => {
  test("hand-computed values: ln 2 and zero rewards when policy = reference; sigmoid, IPO and RPO cases", () => {
    const same = dpoLoss([{ policy: [-7, -9], reference: [-7, -9], tokens: [3, 4] }], {
      beta: 0.1,
      loss: "sigmoid",
      rpoAlpha: null,
    });
    assert.ok(Math.abs(same.loss - Math.LN2) < 1e-15);
    assert.deepEqual(
      [same.metrics["rewards/chosen"], same.metrics["rewards/rejected"], same.metrics["rewards/accuracy"]],
      [0, 0, 0],
    );
    const pair = {
      policy: [-10, -12] as [number, number],
      reference: [-11, -11] as [number, number],
      tokens: [2, 4] as [number, number],
    };
    // z = 0.1 · ((−10 + 11) − (−12 + 11)) = 0.2; −log σ(0.2) = log(1 + e^−0.2) = 0.598138869381592
    const s = dpoLoss([pair], { beta: 0.1, loss: "sigmoid", rpoAlpha: null });
    assert.ok(Math.abs(s.loss - 0.598138869381592) < 1e-12);
    // d/dπ_c = −β σ(−0.2) = −0.1 · 0.450166002687522
    assert.ok(Math.abs(s.grads[0]! + 0.0450166002687522) < 1e-12 && Math.abs(s.grads[1]! - 0.0450166002687522) < 1e-12);
    assert.ok(Math.abs(s.metrics["rewards/margin"]! - 0.2) < 1e-12);
    // IPO on per-token means: h = 1/2 − (−1/4) − 1/(2 · 0.1) = −4.25; h² = 18.0625
    assert.ok(Math.abs(dpoLoss([pair], { beta: 0.1, loss: "ipo", rpoAlpha: null }).loss - 18.0625) < 1e-12);
    // RPO adds α · the chosen reply's mean NLL: 0.5 · 10 / 2 = 2.5
    assert.ok(
      Math.abs(dpoLoss([pair], { beta: 0.1, loss: "sigmoid", rpoAlpha: 0.5 }).loss - (0.598138869381592 + 2.5)) < 1e-12,
    );
  });
});

describe("preference data", () => {
  test("oasst groups equal OA's reward-model rule, read by a separate Python script", async () => {
    const file = join(DATA, "oasst/en_100_tree.jsonl");
    // OA's oasst_dataset.py, mode "rm": threads ending on a prompter message with > 1 ranked replies,
    // no deleted/synthetic message in the thread, tree exported and reviewed, in English.
    const script = `
import json, sys
out = []
def visit(node, thread):
    thread = thread + [node]
    ranked = [r for r in node.get("replies") or [] if r["role"] == "assistant" and r.get("rank") is not None]
    clean = not any(m.get("deleted") or m.get("synthetic") for m in thread)
    if node["role"] == "prompter" and len(ranked) > 1 and clean:
        out.append([r["text"] for r in sorted(ranked, key=lambda r: r["rank"])])
    for r in node.get("replies") or []:
        visit(r, thread)
for line in open(sys.argv[1]):
    t = json.loads(line)
    p = t["prompt"]
    if t["tree_state"] == "ready_for_export" and p.get("review_result") and p.get("lang") == "en":
        visit(p, [])
print(json.dumps(out))
`;
    const py = spawnSync("python3", ["-c", script, file], { encoding: "utf8", maxBuffer: 64 << 20 });
    assert.equal(py.status, 0, py.stderr);
    const expected = JSON.parse(py.stdout) as string[][];
    const got = await oasstExport.loadRanked!({ input_file_path: file }, ctx("oasst_export"));
    assert.ok(expected.length > 50, `${expected.length} groups`);
    assert.deepEqual(
      got.groups.map((g) => g.candidates.map((c) => c.messages.at(-1)!.text)),
      expected,
    );
    // Each candidate is the thread so far, then its reply.
    for (const g of got.groups)
      assert.deepEqual(new Set(g.candidates.map((c) => JSON.stringify(c.messages.slice(0, -1)))).size, 1);
  });

  test("TRL's shapes (explicit prompt, conversational, implicit prompt, HH) and bad lines named", async () => {
    const dir = tmp();
    const file = join(dir, "pairs.jsonl");
    const lines = [
      { prompt: "Hi?", chosen: "Hello!", rejected: "Go away." },
      {
        prompt: [
          { role: "system", content: "Be kind." },
          { role: "user", content: "Hi?" },
        ],
        chosen: [{ role: "assistant", content: "Hello!" }],
        rejected: [{ role: "assistant", content: "No." }],
      },
      {
        chosen: [
          { role: "user", content: "Hi?" },
          { role: "assistant", content: "Hello!" },
        ],
        rejected: [
          { role: "user", content: "Hi?" },
          { role: "assistant", content: "No." },
        ],
      },
      { chosen: "\n\nHuman: Hi?\n\nAssistant: Hello!", rejected: "\n\nHuman: Hi?\n\nAssistant: No." },
    ];
    writeFileSync(file, lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
    const got = await preferencePairs.loadRanked!({ input_file_path: file }, ctx("preference_pairs"));
    assert.deepEqual(
      got.groups.map((g) => g.candidates.map((c) => c.messages.map((m) => m.text))),
      [
        [
          ["Hi?", "Hello!"],
          ["Hi?", "Go away."],
        ],
        [
          ["Hi?", "Hello!"],
          ["Hi?", "No."],
        ],
        [
          ["Hi?", "Hello!"],
          ["Hi?", "No."],
        ],
        [
          ["Hi?", "Hello!"],
          ["Hi?", "No."],
        ],
      ],
    );
    assert.equal(got.groups[1]!.candidates[0]!.systemMessage, "Be kind.");
    const bad: Array<[unknown, RegExp]> = [
      [{ prompt: "Hi?", chosen: "Same.", rejected: "Same." }, /bad\.jsonl:1: chosen and rejected are the same reply/],
      [{ prompt: "Hi?", chosen: "  ", rejected: "No." }, /bad\.jsonl:1: chosen: the reply is empty/],
      [{ prompt: "Hi?", chosen: "Yes." }, /bad\.jsonl:1: missing field 'rejected'/],
      [
        {
          chosen: [
            { role: "user", content: "A" },
            { role: "assistant", content: "x" },
          ],
          rejected: [
            { role: "user", content: "B" },
            { role: "assistant", content: "y" },
          ],
        },
        /no common prompt/,
      ],
    ];
    for (const [line, re] of bad) {
      writeFileSync(join(dir, "bad.jsonl"), JSON.stringify(line) + "\n");
      await assert.rejects(
        preferencePairs.loadRanked!({ input_file_path: join(dir, "bad.jsonl") }, ctx("preference_pairs")),
        re,
      );
    }
  });
});

describe("DPO training", () => {
  // A tiny BLOOM with the test tokenizer's vocabulary (so no rows are grown: the float64 copy fits the data).
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
    "dpo",
    "--datasets",
    "[{oasft_demo: {count: 120, val_split: 0.1}}]",
    "--per_device_train_batch_size",
    "4",
    "--gradient_accumulation_steps",
    "1",
    "--learning_rate",
    "1e-3",
    "--warmup_steps",
    "1",
    "--eval_steps",
    "1000",
    "--logging_steps",
    "1",
    "--max_length",
    "96",
    ...extra,
  ];
  const config = (out: string, extra: string[] = []) =>
    composeConfig(["defaults", "tiny-tokenizer"], args(out, extra)).config;
  const run = (out: string, extra: string[] = []) => train(config(out, extra), { progress: false, print: () => {} });
  const log = (out: string) =>
    readFileSync(join(out, "log.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const losses = (out: string) =>
    log(out)
      .filter((r) => r.type === "train")
      .map((r) => r.loss as number);

  test("step 0 is ln 2 with zero rewards; 2 × 2 accumulation = one batch of 4; resumed = uninterrupted", async () => {
    const whole = tmp();
    await run(whole, ["--max_steps", "4", "--save_steps", "2"]);
    const first = log(whole)[0]!;
    assert.ok(Math.abs((first.loss as number) - Math.LN2) < 1e-6, `step 1 loss ${first.loss}`);
    const m = first.metrics as Record<string, number>;
    assert.ok(Math.abs(m["rewards/chosen"]!) < 1e-6 && Math.abs(m["rewards/margin"]!) < 1e-6);
    const split = tmp();
    await run(split, ["--max_steps", "4", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2"]);
    losses(whole).forEach((l, i) =>
      assert.ok(Math.abs(l - losses(split)[i]!) < 1e-5, `step ${i + 1}: ${l} vs ${losses(split)[i]}`),
    );
    const resumed = tmp();
    await run(resumed, ["--max_steps", "2", "--save_steps", "2"]);
    await run(resumed, ["--max_steps", "4", "--save_steps", "2", "--resume_from_checkpoint", "latest"]);
    assert.deepEqual(losses(resumed), losses(whole));
  });

  test("2 ranks under ZeRO-3 give the per-step losses and reward metrics of 1 process", async () => {
    const port = await new Promise<number>((resolve) => {
      const srv = createServer().listen(0, "127.0.0.1", () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => resolve(p));
      });
    });
    const cli = (out: string, extra: string[]) => {
      const r = spawnSync(
        process.execPath,
        [
          CLI,
          "train",
          "--configs",
          "defaults",
          "tiny-tokenizer",
          ...args(out, ["--max_steps", "3", "--per_device_train_batch_size", "2", ...extra]),
        ],
        { encoding: "utf8" },
      );
      assert.equal(r.status, 0, r.stderr);
      return log(out).filter((x) => x.type === "train");
    };
    const one = cli(tmp(), ["--gradient_accumulation_steps", "2"]);
    const two = cli(tmp(), ["--zero_stage", "3", "--nproc_per_node", "2", "--master_port", String(port)]);
    assert.equal(two.length, 3);
    one.forEach((r, i) => {
      assert.ok(
        Math.abs((r.loss as number) - (two[i]!.loss as number)) < 1e-5,
        `step ${i + 1}: ${r.loss} vs ${two[i]!.loss}`,
      );
      const [a, b] = [r.metrics as Record<string, number>, two[i]!.metrics as Record<string, number>];
      for (const k of Object.keys(a)) assert.ok(Math.abs(a[k]! - b[k]!) < 1e-5, `step ${i + 1} ${k}`);
    });
  });

  test("held-out reward accuracy rises well above chance on pairs that differ systematically", async () => {
    const out = tmp();
    await run(out, ["--max_steps", "30", "--eval_steps", "30"]);
    const ev = log(out).find((r) => r.type === "eval")!;
    const d = (ev.datasets as Record<string, { accuracy: number; loss: number }>).oasft_demo!;
    assert.ok(d.accuracy >= 0.9 && d.loss < Math.LN2 - 0.2, JSON.stringify(d));
  });

  test("ref_model: the reference log-probabilities are those of the model it names", async () => {
    const other = initTinyModel(join(tmp(), "other"), undefined, ["--seed", "7"]);
    const refs = (out: string) =>
      (JSON.parse(readFileSync(join(out, "reference_logps.json"), "utf8")) as { datasets: unknown }).datasets;
    const named = tmp();
    await run(named, ["--max_steps", "1", "--ref_model", other]);
    const alone = tmp();
    await run(alone, ["--max_steps", "1", "--model_name", other]);
    // A policy scored against another model: the same numbers as that model scoring itself, and step 1 is no longer ln
    // 2.
    assert.deepEqual(refs(named), refs(alone));
    assert.ok(Math.abs(losses(named)[0]! - Math.LN2) > 0.01, `step 1 loss ${losses(named)[0]}`);
    assert.ok(Math.abs(losses(alone)[0]! - Math.LN2) < 1e-6);
    // Resuming with another reference than the stored one is refused; a missing or wrong folder is named.
    const resumed = tmp();
    await run(resumed, ["--max_steps", "1", "--save_steps", "1", "--ref_model", other]);
    await assert.rejects(
      run(resumed, ["--max_steps", "2", "--resume_from_checkpoint", "latest"]),
      /was computed with ref_model .*; ref_model is now not set/,
    );
    await assert.rejects(
      run(tmp(), ["--max_steps", "1", "--ref_model", join(other, "nope")]),
      /ref_model .*nope: not a model folder/,
    );
    await assert.rejects(
      run(tmp(), [
        "--max_steps",
        "1",
        "--stage",
        "sft",
        "--ref_model",
        other,
        "--datasets",
        "[{oasft_demo: {count: 8}}]",
      ]),
      /ref_model is for stage dpo/,
    );
  });

  test("gradients equal finite differences of the loss (float64)", async () => {
    const cfg = config(tmp(), ["--datasets", "[{oasft_demo: {count: 4, val_split: 0}}]"]);
    const tokenizer = loadConfigTokenizer(cfg);
    const data = await preparePrefData(cfg, tokenizer, "dpo");
    const model = loadCausalLM(base, { dtype: "float64" }).train();
    const units = data.datasets[0]!.train.slice(0, 2);
    // A reference away from the policy, so the loss is not at its symmetric point.
    units.forEach((u, i) => (u.ref = [-30 - i, -25 + i]));
    const b = unitBatch(units, tokenizer.padId);
    const o = { beta: 0.5, loss: "sigmoid" as const, rpoAlpha: 0.3 };
    const objective = dpoObjective(data, { ...cfg, beta: 0.5, rpo_alpha: 0.3 }, 2, "cpu");
    objective.step(model, b, {});
    const env = { precision: "fp32" as const, device: "cpu" };
    // Parameters after the last attention softmax: BLOOM's softmax runs in float32 (as HF's), whose
    // rounding would swamp a float64 finite difference upstream of it. The trunk's backward itself is
    // checked against HF's gradients by the golden tests; this checks the DPO head's.
    for (const name of [
      "transformer.ln_f.weight",
      "transformer.h.1.mlp.dense_4h_to_h.weight",
      "transformer.h.1.self_attention.dense.weight",
    ]) {
      const w = model.namedParameters().find(([n]) => n === name)![1];
      const grad = w.grad!.toNumbers();
      const original = w.toNumbers();
      const set = (values: number[]) =>
        torch.noGrad(() => w.copy_(torch.tensor(values, { dtype: "float64" }).view(w.shape)));
      for (const k of [0, 17, 63]) {
        const at = (delta: number) => {
          set(original.map((v, i) => (i === k ? v + delta : v)));
          const l = dpoBatchLoss(model, b, o, env).loss;
          set(original);
          return l;
        };
        const eps = 1e-6;
        const numeric = (at(eps) - at(-eps)) / (2 * eps);
        assert.ok(
          Math.abs(numeric - grad[k]!) < 1e-7 + 1e-5 * Math.abs(numeric),
          `${name}[${k}]: ${grad[k]} vs ${numeric}`,
        );
      }
    }
    model.dispose();
  });

  test("bad settings and data are named before training", async () => {
    assert.throws(() => config(tmp(), ["--beta", "0"]), /key 'beta' must be > 0, got 0/);
    await assert.rejects(
      run(tmp(), ["--datasets", "[{dolly15k: {input_file_path: dolly/databricks-dolly-15k.jsonl}}]"]),
      /dataset dolly15k has no ranked replies for stage dpo/,
    );
    const resumed = tmp();
    await run(resumed, ["--max_steps", "1", "--save_steps", "1"]);
    await assert.rejects(
      run(resumed, [
        "--max_steps",
        "2",
        "--resume_from_checkpoint",
        "latest",
        "--datasets",
        "[{oasft_demo: {count: 60, val_split: 0.1}}]",
      ]),
      /reference_logps\.json was computed on other data/,
    );
    rmSync(join(resumed, "reference_logps.json"));
    await assert.rejects(
      run(resumed, ["--max_steps", "2", "--resume_from_checkpoint", "latest"]),
      /resuming needs the reference log-probabilities .*reference_logps\.json/,
    );
    // A file with no usable pair (everything held out) fails before any model is loaded.
    await assert.rejects(
      run(tmp(), ["--max_steps", "1", "--datasets", "[{oasft_demo: {count: 3, val_split: 1}}]"]),
      /nothing to train on: oasft_demo \(0 train pairs\)/,
    );
  });
});
