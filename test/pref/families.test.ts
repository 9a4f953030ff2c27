// The preference stages on every family: nothing in src/pref names an architecture, and these runs
// check it — DPO's first step is ln 2 (policy = reference), and a reward model saved in HF's
// sequence-classification layout loads back with the scores it had when it was saved.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import * as torch from "../../src/torch/index.js";
import "../../src/pref/index.js"; // registers the rm and dpo stages
import { soloGroup } from "../../src/parallel/group.js";
import { loadRewardModel } from "../../src/models/index.js";
import { preparePrefData } from "../../src/pref/data.js";
import { rmObjective } from "../../src/pref/rm.js";
import { composeConfig } from "../../src/sft/config.js";
import { loadConfigTokenizer } from "../../src/sft/data.js";
import { train } from "../../src/train/trainer.js";
import { CLI, SHARED } from "../helpers.js";

const DATA = join(SHARED, "data");
const tmp = () => mkdtempSync(join(tmpdir(), "oasft-pref-"));

const FAMILIES: Array<[string, string, string]> = [
  ["gpt_neox", "golden-neox", "tiny_v320_h64_l2_nh4_rp025_parallel"],
  ["llama", "golden-llama-gqa", "tiny_v320_h96_l2_nh6_kv2_i256"],
  ["mistral", "golden-mistral", "tiny_v128_h48_l2_nh4_kv2_i64_sw5"],
  ["qwen2", "golden-qwen2", "tiny_v128_h48_l2_nh4_kv2_i80_tied"],
  ["qwen3", "golden-qwen3", "tiny_v128_h48_l2_nh4_kv2_hd16_i80_tied"],
  ["gemma2", "golden-gemma2", "tiny_v128_h32_l3_nh2_kv1_hd16_qpas24_sw4_cap0.5_2"],
];

for (const [family, set, name] of FAMILIES) {
  test(
    `${family}: DPO starts at ln 2; its reward model is a *ForSequenceClassification folder that scores ` + `as saved`,
    async () => {
      // A neutral folder name: the tokenizer family must come from the tokenizer, not a path that says "llama".
      const base = join(tmp(), "m");
      const tokenizer = join(DATA, "tokenizers/oasst-tiny-bpe");
      const made = spawnSync(
        process.execPath,
        [CLI, "init", "--config", join(SHARED, set, name, "config.json"), "--tokenizer", tokenizer, "--out", base],
        { encoding: "utf8" },
      );
      assert.equal(made.status, 0, made.stderr);
      const args = (out: string, stage: string, extra: string[]) => [
        "--cache_dir",
        DATA,
        "--model_name",
        base,
        "--output_dir",
        out,
        "--dtype",
        "fp32",
        "--stage",
        stage,
        "--datasets",
        "[{oasft_demo: {count: 40, val_split: 0.2}}]",
        "--per_device_train_batch_size",
        "4",
        "--learning_rate",
        "1e-3",
        "--warmup_steps",
        "1",
        "--logging_steps",
        "1",
        "--max_length",
        "96",
        ...extra,
      ];
      const config = (out: string, stage: string, extra: string[]) =>
        composeConfig(["defaults", "tiny-tokenizer"], args(out, stage, extra)).config;
      const log = (out: string) =>
        readFileSync(join(out, "log.jsonl"), "utf8")
          .trim()
          .split("\n")
          .map((l) => JSON.parse(l) as Record<string, unknown>);

      const dpo = tmp();
      await train(config(dpo, "dpo", ["--max_steps", "1", "--eval_steps", "1000"]), {
        progress: false,
        print: () => {},
      });
      assert.ok(Math.abs((log(dpo)[0]!.loss as number) - Math.LN2) < 1e-6, `${family} step 1: ${log(dpo)[0]!.loss}`);

      const rm = tmp();
      const cfg = config(rm, "rm", ["--max_steps", "2", "--eval_steps", "2"]);
      await train(cfg, { progress: false, print: () => {} });
      const json = JSON.parse(readFileSync(join(rm, "config.json"), "utf8")) as { architectures: string[] };
      const causal = JSON.parse(readFileSync(join(base, "config.json"), "utf8")) as { architectures: string[] };
      assert.deepEqual(json.architectures, [
        causal.architectures[0]!.replace(/ForCausalLM$/, "ForSequenceClassification"),
      ]);
      const header = torch.readSafetensorsHeader(join(rm, "model.safetensors"));
      assert.equal(header.entries.get("score.weight")?.shape[0], 1);
      assert.ok(![...header.entries.keys()].includes("lm_head.weight"));
      // The eval the run logged at its last step, recomputed from the saved folder on the same held-out groups.
      const logged = (
        log(rm).find((r) => r.type === "eval")!.datasets as Record<string, { loss: number; accuracy: number }>
      ).oasft_demo!;
      const data = await preparePrefData(cfg, loadConfigTokenizer(cfg), "rm");
      const model = loadRewardModel(rm, { dtype: "float32", device: "cpu" });
      try {
        const again = rmObjective(data, cfg, 4, "cpu").evaluate({
          model,
          precision: "fp32",
          device: "cpu",
          processGroup: soloGroup,
        }).oasft_demo!;
        assert.ok(
          Math.abs(again.loss - logged.loss) < 1e-5 && again.accuracy === logged.accuracy,
          `${JSON.stringify(again)} vs ${JSON.stringify(logged)}`,
        );
      } finally {
        model.dispose();
      }
    },
  );
}
