// `oasft demo`: the README's main job. A small BLOOM trained from scratch, in the Open-Assistant format
// with the loss on assistant tokens only, on real oasst conversations (../shared/data/oasst), then
// saved in the HF layout, reloaded, and asked a question.
//
// This is the foundation's preview of the full recipe (issues: data loaders, `oasft train`): thread
// extraction here follows the first reply of each tree, and the tokenizer is OA's tiny byte-level BPE.
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "tokenizers";
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

/** First-reply threads of oasst message trees, trimmed to end on an assistant reply. */
function readThreads(path: string): string[][] {
  const threads: string[][] = [];
  readFileSync(path, "utf8").split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    let tree: { prompt?: { text?: string; role?: string; replies?: unknown[] } };
    try {
      tree = JSON.parse(line);
    } catch (err) {
      throw new Error(`${path}:${i + 1}: not JSON (${(err as Error).message})`);
    }
    const thread: Array<{ text: string; role: string }> = [];
    let node = tree.prompt as { text?: string; role?: string; replies?: unknown[] } | undefined;
    while (node && typeof node.text === "string") {
      thread.push({ text: node.text, role: node.role ?? "" });
      node = node.replies?.[0] as typeof node;
    }
    while (thread.length && thread[thread.length - 1]!.role !== "assistant") thread.pop();
    if (thread.length >= 2) threads.push(thread.map((m) => m.text));
  });
  return threads;
}

/** OA format: <|prompter|>q<eos><|assistant|>a<eos>...; labels train assistant text and its eos only. */
async function encodeThread(tok: Tokenizer, thread: string[], eos: string): Promise<Sample> {
  const ids: number[] = [];
  const trained: boolean[] = [];
  for (let i = 0; i < thread.length; i++) {
    const isAssistant = i % 2 === 1;
    const tag = await tok.encode(isAssistant ? "<|assistant|>" : "<|prompter|>", null, { addSpecialTokens: false });
    const body = await tok.encode(thread[i]! + eos, null, { addSpecialTokens: false });
    for (const id of tag.getIds()) { ids.push(id); trained.push(false); }
    for (const id of body.getIds()) { ids.push(id); trained.push(isAssistant); }
  }
  const n = Math.min(ids.length, MAX_LENGTH);
  return { ids: ids.slice(0, n), labels: ids.slice(0, n).map((id, t) => (trained[t] ? id : -100)) };
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

/** A small seeded PRNG, so that a demo run is repeatable. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
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
    const random = mulberry32(seed);

    const tok = Tokenizer.fromFile(tokenizerPath);
    const eos = "<|endoftext|>";
    const padId = tok.tokenToId("<|padding|>") ?? 0;
    const threads = readThreads(dataPath);
    const samples = await Promise.all(threads.map((t) => encodeThread(tok, t, eos)));
    const nVal = Math.max(2, Math.round(samples.length * 0.1));
    const val = samples.slice(0, nVal);
    const train = samples.slice(nVal);
    console.log(`data: ${threads.length} threads from ${dataPath} (${train.length} train, ${val.length} validation)`);

    const vocab = tok.getVocabSize(true);
    const model = createCausalLM({
      model_type: "bloom", vocab_size: vocab, hidden_size: 128, n_layer: 4, n_head: 4,
      bos_token_id: tok.tokenToId(eos), eos_token_id: tok.tokenToId(eos), pad_token_id: padId,
    }).train();
    console.log(`model: BLOOM, ${(model.numParameters() / 1e6).toFixed(2)}M parameters, vocab ${vocab}`);
    const baseline = unigramLoss(train, val, vocab);
    const optimizer = new AdamW(model.parameters(), { lr: 2e-3, weightDecay: 0.0 });
    const warmup = Math.min(30, Math.floor(steps / 10));
    const t0 = performance.now();
    let tokens = 0;
    for (let step = 1; step <= steps; step++) {
      optimizer.lr = 2e-3 * (step <= warmup ? step / warmup : Math.max(0.05, (steps - step) / (steps - warmup)));
      const batch = Array.from({ length: 8 }, () => train[Math.floor(random() * train.length)]!);
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
    const promptIds = (await tok.encode(`<|prompter|>${prompt}${eos}<|assistant|>`, null, { addSpecialTokens: false })).getIds();
    const reply = torch.scope(() => {
      const ids = generateGreedy(chat, { inputIds: torch.tensor([promptIds], { dtype: "int64" }), maxNewTokens: 60, eosTokenId: tok.tokenToId(eos) ?? undefined });
      return ids.toNumbers().slice(promptIds.length).filter((id) => id !== tok.tokenToId(eos));
    });
    console.log(`saved ${out} (HF layout)\n\n<|prompter|> ${prompt}\n<|assistant|> ${await tok.decode(reply, true)}`);
    chat.dispose();
    return 0;
  },
};
