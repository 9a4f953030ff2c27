// DPO (Rafailov et al. 2023) as TRL's DPOTrainer defines it, with reference log-probabilities computed
// once before training (TRL's precompute_ref_log_probs: no second model in memory):
//   sigmoid: −log σ(β·((π_c − ρ_c) − (π_r − ρ_r)))
//   ipo: (h − 1/(2β))², h the same difference on per-token mean log-probs
//   rpo_alpha: + α · the chosen replies' mean token NLL
// π, ρ: summed log-probabilities of a reply's tokens under the policy and the reference. Rows of a
// micro-batch are [chosen₀, rejected₀, chosen₁, rejected₁, ...].
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import * as torch from "../torch/index.js";
import type { CausalLM, TrainStepOptions } from "../models/index.js";
import { ConfigError, type Settings } from "../sft/config.js";
import { padBatch, type Batch } from "../sft/collate.js";
import { tensorsOf } from "../train/batches.js";
import type { EvalEnv, MicroBatchResult, Objective } from "../train/objective.js";
import type { EvalRecord } from "../train/report.js";
import { writeFileAtomic } from "../util/atomic-file.js";
import { unitBatches, type PrefData, type PrefUnit } from "./data.js";
import { inPrecision } from "../train/settings.js";

export interface DpoOptions {
  beta: number;
  loss: "sigmoid" | "ipo";
  rpoAlpha: number | null;
}

/** One pair's log-probabilities: summed over the reply's tokens, and the token counts. */
export interface PairLogps {
  policy: [number, number];
  reference: [number, number];
  tokens: [number, number];
}

export interface DpoResult {
  /** Mean over the pairs (+ the RPO term). */
  loss: number;
  /** d loss / d π for each row (chosen, rejected, ...), for the backward pass. */
  grads: number[];
  metrics: Record<string, number>;
}

const logSigmoid = (z: number) => (z >= 0 ? -Math.log1p(Math.exp(-z)) : z - Math.log1p(Math.exp(z)));
const sigmoid = (z: number) => (z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z)));

/** The DPO loss of a micro-batch's pairs, its gradient with respect to each row's π, and TRL's metrics. */
export function dpoLoss(pairs: PairLogps[], o: DpoOptions): DpoResult {
  const grads: number[] = [];
  let loss = 0;
  const m = { chosen: 0, rejected: 0, accuracy: 0, margin: 0 };
  const chosenTokens = pairs.reduce((n, p) => n + p.tokens[0], 0);
  for (const p of pairs) {
    // IPO compares per-token means (TRL); sigmoid compares sums.
    const norm = o.loss === "ipo" ? p.tokens : [1, 1];
    const c = (p.policy[0] - p.reference[0]) / norm[0]!;
    const r = (p.policy[1] - p.reference[1]) / norm[1]!;
    let dh: number;
    if (o.loss === "ipo") {
      const h = c - r - 1 / (2 * o.beta);
      loss += h * h;
      dh = 2 * h;
    } else {
      const z = o.beta * (c - r);
      loss += -logSigmoid(z);
      dh = -o.beta * sigmoid(-z);
    }
    let gc = dh / norm[0]! / pairs.length;
    if (o.rpoAlpha) gc -= o.rpoAlpha / chosenTokens;
    grads.push(gc, -dh / norm[1]! / pairs.length);
    const rc = o.beta * c;
    const rr = o.beta * r;
    m.chosen += rc;
    m.rejected += rr;
    m.accuracy += rc > rr ? 1 : 0;
    m.margin += rc - rr;
  }
  loss /= pairs.length;
  if (o.rpoAlpha) loss += (o.rpoAlpha * -pairs.reduce((s, p) => s + p.policy[0], 0)) / chosenTokens;
  const n = pairs.length;
  const metrics = {
    "rewards/chosen": m.chosen / n,
    "rewards/rejected": m.rejected / n,
    "rewards/accuracy": m.accuracy / n,
    "rewards/margin": m.margin / n,
  };
  return { loss, grads, metrics };
}

/** Cross entropy summed over row `r`'s trained tokens (= −its reply's log-probability). */
function rowNll(model: CausalLM, x: torch.Tensor, labels: torch.Tensor, r: number): torch.Tensor {
  const s = x.size(1);
  const logits = model.headLogits(x.select(0, r).narrow(0, 0, s - 1));
  const target = labels.select(0, r).narrow(0, 1, s - 1);
  // Half-precision logits are scored in float32; float32 and float64 as they are.
  const wide = logits.dtype === "float16" || logits.dtype === "bfloat16" ? logits.to("float32") : logits;
  return torch.crossEntropy(wide, target, { reduction: "sum" });
}

/** Each row's summed reply log-probability (no graph), one row's logits at a time. */
function rowLogps(model: CausalLM, x: torch.Tensor, labels: torch.Tensor): number[] {
  return torch.noGrad(() =>
    Array.from({ length: x.size(0) }, (_, r) => torch.scope(() => -rowNll(model, x, labels, r).item())),
  );
}

/** Reply tokens per row (labels other than −100). */
function rowTokens(b: Batch): number[] {
  return b.labels.map((row) => row.reduce((n, l) => n + (l !== -100 ? 1 : 0), 0));
}

/** A batch of units: every candidate a row, right-padded as OA pads; the units' reference log-probs. */
export function unitBatch(units: PrefUnit[], padId: number): Batch & { refs: number[] } {
  const b = padBatch(
    units.flatMap((u) => u.candidates),
    padId,
  );
  return { ...b, refs: units.flatMap((u) => u.ref ?? []) };
}

function pairsOf(b: Batch & { refs: number[] }, policy: number[]): PairLogps[] {
  const tokens = rowTokens(b);
  return Array.from({ length: policy.length / 2 }, (_, i) => ({
    policy: [policy[2 * i]!, policy[2 * i + 1]!],
    reference: [b.refs[2 * i]!, b.refs[2 * i + 1]!],
    tokens: [tokens[2 * i]!, tokens[2 * i + 1]!],
  }));
}

type Placement = Omit<EvalEnv, "model" | "processGroup">;

/** Each row's summed reply log-probability under `model` as it is (no graph), in the run's precision. */
function policyLogps(model: CausalLM, b: Batch, env: Placement): number[] {
  return torch.scope(() => {
    const t = tensorsOf(b, env.device);
    const logps = () =>
      rowLogps(
        model,
        torch.noGrad(() => model.finalHidden(t)),
        t.labels,
      );
    return inPrecision(env.precision, env.device, logps);
  });
}

/** The DPO loss and metrics of a batch of pairs under `model` as it is (no graph): evaluation, checks. */
export function dpoBatchLoss(model: CausalLM, b: Batch & { refs: number[] }, o: DpoOptions, env: Placement): DpoResult {
  return dpoLoss(pairsOf(b, policyLogps(model, b, env)), o);
}

/** Forward and backward of one micro-batch of pairs: the loss from a first pass, then each row's gradient. */
function dpoStep(
  model: CausalLM,
  b: Batch & { refs: number[] },
  o: DpoOptions,
  device: string,
  options: TrainStepOptions,
): MicroBatchResult {
  const t = tensorsOf(b, device);
  let result: DpoResult | undefined;
  model.trainStep(
    { inputIds: t.inputIds, attentionMask: t.attentionMask },
    {
      ...options,
      head: (x, scale) => {
        result = dpoLoss(pairsOf(b, rowLogps(model, x, t.labels)), o);
        // d loss / d θ = Σ_r (d loss / d π_r) · d π_r / d θ, and π_r = −NLL_r: one row's graph at a time.
        result.grads.forEach((g, r) => {
          if (g) torch.scope(() => torch.backward([rowNll(model, x, t.labels, r).mul(-g * scale)]));
        });
        return result.loss;
      },
    },
  );
  return { loss: result!.loss, metrics: result!.metrics };
}

/** Every unit's rows' summed log-probabilities under `model` as it is now (the reference). */
export function referenceLogps(model: CausalLM, data: PrefData, env: Placement, batchSize: number): void {
  model.eval();
  for (const d of data.datasets) {
    for (const units of [d.train, d.val]) {
      for (let i = 0; i < units.length; i += batchSize) {
        const chunk = units.slice(i, i + batchSize);
        const logps = policyLogps(model, unitBatch(chunk, data.tokenizer.padId), env);
        chunk.forEach((u, k) => (u.ref = logps.slice(2 * k, 2 * k + 2)));
      }
    }
  }
  model.train();
}

/** A fingerprint of the training units' tokens: stored reference log-probs must belong to this data. */
function dataHash(data: PrefData): string {
  const h = createHash("sha256");
  for (const d of data.datasets) {
    for (const u of [...d.train, ...d.val]) for (const c of u.candidates) h.update(Int32Array.from(c.inputIds));
  }
  return h.digest("hex").slice(0, 16);
}

export const REFERENCE_FILE = "reference_logps.json";

/** Where a run keeps its reference log-probabilities, and how they are made. */
export interface ReferenceOptions {
  outputDir: string;
  /** A resumed run reads them back from output_dir instead of computing them. */
  resumeDir?: string;
  /** Rank 0 writes the file. */
  lead: boolean;
  batchSize: number;
  /** The reference's name as the config gave it (ref_model), recorded with the numbers; null: the starting model. */
  refModel?: string | null;
}

/**
 * The reference log-probabilities of a run: computed from the starting model and written into the run
 * folder (a new run), or read back from it (a resumed run, whose model is no longer the reference).
 */
export function setupReference(model: CausalLM, data: PrefData, env: Placement, o: ReferenceOptions): void {
  const file = join(o.outputDir, REFERENCE_FILE);
  const hash = dataHash(data);
  const reference = o.refModel ?? null;
  if (o.resumeDir) {
    if (!existsSync(file)) {
      const why = "written when the run started; it is missing";
      throw new ConfigError(`stage dpo: resuming needs the reference log-probabilities ${file}, ${why}`);
    }
    type Saved = {
      data: string;
      reference?: string | null;
      datasets: Record<string, { train: number[][]; val: number[][] }>;
    };
    const saved = JSON.parse(readFileSync(file, "utf8")) as Saved;
    if (saved.data !== hash) {
      const why = "the datasets or their settings changed since the run started";
      throw new ConfigError(`stage dpo: ${file} was computed on other data (${why})`);
    }
    if ((saved.reference ?? null) !== reference) {
      const was = saved.reference ? `ref_model ${saved.reference}` : "the starting model";
      throw new ConfigError(`stage dpo: ${file} was computed with ${was}; ref_model is now ${reference ?? "not set"}`);
    }
    for (const d of data.datasets) {
      const s = saved.datasets[d.name];
      d.train.forEach((u, i) => (u.ref = s?.train[i]));
      d.val.forEach((u, i) => (u.ref = s?.val[i]));
    }
    return;
  }
  referenceLogps(model, data, env, o.batchSize);
  if (!o.lead) return;
  const refs = (units: PrefUnit[]) => units.map((u) => u.ref);
  const datasets = Object.fromEntries(data.datasets.map((d) => [d.name, { train: refs(d.train), val: refs(d.val) }]));
  mkdirSync(o.outputDir, { recursive: true });
  writeFileAtomic(file, [JSON.stringify({ data: hash, reference, datasets }) + "\n"]);
}

/** DPO as the run's objective: micro-batches of pairs, each weighted by its pairs. */
export function dpoObjective(
  data: PrefData,
  cfg: Settings<"pref" | "run" | "data">,
  microBatchSize: number,
  device: string,
): Objective {
  const o: DpoOptions = { beta: cfg.beta, loss: cfg.dpo_loss, rpoAlpha: cfg.rpo_alpha };
  const pad = data.tokenizer.padId;
  return {
    stage: "dpo",
    batches: (epoch) => unitBatches(data, cfg.rng_seed, microBatchSize, epoch, (units) => unitBatch(units, pad)),
    units: (b) => b.inputIds.length / 2,
    step: (model, b, options) => dpoStep(model, b as Batch & { refs: number[] }, o, device, options),
    evaluate: (env) => evaluateDpo(env, data, o, cfg.per_device_eval_batch_size),
    describe: () => {
      const n = data.datasets.reduce((k, d) => k + d.train.length, 0);
      const cut = data.truncated ? ` (${data.truncated} cut to max_length)` : "";
      return `${n} preference pairs from ${data.datasets.length} dataset(s)${cut}`;
    },
  };
}

/** Per validation set: the DPO loss and reward accuracy and margins, over its pairs. */
function evaluateDpo(env: EvalEnv, data: PrefData, o: DpoOptions, batchSize: number): EvalRecord["datasets"] {
  const out: EvalRecord["datasets"] = {};
  env.model.eval();
  for (const d of data.datasets) {
    if (!d.val.length) continue;
    const names = ["rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin"];
    // Sums over this rank's pairs: [loss, count, ...metrics], reduced over the ranks.
    let sums = [0, 0, 0, 0, 0, 0];
    const { rank, worldSize } = env.processGroup;
    for (let i = rank * batchSize; i < d.val.length; i += batchSize * worldSize) {
      const b = unitBatch(d.val.slice(i, i + batchSize), data.tokenizer.padId);
      const r = dpoBatchLoss(env.model, b, o, env);
      const n = b.inputIds.length / 2;
      sums = [sums[0]! + r.loss * n, sums[1]! + n, ...names.map((k, j) => sums[j + 2]! + r.metrics[k]! * n)];
    }
    if (worldSize > 1) sums = env.processGroup.reduceNumbers(sums);
    const n = sums[1]!;
    if (!n) continue;
    const metrics = Object.fromEntries(names.map((k, j) => [k, sums[j + 2]! / n]));
    out[d.name] = { loss: sums[0]! / n, accuracy: metrics["rewards/accuracy"]!, tokens: n, metrics };
  }
  env.model.train();
  return out;
}
