// `oasft train`: schedules, loss scaling, settings from the card's DeepSpeed JSON, exact resume,
// accumulation, and checkpoints that survive SIGKILL and Ctrl-C.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { composeConfig } from "../../src/sft/config.js";
import { lrAt } from "../../src/train/schedule.js";
import { DynamicLossScaler } from "../../src/train/loss-scaler.js";
import { resolveTrainSettings } from "../../src/train/settings.js";
import { paramGroups, train } from "../../src/train/trainer.js";
import { createCausalLM, loadCausalLM, saveCausalLM } from "../../src/models/index.js";
import * as torch from "../../src/torch/index.js";
import { CLI, REPO, SHARED } from "../helpers.js";

const tmp = () => mkdtempSync(join(tmpdir(), "oasft-train-"));
const MODEL = join(REPO, "configs/bloom-tiny.json");
/** A small run on the shared samples: 0.9M parameters, a few seconds. */
const runArgs = (out: string, extra: string[] = []) => [
  "--cache_dir",
  join(SHARED, "data"),
  "--model_name",
  MODEL,
  "--output_dir",
  out,
  "--dtype",
  "fp32",
  "--gradient_accumulation_steps",
  "2",
  "--per_device_train_batch_size",
  "4",
  "--learning_rate",
  "2e-3",
  "--warmup_steps",
  "3",
  "--eval_steps",
  "1000",
  "--logging_steps",
  "1",
  "--max_length",
  "128",
  ...extra,
];
const config = (out: string, extra: string[] = []) =>
  composeConfig(["defaults", "shared-sample", "tiny-tokenizer"], runArgs(out, extra)).config;
const trainLosses = (out: string) =>
  readFileSync(join(out, "log.jsonl"), "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .filter((r) => r.type === "train")
    .map((r) => r.loss as number);

describe("schedules and loss scaling", () => {
  test(
    "linear and cosine warm up from 0; DeepSpeed's WarmupDecayLR warms up by log or linearly, then " + "decays to 0",
    () => {
      const o = { peakLr: 1, warmupSteps: 10, totalSteps: 110 };
      assert.equal(lrAt(0, { ...o, kind: "linear" }), 0);
      assert.equal(lrAt(5, { ...o, kind: "linear" }), 0.5);
      assert.equal(lrAt(60, { ...o, kind: "linear" }), 0.5);
      assert.ok(Math.abs(lrAt(60, { ...o, kind: "cosine" }) - 0.5) < 1e-12);
      assert.equal(lrAt(110, { ...o, kind: "cosine" }), 0);
      assert.ok(
        Math.abs(lrAt(4, { ...o, kind: "warmup_decay_lr", warmupType: "log" }) - Math.log(5) / Math.log(10)) < 1e-12,
      );
      assert.equal(lrAt(4, { ...o, kind: "warmup_decay_lr", warmupType: "linear" }), 0.4);
      assert.equal(lrAt(60, { ...o, kind: "warmup_decay_lr", warmupType: "linear", minLr: 0.1 }), 0.1 + 0.9 * 0.5);
    },
  );

  test(
    "dynamic loss scaling: overflows skip steps and halve the scale after the hysteresis; clean windows " + "double it",
    () => {
      const s = new DynamicLossScaler({ initialScalePower: 4, window: 3, hysteresis: 2 });
      assert.equal(s.update(true), true);
      assert.equal(s.scale, 16, "first overflow uses up the hysteresis");
      assert.equal(s.update(true), true);
      assert.equal(s.scale, 8);
      for (let i = 0; i < 3; i++) assert.equal(s.update(false), false);
      assert.equal(s.scale, 16);
      assert.equal(s.skippedSteps, 2);
    },
  );

  test(
    "the card's config with --deepspeed: zero3_config_sft.json's linear WarmupDecayLR, clipping 2.0, notes for " +
      "ZeRO-3 and fp16 on CPU",
    () => {
      const { config: cfg } = composeConfig(
        ["defaults", "bloom-zh-3b", "datasets"],
        ["--num_train_epochs", "2", "--deepspeed"],
      );
      const s = resolveTrainSettings(cfg, "cpu");
      assert.deepEqual(s.schedule, { kind: "warmup_decay_lr", warmupSteps: 2000, warmupType: "linear", minLr: 0 });
      assert.equal(s.lr, 8e-6);
      assert.deepEqual([s.maxGradNorm, s.gradAccumulation, s.microBatchSize, s.eps], [2, 32, 1, 1e-12]);
      assert.equal(s.precision, "bf16");
      assert.ok(s.notes.some((n) => /ZeRO stage 3/.test(n)));
      assert.ok(s.notes.some((n) => /fp16.*CPU.*bf16/.test(n)));
      const gpu = resolveTrainSettings(cfg, "cuda");
      assert.equal(gpu.precision, "fp16");
      assert.equal(gpu.lossScaling?.initialScalePower, 16);
    },
  );

  test("a DeepSpeed JSON's bad value: a ConfigError naming the file and the key", () => {
    const dir = tmp();
    const cases: Array<[object, RegExp]> = [
      [{ optimizer: { type: "Adam", params: { lr: "auto" } } }, /› optimizer\.type: "Adam" is not supported/],
      [{ optimizer: { params: { lr: "fast" } } }, /› optimizer\.params\.lr: expected a number or "auto", got "fast"/],
      [{ optimizer: { params: { betas: [0.9] } } }, /› optimizer\.params\.betas: expected two numbers/],
      [{ gradient_clipping: "" }, /› gradient_clipping: expected a number/],
      [{ zero_optimization: { stage: 4 } }, /› zero_optimization\.stage: expected 0, 1, 2 or 3, got 4/],
      [{ scheduler: { type: "OneCycle" } }, /› scheduler\.type: "OneCycle" is not supported/],
      [{ scheduler: { type: "WarmupLR", params: { warmup_num_steps: [1] } } }, /scheduler\.params\.warmup_num_steps/],
      [{ fp16: { enabled: true }, bf16: { enabled: true } }, /› fp16, bf16: both are enabled/],
    ];
    cases.forEach(([json, message], i) => {
      const file = join(dir, `ds-${i}.json`);
      writeFileSync(file, JSON.stringify(json));
      const { config: cfg } = composeConfig(["defaults"], ["--deepspeed", "--deepspeed_config", file]);
      assert.throws(
        () => resolveTrainSettings(cfg, "cpu"),
        (e: Error) => e.name === "ConfigError" && e.message.startsWith(file) && message.test(e.message),
        JSON.stringify(json),
      );
    });
  });

  test("weight decay skips biases and LayerNorm weights, as the HF Trainer", () => {
    const model = createCausalLM({ model_type: "bloom", vocab_size: 64, hidden_size: 16, n_layer: 2, n_head: 2 });
    const { names, groups } = paramGroups(model, 0.1);
    const decayed = names.slice(0, groups[0]!.params.length);
    assert.ok(decayed.includes("transformer.h.0.self_attention.query_key_value.weight"));
    assert.ok(decayed.every((n) => !n.endsWith(".bias") && !/layernorm|ln_f/.test(n)));
    assert.equal(groups[1]!.weightDecay, 0);
    assert.equal(names.length, model.namedParameters().length);
    model.dispose();
  });
});

describe("the training loop", () => {
  test("a resumed run continues with exactly the losses of the uninterrupted run (fp32, CPU)", async () => {
    const a = tmp();
    await train(config(a, ["--max_steps", "10", "--save_steps", "4"]), { progress: false, print: () => {} });
    const b = tmp();
    await train(
      config(b, ["--max_steps", "10", "--save_steps", "4", "--resume_from_checkpoint", join(a, "checkpoint-4")]),
      { progress: false, print: () => {} },
    );
    const full = trainLosses(a);
    assert.equal(full.length, 10);
    assert.ok(full[9]! < full[0]!, "the loss falls");
    assert.deepEqual(trainLosses(b), full.slice(4));
    // The final folder is a model in the HF layout that loads.
    const m = loadCausalLM(a);
    assert.equal(m.config.vocabSize % 16, 0);
    m.dispose();
    for (const f of ["training.svg", "summary.json", "tokenizer.json", "config.json"])
      assert.ok(existsSync(join(a, f)), f);
    assert.deepEqual(
      readdirSync(a)
        .filter((n) => n.startsWith("checkpoint-"))
        .sort(),
      ["checkpoint-4", "checkpoint-8"],
      "saved every save_steps; the end of the run saves the final model",
    );
  });

  test(
    "gradient accumulation normalised by trained tokens: 2 × 2 samples give the loss and grad norm of one " +
      "batch of 4",
    async () => {
      const log = (out: string) =>
        readFileSync(join(out, "log.jsonl"), "utf8")
          .split("\n")
          .filter(Boolean)
          .map((l) => JSON.parse(l))
          .find((r) => r.type === "train");
      const big = tmp();
      const small = tmp();
      await train(
        config(big, [
          "--max_steps",
          "1",
          "--gradient_accumulation_steps",
          "1",
          "--per_device_train_batch_size",
          "4",
          "--save_strategy",
          "no",
        ]),
        { progress: false, print: () => {} },
      );
      await train(
        config(small, [
          "--max_steps",
          "1",
          "--gradient_accumulation_steps",
          "2",
          "--per_device_train_batch_size",
          "2",
          "--save_strategy",
          "no",
        ]),
        { progress: false, print: () => {} },
      );
      const [x, y] = [log(big), log(small)];
      assert.ok(Math.abs(x.loss - y.loss) < 1e-5, `${x.loss} vs ${y.loss}`);
      assert.ok(Math.abs(x.grad_norm - y.grad_norm) / x.grad_norm < 1e-4, `${x.grad_norm} vs ${y.grad_norm}`);
    },
  );

  test(
    "SIGKILL in the middle of a save leaves the previous checkpoint whole; resume latest finishes " + "the run",
    async () => {
      const out = tmp();
      // The child stops itself inside the save of checkpoint-8 (through the trainer's test seam), says so
      // on stdout, and waits there: the kill lands mid-save by construction, not by timing.
      const script = `
      import { composeConfig } from ${JSON.stringify(join(REPO, "dist/src/sft/config.js"))};
      import { train } from ${JSON.stringify(join(REPO, "dist/src/train/trainer.js"))};
      const args = ${JSON.stringify(runArgs(out, ["--max_steps", "8", "--save_steps", "4", "--logging_steps", "4"]))};
      const cfg = composeConfig(["defaults", "shared-sample", "tiny-tokenizer"], args).config;
      await train(cfg, { progress: false, print: () => {}, onCheckpointMidway: (tmpDir) => {
        if (!tmpDir.includes("checkpoint-8")) return;
        process.stdout.write("midway\\n");
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
      } });`;
      const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      const killedMidSave = await new Promise<boolean>((resolve) => {
        child.stdout.on("data", (d: Buffer) => {
          if (d.toString().includes("midway")) {
            child.kill("SIGKILL");
            resolve(true);
          }
        });
        child.on("exit", () => resolve(false));
      });
      assert.ok(killedMidSave, "the process was killed while writing checkpoint-8");
      if (child.exitCode === null && child.signalCode === null) await new Promise((r) => child.once("exit", r));
      assert.ok(
        readdirSync(out).some((n) => n.startsWith(".tmp-checkpoint-8-")),
        "the half-written checkpoint is in its temporary folder",
      );
      assert.ok(!existsSync(join(out, "checkpoint-8")), "no half checkpoint under the final name");
      const m = loadCausalLM(join(out, "checkpoint-4"));
      m.dispose();
      const summary = await train(
        config(out, ["--max_steps", "8", "--save_steps", "4", "--resume_from_checkpoint", "latest"]),
        { progress: false, print: () => {} },
      );
      assert.equal(summary.steps, 8);
      assert.ok(
        readdirSync(out).every((n) => !n.startsWith(".tmp-")),
        "leftover temp folders are cleaned",
      );
    },
  );

  test("Ctrl-C saves a checkpoint and exits 130; the run resumes from it", async () => {
    const out = tmp();
    const args = [
      CLI,
      "train",
      "--configs",
      "defaults",
      "shared-sample",
      "tiny-tokenizer",
      ...runArgs(out, ["--max_steps", "400", "--save_steps", "1000"]),
    ];
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
    let err = "";
    let sent = false;
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
      // One Ctrl-C only: a second one quits at once, without the checkpoint.
      if (!sent && /\] 3\/400/.test(err)) {
        sent = true;
        child.kill("SIGINT");
      }
    });
    const code = await new Promise<number | null>((r) => child.on("exit", (c) => r(c)));
    assert.equal(code, 130, err);
    const ckpt = readdirSync(out).find((n) => n.startsWith("checkpoint-"));
    assert.ok(ckpt, err);
    const step = Number(ckpt!.split("-")[1]);
    assert.ok(step >= 3 && step < 400, `checkpoint ${ckpt} in ${readdirSync(out).join(", ")}`);
    assert.match(err, /interrupted: checkpoint saved/);
  });
});

describe("oasft train as a command", () => {
  const oasft = (...args: string[]) =>
    spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 120_000 });

  test("--print-config shows the effective config and where each value came from", () => {
    const r = oasft(
      "train",
      "--configs",
      "defaults",
      "bloom-zh-3b",
      "datasets",
      "--num_train_epochs",
      "2",
      "--print-config",
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^learning_rate: 0\.000008 {4}# block bloom-zh-3b \(.*config\.yaml\)$/m);
    assert.match(r.stdout, /^num_train_epochs: 2 {4}# --num_train_epochs$/m);
  });

  test("a model folder without weights, a missing dataset file, a typo: clear messages, non-zero exit", () => {
    const dir = tmp();
    writeFileSync(join(dir, "config.json"), readFileSync(MODEL));
    const common = [
      "train",
      "--configs",
      "defaults",
      "shared-sample",
      "tiny-tokenizer",
      "--cache_dir",
      join(SHARED, "data"),
      "--output_dir",
      join(dir, "out"),
    ];
    const noWeights = oasft(...common, "--model_name", dir);
    assert.equal(noWeights.status, 3);
    assert.match(noWeights.stderr, /model_name .*: no weights .*give the config\.json file itself/);
    const missing = oasft(
      ...common,
      "--model_name",
      MODEL,
      "--datasets",
      "[{dolly15k: {input_file_path: nowhere.jsonl}}]",
    );
    assert.equal(missing.status, 3);
    assert.match(missing.stderr, /dataset dolly15k: input_file_path 'nowhere\.jsonl' not found/);
    const typo = oasft(...common, "--model_name", MODEL, "--learning_rat", "1e-4");
    assert.equal(typo.status, 3);
    assert.match(typo.stderr, /--learning_rat: unknown key 'learning_rat'\. Did you mean: learning_rate/);
  });
});

describe("robustness: no silent wrong runs, checkpoints taken whole or refused", () => {
  const quiet = { progress: false, print: () => {} };

  test("a new run refuses an output_dir that holds another run; --overwrite_output_dir starts over", async () => {
    const out = tmp();
    await train(config(out, ["--max_steps", "4", "--save_steps", "2"]), quiet);
    await assert.rejects(
      train(config(out, ["--max_steps", "2", "--save_steps", "2"]), quiet),
      new RegExp(
        `output_dir ${out} already holds a run \\(checkpoint-2, checkpoint-4, log\\.jsonl, model\\.safetensors, ` +
          `\\.\\.\\.\\); pass --resume_from_checkpoint latest`,
      ),
    );
    const notes: string[] = [];
    await train(config(out, ["--max_steps", "2", "--save_steps", "2", "--overwrite_output_dir"]), {
      progress: false,
      print: (l) => notes.push(l),
    });
    assert.ok(notes.some((n) => /removed checkpoint-2, checkpoint-4, log\.jsonl/.test(n)));
    assert.deepEqual(
      readdirSync(out).filter((n) => n.startsWith("checkpoint-")),
      ["checkpoint-2"],
      "only this run's checkpoint",
    );
    assert.equal(trainLosses(out).length, 2);
  });

  test(
    "a run killed before its first checkpoint is not stuck: the same command, or --resume_from_checkpoint " +
      "latest, starts over",
    async () => {
      const out = tmp();
      const killed = () =>
        writeFileSync(join(out, "log.jsonl"), JSON.stringify({ type: "train", step: 1, loss: 7 }) + "\n");
      killed();
      const notes: string[] = [];
      await train(config(out, ["--max_steps", "2", "--save_steps", "10"]), {
        progress: false,
        print: (l) => notes.push(l),
      });
      assert.ok(
        notes.some((n) => /held a run that stopped before its first checkpoint \(log\.jsonl\): starting over/.test(n)),
        notes.join("\n"),
      );
      assert.equal(trainLosses(out).length, 2);
      const again = tmp();
      writeFileSync(join(again, "log.jsonl"), JSON.stringify({ type: "train", step: 1, loss: 7 }) + "\n");
      const resumed: string[] = [];
      const args = ["--max_steps", "2", "--save_steps", "10", "--resume_from_checkpoint", "latest"];
      await train(config(again, args), { progress: false, print: (l) => resumed.push(l) });
      assert.ok(
        resumed.some((n) => /--resume_from_checkpoint latest: .* has no checkpoint .*: starting over/.test(n)),
        resumed.join("\n"),
      );
      assert.deepEqual(trainLosses(again), trainLosses(out), "the same run as a fresh one");
    },
  );

  test("an empty training set is an error naming the datasets", async () => {
    const dir = tmp();
    writeFileSync(join(dir, "empty.jsonl"), "");
    await assert.rejects(
      train(
        config(join(dir, "out"), ["--datasets", `[{messages: {input_file_path: ${join(dir, "empty.jsonl")}}}]`]),
        quiet,
      ),
      /nothing to train on: messages \(0 train samples\)/,
    );
  });

  test(
    "resume drops a torn last log line with a note, and refuses a checkpoint with a missing moment or a " +
      "damaged state file",
    async () => {
      const out = tmp();
      await train(config(out, ["--max_steps", "4", "--save_steps", "2"]), quiet);
      const ckpt = join(out, "checkpoint-2");
      writeFileSync(join(out, "log.jsonl"), readFileSync(join(out, "log.jsonl"), "utf8") + '{"type":"train","st');
      const notes: string[] = [];
      const summary = await train(
        config(out, ["--max_steps", "4", "--save_steps", "2", "--resume_from_checkpoint", ckpt]),
        { progress: false, print: (l) => notes.push(l) },
      );
      assert.equal(summary.steps, 4);
      assert.ok(
        notes.some((n) => /log\.jsonl:\d+: dropped a torn last line/.test(n)),
        notes.join("\n"),
      );

      const optimizerFile = join(ckpt, "optimizer.safetensors");
      const { header, tensors } = torch.loadSafetensors(optimizerFile);
      const dropped = [...tensors.keys()].find((k) => k.startsWith("exp_avg_sq."))!;
      torch.saveSafetensors(
        optimizerFile,
        [...tensors].filter(([k]) => k !== dropped),
        header.metadata,
      );
      await assert.rejects(
        train(config(out, ["--max_steps", "4", "--resume_from_checkpoint", ckpt]), quiet),
        new RegExp(
          `optimizer\\.safetensors: missing ${dropped.replaceAll(".", "\\.")} \\(the checkpoint is incomplete\\)`,
        ),
      );
      writeFileSync(join(ckpt, "trainer_state.json"), '{"globalStep": 2, "epo');
      await assert.rejects(
        train(config(out, ["--max_steps", "4", "--resume_from_checkpoint", ckpt]), quiet),
        /checkpoint-2\/trainer_state\.json: not valid JSON/,
      );
    },
  );

  test("a NaN weight stops the run at its first step with a non-zero exit naming the step", () => {
    const dir = tmp();
    const model = createCausalLM(JSON.parse(readFileSync(MODEL, "utf8")));
    torch.noGrad(() => torch.scope(() => model.namedParameters()[3]![1].narrow(0, 0, 1).fill_(Number.NaN)));
    saveCausalLM(model, dir);
    model.dispose();
    const r = spawnSync(
      process.execPath,
      [
        CLI,
        "train",
        "--configs",
        "defaults",
        "shared-sample",
        "tiny-tokenizer",
        ...runArgs(join(dir, "out"), ["--max_steps", "3"]).map((a) => (a === MODEL ? dir : a)),
      ],
      { encoding: "utf8" },
    );
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /step 1: the loss is NaN and the gradient norm NaN; the weights were not updated/);
  });

  test("SIGTERM (preemption) saves a checkpoint like Ctrl-C", async () => {
    const out = tmp();
    const child = spawn(
      process.execPath,
      [
        CLI,
        "train",
        "--configs",
        "defaults",
        "shared-sample",
        "tiny-tokenizer",
        ...runArgs(out, ["--max_steps", "400", "--save_steps", "1000"]),
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let err = "";
    let sent = false;
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
      if (!sent && /\] 2\/400/.test(err)) {
        sent = true;
        child.kill("SIGTERM");
      }
    });
    const code = await new Promise<number | null>((r) => child.on("exit", (c) => r(c)));
    assert.equal(code, 130, err);
    assert.match(err, /SIGTERM: finishing this step, then saving a checkpoint/);
    assert.ok(
      readdirSync(out).some((n) => n.startsWith("checkpoint-")),
      err,
    );
  });
});

test("oasft data export shows each train sample with the very window epoch 0 trains on", async () => {
  const out = join(tmp(), "train.jsonl");
  const args = ["--max_length", "64", "--random_offset_probability", "1"];
  const r = spawnSync(
    process.execPath,
    [
      CLI,
      "data",
      "export",
      "--configs",
      "defaults",
      "shared-sample",
      "tiny-tokenizer",
      "--cache_dir",
      join(SHARED, "data"),
      "--split",
      "train",
      "--out",
      out,
      ...args,
    ],
    { encoding: "utf8" },
  );
  assert.equal(r.status, 0, r.stderr);
  const exported = readFileSync(out, "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.stringify((JSON.parse(l) as { input_ids: number[] }).input_ids))
    .sort();
  const cfg = composeConfig(
    ["defaults", "shared-sample", "tiny-tokenizer"],
    ["--cache_dir", join(SHARED, "data"), ...args],
  ).config;
  const { prepareSftData } = await import("../../src/sft/data.js");
  const { epochBatches } = await import("../../src/train/trainer.js");
  const data = await prepareSftData(cfg);
  const trained = epochBatches(data, cfg, 1, 0)
    .map((b) => JSON.stringify(b.inputIds[0]!.filter((_, t) => b.attentionMask[0]![t] === 1)))
    .sort();
  assert.equal(trained.length, exported.length);
  assert.deepEqual(trained, exported);
});
