// LoRA: adapters that start as the identity, train alone on a frozen base, save and load in PEFT's
// files, merge into a plain model with the same logits, and fit the trainer (checkpointing, packing,
// accumulation, exact resume) with no optimizer state for the base.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import * as torch from "../../src/torch/index.js";
import {
  applyLora,
  loadCausalLM,
  loadWithAdapter,
  saveAdapter,
  saveCausalLM,
  type CausalLM,
  type LoraConfig,
} from "../../src/models/index.js";
import { AdamW } from "../../src/train/index.js";
import { composeConfig } from "../../src/sft/config.js";
import { train } from "../../src/train/trainer.js";
import { CLI, GOLDEN, GOLDEN_MODELS, REPO, SHARED, loadGolden, maxAbsDiff } from "../helpers.js";

const tmp = () => mkdtempSync(join(tmpdir(), "oasft-lora-"));
const GOLDEN_DIR = join(GOLDEN, GOLDEN_MODELS[1]);
const LLAMA_DIR = join(SHARED, "golden-llama-gqa/tiny_v320_h96_l2_nh6_kv2_i256");
const cfg = (o: Partial<LoraConfig> = {}): LoraConfig => ({
  r: 4,
  lora_alpha: 8,
  lora_dropout: 0,
  target_modules: ["query_key_value"],
  bias: "none",
  modules_to_save: null,
  ...o,
});

function input() {
  const g = loadGolden(GOLDEN_MODELS[1], "tensors.safetensors");
  return {
    inputIds: g.get("inputs.right.input_ids")!,
    attentionMask: g.get("inputs.right.attention_mask")!,
    labels: g.get("inputs.right.labels")!,
  };
}
const logits = (m: CausalLM, x: ReturnType<typeof input>) =>
  torch.noGrad(() => m.eval().forward({ inputIds: x.inputIds, attentionMask: x.attentionMask }).logits.keep());

describe("the adapter itself", () => {
  test(
    "with lora_B = 0 the adapted model's logits equal the base model's exactly; lora_A is PEFT's " + "kaiming init",
    () => {
      const x = input();
      const base = loadCausalLM(GOLDEN_DIR);
      const adapted = loadCausalLM(GOLDEN_DIR);
      const layers = applyLora(adapted, cfg());
      assert.deepEqual(layers, [
        "transformer.h.0.self_attention.query_key_value",
        "transformer.h.1.self_attention.query_key_value",
        "transformer.h.2.self_attention.query_key_value",
      ]);
      assert.equal(maxAbsDiff(logits(base, x), logits(adapted, x)), 0);
      const A = adapted
        .namedParameters()
        .find(([n]) => n.endsWith("h.0.self_attention.query_key_value.lora_A.weight"))![1];
      assert.deepEqual(A.shape, [4, 96]);
      const bound = 1 / Math.sqrt(96);
      torch.scope(() => {
        assert.ok(A.abs().max().item() <= bound, "U(−1/√in, 1/√in)");
        assert.ok(A.abs().max().item() > 0.8 * bound, "spread over the whole interval");
      });
      base.dispose();
      adapted.dispose();
    },
  );

  test("only adapter tensors get gradients; the base is frozen", () => {
    const model = loadCausalLM(GOLDEN_DIR).train();
    applyLora(model, cfg());
    for (const ckpt of [false, true]) {
      model.trainStep(input(), { gradientCheckpointing: ckpt });
      for (const [n, p] of model.namedParameters()) {
        assert.equal(p.grad !== undefined, /\.lora_[AB]\.weight$/.test(n), `${n} (checkpointing ${ckpt})`);
        p.grad = undefined;
      }
    }
    model.dispose();
  });

  test(
    "after training, the unmerged model's logits equal the merged model's within 1e-5; PEFT's files and " + "key names",
    () => {
      const x = input();
      const model = loadCausalLM(GOLDEN_DIR).train();
      applyLora(model, cfg());
      const opt = new AdamW(
        model.parameters().filter((p) => p.requiresGrad),
        { lr: 1e-2 },
      );
      for (let i = 0; i < 3; i++) {
        model.trainStep(x);
        opt.step();
        opt.zeroGrad();
      }
      opt.dispose();
      const dir = tmp();
      saveAdapter(model, cfg(), dir, GOLDEN_DIR);
      const config = JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8"));
      assert.equal(config.peft_type, "LORA");
      assert.equal(config.task_type, "CAUSAL_LM");
      assert.deepEqual(
        [config.r, config.lora_alpha, config.lora_dropout, config.bias, config.fan_in_fan_out, config.inference_mode],
        [4, 8, 0, "none", false, true],
      );
      assert.deepEqual(config.target_modules, ["query_key_value"]);
      assert.equal(config.base_model_name_or_path, GOLDEN_DIR);
      const header = torch.readSafetensorsHeader(join(dir, "adapter_model.safetensors"));
      assert.deepEqual(
        [...header.entries.keys()].sort(),
        [0, 1, 2]
          .flatMap((i) =>
            ["A", "B"].map(
              (ab) => `base_model.model.transformer.h.${i}.self_attention.query_key_value.lora_${ab}.weight`,
            ),
          )
          .sort(),
      );
      assert.deepEqual(
        header.entries.get("base_model.model.transformer.h.0.self_attention.query_key_value.lora_B.weight")!.shape,
        [288, 4],
      );

      const unmerged = logits(model, x);
      const reloaded = loadWithAdapter(GOLDEN_DIR, dir); // adapters kept apart
      const merged = loadWithAdapter(GOLDEN_DIR, dir, { merge: true });
      assert.ok(maxAbsDiff(logits(reloaded, x), unmerged) === 0, "reloaded adapters are bit-identical");
      assert.ok(maxAbsDiff(logits(merged, x), unmerged) < 1e-5);
      assert.ok(!merged.namedParameters().some(([n]) => n.includes("lora_")), "a merged model is a plain one");
      const base = loadCausalLM(GOLDEN_DIR);
      assert.ok(maxAbsDiff(logits(base, x), unmerged) > 1e-4, "training changed the function");
      for (const m of [model, reloaded, merged, base]) m.dispose();
    },
  );

  test('adapters written the way older PEFT wrote them (".default." in the key) load too', () => {
    const dir = tmp();
    const model = loadCausalLM(LLAMA_DIR);
    const c = cfg({ target_modules: ["q_proj", "v_proj"] });
    applyLora(model, c);
    torch.noGrad(() => {
      for (const [n, p] of model.namedParameters()) if (n.includes("lora_B")) p.fill_(0.01);
    });
    const tensors = model
      .namedParameters()
      .filter(([n]) => n.includes("lora_"))
      .map(([n, t]): [string, torch.Tensor] => [`base_model.model.${n.replace(/\.weight$/, ".default.weight")}`, t]);
    torch.saveSafetensors(join(dir, "adapter_model.safetensors"), tensors, { format: "pt" });
    writeFileSync(
      join(dir, "adapter_config.json"),
      JSON.stringify({
        peft_type: "LORA",
        task_type: "CAUSAL_LM",
        r: 4,
        lora_alpha: 8,
        lora_dropout: 0.1,
        target_modules: ["q_proj", "v_proj"],
        bias: "none",
        fan_in_fan_out: false,
      }),
    );
    const loaded = loadWithAdapter(LLAMA_DIR, dir);
    const x = torch.tensor([[5, 9, 13, 200, 7]], { dtype: "int64" });
    const a = torch.noGrad(() => model.eval().forward({ inputIds: x }).logits.keep());
    const b = torch.noGrad(() => loaded.eval().forward({ inputIds: x }).logits.keep());
    assert.equal(maxAbsDiff(a, b), 0);
    model.dispose();
    loaded.dispose();
  });

  test("bad input names the key or the tensor", () => {
    const model = loadCausalLM(GOLDEN_DIR);
    assert.throws(
      () => applyLora(model, cfg({ target_modules: ["q_proj"] })),
      /peft_config › target_modules: 'q_proj' matches no linear layer of this bloom model \(its layers: query_key_va/,
    );
    assert.throws(() => applyLora(model, cfg({ r: 0 })), /peft_config › r: expected an integer ≥ 1, got 0/);
    model.dispose();
    // An adapter trained on another base: the shape check names the tensor.
    const dir = tmp();
    const other = loadCausalLM(join(GOLDEN, GOLDEN_MODELS[0]));
    applyLora(other, cfg());
    saveAdapter(other, cfg(), dir, null);
    other.dispose();
    assert.throws(
      () => loadWithAdapter(GOLDEN_DIR, dir),
      /adapter_model\.safetensors › base_model\.model\.transformer\.h\.0\.[\w.]+\.lora_A\.weight: shape \[4,64\] does/,
    );
  });
});

describe("LoRA in the trainer", () => {
  const base = (() => {
    const dir = join(tmp(), "base");
    const m = loadCausalLM(GOLDEN_DIR);
    saveCausalLM(m, dir);
    m.dispose();
    return dir;
  })();
  const args = (out: string, extra: string[] = []) => [
    "--cache_dir",
    join(SHARED, "data"),
    "--model_name",
    base,
    "--output_dir",
    out,
    "--dtype",
    "fp32",
    "--peft_model",
    "--peft_config",
    "{r: 8, lora_alpha: 16, lora_dropout: 0.05}",
    "--gradient_accumulation_steps",
    "2",
    "--per_device_train_batch_size",
    "2",
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
    "--packing",
    "--gradient_checkpointing",
    ...extra,
  ];
  const run = (out: string, extra: string[] = []) =>
    train(composeConfig(["defaults", "shared-sample", "tiny-tokenizer"], args(out, extra)).config, {
      progress: false,
      print: () => {},
    });
  const losses = (out: string) =>
    readFileSync(join(out, "log.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((r) => r.type === "train")
      .map((r) => r.loss as number);

  test(
    "checkpoints hold the adapter and its optimizer state only; a resumed run has the uninterrupted losses; " +
      "the result is a PEFT folder",
    async () => {
      const whole = tmp();
      await run(whole, ["--max_steps", "4", "--save_steps", "2"]);
      assert.ok(existsSync(join(whole, "adapter_model.safetensors")) && existsSync(join(whole, "adapter_config.json")));
      assert.ok(!existsSync(join(whole, "model.safetensors")), "no full model is written");
      const ckpt = join(whole, "checkpoint-2");
      assert.ok(
        readdirSync(ckpt).includes("adapter_model.safetensors") && !readdirSync(ckpt).includes("model.safetensors"),
      );
      // Optimizer state: the moments of the trained tensors only (adapters, and the grown token rows).
      const { tensors } = torch.loadSafetensors(join(ckpt, "optimizer.safetensors"));
      const trained = new Set(torch.readSafetensorsHeader(join(ckpt, "adapter_model.safetensors")).entries.keys());
      for (const k of tensors.keys())
        assert.ok(
          trained.has(`base_model.model.${k.replace(/^exp_avg(_sq)?\./, "")}`),
          `${k} belongs to a trained tensor`,
        );
      const baseBytes = loadCausalLM(base);
      const stateBytes = [...tensors.values()].reduce((n, t) => n + t.numel * 4, 0);
      assert.ok(stateBytes < baseBytes.numParameters() * 8, "less state than AdamW on the whole model");
      baseBytes.dispose();

      const resumed = tmp();
      await run(resumed, ["--max_steps", "2", "--save_steps", "2"]);
      await run(resumed, ["--max_steps", "4", "--save_steps", "2", "--resume_from_checkpoint", "latest"]);
      assert.deepEqual(losses(resumed), losses(whole));

      // oasft merge, then the merged folder serves what base + adapter gives.
      const merged = join(tmp(), "merged");
      const r = spawnSync(process.execPath, [CLI, "merge", "--model", base, "--adapter", whole, "--out", merged], {
        encoding: "utf8",
      });
      assert.equal(r.status, 0, r.stderr);
      for (const f of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"])
        assert.ok(existsSync(join(merged, f)), f);
      const a = loadCausalLM(merged);
      const b = loadWithAdapter(base, whole);
      const x = torch.tensor([[5, 17, 42, 99, 7]], { dtype: "int64" });
      assert.ok(
        maxAbsDiff(
          torch.noGrad(() => a.eval().forward({ inputIds: x }).logits),
          torch.noGrad(() => b.eval().forward({ inputIds: x }).logits),
        ) < 1e-5,
      );
      a.dispose();
      b.dispose();
      const chat = spawnSync(
        process.execPath,
        [CLI, "chat", "--model", base, "--adapter", whole, "--max-new-tokens", "3"],
        { encoding: "utf8", input: "Hi\n/exit\n" },
      );
      assert.equal(chat.status, 0, chat.stderr);
      void REPO;
    },
  );

  test("a peft_config key that does not exist is named", async () => {
    // Named when the settings are composed, before any model or data is read.
    await assert.rejects(
      async () => run(tmp(), ["--max_steps", "1", "--peft_config", "{r: 8, lora_alhpa: 16}"]),
      /peft_config \(--peft_config\): unknown key\(s\) lora_alhpa; expected r, lora_alpha/,
    );
  });
});
