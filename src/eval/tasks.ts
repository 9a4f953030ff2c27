// The eval tasks: MMLU, BBH, HumanEval and the reward-model accuracy. Each reads its data from the
// run's source, asks the LM what its protocol (protocols.ts) says, writes one JSONL row per item and
// returns a result; a task is registered by name, as lm-eval registers its tasks.
import * as torch from "../torch/index.js";
import type { CausalLM } from "../models/index.js";
import type { SamplingParams } from "../generate/sampling.js";
import type { ChatTokenizer } from "../tokenizer/index.js";
import { Registry } from "../util/registry.js";
import { MMLU_GROUPS } from "./mmlu-bbh.js";
import { checkJob, runChecks, scoreHumanEval } from "./humaneval.js";
import type { LM } from "./lm.js";
import type { Protocol, ProtocolSpec } from "./protocols.js";
import { evaluateRewardModel } from "./rm.js";
import type { EvalSource } from "./sources.js";

export interface TaskResult {
  task: string;
  protocol: Protocol;
  /** The headline number (accuracy or pass@k) in [0, 1]. */
  score: number;
  metric: string;
  details: Record<string, unknown>;
}

export interface HumanEvalSettings {
  samples: number;
  ks: number[];
  timeoutS: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  maxNewTokens?: number;
  unsafeNoSandbox?: boolean;
}

/** What a task runs with: the LM, the protocol's spec, the data and the run's limits, progress and output. */
export interface TaskContext {
  lm: LM;
  protocol: Protocol;
  spec: ProtocolSpec;
  source: EvalSource;
  limit?: number;
  only?: string[];
  mmluShots?: number;
  bbhMaxNewTokens?: number;
  humaneval?: HumanEvalSettings;
  /** `rm`: a local reward model and the ranked replies it scores. */
  rewardModel?: { model: CausalLM; tokenizer: ChatTokenizer };
  rmData?: string;
  bar: (total: number, label: string) => { tick: () => void; done: () => void };
  writeJsonl: (name: string, rows: unknown[]) => void;
}

/** The names of `all` that `only` keeps (all when only is unset; an error when it names none of them). */
function selected(all: string[], only: string[] | undefined, what: string): string[] {
  if (!only?.length) return all;
  const keep = all.filter((n) => only.includes(n));
  if (!keep.length) throw new Error(`no ${what} among ${only.join(", ")}; known: ${all.join(", ")}`);
  return keep;
}

type Tally = Record<string, { correct: number; total: number }>;

/** Correct / total over the named subsets (the micro-average). */
function accuracy(per: Tally, names: string[]): number {
  const c = names.reduce((a, n) => a + (per[n]?.correct ?? 0), 0);
  const t = names.reduce((a, n) => a + (per[n]?.total ?? 0), 0);
  return t ? c / t : 0;
}

async function mmlu(ctx: TaskContext): Promise<TaskResult> {
  const data = await ctx.source.mmlu();
  const protocol = ctx.spec.mmlu;
  const shots = protocol.shots(ctx.mmluShots);
  const subjects = selected(data.subjects, ctx.only, "mmlu subject");
  const per: Tally = {};
  const rows: unknown[] = [];
  const bar = ctx.bar(subjects.length, `mmlu (${ctx.protocol})`);
  for (const subject of subjects) {
    const test = data.test(subject).slice(0, ctx.limit ?? Infinity);
    const answers = await protocol.answer(ctx.lm, subject, data.dev(subject), test, shots);
    rows.push(...answers.rows);
    const correct = test.filter((t, i) => protocol.correct(answers.preds[i]!, t.answer)).length;
    per[subject] = { correct, total: test.length };
    torch.releaseFreeMemory(); // one subject's longest prompt must not stay resident for the rest
    bar.tick();
  }
  bar.done();
  ctx.writeJsonl("mmlu", rows);
  const all = Object.keys(per);
  const groups = Object.entries(MMLU_GROUPS).map(([g, names]) => [
    g,
    accuracy(
      per,
      names.filter((n) => per[n]),
    ),
  ]);
  return {
    task: "mmlu",
    protocol: ctx.protocol,
    score: accuracy(per, all),
    metric: protocol.metric(shots),
    details: {
      groups: Object.fromEntries(groups),
      subjects: Object.fromEntries(Object.entries(per).map(([n, v]) => [n, v.correct / v.total])),
      questions: all.reduce((a, n) => a + per[n]!.total, 0),
      // What the prompts held: lm-eval's chosen count; instruct-eval's at most 5 (fewer past 2,048 tokens).
      shots,
    },
  };
}

async function bbh(ctx: TaskContext): Promise<TaskResult> {
  const data = await ctx.source.bbh();
  const protocol = ctx.spec.bbh;
  const per: Tally = {};
  const rows: unknown[] = [];
  for (const task of selected(data.tasks, ctx.only, "bbh task")) {
    const { scored, prompts } = protocol.prompts(
      data.items(task),
      () => ctx.source.bbhCot(task),
      ctx.limit ?? Infinity,
    );
    const bar = ctx.bar(prompts.length, `bbh ${task}`);
    const params = protocol.params(ctx.bbhMaxNewTokens ?? 1024);
    const { gens, seen } = await ctx.lm.generateUntil(prompts, params, {
      truncate: protocol.truncate,
      onDone: bar.tick,
    });
    bar.done();
    let correct = 0;
    scored.forEach((it, i) => {
      const pred = protocol.read(gens[i]!);
      const ok = protocol.correct(pred, it.target);
      if (ok) correct++;
      rows.push({ task, target: it.target, pred, correct: ok, prompt: prompts[i], ...seen[i], generation: gens[i] });
    });
    per[task] = { correct, total: scored.length };
    torch.releaseFreeMemory();
  }
  ctx.writeJsonl("bbh", rows);
  const scores = Object.values(per).map((v) => (v.total ? v.correct / v.total : 0));
  const macro = scores.reduce((a, b) => a + b, 0) / Math.max(1, scores.length);
  return {
    task: "bbh",
    protocol: ctx.protocol,
    score: protocol.average === "micro" ? accuracy(per, Object.keys(per)) : macro,
    metric: protocol.metric,
    details: { tasks: Object.fromEntries(Object.entries(per).map(([n, v]) => [n, v.correct / v.total])) },
  };
}

/** HumanEval's sampling: the protocol's settings unless the user set them. */
function humanEvalParams(ctx: TaskContext) {
  const p = ctx.spec.humaneval;
  const h = ctx.humaneval ?? { samples: 1, ks: [1], timeoutS: 3 };
  const maxNewTokens = h.maxNewTokens ?? p.maxNewTokens;
  const temperature = h.temperature ?? p.temperature;
  const topK = h.topK ?? p.topK;
  const topP = h.topP ?? p.topP;
  const params: SamplingParams =
    temperature > 0
      ? { maxNewTokens, doSample: true, temperature, topP, ...(topK ? { topK } : {}), seed: 1234 }
      : { maxNewTokens };
  if (p.stop) params.stop = p.stop;
  const settings = {
    temperature,
    top_p: temperature > 0 ? topP : null,
    top_k: temperature > 0 ? (topK ?? null) : null,
    max_new_tokens: maxNewTokens,
  };
  return { h, params, settings };
}

async function humaneval(ctx: TaskContext): Promise<TaskResult> {
  const problems = (await ctx.source.humaneval()).slice(0, ctx.limit ?? Infinity);
  const p = ctx.spec.humaneval;
  const { h, params, settings } = humanEvalParams(ctx);
  const prompts = problems.flatMap((x) => Array.from({ length: h.samples }, () => p.prefix + x.prompt));
  const gen = ctx.bar(prompts.length, "humaneval generate");
  const { gens, seen } = await ctx.lm.generateUntil(prompts, params, { truncate: p.truncate, onDone: gen.tick });
  gen.done();
  const completions = gens.map(p.completion);
  const bar = ctx.bar(completions.length, "humaneval execute");
  const jobs = completions.map((c, i) => checkJob(problems[Math.floor(i / h.samples)]!, c));
  const sandbox = { timeoutS: h.timeoutS, ...(h.unsafeNoSandbox ? { unsafeNoSandbox: true } : {}) };
  const results = await runChecks(jobs, sandbox, () => bar.tick());
  bar.done();
  const rows = completions.map((completion, i) => ({
    task_id: problems[Math.floor(i / h.samples)]!.task_id,
    prompt: prompts[i],
    ...seen[i],
    generation: gens[i],
    completion,
    passed: results[i]!.passed,
    result: results[i]!.result,
  }));
  ctx.writeJsonl("humaneval", rows);
  const score = scoreHumanEval(rows, h.ks);
  const k = Math.max(...Object.keys(score.passAtK).map((x) => Number(x.slice(5))));
  const topK = settings.top_k ? `, top-k ${settings.top_k}` : "";
  return {
    task: "humaneval",
    protocol: ctx.protocol,
    score: score.passAtK[`pass@${k}`] ?? 0,
    metric: `pass@${k} (n=${h.samples}, T=${settings.temperature}${topK})`,
    details: { ...score, ...settings },
  };
}

async function rm(ctx: TaskContext): Promise<TaskResult> {
  if (!ctx.rmData) throw new Error("--tasks rm: no ranked replies to score (--rm-data FILE)");
  if (!ctx.rewardModel) throw new Error("--tasks rm scores a local reward model (--model RM_DIR), not a served one");
  const { model, tokenizer } = ctx.rewardModel;
  let bar: ReturnType<TaskContext["bar"]> | undefined;
  const r = await evaluateRewardModel({
    model,
    tokenizer,
    file: ctx.rmData,
    device: model.device,
    ...(ctx.limit !== undefined ? { limit: ctx.limit } : {}),
    onStart: (n) => (bar = ctx.bar(n, "rm groups")),
    onGroup: () => bar?.tick(),
  });
  bar?.done();
  ctx.writeJsonl("rm", r.rows);
  return {
    task: "rm",
    protocol: ctx.protocol,
    score: r.accuracy,
    metric: `pairwise accuracy over ${r.pairs} ranked pairs in ${r.groups} groups`,
    details: { pairs: r.pairs, groups: r.groups, data: ctx.rmData },
  };
}

export const evalTasks = new Registry<(ctx: TaskContext) => Promise<TaskResult>>("task");
evalTasks.register("rm", rm);
evalTasks.register("mmlu", mmlu);
evalTasks.register("bbh", bbh);
evalTasks.register("humaneval", humaneval);
