// `oasft init`: a new model, random-initialised as HF's _init_weights, saved in the HF layout.
import { existsSync } from "node:fs";
import { join } from "node:path";
import * as torch from "../../torch/index.js";
import { createCausalLM, readJsonFile, saveCausalLM } from "../../models/index.js";
import { intFlag, parseFlags, required, UsageError } from "../args.js";
import type { Command } from "../main.js";

const USAGE = `usage: oasft init --config config.json --out DIR [--tokenizer tokenizer.json] [--seed N] [--dtype fp32|bf16|fp16]

  Writes DIR/config.json, generation_config.json, model.safetensors (and tokenizer.json when given).`;

export const command: Command = {
  async run(argv) {
    const { values } = parseFlags(argv, {
      config: { type: "string" }, out: { type: "string" }, tokenizer: { type: "string" },
      seed: { type: "string" }, dtype: { type: "string" }, force: { type: "boolean" },
    }, USAGE);
    const configPath = required(values, "config", USAGE);
    const out = required(values, "out", USAGE);
    const tokenizerFile = values.tokenizer as string | undefined;
    if (tokenizerFile && !existsSync(tokenizerFile)) throw new UsageError(`--tokenizer: ${tokenizerFile} does not exist`);
    if (existsSync(join(out, "config.json")) && !values.force) throw new UsageError(`--out: ${out} already holds a model (pass --force to overwrite)`);
    const dtype = torch.parseDType((values.dtype as string | undefined) ?? "fp32");
    torch.manualSeed(intFlag(values, "seed", 0, 0));
    const model = createCausalLM(readJsonFile(configPath, "--config"), { dtype }, configPath);
    saveCausalLM(model, out, { tokenizerFile });
    console.log(`${out}: ${model.config.model_type}, ${(model.numParameters() / 1e6).toFixed(2)}M parameters, ${dtype}`);
    model.dispose();
    return 0;
  },
};
