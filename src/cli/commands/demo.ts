// `oasft demo`: the README's main job, from nothing to a chat reply on a fresh machine, offline:
//   1. data: conversations written for the project (built in), plus the real oasst/dolly/ShareGPT
//      samples in ../shared/data when that folder exists;
//   2. a byte-level BPE tokenizer trained on them, with BLOOM's and OA's special tokens;
//   3. a small BLOOM trained from scratch by `oasft train`'s loop (OA format, assistant-only loss,
//      packing), saved in the Hugging Face layout;
//   4. validation loss against the unigram baseline, then greedy replies to a few prompts.
import { existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { loadCausalLM } from "../../models/index.js";
import { Engine } from "../../generate/engine.js";
import { CHAT_REPETITION_PENALTY } from "../../generate/sampling.js";
import { loadDatasetMix, parseDatasetEntries } from "../../data/mix.js";
import { Rng } from "../../data/rng.js";
import { composeConfig, type SFTConfig } from "../../sft/config.js";
import { prepareSftData, trainingSample, type SftData } from "../../sft/data.js";
import { formatPrompt } from "../../sft/format.js";
import { ChatTokenizer, QA_SPECIAL_TOKENS } from "../../tokenizer/index.js";
import { saveTokenizerJson, trainByteLevelBpe } from "../../tokenizer/bpe-trainer.js";
import { train } from "../../train/trainer.js";
import { writeFileAtomic } from "../../util/atomic-file.js";
import { intFlag, parseFlags } from "../args.js";
import type { Command } from "../main.js";
import { placement } from "../placement.js";

const USAGE = `usage: oasft demo [--out runs/demo] [--steps 600] [--seed 0] [--no-shared]
                  [--device auto|cpu|cuda|cuda:N]

  Trains a BPE tokenizer and a ~2M-parameter BLOOM from scratch on built-in conversations (and the
  real samples in ../shared/data when present), prints the validation loss against the unigram
  baseline, saves the model in the Hugging Face layout and prints its replies. A few minutes on 2 cores.`;

const SHARED_DATA = resolve(fileURLToPath(import.meta.url), "../../../../../../shared/data");
const VOCAB = 2048;

/** Cross entropy of the validation targets under the training targets' add-one unigram distribution. */
function unigramLoss(data: SftData, cfg: SFTConfig, vocab: number): number {
  const counts = new Float64Array(vocab).fill(1);
  let total = vocab;
  const targets = (split: "train" | "val") =>
    data.datasets.flatMap((d) =>
      (split === "train" ? d.train : d.val).map((s) => {
        const t = trainingSample(s, { ...cfg, random_offset_probability: 0 }, data.prefixIds, new Rng(0), split);
        return t.inputIds.filter((_, i) => i > 0 && t.labelMask[i - 1]);
      }),
    );
  for (const ids of targets("train"))
    for (const id of ids) {
      counts[id]!++;
      total++;
    }
  let sum = 0;
  let n = 0;
  for (const ids of targets("val"))
    for (const id of ids) {
      sum -= Math.log(counts[id]! / total);
      n++;
    }
  return sum / n;
}

export const command: Command = {
  async run(argv) {
    const flags = {
      out: { type: "string" },
      steps: { type: "string" },
      seed: { type: "string" },
      "no-shared": { type: "boolean" },
      device: { type: "string" },
    } as const;
    const { values } = parseFlags(argv, flags, USAGE);
    const { device } = placement(values);
    const out = resolve((values.out as string | undefined) ?? "runs/demo");
    const steps = intFlag(values, "steps", 600);
    const seed = intFlag(values, "seed", 0, 0);
    const useShared = !values["no-shared"] && existsSync(join(SHARED_DATA, "oasst/en_100_tree.jsonl"));
    mkdirSync(out, { recursive: true });
    const datasets = demoDatasets(useShared);
    const tokDir = await trainDemoTokenizer(datasets, out, seed);
    const config = demoConfig(out, tokDir, steps, seed, device);
    config.datasets = datasets;
    const tokenizer = ChatTokenizer.load(tokDir, { family: "bloom" });
    const baseline = unigramLoss(await prepareSftData(config, tokenizer), config, tokenizer.vocabSize);
    const summary = await train(config, {});
    const run = `${summary.steps} steps, ${summary.elapsedS.toFixed(0)} s, ${summary.tokensPerS.toFixed(0)} tok/s`;
    console.log(`validation loss ${summary.evalLoss?.toFixed(3)} vs unigram baseline ${baseline.toFixed(3)} (${run})`);
    console.log(`saved ${out} (Hugging Face layout; log.jsonl, training.svg, summary.json)`);
    await demoReplies(out, tokenizer, device, useShared);
    return 0;
  },
};

/** 1. Data: the built-in conversations, and the shared samples of the card's datasets when present. */
function demoDatasets(useShared: boolean): unknown[] {
  const datasets: unknown[] = [{ oasft_demo: { count: 3000, val_split: 0.05 } }];
  if (useShared) {
    datasets.push(
      { oasst_export: { input_file_path: join(SHARED_DATA, "oasst/en_100_tree.jsonl"), val_split: 0.05 } },
      { dolly15k: { input_file_path: join(SHARED_DATA, "dolly/databricks-dolly-15k.jsonl"), val_split: 0.05 } },
      { vicuna: { input_file_path: join(SHARED_DATA, "sharegpt/dummy_conversation.json"), val_split: 0.05 } },
    );
  }
  const shared = useShared ? ` + oasst, dolly and ShareGPT samples from ${SHARED_DATA}` : "";
  console.log(`data: built-in conversations${shared}`);
  return datasets;
}

/** 2. A byte-level BPE tokenizer trained on the training split's text, with OA's tokens; returns its folder. */
async function trainDemoTokenizer(datasets: unknown[], out: string, seed: number): Promise<string> {
  const tokDir = join(out, "tokenizer");
  const entries = parseDatasetEntries(datasets, "demo");
  const mix = await loadDatasetMix(entries, { seed, cacheDir: out, formatVersion: "head" });
  const texts = mix.flatMap((d) => d.train.flatMap((c) => c.messages.map((m) => m.text)));
  const t0 = performance.now();
  const specialTokens = ["<unk>", "<s>", "</s>", "<pad>", ...QA_SPECIAL_TOKENS];
  saveTokenizerJson(join(tokDir, "tokenizer.json"), trainByteLevelBpe(texts, { vocabSize: VOCAB, specialTokens }));
  ChatTokenizer.load(tokDir, { family: "bloom" }).save(tokDir);
  const took = ((performance.now() - t0) / 1000).toFixed(1);
  console.log(`tokenizer: byte-level BPE, ${VOCAB} tokens, trained in ${took} s → ${tokDir}`);
  return tokDir;
}

/** 3. The model config and the run's settings: OA's defaults, adjusted for a tiny model on a CPU. */
function demoConfig(out: string, tokDir: string, steps: number, seed: number, device: string) {
  const modelConfig = join(out, "model-config.json");
  const json = {
    model_type: "bloom",
    vocab_size: VOCAB,
    hidden_size: 192,
    n_layer: 4,
    n_head: 6,
    tie_word_embeddings: true,
  };
  writeFileAtomic(modelConfig, [JSON.stringify(json, null, 2) + "\n"]);
  const flags: Record<string, string | number | true> = {
    model_name: modelConfig,
    tokenizer_name: tokDir,
    tokenizer_family: "bloom",
    output_dir: out,
    dtype: "fp32",
    max_length: 256,
    packing: true,
    per_device_train_batch_size: 8,
    gradient_accumulation_steps: 1,
    learning_rate: "3e-3",
    weight_decay: 0.01,
    warmup_steps: Math.min(50, Math.floor(steps / 10)),
    lr_scheduler_type: "cosine",
    max_steps: steps,
    eval_steps: Math.max(1, Math.floor(steps / 2)),
    save_steps: steps,
    save_total_limit: 1,
    logging_steps: 10,
    rng_seed: seed,
    cache_dir: out,
    device,
    overwrite_output_dir: true,
  };
  const argv = Object.entries(flags).flatMap(([k, v]) => (v === true ? [`--${k}`] : [`--${k}`, String(v)]));
  return composeConfig(["defaults"], argv).config;
}

/** 4. Replies from the saved model, with the settings `oasft chat` uses (greedy, repetition penalty). */
async function demoReplies(out: string, tokenizer: ChatTokenizer, device: string, useShared: boolean): Promise<void> {
  const model = loadCausalLM(out, { device }).eval();
  const engine = new Engine(model, tokenizer, { maxBatch: 4 });
  const params = { maxNewTokens: 48, repetitionPenalty: CHAT_REPETITION_PENALTY };
  const prompts = [
    "What is the capital of Italy?",
    "What is 23 + 19?",
    "How many minutes are in 4 hours?",
    ...(useShared ? ["What is a meme, and what's the history behind this word?"] : []),
  ];
  try {
    for (const prompt of prompts) {
      const ids = await tokenizer.encode(formatPrompt([{ role: "prompter", text: prompt }], tokenizer.eos));
      const reply = await engine.submit({ promptIds: ids, params }).result;
      console.log(`\n<|prompter|> ${prompt}\n<|assistant|> ${reply.text.trim()}`);
    }
  } finally {
    model.dispose();
  }
}
