// `oasft eval`: MMLU, BBH and HumanEval on a model folder, under lm-eval-harness's or instruct-eval's
// protocol, with progress, per-item JSONL, a results JSON and the card's table.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import * as torch from "../torch/index.js";
import type { CausalLM } from "../models/index.js";
import { Engine } from "../generate/engine.js";
import { prefill } from "../generate/prefill.js";
import type { SamplingParams } from "../generate/sampling.js";
import type { ChatTokenizer } from "../tokenizer/index.js";
import { writeFileAtomic } from "../util/atomic-file.js";
import { Registry } from "../util/registry.js";
import {
  BBH_COT_STOP,
  MMLU_GROUPS,
  bbhCotAnswer,
  bbhCotPrompt,
  pyStrip,
  bbhInstructEvalPrompt,
  mmluInstructEvalPrompt,
  mmluLmEvalPrompt,
} from "./mmlu-bbh.js";
import {
  HUMANEVAL_STOP,
  INSTRUCT_EVAL_PREFIX,
  checkJob,
  cutAtStop,
  instructEvalCompletion,
  runChecks,
  scoreHumanEval,
} from "./humaneval.js";
import type { EvalSource } from "./sources.js";
import { evaluateRewardModel } from "./rm.js";

export type Protocol = "lm-eval" | "instruct-eval";

export interface EvalOptions {
  model: CausalLM;
  tokenizer: ChatTokenizer;
  protocol: Protocol;
  /** Where the tasks come from (original files, or the hub layouts). */
  source: EvalSource;
  /** At most this many items per subject / task / problem set (for quick runs). */
  limit?: number;
  /** Only these MMLU subjects / BBH tasks (default: all). */
  only?: string[];
  /** Ask each prompt as a user turn in the model's chat template (OA's: <|prompter|>{prompt}{eos}<|assistant|>). */
  chat?: boolean;
  out: string;
  humaneval?: {
    samples: number;
    ks: number[];
    timeoutS: number;
    temperature?: number;
    topP?: number;
    topK?: number;
    maxNewTokens?: number;
    unsafeNoSandbox?: boolean;
  };
  bbhMaxNewTokens?: number;
  /** `rm`: the ranked replies scored (an oasst export or a preference_pairs file). */
  rmData?: string;
  /** lm-eval MMLU shots: 5 (mmlu_flan-style few-shot, the default here) or 0 (lm-eval's plain `mmlu` task). */
  mmluShots?: number;
  maxBatch?: number;
  progress?: boolean;
}

export interface TaskResult {
  task: string;
  protocol: Protocol;
  /** The headline number (accuracy or pass@k) in [0, 1]. */
  score: number;
  metric: string;
  details: Record<string, unknown>;
}

/**
 * What the model was given for one prompt, as each row records it: the harness's prompt after chat
 * wrapping and left truncation, decoded from the very token ids fed (special tokens shown).
 */
export interface ModelInput {
  input: string;
  input_tokens: number;
  /** Tokens cut from the left to fit the model's length (lm-eval's rule); 0 when none. */
  truncated_tokens: number;
}

interface Ctx extends EvalOptions {
  engine: Engine;
  /** A prompt's token ids: as plain text, or (chat models) as a user turn in the model's chat template. */
  encodePrompt: (prompt: string) => Promise<number[]>;
  bar: (total: number, label: string) => { tick: () => void; done: () => void };
  writeJsonl: (name: string, rows: unknown[]) => void;
}

/** A prompt's token ids as the model gets them (chat-wrapped, the last `keep` kept), and their record. */
async function modelInput(ctx: Ctx, prompt: string, keep: number): Promise<{ ids: number[]; seen: ModelInput }> {
  const full = await ctx.encodePrompt(prompt);
  const ids = leftTruncate(full, keep);
  const input = await ctx.tokenizer.decode(ids);
  return { ids, seen: { input, input_tokens: ids.length, truncated_tokens: full.length - ids.length } };
}

/** Greedy or sampled generations for many prompts, batched by the engine, with what the model saw. */
async function generateAll(
  ctx: Ctx,
  prompts: string[],
  params: SamplingParams,
  label: string,
): Promise<{ gens: string[]; seen: ModelInput[] }> {
  const bar = ctx.bar(prompts.length, label);
  // lm-eval keeps the last max_length − max_gen_toks tokens of a context (HF's generate_until).
  const keep = ctx.protocol === "lm-eval" ? maxLength(ctx) - params.maxNewTokens : Infinity;
  const inputs = await Promise.all(prompts.map((p) => modelInput(ctx, p, keep)));
  // Sampled requests each get their own seed, so a run repeats exactly.
  const gens = await Promise.all(
    inputs.map(async ({ ids: promptIds }, i) => {
      const seeded = params.doSample ? { ...params, seed: (params.seed ?? 0) + i } : params;
      const r = await ctx.engine.submit({ promptIds, params: seeded }).result;
      bar.tick();
      return r.text;
    }),
  );
  bar.done();
  return { gens, seen: inputs.map((x) => x.seen) };
}

/**
 * Summed log-likelihood of each continuation after each context, reusing the KV cache of the longest
 * token prefix shared with the previous context (the few-shot header), as lm-eval scores
 * enc(context) + enc(continuation).
 */
async function logLikelihoods(
  ctx: Ctx,
  contexts: string[],
  continuations: string[],
): Promise<{ scores: number[][]; seen: ModelInput[] }> {
  const { model, tokenizer } = ctx;
  // Continuations are pieces of text, not documents: no BOS in front of " A" (LLaMA's tokenizer adds one).
  const contIds = await Promise.all(continuations.map((c) => tokenizer.encodePlain(c)));
  const cache = model.newCache({ batch: 1, capacity: 512 });
  let cached: number[] = [];
  const out: number[][] = [];
  const seen: ModelInput[] = [];
  try {
    // lm-eval scores (context + continuation)[-(max_length + 1):]: long contexts lose their head.
    const longest = Math.max(...contIds.map((c) => c.length));
    for (const context of contexts) {
      const given = await modelInput(ctx, context, maxLength(ctx) + 1 - longest);
      const ids = given.ids;
      seen.push(given.seen);
      let lcp = 0;
      while (lcp < cached.length && lcp < ids.length - 1 && cached[lcp] === ids[lcp]) lcp++;
      cache.truncate(lcp);
      const scores = torch.noGrad(() =>
        torch.scope(() => {
          const feed = torch.tensor([ids.slice(lcp)], { dtype: "int64", device: model.device });
          // The context through the cache in chunks: memory stays flat however long the few-shot prompt.
          const last = prefill(model, { inputIds: feed, cache }).select(0, 0).to("float32").logSoftmax(-1);
          return contIds.map((c) => {
            if (c.length === 1) return last.select(0, c[0]!).item();
            // A multi-token continuation: its tokens after the cached context, then the cache is cut back.
            const rest = torch.tensor([c.slice(0, -1)], { dtype: "int64", device: model.device });
            const lp = model.forward({ inputIds: rest, cache }).logits.select(0, 0).to("float32").logSoftmax(-1);
            cache.truncate(ids.length);
            return c
              .slice(1)
              .reduce((sum, id, j) => sum + lp.select(0, j).select(0, id).item(), last.select(0, c[0]!).item());
          });
        }),
      );
      cached = ids;
      out.push(scores);
    }
  } finally {
    cache.dispose();
  }
  return { scores: out, seen };
}

/**
 * The model's max length as lm-eval's HF model sees it: its config's context, else the tokenizer's
 * model_max_length (unless it is transformers' "no limit" value), else 2,048.
 */
const maxLength = (ctx: Ctx) => ctx.model.config.maxPositions ?? ctx.tokenizer.modelMaxLength ?? 2048;

/** The last `keep` tokens (lm-eval cuts contexts from the left). */
function leftTruncate(ids: number[], keep: number): number[] {
  return keep > 0 && ids.length > keep ? ids.slice(ids.length - keep) : ids;
}

/** The names of `all` that `only` keeps (all when only is unset; an error when it names none of them). */
function selected(all: string[], only: string[] | undefined, what: string): string[] {
  if (!only?.length) return all;
  const keep = all.filter((n) => only.includes(n));
  if (!keep.length) throw new Error(`no ${what} among ${only.join(", ")}; known: ${all.join(", ")}`);
  return keep;
}

// ----- tasks ---------------------------------------------------------------------------------------

async function mmlu(ctx: Ctx): Promise<TaskResult> {
  const data = await ctx.source.mmlu();
  const subjects = selected(data.subjects, ctx.only, "mmlu subject");
  const per: Record<string, { correct: number; total: number }> = {};
  const rows: unknown[] = [];
  const bar = ctx.bar(subjects.length, `mmlu (${ctx.protocol})`);
  for (const subject of subjects) {
    const dev = data.dev(subject);
    const test = data.test(subject).slice(0, ctx.limit ?? Infinity);
    let preds: string[];
    if (ctx.protocol === "lm-eval") {
      const contexts = test.map((t) => mmluLmEvalPrompt(subject, dev.slice(0, ctx.mmluShots ?? 5), t));
      const { scores: ll, seen } = await logLikelihoods(ctx, contexts, [" A", " B", " C", " D"]);
      preds = ll.map((s) => "ABCD"[s.indexOf(Math.max(...s))]!);
      test.forEach((t, i) =>
        rows.push({
          subject,
          answer: t.answer,
          pred: preds[i],
          loglikelihoods: ll[i],
          prompt: contexts[i],
          ...seen[i],
        }),
      );
    } else {
      // instruct-eval: fewer shots when the prompt exceeds 2,048 tokens; correct iff the reply starts with the letter.
      const prompts: string[] = [];
      for (const t of test) {
        let k = 5;
        let p = mmluInstructEvalPrompt(subject, dev, t, k);
        while (k > 0 && (await ctx.tokenizer.encode(p)).length > 2048) p = mmluInstructEvalPrompt(subject, dev, t, --k);
        prompts.push(p);
      }
      // instruct-eval's max_output_length=2.
      const { gens, seen } = await generateAll(ctx, prompts, { maxNewTokens: 2 }, `mmlu ${subject}`);
      preds = gens.map((g) => pyStrip(g));
      test.forEach((t, i) => {
        rows.push({ subject, answer: t.answer, prompt: prompts[i], ...seen[i], generation: gens[i] });
      });
    }
    const correct = test.filter((t, i) =>
      ctx.protocol === "lm-eval" ? preds[i] === t.answer : preds[i]!.startsWith(t.answer),
    ).length;
    per[subject] = { correct, total: test.length };
    torch.releaseFreeMemory(); // one subject's longest prompt must not stay resident for the rest
    bar.tick();
  }
  bar.done();
  ctx.writeJsonl("mmlu", rows);
  const acc = (names: string[]) => {
    const c = names.reduce((a, n) => a + (per[n]?.correct ?? 0), 0);
    const t = names.reduce((a, n) => a + (per[n]?.total ?? 0), 0);
    return t ? c / t : 0;
  };
  const all = Object.keys(per);
  return {
    task: "mmlu",
    protocol: ctx.protocol,
    score: acc(all),
    metric:
      ctx.protocol === "lm-eval"
        ? `acc, ${ctx.mmluShots ?? 5}-shot log-likelihood${(ctx.mmluShots ?? 5) === 0 ? " (lm-eval's plain mmlu task)" : ""} (micro-average over questions)`
        : "startswith, 5-shot (fewer past 2,048 tokens), 2 new tokens (micro-average over questions)",
    details: {
      groups: Object.fromEntries(
        Object.entries(MMLU_GROUPS).map(([g, names]) => [g, acc(names.filter((n) => per[n]))]),
      ),
      subjects: Object.fromEntries(Object.entries(per).map(([n, v]) => [n, v.correct / v.total])),
      questions: all.reduce((a, n) => a + per[n]!.total, 0),
      // What the prompts held: lm-eval's chosen count; instruct-eval's at most 5 (fewer past 2,048 tokens).
      shots: ctx.protocol === "lm-eval" ? (ctx.mmluShots ?? 5) : 5,
    },
  };
}

async function bbh(ctx: Ctx): Promise<TaskResult> {
  const data = await ctx.source.bbh();
  const tasks = selected(data.tasks, ctx.only, "bbh task");
  const per: Record<string, { correct: number; total: number }> = {};
  const rows: unknown[] = [];
  for (const task of tasks) {
    const items = data.items(task);
    let prompts: string[];
    let evalItems: typeof items;
    let gens: string[];
    let seen: ModelInput[];
    if (ctx.protocol === "lm-eval") {
      const cot = ctx.source.bbhCot(task);
      evalItems = items.slice(0, ctx.limit ?? Infinity);
      prompts = evalItems.map((it) => bbhCotPrompt(cot, it));
      const params = { maxNewTokens: ctx.bbhMaxNewTokens ?? 1024, stop: BBH_COT_STOP };
      ({ gens, seen } = await generateAll(ctx, prompts, params, `bbh ${task}`));
    } else {
      evalItems = items.slice(3).slice(0, ctx.limit ?? Infinity);
      prompts = evalItems.map((it) => bbhInstructEvalPrompt(items.slice(0, 3), it));
      ({ gens, seen } = await generateAll(ctx, prompts, { maxNewTokens: 32 }, `bbh ${task}`));
    }
    let correct = 0;
    evalItems.forEach((it, i) => {
      const pred = ctx.protocol === "lm-eval" ? bbhCotAnswer(gens[i]!) : pyStrip(gens[i]!);
      const ok = ctx.protocol === "lm-eval" ? pred === it.target : pred.startsWith(it.target);
      if (ok) correct++;
      rows.push({ task, target: it.target, pred, correct: ok, prompt: prompts[i], ...seen[i], generation: gens[i] });
    });
    per[task] = { correct, total: evalItems.length };
    torch.releaseFreeMemory();
  }
  ctx.writeJsonl("bbh", rows);
  const scores = Object.values(per).map((v) => (v.total ? v.correct / v.total : 0));
  const micro =
    Object.values(per).reduce((a, v) => a + v.correct, 0) /
    Math.max(
      1,
      Object.values(per).reduce((a, v) => a + v.total, 0),
    );
  const macro = scores.reduce((a, b) => a + b, 0) / Math.max(1, scores.length);
  return {
    task: "bbh",
    protocol: ctx.protocol,
    score: ctx.protocol === "lm-eval" ? micro : macro,
    metric:
      ctx.protocol === "lm-eval"
        ? "exact_match, 3-shot CoT (mean weighted by task size)"
        : "startswith, 3-shot direct (unweighted mean over tasks)",
    details: { tasks: Object.fromEntries(Object.entries(per).map(([n, v]) => [n, v.correct / v.total])) },
  };
}

async function humaneval(ctx: Ctx): Promise<TaskResult> {
  const problems = (await ctx.source.humaneval()).slice(0, ctx.limit ?? Infinity);
  const instruct = ctx.protocol === "instruct-eval";
  // The harnesses' own settings unless the user set them: lm-eval allows 1,024 new tokens; instruct-eval
  // samples at temperature 0.1 with top-k 50 (top-p 1.0) even for n = 1.
  const h = ctx.humaneval ?? { samples: 1, ks: [1], timeoutS: 3 };
  const maxNewTokens = h.maxNewTokens ?? (instruct ? 512 : 1024);
  const temperature = h.temperature ?? (instruct ? 0.1 : 0);
  const topK = h.topK ?? (instruct ? 50 : undefined);
  // instruct-eval leaves top-p at the library's 1.0; lm-eval's sampled HumanEval variants use 0.95.
  const topP = h.topP ?? (instruct ? 1 : 0.95);
  const prompts = problems.flatMap((p) =>
    Array.from({ length: h.samples }, () => (instruct ? INSTRUCT_EVAL_PREFIX : "") + p.prompt),
  );
  const params: SamplingParams =
    temperature > 0
      ? { maxNewTokens, doSample: true, temperature, topP, ...(topK ? { topK } : {}), seed: 1234 }
      : { maxNewTokens };
  if (!instruct) params.stop = HUMANEVAL_STOP;
  const { gens, seen } = await generateAll(ctx, prompts, params, "humaneval generate");
  const completions = gens.map((g) => (instruct ? instructEvalCompletion(g) : cutAtStop(g, HUMANEVAL_STOP)));
  const bar = ctx.bar(completions.length, "humaneval execute");
  const jobs = completions.map((c, i) => checkJob(problems[Math.floor(i / h.samples)]!, c));
  const results = await runChecks(
    jobs,
    { timeoutS: h.timeoutS, ...(h.unsafeNoSandbox ? { unsafeNoSandbox: true } : {}) },
    () => bar.tick(),
  );
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
  const settings = {
    temperature,
    top_p: temperature > 0 ? topP : null,
    top_k: temperature > 0 ? (topK ?? null) : null,
    max_new_tokens: maxNewTokens,
  };
  return {
    task: "humaneval",
    protocol: ctx.protocol,
    score: score.passAtK[`pass@${k}`] ?? 0,
    metric: `pass@${k} (n=${h.samples}, T=${temperature}${settings.top_k ? `, top-k ${settings.top_k}` : ""})`,
    details: { ...score, ...settings },
  };
}

async function rm(ctx: Ctx): Promise<TaskResult> {
  if (!ctx.rmData) throw new Error("--tasks rm: no ranked replies to score (--rm-data FILE)");
  let bar: ReturnType<Ctx["bar"]> | undefined;
  const r = await evaluateRewardModel({
    model: ctx.model,
    tokenizer: ctx.tokenizer,
    file: ctx.rmData,
    device: ctx.model.device,
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

export const evalTasks = new Registry<(ctx: Ctx) => Promise<TaskResult>>("task");
evalTasks.register("rm", rm);
evalTasks.register("mmlu", mmlu);
evalTasks.register("bbh", bbh);
evalTasks.register("humaneval", humaneval);

/** Runs the tasks; writes results.json, <task>.jsonl and table.md into `out`. */
export async function runEval(taskNames: string[], o: EvalOptions): Promise<TaskResult[]> {
  const runners = taskNames.map((t) => evalTasks.get(t));
  mkdirSync(o.out, { recursive: true });
  const engine = new Engine(o.model, o.tokenizer, { maxBatch: o.maxBatch ?? 8, maxQueue: Number.MAX_SAFE_INTEGER });
  const ctx: Ctx = {
    ...o,
    engine,
    encodePrompt: o.chat
      ? (p) => o.tokenizer.encodeChatPrompt([{ role: "user", content: p }])
      : (p) => o.tokenizer.encode(p),
    bar: (total, label) => {
      // On a terminal a line redrawn in place with rate and ETA; in logs a line every quarter.
      let n = 0;
      const t0 = performance.now();
      const tty = process.stderr.isTTY;
      const show = () => {
        const s = (performance.now() - t0) / 1000;
        const line = `${label}: ${n}/${total}  ${(n / Math.max(s, 1e-9)).toFixed(1)}/s  ETA ${((s / Math.max(n, 1)) * (total - n)).toFixed(0)} s`;
        process.stderr.write(tty ? `\r${line}\x1b[K` : `${line}\n`);
      };
      return {
        tick: () => {
          n++;
          if (o.progress === false) return;
          if (tty || n === total || n % Math.max(1, Math.ceil(total / 4)) === 0) show();
        },
        done: () => {
          if (tty && o.progress !== false) process.stderr.write("\n");
        },
      };
    },
    writeJsonl: (name, rows) =>
      writeFileAtomic(
        join(o.out, `${name}.jsonl`),
        rows.map((r) => JSON.stringify(r) + "\n"),
      ),
  };
  const results: TaskResult[] = [];
  for (const run of runners) results.push(await run(ctx));
  writeFileAtomic(join(o.out, "results.json"), [
    JSON.stringify(
      { protocol: o.protocol, source: o.source.describe, chat: !!o.chat, limit: o.limit ?? null, results },
      null,
      2,
    ) + "\n",
  ]);
  writeFileAtomic(join(o.out, "table.md"), [evalTable(results, o.protocol)]);
  return results;
}

/** The card's layout: model | MMLU | BBH | HumanEval@k, naming the protocol. */
export function evalTable(results: TaskResult[], protocol: Protocol, model = "this model"): string {
  const get = (t: string) => results.find((r) => r.task === t);
  const cell = (t: string) => (get(t) ? (100 * get(t)!.score).toFixed(1) : "–");
  const he = get("humaneval");
  const rmResult = get("rm");
  if (rmResult && results.length === 1) {
    const row = `| ${model} | ${(100 * rmResult.score).toFixed(1)} |`;
    return `| reward model | pairwise accuracy |\n|---|---:|\n${row}\n\n${rmResult.metric}.\n`;
  }
  const about =
    protocol === "instruct-eval"
      ? " (declare-lab/instruct-eval: MMLU 5-shot and BBH 3-shot direct, generative startswith)"
      : " (lm-evaluation-harness: MMLU log-likelihood, BBH 3-shot CoT exact match)";
  return (
    [
      `| model | MMLU | BBH | HumanEval${he ? ` (${he.metric})` : ""} |`,
      "|---|---:|---:|---:|",
      `| ${model} | ${cell("mmlu")} | ${cell("bbh")} | ${cell("humaneval")} |`,
      "",
      `Protocol: ${protocol}${about}.`,
    ].join("\n") + "\n"
  );
}
