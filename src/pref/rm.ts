// The reward model (stage: rm) as OA's trainer_rm.py trains it: a scalar score of each candidate's last
// token, and OA's RMLoss over each ranked group: the mean over all ordered pairs (i better than j) of
//   −log σ(r_i − r_j) + score_l2_reg · ½ (r_i² + r_j²)
// then the mean over the groups. Rows of a micro-batch are its groups' candidates, best first.
import * as torch from "../torch/index.js";
import { saveRewardModel, type CausalLM, type TrainStepOptions } from "../models/index.js";
import type { Settings } from "../sft/config.js";
import { padBatch, type Batch } from "../sft/collate.js";
import { tensorsOf } from "../train/batches.js";
import type { EvalEnv, MicroBatchResult, Objective } from "../train/objective.js";
import type { EvalRecord } from "../train/report.js";
import { unitBatches, type PrefData, type PrefUnit } from "./data.js";
import { inPrecision } from "../train/settings.js";

type GroupBatch = Batch & { sizes: number[] };

/** A batch of groups: every candidate a row, right-padded; the group sizes in order. */
export function groupBatch(units: PrefUnit[], padId: number): GroupBatch {
  return {
    ...padBatch(
      units.flatMap((u) => u.candidates),
      padId,
    ),
    sizes: units.map((u) => u.candidates.length),
  };
}

/** Each row's last real token (right padding: the attention mask's last 1). */
const lastTokens = (b: Batch) => b.attentionMask.map((row) => row.reduce((n, m) => n + m, 0) - 1);

/** The ordered pairs (better, worse) of every group, as row indices, and each pair's weight in the mean. */
function groupPairs(sizes: number[]): { better: number[]; worse: number[]; weight: number[] } {
  const out = { better: [] as number[], worse: [] as number[], weight: [] as number[] };
  let at = 0;
  for (const k of sizes) {
    const pairs = (k * (k - 1)) / 2;
    for (let i = 0; i < k; i++) {
      for (let j = i + 1; j < k; j++) {
        out.better.push(at + i);
        out.worse.push(at + j);
        out.weight.push(1 / pairs / sizes.length);
      }
    }
    at += k;
  }
  return out;
}

/** Rewards [rows] of groups (best first): the ordered pairs they put in the ranking's order, of all pairs. */
export function rightPairs(rewards: number[], sizes: number[]): { right: number; pairs: number } {
  const p = groupPairs(sizes);
  return { right: p.better.filter((x, k) => rewards[x]! > rewards[p.worse[k]!]!).length, pairs: p.better.length };
}

/** OA's RMLoss of rewards [rows] (a tensor, so that it back-propagates) and the pair accuracy. */
export function rankingLoss(
  rewards: torch.Tensor,
  sizes: number[],
  l2: number,
): { loss: torch.Tensor; accuracy: number } {
  const p = groupPairs(sizes);
  const dev = rewards.device;
  const r = rewards.to("float32");
  const better = r.indexSelect(0, torch.tensor(p.better, { dtype: "int64", device: dev }));
  const worse = r.indexSelect(0, torch.tensor(p.worse, { dtype: "int64", device: dev }));
  const d = better.sub(worse);
  // −log σ(d) = max(−d, 0) + log(1 + e^−|d|), stable for any d.
  const nll = d.neg().relu().add(d.abs().neg().exp().add(1).log());
  const reg = better
    .mul(better)
    .add(worse.mul(worse))
    .mul(0.5 * l2);
  const loss = nll
    .add(reg)
    .mul(torch.tensor(p.weight, { dtype: "float32", device: dev }))
    .sum();
  // Accuracy weighted as the loss is: per group the fraction of its pairs ordered as the ranking.
  const right = d.gt(0).toNumbers();
  return { loss, accuracy: right.reduce((a, v, i) => a + (v ? p.weight[i]! : 0), 0) };
}

function rmStep(
  model: CausalLM,
  b: GroupBatch,
  l2: number,
  device: string,
  options: TrainStepOptions,
): MicroBatchResult {
  const t = tensorsOf(b, device);
  let accuracy = 0;
  const { loss } = model.trainStep(
    { inputIds: t.inputIds, attentionMask: t.attentionMask },
    {
      ...options,
      head: (x, scale) => {
        const r = rankingLoss(model.rewards(x, lastTokens(b)), b.sizes, l2);
        accuracy = r.accuracy;
        torch.backward([r.loss.mul(scale)]);
        return r.loss.item();
      },
    },
  );
  return { loss, metrics: { "rewards/accuracy": accuracy } };
}

/** Rewards of a batch's rows under the model as it is (no graph). */
export function scoreBatch(model: CausalLM, b: Batch, env: Omit<EvalEnv, "model" | "processGroup">): number[] {
  return torch.noGrad(() =>
    torch.scope(() => {
      const t = tensorsOf(b, env.device);
      const rewards = () => model.rewards(model.finalHidden(t), lastTokens(b)).to("float32").toNumbers();
      return inPrecision(env.precision, env.device, rewards);
    }),
  );
}

/** The reward model as the run's objective: micro-batches of ranked groups, each weighted by its groups. */
export function rmObjective(
  data: PrefData,
  cfg: Settings<"pref" | "run" | "data">,
  microBatchSize: number,
  device: string,
): Objective {
  const pad = data.tokenizer.padId;
  return {
    stage: "rm",
    batches: (epoch) => unitBatches(data, cfg.rng_seed, microBatchSize, epoch, (units) => groupBatch(units, pad)),
    units: (b) => (b as GroupBatch).sizes.length,
    step: (model, b, options) => rmStep(model, b as GroupBatch, cfg.score_l2_reg, device, options),
    evaluate: (env) => evaluateRm(env, data, cfg),
    describe: () => {
      const groups = data.datasets.reduce((k, d) => k + d.train.length, 0);
      const cut = data.truncated ? ` (${data.truncated} cut to max_length)` : "";
      return `${groups} ranked groups from ${data.datasets.length} dataset(s)${cut}`;
    },
    // HF's sequence-classification layout: the score head, no LM head.
    saveModel: (model, dir) => saveRewardModel(model, dir, pad),
  };
}

/** Per validation set: OA's loss over its groups, and the fraction of all ranked pairs in the right order. */
function evaluateRm(env: EvalEnv, data: PrefData, cfg: Settings<"pref" | "run" | "data">): EvalRecord["datasets"] {
  const out: EvalRecord["datasets"] = {};
  const size = cfg.per_device_eval_batch_size;
  env.model.eval();
  for (const d of data.datasets) {
    if (!d.val.length) continue;
    let sums = [0, 0, 0, 0]; // loss × groups, groups, right pairs, pairs
    for (let i = env.processGroup.rank * size; i < d.val.length; i += size * env.processGroup.worldSize) {
      const b = groupBatch(d.val.slice(i, i + size), data.tokenizer.padId);
      const r = scoreBatch(env.model, b, env);
      const loss = torch.scope(() =>
        rankingLoss(torch.tensor(r, { dtype: "float32" }), b.sizes, cfg.score_l2_reg).loss.item(),
      );
      const { right, pairs } = rightPairs(r, b.sizes);
      sums = [sums[0]! + loss * b.sizes.length, sums[1]! + b.sizes.length, sums[2]! + right, sums[3]! + pairs];
    }
    if (env.processGroup.worldSize > 1) sums = env.processGroup.reduceNumbers(sums);
    if (!sums[1]) continue;
    const [lossSum, groups, right, pairs] = sums as [number, number, number, number];
    out[d.name] = { loss: lossSum / groups, accuracy: right / pairs, tokens: groups, metrics: { pairs } };
  }
  env.model.train();
  return out;
}
