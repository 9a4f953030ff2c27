// `oasft bench train|generate`: the same work as ../shared/bench/peer_torch_bloom.py (random init,
// random tokens, AdamW / greedy decoding with the cache), timed the same way (median of timed steps
// after warm-up), printed as one JSON line. bench/compare.mjs runs both side by side.
import * as torch from "../../torch/index.js";
import { applyLora, createCausalLM, readJsonFile } from "../../models/index.js";
import { captureByDefault, generateGreedy } from "../../generate/index.js";
import { useSdpa } from "../../nn/index.js";
import { AdamW } from "../../train/index.js";
import { intFlag, parseFlags, required, UsageError } from "../args.js";
import type { Command } from "../main.js";
import { DEVICE_FLAGS, DEVICE_USAGE, placement } from "../placement.js";

const USAGE = `usage:
  oasft bench train --model-config FILE [--seq-len 256] [--batch-size 4] [--bf16] [--grad-ckpt] [--lora]
                    [--steps 5] [--warmup 2]
  oasft bench generate --model-config FILE [--prompt-len 32] [--new-tokens 64] [--batch-size 1] [--steps 5] [--warmup 2]
  both: ${DEVICE_USAGE}

  train: fp32 weights; --bf16 (or --dtype bf16/fp16) trains under autocast in that dtype, as the peer.
  generate: --dtype is the weights' dtype.`;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const peakRssMb = () => process.resourceUsage().maxRSS / 1024;
/** The CUDA allocator's peak since the process started (torch.cuda.max_memory_allocated), as the GPU peer prints it. */
const peakGpuGb = (device: string) => {
  const m = torch.cudaMemory(device);
  return m ? { peak_mem_gb: m.peak / 2 ** 30 } : {};
};
/** H100/H200 dense bf16 peak, the denominator ../shared/gpu/peer_hf_cuda.py uses for MFU. */
const PEAK_BF16_FLOPS = 989e12;

/** Waits for queued GPU work, so that a timer measures it (a no-op on the CPU). */
function sync(device: string): void {
  if (device !== "cpu") torch.cudaSynchronize();
}

export interface BenchTrainOptions {
  seqLen: number;
  batchSize: number;
  /** The autocast dtype; float32 trains without autocast. */
  autocast: torch.DType;
  gradCkpt: boolean;
  /** LoRA on the architecture's default targets (r 16, α 32, PEFT's defaults) instead of full fine-tuning. */
  lora: boolean;
  steps: number;
  warmup: number;
  device: string;
}

export function benchTrain(cfg: Record<string, unknown>, o: BenchTrainOptions) {
  const model = createCausalLM(cfg, { device: o.device }).train();
  if (o.lora) {
    applyLora(model, {
      r: 16,
      lora_alpha: 32,
      lora_dropout: 0.05,
      target_modules: model.defaultLoraTargets,
      bias: "none",
      modules_to_save: null,
    });
  }
  const V = model.config.vocabSize;
  const optimizer = new AdamW(
    model.parameters().filter((p) => p.requiresGrad),
    { lr: 1e-4, weightDecay: 0 },
  );
  const ids = torch.randint(0, V, [o.batchSize, o.seqLen + 1], { device: o.device }).keep();
  const x = ids.narrow(1, 0, o.seqLen).keep();
  // HF-style labels: the loss shifts them, so the targets are the next tokens of x, as the peer's.
  const labels = ids.narrow(1, 0, o.seqLen).keep();
  const amp = o.autocast !== "float32";
  const step = () =>
    torch.scope(() => {
      const run = () => model.trainStep({ inputIds: x, labels }, { gradientCheckpointing: o.gradCkpt });
      const { loss } = amp ? torch.autocast(torch.deviceType(o.device), o.autocast, run) : run();
      optimizer.step();
      optimizer.zeroGrad();
      sync(o.device);
      return loss; // loss.item() inside trainStep is a sync point, as the peer's loss.item()
    });
  const times: number[] = [];
  const losses: number[] = [];
  for (let i = 0; i < o.warmup + o.steps; i++) {
    const t0 = performance.now();
    losses.push(step());
    if (i >= o.warmup) times.push((performance.now() - t0) / 1000);
  }
  const med = median(times);
  const stateBytes = optimizer
    .stateList()
    .reduce((n, s) => n + (s.expAvg.numel + s.expAvgSq.numel) * torch.BYTES_PER_ELEMENT[s.expAvg.dtype], 0);
  const result = {
    impl: "oasft",
    task: "train",
    lora: o.lora,
    optimizer_state_mb: stateBytes / 2 ** 20,
    device: o.device,
    dtype: amp ? `${o.autocast === "bfloat16" ? "bf16" : "fp16"}-autocast` : "fp32",
    grad_ckpt: o.gradCkpt,
    seq_len: o.seqLen,
    batch_size: o.batchSize,
    attention: useSdpa(o.device) ? "sdpa" : "composite",
    tokens_per_s: (o.batchSize * o.seqLen) / med,
    step_s: med,
    step_s_min: Math.min(...times),
    step_s_max: Math.max(...times),
    params: model.numParameters(),
    loss_first: losses[0],
    loss_last: losses[losses.length - 1],
    peak_rss_mb: peakRssMb(),
    ...(o.device === "cpu"
      ? {}
      : {
          mfu_6N_vs_989T: (6 * model.numParameters() * o.batchSize * o.seqLen) / med / PEAK_BF16_FLOPS,
          ...peakGpuGb(o.device),
        }),
  };
  optimizer.dispose();
  model.dispose();
  for (const t of [ids, x, labels]) t.dispose();
  return result;
}

export interface BenchGenerateOptions {
  promptLen: number;
  newTokens: number;
  batchSize: number;
  steps: number;
  warmup: number;
  device: string;
  dtype: torch.DType;
}

/** How decode steps ran: a CUDA graph launch, a replayed tape, or op by op (OASFT_CAPTURE=0). */
function decodeStep(device: string): "cuda graph" | "replayed tape" | "eager" {
  if (!captureByDefault) return "eager";
  const graphs = torch.features.cudaGraph && process.env.OASFT_CUDA_GRAPH !== "0";
  return device.startsWith("cuda") && graphs ? "cuda graph" : "replayed tape";
}

export function benchGenerate(cfg: Record<string, unknown>, o: BenchGenerateOptions) {
  const model = createCausalLM(cfg, { device: o.device, dtype: o.dtype }).eval();
  const prompt = torch.randint(0, model.config.vocabSize, [o.batchSize, o.promptLen], { device: o.device }).keep();
  const times: number[] = [];
  for (let i = 0; i < o.warmup + o.steps; i++) {
    const t0 = performance.now();
    generateGreedy(model, { inputIds: prompt, maxNewTokens: o.newTokens }).dispose();
    sync(o.device);
    if (i >= o.warmup) times.push((performance.now() - t0) / 1000);
  }
  const med = median(times);
  model.dispose();
  prompt.dispose();
  return {
    impl: "oasft",
    task: "generate",
    device: o.device,
    dtype: o.dtype,
    batch_size: o.batchSize,
    decode_step: decodeStep(o.device),
    tokens_per_s: (o.batchSize * o.newTokens) / med,
    run_s: med,
    peak_rss_mb: peakRssMb(),
    ...peakGpuGb(o.device),
  };
}

export const command: Command = {
  async run(argv) {
    const [task, ...rest] = argv;
    if (task === "--help" || task === "-h") {
      console.log(USAGE);
      return 0;
    }
    if (task !== "train" && task !== "generate")
      throw new UsageError(`expected 'train' or 'generate', got '${task ?? ""}'\n\n${USAGE}`);
    const { values } = parseFlags(
      rest,
      {
        "model-config": { type: "string" },
        "seq-len": { type: "string" },
        "batch-size": { type: "string" },
        bf16: { type: "boolean" },
        "grad-ckpt": { type: "boolean" },
        lora: { type: "boolean" },
        steps: { type: "string" },
        warmup: { type: "string" },
        "prompt-len": { type: "string" },
        "new-tokens": { type: "string" },
        seed: { type: "string" },
        ...DEVICE_FLAGS,
      },
      USAGE,
    );
    const cfgPath = required(values, "model-config", USAGE);
    const { device, dtype } = placement({ ...values, ...(values.bf16 ? { dtype: "bf16" } : {}) });
    const cfg = readJsonFile(cfgPath, "--model-config");
    torch.manualSeed(intFlag(values, "seed", 0, 0));
    const common = {
      batchSize: intFlag(values, "batch-size", task === "train" ? 4 : 1),
      steps: intFlag(values, "steps", 5),
      warmup: intFlag(values, "warmup", 2, 0),
      device,
    };
    const result =
      task === "train"
        ? benchTrain(cfg, {
            ...common,
            seqLen: intFlag(values, "seq-len", 256),
            autocast: dtype,
            gradCkpt: values["grad-ckpt"] === true,
            lora: values.lora === true,
          })
        : benchGenerate(cfg, {
            ...common,
            dtype,
            promptLen: intFlag(values, "prompt-len", 32),
            newTokens: intFlag(values, "new-tokens", 64),
          });
    console.log(JSON.stringify({ ...result, threads: torch.getNumThreads(), torch: torch.version() }));
    return 0;
  },
};
