// The two harnesses' protocols as data: for each task, how prompts are built, what the model is asked
// (log-likelihoods or generations, with which budget and stops), how an answer is read and scored, and
// how the result is named. The tasks (tasks.ts) run whichever protocol the run names, with no branch
// on its name.
import type { SamplingParams } from "../generate/sampling.js";
import {
  BBH_COT_STOP,
  bbhCotAnswer,
  bbhCotPrompt,
  bbhInstructEvalPrompt,
  mmluInstructEvalPrompt,
  mmluLmEvalPrompt,
  pyStrip,
  type BbhItem,
  type MmluItem,
} from "./mmlu-bbh.js";
import { HUMANEVAL_STOP, INSTRUCT_EVAL_PREFIX, cutAtStop, instructEvalCompletion } from "./humaneval.js";
import type { LM, ModelInput } from "./lm.js";

export type Protocol = "lm-eval" | "instruct-eval";

/** What an MMLU subject's questions were answered with: one prediction and one row per question. */
export interface Answers {
  preds: string[];
  rows: Array<Record<string, unknown>>;
}

export interface MmluProtocol {
  /** Shots in the prompt; `asked` is --mmlu-shots (undefined when not given). */
  shots(asked: number | undefined): number;
  /** Whether --mmlu-shots may change the shots. */
  shotsFlag: boolean;
  answer(lm: LM, subject: string, dev: MmluItem[], test: MmluItem[], shots: number): Promise<Answers>;
  correct(pred: string, answer: string): boolean;
  metric(shots: number): string;
}

export interface BbhProtocol {
  /** The items scored and the prompt of each (`cot`: the task's chain-of-thought exemplars). */
  prompts(
    items: BbhItem[],
    cot: () => { description: string; shots: string[] },
    limit: number,
  ): {
    scored: BbhItem[];
    prompts: string[];
  };
  params(maxNewTokens: number): SamplingParams;
  /** lm-eval cuts long contexts from the left to fit; instruct-eval feeds them whole. */
  truncate: boolean;
  /** The answer read from a generation, and whether it counts. */
  read(generation: string): string;
  correct(pred: string, target: string): boolean;
  /** The task-size-weighted mean (micro) or the unweighted mean over tasks (macro). */
  average: "micro" | "macro";
  metric: string;
}

export interface HumanEvalProtocol {
  /** Put in front of each problem's prompt. */
  prefix: string;
  maxNewTokens: number;
  temperature: number;
  topK: number | undefined;
  topP: number;
  stop: string[] | undefined;
  truncate: boolean;
  /** The program's body from a generation. */
  completion(generation: string): string;
}

export interface ProtocolSpec {
  /** How the table names the harness. */
  about: string;
  mmlu: MmluProtocol;
  bbh: BbhProtocol;
  humaneval: HumanEvalProtocol;
}

const LETTERS = [" A", " B", " C", " D"];

/** lm-evaluation-harness: MMLU by log-likelihood of the letters, BBH 3-shot CoT exact match, HumanEval greedy. */
const LM_EVAL: ProtocolSpec = {
  about: "lm-evaluation-harness: MMLU log-likelihood, BBH 3-shot CoT exact match",
  mmlu: {
    shots: (asked) => asked ?? 5,
    shotsFlag: true,
    answer: async (lm, subject, dev, test, shots) => {
      const contexts = test.map((t) => mmluLmEvalPrompt(subject, dev.slice(0, shots), t));
      const { scores, seen } = await lm.loglikelihood(contexts, LETTERS);
      const preds = scores.map((s) => "ABCD"[s.indexOf(Math.max(...s))]!);
      const rows = test.map((t, i) => ({
        subject,
        answer: t.answer,
        pred: preds[i],
        loglikelihoods: scores[i],
        prompt: contexts[i],
        ...seen[i],
      }));
      return { preds, rows };
    },
    correct: (pred, answer) => pred === answer,
    metric: (shots) =>
      `acc, ${shots}-shot log-likelihood${shots === 0 ? " (lm-eval's plain mmlu task)" : ""} ` +
      "(micro-average over questions)",
  },
  bbh: {
    prompts: (items, cot, limit) => {
      const scored = items.slice(0, limit);
      const exemplars = cot();
      return { scored, prompts: scored.map((it) => bbhCotPrompt(exemplars, it)) };
    },
    params: (maxNewTokens) => ({ maxNewTokens, stop: BBH_COT_STOP }),
    truncate: true,
    read: bbhCotAnswer,
    correct: (pred, target) => pred === target,
    average: "micro",
    metric: "exact_match, 3-shot CoT (mean weighted by task size)",
  },
  // lm-eval allows 1,024 new tokens; its sampled HumanEval variants use top-p 0.95.
  humaneval: {
    prefix: "",
    maxNewTokens: 1024,
    temperature: 0,
    topK: undefined,
    topP: 0.95,
    stop: HUMANEVAL_STOP,
    truncate: true,
    completion: (g) => cutAtStop(g, HUMANEVAL_STOP),
  },
};

/**
 * declare-lab instruct-eval (the card's most likely harness): generative, correct when the reply starts with the
 * answer.
 */
const INSTRUCT_EVAL: ProtocolSpec = {
  about: "declare-lab/instruct-eval: MMLU 5-shot and BBH 3-shot direct, generative startswith",
  mmlu: {
    shots: () => 5,
    shotsFlag: false,
    answer: async (lm, subject, dev, test) => {
      // Fewer shots when the prompt exceeds 2,048 tokens; instruct-eval's max_output_length=2.
      const prompts: string[] = [];
      for (const t of test) {
        let k = 5;
        let p = mmluInstructEvalPrompt(subject, dev, t, k);
        while (k > 0 && (await lm.countTokens(p)) > 2048) p = mmluInstructEvalPrompt(subject, dev, t, --k);
        prompts.push(p);
      }
      const { gens, seen } = await lm.generateUntil(prompts, { maxNewTokens: 2 }, { truncate: false });
      const rows = test.map((t, i) => ({
        subject,
        answer: t.answer,
        prompt: prompts[i],
        ...seen[i],
        generation: gens[i],
      }));
      return { preds: gens.map(pyStrip), rows };
    },
    correct: (pred, answer) => pred.startsWith(answer),
    metric: () => "startswith, 5-shot (fewer past 2,048 tokens), 2 new tokens (micro-average over questions)",
  },
  bbh: {
    // The task's first three items are the shots; the rest are scored.
    prompts: (items, _cot, limit) => {
      const scored = items.slice(3).slice(0, limit);
      return { scored, prompts: scored.map((it) => bbhInstructEvalPrompt(items.slice(0, 3), it)) };
    },
    params: () => ({ maxNewTokens: 32 }),
    truncate: false,
    read: pyStrip,
    correct: (pred, target) => pred.startsWith(target),
    average: "macro",
    metric: "startswith, 3-shot direct (unweighted mean over tasks)",
  },
  // Sampling at temperature 0.1 with top-k 50 (top-p the library's 1.0) even for n = 1.
  humaneval: {
    prefix: INSTRUCT_EVAL_PREFIX,
    maxNewTokens: 512,
    temperature: 0.1,
    topK: 50,
    topP: 1,
    stop: undefined,
    truncate: false,
    completion: instructEvalCompletion,
  },
};

export const PROTOCOLS: Record<Protocol, ProtocolSpec> = { "lm-eval": LM_EVAL, "instruct-eval": INSTRUCT_EVAL };

export type { ModelInput };
