// `oasft demo`: the README's main job. A small BLOOM trained from scratch, in the Open-Assistant format
// with the loss on assistant tokens only, on real oasst conversations (../shared/data/oasst), then
// saved in the HF layout, reloaded, and asked a question.
//
// The data goes through the real pipeline (every leaf thread, OA's format and masks). The training loop
// here is a preview of `oasft train`; the tokenizer is OA's tiny byte-level BPE.
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Conversation } from "../../data/conversation.js";
import { loadDatasetMix } from "../../data/mix.js";
import { Rng } from "../../data/rng.js";
import { sampleLabels } from "../../sft/collate.js";
import { composeConfig } from "../../sft/config.js";
import { encodeConversations, trainingSample } from "../../sft/data.js";
import { formatPrompt } from "../../sft/format.js";
import { ChatTokenizer } from "../../tokenizer/index.js";
import * as torch from "../../torch/index.js";
import { createCausalLM, loadCausalLM, saveCausalLM, type CausalLM } from "../../models/index.js";
import { generateGreedy } from "../../generate/index.js";
import { AdamW } from "../../train/index.js";
import { intFlag, parseFlags, UsageError } from "../args.js";
import type { Command } from "../main.js";

const USAGE = `usage: oasft demo [--out runs/demo] [--steps 300] [--data FILE.jsonl] [--tokenizer tokenizer.json] [--seed 0]

  Trains a ~1M-parameter BLOOM on oasst conversation threads for --steps steps (a few minutes on 2 cores),
  prints the validation loss against the unigram baseline, saves the model and prints a reply.`;

const SHARED = resolve(fileURLToPath(import.meta.url), "../../../../../../shared");
const MAX_LENGTH = 256;

interface Sample { ids: number[]; labels: number[] }

/**
 * The oasst threads in OA's format through the real data pipeline (oasst_export loader, formatting,
 * label masks, head truncation), as HF-style labels (−100 = not trained).
 */
async function oasstSamples(dataPath: string, tokenizerPath: string, seed: number): Promise<{ train: Sample[]; val: Sample[]; tok: ChatTokenizer }> {
  const { config } = composeConfig(["defaults"], ["--max_length", String(MAX_LENGTH), "--random_offset_probability", "0", "--rng_seed", String(seed)]);
  const tok = ChatTokenizer.load(tokenizerPath, { family: "pythia" });
  const [d] = await loadDatasetMix([{ name: "oasst_export", options: { input_file_path: resolve(dataPath), val_split: 0.1 } }], { seed, cacheDir: ".", formatVersion: "head" });
  const toSamples = async (convs: Conversation[], split: string) => {
    const rng = new Rng(seed, `demo/${split}`);
    return (await encodeConversations(convs, tok, config, rng)).map((full) => {
      const s = trainingSample(full, config, [], rng);
      return { ids: s.inputIds, labels: sampleLabels(s) };
    });
  };
  return { train: await toSamples(d!.train, "train"), val: await toSamples(d!.val, "val"), tok };
}

/** The token ids a sample trains on as next-token targets (labels shift by one, −100 = not trained). */
const trainedTargets = (s: Sample) => s.labels.slice(1).filter((l) => l !== -100);

function batchOf(samples: Sample[], padId: number) {
  const len = Math.max(...samples.map((s) => s.ids.length));
  const pad = (xs: number[], v: number) => [...xs, ...new Array(len - xs.length).fill(v)];
  return {
    inputIds: torch.tensor(samples.map((s) => pad(s.ids, padId)), { dtype: "int64" }),
    attentionMask: torch.tensor(samples.map((s) => pad(s.ids.map(() => 1), 0)), { dtype: "int64" }),
    labels: torch.tensor(samples.map((s) => pad(s.labels, -100)), { dtype: "int64" }),
  };
}

/** Mean validation loss over every trained token (batched, no grad). */
function validationLoss(model: CausalLM, samples: Sample[], padId: number): number {
  let sum = 0;
  let count = 0;
  model.eval();
  torch.noGrad(() => {
    for (let i = 0; i < samples.length; i += 8) {
      torch.scope(() => {
        const chunk = samples.slice(i, i + 8);
        const n = chunk.reduce((a, s) => a + trainedTargets(s).length, 0);
        sum += model.forward(batchOf(chunk, padId)).loss!.item() * n;
        count += n;
      });
    }
  });
  model.train();
  return sum / count;
}

/** Cross entropy of the validation targets under the training set's add-one unigram distribution. */
function unigramLoss(train: Sample[], val: Sample[], vocab: number): number {
  const counts = new Float64Array(vocab).fill(1);
  let total = vocab;
  for (const s of train) for (const l of trainedTargets(s)) { counts[l]!++; total++; }
  let sum = 0;
  let n = 0;
  for (const s of val) for (const l of trainedTargets(s)) { sum -= Math.log(counts[l]! / total); n++; }
  return sum / n;
}

export const command: Command = {
  async run(argv) {
    const { values } = parseFlags(argv, {
      out: { type: "string" }, steps: { type: "string" }, data: { type: "string" }, tokenizer: { type: "string" }, seed: { type: "string" },
    }, USAGE);
    const out = (values.out as string | undefined) ?? "runs/demo";
    const steps = intFlag(values, "steps", 300);
    const dataPath = (values.data as string | undefined) ?? join(SHARED, "data/oasst/en_100_tree.jsonl");
    const tokenizerPath = (values.tokenizer as string | undefined) ?? join(SHARED, "data/tokenizers/oasst-tiny-bpe/tokenizer.json");
    for (const [flag, p] of [["--data", dataPath], ["--tokenizer", tokenizerPath]] as const) {
      if (!existsSync(p)) throw new UsageError(`${flag}: ${p} not found`);
    }
    const seed = intFlag(values, "seed", 0, 0);
    torch.manualSeed(seed);
    const random = new Rng(seed, "demo/batches");

    const { train, val, tok } = await oasstSamples(dataPath, tokenizerPath, seed);
    const eos = tok.eos;
    const padId = tok.padId;
    console.log(`data: ${train.length + val.length} oasst threads from ${dataPath} (${train.length} train, ${val.length} validation, split by tree)`);

    const vocab = tok.vocabSize;
    const model = createCausalLM({
      model_type: "bloom", vocab_size: vocab, hidden_size: 128, n_layer: 4, n_head: 4,
      bos_token_id: tok.eosId, eos_token_id: tok.eosId, pad_token_id: padId,
    }).train();
    console.log(`model: BLOOM, ${(model.numParameters() / 1e6).toFixed(2)}M parameters, vocab ${vocab}`);
    const baseline = unigramLoss(train, val, vocab);
    const optimizer = new AdamW(model.parameters(), { lr: 2e-3, weightDecay: 0.0 });
    const warmup = Math.min(30, Math.floor(steps / 10));
    const t0 = performance.now();
    let tokens = 0;
    for (let step = 1; step <= steps; step++) {
      optimizer.lr = 2e-3 * (step <= warmup ? step / warmup : Math.max(0.05, (steps - step) / (steps - warmup)));
      const batch = Array.from({ length: 8 }, () => random.choice(train));
      const loss = torch.scope(() => {
        const { loss } = model.forward(batchOf(batch, padId));
        loss!.backward();
        optimizer.step();
        optimizer.zeroGrad();
        return loss!.item();
      });
      tokens += batch.reduce((a, s) => a + s.ids.length, 0);
      if (step % 25 === 0 || step === steps) {
        const secs = (performance.now() - t0) / 1000;
        const eta = (secs / step) * (steps - step);
        process.stdout.write(`step ${step}/${steps}  loss ${loss.toFixed(3)}  lr ${optimizer.lr.toExponential(2)}  ${(tokens / secs).toFixed(0)} tok/s  ETA ${eta.toFixed(0)}s\n`);
      }
    }
    const valLoss = validationLoss(model, val, padId);
    console.log(`validation loss ${valLoss.toFixed(3)} vs unigram baseline ${baseline.toFixed(3)}`);
    optimizer.dispose();

    saveCausalLM(model, out, { tokenizerFile: tokenizerPath });
    model.dispose();
    const chat = loadCausalLM(out);
    const prompt = "What is a meme, and what's the history behind this word?";
    const promptIds = await tok.encode(formatPrompt([{ role: "prompter", text: prompt }], eos));
    const reply = torch.scope(() => {
      const ids = generateGreedy(chat, { inputIds: torch.tensor([promptIds], { dtype: "int64" }), maxNewTokens: 60, eosTokenId: tok.eosId });
      return ids.toNumbers().slice(promptIds.length).filter((id) => id !== tok.eosId);
    });
    console.log(`saved ${out} (HF layout)\n\n<|prompter|> ${prompt}\n<|assistant|> ${await tok.decode(reply, true)}`);
    chat.dispose();
    return 0;
  },
};
