// --model DIR [--adapter DIR]: the model an inference command runs. With a PEFT LoRA adapter, the
// adapter is merged into the base weights at load (one forward per layer, as fast as a plain model),
// and the tokenizer comes from the adapter folder when it has one (a fine-tune may have added tokens).
import { existsSync } from "node:fs";
import { join } from "node:path";
import { loadCausalLM, loadWithAdapter, resolveModelDir, type CausalLM } from "../models/index.js";
import { ChatTokenizer } from "../tokenizer/index.js";
import type { DType } from "../torch/index.js";

export const ADAPTER_USAGE = "[--adapter DIR]";

export function loadForInference(
  values: Record<string, unknown>, dir: string, o: { device: string; dtype: DType; tokenizerFamily?: string },
): { model: CausalLM; tokenizer: ChatTokenizer; tokenizerDir: string } {
  const adapter = typeof values.adapter === "string" ? values.adapter : undefined;
  const tokenizerDir = adapter && existsSync(join(adapter, "tokenizer.json")) ? adapter : dir;
  const tokenizer = ChatTokenizer.load(tokenizerDir, { ...(o.tokenizerFamily ? { family: o.tokenizerFamily } : {}) });
  const model = adapter
    ? loadWithAdapter(resolveModelDir(dir, "--model"), adapter, { device: o.device, dtype: o.dtype, merge: true })
    : loadCausalLM(dir, { device: o.device, dtype: o.dtype });
  return { model, tokenizer, tokenizerDir };
}
