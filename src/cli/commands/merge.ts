// `oasft merge --model BASE --adapter DIR --out DIR`: a PEFT LoRA adapter folded into its base model
// (W + (α/r)·B·A per adapted layer), written as a plain Hugging Face model folder with the tokenizer
// and its chat template, for tools that do not read adapters.
import { existsSync } from "node:fs";
import { join } from "node:path";
import * as torch from "../../torch/index.js";
import { createCausalLM, loadWithAdapter, resolveModelDir, saveCausalLM } from "../../models/index.js";
import { ChatTokenizer } from "../../tokenizer/index.js";
import { parseFlags, required, UsageError } from "../args.js";
import type { Command } from "../main.js";
import { DEVICE_FLAGS, DEVICE_USAGE, placement } from "../placement.js";

const USAGE = `usage: oasft merge --model BASE --adapter DIR --out DIR [--force] ${DEVICE_USAGE}

  BASE is the model the adapter was trained on (a folder, or a hub name in the Hugging Face cache).
  The merged model is saved in --dtype (default fp32), sharded above 5 GB as save_pretrained does.`;

export const command: Command = {
  async run(argv) {
    const { values } = parseFlags(
      argv,
      {
        model: { type: "string" },
        adapter: { type: "string" },
        out: { type: "string" },
        force: { type: "boolean" },
        ...DEVICE_FLAGS,
      },
      USAGE,
    );
    const base = resolveModelDir(required(values, "model", USAGE), "--model");
    const adapter = required(values, "adapter", USAGE);
    const out = required(values, "out", USAGE);
    if (existsSync(join(out, "config.json")) && !values.force)
      throw new UsageError(`--out: ${out} already holds a model (pass --force to overwrite)`);
    const { device, dtype } = placement(values);
    const model = loadWithAdapter(base, adapter, { device, dtype: "float32", merge: true });
    try {
      if (dtype === "float32") saveCausalLM(model, out);
      else {
        // Merged in fp32, then cast once: the sum is rounded, not each of its terms.
        const cast = createCausalLM(model.configJson(), { dtype, device, init: "empty" });
        const src = new Map(model.namedParameters());
        torch.noGrad(() => {
          for (const [n, p] of cast.namedParameters()) torch.scope(() => p.copy_(src.get(n)!));
        });
        saveCausalLM(cast, out);
        cast.dispose();
      }
    } finally {
      model.dispose();
    }
    const tokDir = existsSync(join(adapter, "tokenizer.json")) ? adapter : base;
    if (existsSync(join(tokDir, "tokenizer.json"))) ChatTokenizer.load(tokDir).save(out);
    console.log(`${out}: ${base} + ${adapter} merged (${dtype})`);
    return 0;
  },
};
