// `oasft bench train|generate`: the same work as ../shared/bench/peer_torch_bloom.py (random init,
// random tokens, AdamW / greedy decoding with the cache), timed the same way (median of timed steps
// after warm-up), printed as one JSON line. bench/compare.mjs runs both side by side.
import * as torch from "../../torch/index.js";
import { createCausalLM, readJsonFile } from "../../models/index.js";
import { generateGreedy } from "../../generate/index.js";
import { AdamW } from "../../train/index.js";
import { intFlag, parseFlags, required, UsageError } from "../args.js";
import type { Command } from "../main.js";

const USAGE = `usage:
  oasft bench train --model-config FILE [--seq-len 256] [--batch-size 4] [--bf16] [--steps 5] [--warmup 2] [--threads N]
  oasft bench generate --model-config FILE [--prompt-len 32] [--new-tokens 64] [--batch-size 1] [--steps 5] [--warmup 2] [--threads N]`;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const peakRssMb = () => process.resourceUsage().maxRSS / 1024;

export function benchTrain(cfg: Record<string, unknown>, o: { seqLen: number; batchSize: number; bf16: boolean; steps: number; warmup: number }) {
  const model = createCausalLM(cfg).train();
  const V = model.config.vocabSize;
  const optimizer = new AdamW(model.parameters(), { lr: 1e-4, weightDecay: 0 });
  const ids = torch.randint(0, V, [o.batchSize, o.seqLen + 1]).keep();
  const x = ids.narrow(1, 0, o.seqLen).keep();
  const y = ids.narrow(1, 1, o.seqLen).reshape([-1]).keep();
  const step = () => torch.scope(() => {
    const loss = torch.autocast("cpu", "bfloat16", () => {
      const { logits } = model.forward({ inputIds: x });
      return torch.crossEntropy(logits.to("float32").view([-1, V]), y);
    }, o.bf16);
    loss.backward();
    optimizer.step();
    optimizer.zeroGrad();
    return loss.item(); // a sync point, as the peer's loss.item()
  });
  const times: number[] = [];
  const losses: number[] = [];
  for (let i = 0; i < o.warmup + o.steps; i++) {
    const t0 = performance.now();
    losses.push(step());
    if (i >= o.warmup) times.push((performance.now() - t0) / 1000);
  }
  const med = median(times);
  const result = {
    impl: "oasft", task: "train", dtype: o.bf16 ? "bf16-autocast" : "fp32",
    tokens_per_s: (o.batchSize * o.seqLen) / med, step_s: med, step_s_min: Math.min(...times), step_s_max: Math.max(...times),
    params: model.numParameters(), loss_first: losses[0], loss_last: losses[losses.length - 1], peak_rss_mb: peakRssMb(),
  };
  optimizer.dispose();
  model.dispose();
  for (const t of [ids, x, y]) t.dispose();
  return result;
}

export function benchGenerate(cfg: Record<string, unknown>, o: { promptLen: number; newTokens: number; batchSize: number; steps: number; warmup: number }) {
  const model = createCausalLM(cfg).eval();
  const prompt = torch.randint(0, model.config.vocabSize, [o.batchSize, o.promptLen]).keep();
  const times: number[] = [];
  for (let i = 0; i < o.warmup + o.steps; i++) {
    const t0 = performance.now();
    generateGreedy(model, { inputIds: prompt, maxNewTokens: o.newTokens }).dispose();
    if (i >= o.warmup) times.push((performance.now() - t0) / 1000);
  }
  const med = median(times);
  model.dispose();
  prompt.dispose();
  return { impl: "oasft", task: "generate", tokens_per_s: (o.batchSize * o.newTokens) / med, run_s: med, peak_rss_mb: peakRssMb() };
}

export const command: Command = {
  async run(argv) {
    const [task, ...rest] = argv;
    if (task !== "train" && task !== "generate") throw new UsageError(`expected 'train' or 'generate', got '${task ?? ""}'\n\n${USAGE}`);
    const { values } = parseFlags(rest, {
      "model-config": { type: "string" }, "seq-len": { type: "string" }, "batch-size": { type: "string" }, bf16: { type: "boolean" },
      steps: { type: "string" }, warmup: { type: "string" }, threads: { type: "string" },
      "prompt-len": { type: "string" }, "new-tokens": { type: "string" }, seed: { type: "string" },
    }, USAGE);
    const cfgPath = required(values, "model-config", USAGE);
    const cfg = readJsonFile(cfgPath, "--model-config");
    const threads = intFlag(values, "threads", 0, 0);
    if (threads > 0) torch.setNumThreads(threads);
    torch.manualSeed(intFlag(values, "seed", 0, 0));
    const common = { batchSize: intFlag(values, "batch-size", task === "train" ? 4 : 1), steps: intFlag(values, "steps", 5), warmup: intFlag(values, "warmup", 2, 0) };
    const result = task === "train"
      ? benchTrain(cfg, { ...common, seqLen: intFlag(values, "seq-len", 256), bf16: Boolean(values.bf16) })
      : benchGenerate(cfg, { ...common, promptLen: intFlag(values, "prompt-len", 32), newTokens: intFlag(values, "new-tokens", 64) });
    console.log(JSON.stringify({ ...result, threads: torch.getNumThreads(), torch: torch.version() }));
    return 0;
  },
};
