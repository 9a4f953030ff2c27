// `oasft init`: a new model, random-initialised as HF's _init_weights, saved in the HF layout.
import { existsSync } from "node:fs";
import { join } from "node:path";
import * as torch from "../../torch/index.js";
import { createCausalLM, readJsonFile, saveCausalLM } from "../../models/index.js";
import { ChatTokenizer } from "../../tokenizer/index.js";
import { roundUp } from "../../sft/collate.js";
import { intFlag, parseFlags, required, UsageError } from "../args.js";
import type { Command } from "../main.js";
import { DEVICE_FLAGS, DEVICE_USAGE, placement } from "../placement.js";

/** HF's size strings ("5GB" = 5·10⁹, "500MB", "2GiB", or plain bytes), as save_pretrained's max_shard_size. */
export function parseSize(text: string, flag: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B)?\s*$/i.exec(text);
  if (!m) throw new UsageError(`${flag} ${text}: expected a size such as 5GB, 500MB or 2GiB`);
  const unit = (m[2] ?? "B").toUpperCase();
  const scale: Record<string, number> = {
    B: 1,
    KB: 1e3,
    MB: 1e6,
    GB: 1e9,
    TB: 1e12,
    KIB: 2 ** 10,
    MIB: 2 ** 20,
    GIB: 2 ** 30,
    TIB: 2 ** 40,
  };
  const bytes = Math.floor(Number(m[1]) * scale[unit]!);
  if (bytes < 1) throw new UsageError(`${flag} ${text}: must be at least 1 byte`);
  return bytes;
}

const USAGE = `usage: oasft init --config config.json --out DIR [--tokenizer tokenizer.json|DIR]
                  [--tokenizer-family NAME] [--seed N] [--max-shard-size 5GB] ${DEVICE_USAGE}

  Writes DIR/config.json, generation_config.json, model.safetensors. With a tokenizer, it is saved too
  with OA's chat tokens added, the vocabulary grows to cover it (rounded up to 16) and the
  bos/eos/pad ids follow it.`;

export const command: Command = {
  async run(argv) {
    const { values } = parseFlags(
      argv,
      {
        config: { type: "string" },
        out: { type: "string" },
        tokenizer: { type: "string" },
        seed: { type: "string" },
        force: { type: "boolean" },
        "tokenizer-family": { type: "string" },
        "max-shard-size": { type: "string" },
        ...DEVICE_FLAGS,
      },
      USAGE,
    );
    const configPath = required(values, "config", USAGE);
    const out = required(values, "out", USAGE);
    const tokenizerFile = values.tokenizer as string | undefined;
    if (tokenizerFile && !existsSync(tokenizerFile))
      throw new UsageError(`--tokenizer: ${tokenizerFile} does not exist`);
    if (existsSync(join(out, "config.json")) && !values.force)
      throw new UsageError(`--out: ${out} already holds a model (pass --force to overwrite)`);
    const { device, dtype } = placement(values);
    const maxShardBytes =
      values["max-shard-size"] === undefined
        ? undefined
        : parseSize(String(values["max-shard-size"]), "--max-shard-size");
    torch.manualSeed(intFlag(values, "seed", 0, 0));
    const json = readJsonFile(configPath, "--config");
    const tokenizer = tokenizerFile
      ? ChatTokenizer.load(tokenizerFile, {
          ...(values["tokenizer-family"] ? { family: values["tokenizer-family"] as string } : {}),
        })
      : undefined;
    if (tokenizer) {
      const vocab = Math.max(Number(json.vocab_size ?? 0), roundUp(tokenizer.vocabSize, 16));
      if (vocab !== json.vocab_size)
        console.error(
          `note: vocab_size ${String(json.vocab_size)} → ${vocab} to cover the tokenizer's ` +
            `${tokenizer.vocabSize} tokens`,
        );
      Object.assign(json, {
        vocab_size: vocab,
        bos_token_id: tokenizer.eosId,
        eos_token_id: tokenizer.eosId,
        pad_token_id: tokenizer.padId,
      });
    }
    const model = createCausalLM(json, { dtype, device }, configPath);
    saveCausalLM(model, out, { ...(maxShardBytes ? { maxShardBytes } : {}) });
    tokenizer?.save(out);
    console.log(
      `${out}: ${model.config.modelType}, ${(model.numParameters() / 1e6).toFixed(2)}M parameters, ${dtype}, made ` +
        `on ${device}`,
    );
    model.dispose();
    return 0;
  },
};
