// `oasft tokenizer train`: a byte-level BPE tokenizer.json from text or JSONL files.
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { saveTokenizerJson, trainByteLevelBpe, trainingTexts } from "../../tokenizer/bpe-trainer.js";
import { QA_SPECIAL_TOKENS, ChatTokenizer } from "../../tokenizer/index.js";
import { writeFileAtomic } from "../../util/atomic-file.js";
import { intFlag, parseFlags, required, UsageError } from "../args.js";
import type { Command } from "../main.js";

const USAGE = `usage: oasft tokenizer train --vocab-size N --out DIR [--special-tokens a,b,...] [--min-frequency 2]
                             FILES...

  Trains a byte-level BPE (GPT-2 style: every byte encodable, exact round trips) on the files
  (.jsonl: every string in each record; anything else: its text) and writes DIR/tokenizer.json,
  tokenizer_config.json and special_tokens_map.json. Default special tokens: BLOOM's
  <unk> <s> </s> <pad>, then OA's ${QA_SPECIAL_TOKENS.join(" ")}.`;

export const command: Command = {
  async run(argv) {
    const [sub, ...rest] = argv;
    if (sub !== "train")
      throw new UsageError(sub === undefined || sub === "--help" ? USAGE : `unknown subcommand '${sub}'\n\n${USAGE}`);
    const { values, positionals } = parseFlags(
      rest,
      {
        "vocab-size": { type: "string" },
        out: { type: "string" },
        "special-tokens": { type: "string" },
        "min-frequency": { type: "string" },
      },
      USAGE,
    );
    const vocabSize = intFlag(values, "vocab-size", 0, 1);
    if (!vocabSize) throw new UsageError(`--vocab-size is required\n\n${USAGE}`);
    const out = required(values, "out", USAGE);
    if (!positionals.length) throw new UsageError(`no training files given\n\n${USAGE}`);
    for (const f of positionals) if (!existsSync(f)) throw new UsageError(`${f}: not found`);
    const special =
      typeof values["special-tokens"] === "string"
        ? (values["special-tokens"] as string).split(",").filter(Boolean)
        : ["<unk>", "<s>", "</s>", "<pad>", ...QA_SPECIAL_TOKENS];
    const t0 = performance.now();
    const json = trainByteLevelBpe(positionals.flatMap(trainingTexts), {
      vocabSize,
      specialTokens: special,
      minFrequency: intFlag(values, "min-frequency", 2, 1),
      onProgress: (m, target) => process.stderr.write(`\rmerges ${m}/${target}`),
    });
    process.stderr.write("\n");
    mkdirSync(out, { recursive: true });
    saveTokenizerJson(join(out, "tokenizer.json"), json);
    // Family tokens for BLOOM-style specials when present, else the first special token as eos.
    const eos = special.includes("</s>") ? "</s>" : special[0]!;
    const pad = special.includes("<pad>") ? "<pad>" : eos;
    writeFileAtomic(join(out, "tokenizer_config.json"), [
      JSON.stringify(
        {
          eos_token: eos,
          pad_token: pad,
          bos_token: special.includes("<s>") ? "<s>" : eos,
          unk_token: special.includes("<unk>") ? "<unk>" : null,
          tokenizer_class: "PreTrainedTokenizerFast",
          clean_up_tokenization_spaces: false,
        },
        null,
        2,
      ) + "\n",
    ]);
    const tok = ChatTokenizer.load(out);
    tok.save(out);
    console.log(
      `wrote ${join(out, "tokenizer.json")}: ${tok.vocabSize} tokens in ` +
        `${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
    return 0;
  },
};
