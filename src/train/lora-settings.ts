// The LoRA settings of a run: OA's peft_config block, checked key by key, with PEFT's defaults and
// the architecture's default target modules.
import type { CausalLM, LoraConfig } from "../models/index.js";
import { PEFT_CONFIG_KEYS, type Settings } from "../sft/config.js";
import { ConfigError } from "../util/config-error.js";
import { describeNumber, keepsRule } from "../util/validate.js";

const DEFAULTS = { r: 16, lora_alpha: 32, lora_dropout: 0.05, bias: "none", modules_to_save: null } as const;
const KEYS = new Set(PEFT_CONFIG_KEYS);

export function loraSettings(cfg: Settings<"lora">, model: CausalLM, scoreHead = false): LoraConfig {
  const given = cfg.peft_config ?? {};
  const where = "peft_config";
  for (const key of Object.keys(given)) {
    if (!KEYS.has(key))
      throw new ConfigError(
        `${where} › ${key}: unknown key; expected ${[...KEYS].filter((k) => k !== "peft_type").join(", ")}`,
      );
  }
  const num = (key: "r" | "lora_alpha" | "lora_dropout") => {
    const v = given[key] ?? DEFAULTS[key];
    // Ranges are checked where the values are used (applyLora), with the same rules for PEFT's files.
    if (!keepsRule(v, {}))
      throw new ConfigError(`${where} › ${key}: expected ${describeNumber({})}, got ${JSON.stringify(v)}`);
    return v;
  };
  const list = (key: "target_modules" | "modules_to_save") => {
    const v = given[key];
    if (v === undefined || v === null) return null;
    const arr = typeof v === "string" ? [v] : v;
    if (!Array.isArray(arr) || !arr.every((x) => typeof x === "string" && x))
      throw new ConfigError(`${where} › ${key}: expected a list of module names`);
    return arr as string[];
  };
  // A reward model is PEFT's SEQ_CLS task: its score head trains in full and is saved with the adapter.
  const task = scoreHead ? "SEQ_CLS" : "CAUSAL_LM";
  if (given.task_type !== undefined && given.task_type !== task) {
    throw new ConfigError(
      `${where} › task_type: this run trains ${task} adapters, got ${JSON.stringify(given.task_type)}`,
    );
  }
  const toSave = list("modules_to_save");
  // Values are checked against their ranges (and bias against "none") where they are used: applyLora.
  return {
    r: num("r"),
    lora_alpha: num("lora_alpha"),
    lora_dropout: num("lora_dropout"),
    target_modules: list("target_modules") ?? model.defaultLoraTargets,
    bias: (given.bias ?? DEFAULTS.bias) as "none",
    modules_to_save: task === "SEQ_CLS" ? [...new Set([...(toSave ?? []), "score"])] : toSave,
    task_type: task,
  };
}
