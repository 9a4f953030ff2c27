// The preference stages as the trainer's plug-ins (train/objective.ts's Stage): `stage: rm` trains a
// reward model (a scalar head, OA's ranking loss), `stage: dpo` tunes the policy against reference
// log-probabilities computed once, from ref_model or the starting model. Both read ranked replies.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { isRewardModelDir, loadCausalLM, resolveModelDir, type CausalLM } from "../models/index.js";
import { ConfigError } from "../sft/config.js";
import type { ChatTokenizer } from "../tokenizer/index.js";
import type { RunSetup } from "../train/loop.js";
import { stages, type Objective, type Stage } from "../train/objective.js";
import { preparePrefData, type PrefData } from "./data.js";
import { dpoObjective, REFERENCE_FILE, setupReference } from "./dpo.js";
import { rmObjective } from "./rm.js";

/** Ranked replies as the stage's units (pairs for DPO); none is an error before any model loads. */
async function prepareRanked(run: RunSetup, tokenizer: ChatTokenizer, stage: "rm" | "dpo"): Promise<PrefData> {
  const { cfg } = run;
  if (cfg.packing) run.print(`note: packing is off for stage ${stage}: a pair's rows are scored whole`);
  const data = await preparePrefData(cfg, tokenizer, stage);
  if (!data.datasets.some((d) => d.train.length)) {
    const unit = stage === "rm" ? "groups" : "pairs";
    const names = data.datasets.map((d) => `${d.name} (0 train ${unit})`).join(", ");
    throw new ConfigError(`nothing to train on: ${names} give no ranked replies`);
  }
  if (data.truncated) {
    const what = `${data.truncated} preference unit(s) were longer than max_length ${cfg.max_length}`;
    run.print(`note: ${what} and were cut (prompt first)`);
  }
  return data;
}

/**
 * DPO's objective. The reference log-probabilities are computed once, from ref_model or the starting
 * model (with LoRA: the base, since new adapters start as the identity), or read back on resume.
 */
function dpoSetup(run: RunSetup, pref: PrefData, model: CausalLM): Objective {
  const { cfg, settings, device } = run;
  const env = { precision: settings.precision, device };
  const at = {
    outputDir: run.outputDir,
    lead: run.lead,
    batchSize: cfg.per_device_eval_batch_size,
    refModel: cfg.ref_model,
  };
  if (run.resumeDir) {
    setupReference(model, pref, env, { ...at, resumeDir: run.resumeDir });
  } else {
    const t0 = performance.now();
    const units = pref.datasets.reduce((n, d) => n + d.train.length + d.val.length, 0);
    run.print(`reference log-probabilities of ${cfg.ref_model ?? "the starting model"}: ${units} pairs...`);
    const reference = cfg.ref_model ? referenceModel(cfg.ref_model, model, device) : model;
    try {
      setupReference(reference, pref, env, at);
    } finally {
      if (reference !== model) reference.dispose();
    }
    run.print(`reference log-probabilities: done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  return dpoObjective(pref, cfg, settings.microBatchSize, device);
}

/** ref_model, loaded for the reference pass only; it must read the policy's tokens as the policy does. */
function referenceModel(name: string, policy: CausalLM, device: string): CausalLM {
  const dir = resolveModelDir(name, "ref_model");
  if (!existsSync(join(dir, "config.json"))) {
    const expected = "expected a Hugging Face model folder";
    throw new ConfigError(`ref_model ${name}: not a model folder (no config.json); ${expected}`);
  }
  if (isRewardModelDir(dir)) throw new ConfigError(`ref_model ${name}: a reward model; the reference is a causal LM`);
  const ref = loadCausalLM(dir, { dtype: "float32", device });
  if (ref.config.vocabSize !== policy.config.vocabSize) {
    ref.dispose();
    throw new ConfigError(
      `ref_model ${name}: ${ref.config.vocabSize} token rows, the policy has ${policy.config.vocabSize}; ` +
        "the reference must share the policy's tokenizer",
    );
  }
  return ref;
}

stages.register("rm", {
  prepare: (run, tokenizer) => prepareRanked(run, tokenizer, "rm"),
  objective: (run, data, _model) => rmObjective(data as PrefData, run.cfg, run.settings.microBatchSize, run.device),
  scoreHead: true,
} satisfies Stage);

stages.register("dpo", {
  prepare: (run, tokenizer) => prepareRanked(run, tokenizer, "dpo"),
  objective: (run, data, model) => dpoSetup(run, data as PrefData, model),
  keys: ["ref_model"],
  runFiles: [REFERENCE_FILE],
} satisfies Stage);
