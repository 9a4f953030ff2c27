// --model DIR [--adapter DIR]: the model an inference command runs. With a PEFT LoRA adapter, the
// adapter is merged into the base weights at load (one forward per layer, as fast as a plain model),
// and the tokenizer comes from the adapter folder when it has one (a fine-tune may have added tokens).
import { UsageError } from "./args.js";
import { existsSync } from "node:fs";
import { join } from "node:path";
import {
  ADAPTER_CONFIG,
  isRewardModelDir,
  loadCausalLM,
  loadWithAdapter,
  readAdapterConfig,
  resolveModelDir,
  type CausalLM,
} from "../models/index.js";
import { ChatTemplateError, ChatTokenizer } from "../tokenizer/index.js";
import type { DType } from "../torch/index.js";

export const ADAPTER_USAGE = "[--adapter DIR] [--chat-template auto|oa|model|FILE.jinja]";
/** The flags loadForInference reads besides --model and the placement flags. */
export const MODEL_FLAGS = { adapter: { type: "string" }, "chat-template": { type: "string" } } as const;

export function loadForInference(
  values: Record<string, unknown>,
  modelDir: string,
  o: { device: string; dtype: DType; tokenizerFamily?: string },
): { model: CausalLM; tokenizer: ChatTokenizer; tokenizerDir: string } {
  let dir = modelDir;
  let adapter = typeof values.adapter === "string" ? values.adapter : undefined;
  // --model ADAPTER_DIR: a PEFT adapter folder on the base its adapter_config.json names (as AutoPeftModel).
  if (!adapter && isAdapterOnly(dir)) {
    adapter = dir;
    dir = adapterBase(dir);
  }
  // The model folder first: a missing one is the user's --model, not a tokenizer problem.
  if (!adapter) {
    const resolved = resolveModelDir(dir, "--model");
    if (!existsSync(join(resolved, "config.json"))) {
      const why = !existsSync(resolved) ? "no such folder" : "not a model folder (no config.json)";
      throw new UsageError(`--model ${dir}: ${why}; expected a Hugging Face model folder or a hub name in the cache`);
    }
  }
  const tokenizerDir = adapter && existsSync(join(adapter, "tokenizer.json")) ? adapter : dir;
  const tokenizer = loadInferenceTokenizer(values, tokenizerDir, o.tokenizerFamily);
  const model = adapter
    ? loadWithAdapter(resolveModelDir(dir, "--model"), adapter, { device: o.device, dtype: o.dtype, merge: true })
    : loadCausalLM(dir, {
        device: o.device,
        dtype: o.dtype,
        scoreHead: isRewardModelDir(resolveModelDir(dir, "--model")),
      });
  return { model, tokenizer, tokenizerDir };
}

/**
 * A model's tokenizer for inference: prompts are rendered in the folder's own chat template (auto), or
 * the one --chat-template names.
 */
export function loadInferenceTokenizer(values: Record<string, unknown>, dir: string, family?: string): ChatTokenizer {
  const tokenizer = ChatTokenizer.load(dir, { ...(family ? { family } : {}) });
  const setting = typeof values["chat-template"] === "string" ? values["chat-template"] : undefined;
  if (setting !== undefined) {
    try {
      tokenizer.useTemplate(setting, "--chat-template");
    } catch (err) {
      if (err instanceof ChatTemplateError) throw new UsageError(err.message);
      throw err;
    }
  } else if (tokenizer.templateProblem) {
    console.error(`oasft: ${tokenizer.templateProblem}; prompts use OA's format (--chat-template picks another)`);
  }
  return tokenizer;
}

/** A folder with a PEFT adapter and no model of its own. */
function isAdapterOnly(dir: string): boolean {
  return existsSync(join(dir, ADAPTER_CONFIG)) && !existsSync(join(dir, "config.json"));
}

function adapterBase(dir: string): string {
  const base = readAdapterConfig(dir).base_model_name_or_path;
  if (!base) {
    const why = "base_model_name_or_path is not set";
    throw new UsageError(
      `--model ${dir}: an adapter folder whose ${ADAPTER_CONFIG} names no base (${why}); give --model BASE ` +
        `--adapter ${dir}`,
    );
  }
  return base;
}
