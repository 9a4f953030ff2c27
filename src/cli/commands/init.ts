// `oasft init`: a new model, random-initialised as HF's _init_weights, saved in the HF layout.
import { existsSync } from "node:fs";
import { join } from "node:path";
import * as torch from "../../torch/index.js";
import { createCausalLM, readJsonFile, saveCausalLM } from "../../models/index.js";
import { ChatTokenizer } from "../../tokenizer/index.js";
import { roundUp } from "../../sft/collate.js";
import { intFlag, parseFlags, required, UsageError } from "../args.js";
import type { Command } from "../main.js";

const USAGE = `usage: oasft init --config config.json --out DIR [--tokenizer tokenizer.json|DIR] [--tokenizer-family NAME] [--seed N] [--dtype fp32|bf16|fp16]

  Writes DIR/config.json, generation_config.json, model.safetensors. With a tokenizer, it is saved too
  with OA's chat tokens added, the vocabulary grows to cover it (rounded up to 16) and the
  bos/eos/pad ids follow it.`;

export const command: Command = {
  async run(argv) {
    const { values } = parseFlags(argv, {
      config: { type: "string" }, out: { type: "string" }, tokenizer: { type: "string" },
      seed: { type: "string" }, dtype: { type: "string" }, force: { type: "boolean" }, "tokenizer-family": { type: "string" },
    }, USAGE);
    const configPath = required(values, "config", USAGE);
    const out = required(values, "out", USAGE);
    const tokenizerFile = values.tokenizer as string | undefined;
    if (tokenizerFile && !existsSync(tokenizerFile)) throw new UsageError(`--tokenizer: ${tokenizerFile} does not exist`);
    if (existsSync(join(out, "config.json")) && !values.force) throw new UsageError(`--out: ${out} already holds a model (pass --force to overwrite)`);
    const dtype = torch.parseDType((values.dtype as string | undefined) ?? "fp32");
    torch.manualSeed(intFlag(values, "seed", 0, 0));
    const json = readJsonFile(configPath, "--config");
    const tokenizer = tokenizerFile ? ChatTokenizer.load(tokenizerFile, { ...(values["tokenizer-family"] ? { family: values["tokenizer-family"] as string } : {}) }) : undefined;
    if (tokenizer) {
      const vocab = Math.max(Number(json.vocab_size ?? 0), roundUp(tokenizer.vocabSize, 16));
      if (vocab !== json.vocab_size) console.error(`note: vocab_size ${String(json.vocab_size)} → ${vocab} to cover the tokenizer's ${tokenizer.vocabSize} tokens`);
      Object.assign(json, { vocab_size: vocab, bos_token_id: tokenizer.eosId, eos_token_id: tokenizer.eosId, pad_token_id: tokenizer.padId });
    }
    const model = createCausalLM(json, { dtype }, configPath);
    saveCausalLM(model, out);
    tokenizer?.save(out);
    console.log(`${out}: ${model.config.modelType}, ${(model.numParameters() / 1e6).toFixed(2)}M parameters, ${dtype}`);
    model.dispose();
    return 0;
  },
};
