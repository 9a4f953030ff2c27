// `oasft eval`: MMLU, BBH, HumanEval (and a reward model's accuracy) under lm-eval-harness's or
// instruct-eval's protocol, on the local model or a served one (--base-url), with progress, per-item
// JSONL, a results JSON and the card's table.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { CausalLM } from "../models/index.js";
import type { ChatTokenizer } from "../tokenizer/index.js";
import { writeFileAtomic } from "../util/atomic-file.js";
import { LocalLM, type LM } from "./lm.js";
import { PROTOCOLS, type Protocol } from "./protocols.js";
import type { EvalSource } from "./sources.js";
import { evalTasks, type HumanEvalSettings, type TaskContext, type TaskResult } from "./tasks.js";

export type { ModelInput } from "./lm.js";
export type { Protocol } from "./protocols.js";
export { evalTasks, type TaskResult } from "./tasks.js";

export interface EvalOptions {
  /** The local model (a LocalLM runs it), unless `lm` is given. */
  model?: CausalLM;
  tokenizer: ChatTokenizer;
  /** What answers the prompts (a served model: RemoteLM); default: the local model. */
  lm?: LM;
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
  humaneval?: HumanEvalSettings;
  bbhMaxNewTokens?: number;
  /** `rm`: the ranked replies scored (an oasst export or a preference_pairs file). */
  rmData?: string;
  /** lm-eval MMLU shots: 5 (mmlu_flan-style few-shot, the default here) or 0 (lm-eval's plain `mmlu` task). */
  mmluShots?: number;
  maxBatch?: number;
  progress?: boolean;
}

/** On a terminal a line redrawn in place with rate and ETA; in logs a line every quarter. */
function progressBar(enabled: boolean) {
  return (total: number, label: string) => {
    let n = 0;
    const t0 = performance.now();
    const tty = process.stderr.isTTY;
    const show = () => {
      const s = (performance.now() - t0) / 1000;
      const eta = ((s / Math.max(n, 1)) * (total - n)).toFixed(0);
      const line = `${label}: ${n}/${total}  ${(n / Math.max(s, 1e-9)).toFixed(1)}/s  ETA ${eta} s`;
      process.stderr.write(tty ? `\r${line}\x1b[K` : `${line}\n`);
    };
    return {
      tick: () => {
        n++;
        if (!enabled) return;
        if (tty || n === total || n % Math.max(1, Math.ceil(total / 4)) === 0) show();
      },
      done: () => {
        if (tty && enabled) process.stderr.write("\n");
      },
    };
  };
}

/** Runs the tasks; writes results.json, <task>.jsonl and table.md into `out`. */
export async function runEval(taskNames: string[], o: EvalOptions): Promise<TaskResult[]> {
  const runners = taskNames.map((t) => evalTasks.get(t));
  mkdirSync(o.out, { recursive: true });
  const lm =
    o.lm ??
    (o.model ? new LocalLM(o.model, o.tokenizer, { chat: o.chat ?? false, maxBatch: o.maxBatch ?? 8 }) : undefined);
  if (!lm) throw new Error("eval: no model to run (a local model or a served one)");
  const ctx: TaskContext = {
    lm,
    protocol: o.protocol,
    spec: PROTOCOLS[o.protocol],
    source: o.source,
    ...(o.limit !== undefined ? { limit: o.limit } : {}),
    ...(o.only ? { only: o.only } : {}),
    ...(o.mmluShots !== undefined ? { mmluShots: o.mmluShots } : {}),
    ...(o.bbhMaxNewTokens !== undefined ? { bbhMaxNewTokens: o.bbhMaxNewTokens } : {}),
    ...(o.humaneval ? { humaneval: o.humaneval } : {}),
    ...(o.model ? { rewardModel: { model: o.model, tokenizer: o.tokenizer } } : {}),
    ...(o.rmData ? { rmData: o.rmData } : {}),
    bar: progressBar(o.progress !== false),
    writeJsonl: (name, rows) =>
      writeFileAtomic(
        join(o.out, `${name}.jsonl`),
        rows.map((r) => JSON.stringify(r) + "\n"),
      ),
  };
  const results: TaskResult[] = [];
  try {
    for (const run of runners) results.push(await run(ctx));
  } finally {
    if (!o.lm) lm.dispose();
  }
  const summary = {
    protocol: o.protocol,
    source: o.source.describe,
    model: lm.describe,
    chat: !!o.chat,
    limit: o.limit ?? null,
    results,
  };
  writeFileAtomic(join(o.out, "results.json"), [JSON.stringify(summary, null, 2) + "\n"]);
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
  return (
    [
      `| model | MMLU | BBH | HumanEval${he ? ` (${he.metric})` : ""} |`,
      "|---|---:|---:|---:|",
      `| ${model} | ${cell("mmlu")} | ${cell("bbh")} | ${cell("humaneval")} |`,
      "",
      `Protocol: ${protocol} (${PROTOCOLS[protocol].about}).`,
    ].join("\n") + "\n"
  );
}
