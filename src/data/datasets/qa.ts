// Single-turn question/answer datasets of the card: dolly15k, gsm8k, webgpt, joke.
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { fromPairs, type Conversation } from "../conversation.js";
import {
  DropCounter,
  inputFiles,
  optString,
  resolveInputPath,
  optPaths,
  type DatasetLoader,
  type LoaderContext,
  type DatasetOptions,
} from "../dataset.js";
import { failsWordFilter, removeReferences } from "../filters.js";
import { asObject, DataError, getPath, readAllRecords, readRecords, stringField } from "../io.js";
import { writeFileAtomic } from "../../util/atomic-file.js";

// ----- dolly15k ----------------------------------------------------------------------------------

/** OA's dolly context cleaning: citation markers, "[citation needed]", single-letter notes "[a]". */
const cleanContext = (c: string) =>
  removeReferences(c)
    .replaceAll("[citation needed]", "")
    .replace(/\[[a-zA-Z]\]/g, "");

export const dolly15k: DatasetLoader = {
  description: "databricks-dolly-15k: OA's OllieStanley/oa_dolly_15k rows, or Databricks' original JSONL",
  options: {
    input_file_path: "a local copy (either schema); default: the hub's OllieStanley/oa_dolly_15k",
    format_version:
      '"head" (word filter; context only via use_system_tag) or "may2023" (no filter, 2048-char cap, context in ' +
      "the leading system tag)",
  },
  async load(o, ctx) {
    const version = (optString(o, "format_version", ctx.name) ?? ctx.formatVersion) as string;
    if (version !== "head" && version !== "may2023")
      throw new Error(`dataset ${ctx.name}: option 'format_version' must be "head" or "may2023", got "${version}"`);
    const files = await inputFiles(o, ctx, { repo: "OllieStanley/oa_dolly_15k", files: /\.(parquet|jsonl)$/ });
    const drop = new DropCounter();
    const train: Conversation[] = [];
    for (const r of await readAllRecords(files)) {
      const obj = asObject(r);
      // OA's hub copy uses INSTRUCTION/RESPONSE/METADATA.CONTEXT; Databricks' file instruction/response/context.
      const oa = "INSTRUCTION" in obj;
      let instruction = stringField(obj, oa ? "INSTRUCTION" : "instruction", r.where);
      let response = stringField(obj, oa ? "RESPONSE" : "response", r.where);
      const rawContext = oa ? getPath(obj, "METADATA.CONTEXT") : obj.context;
      if (rawContext !== undefined && rawContext !== null && typeof rawContext !== "string")
        throw new DataError(r.where, `field '${oa ? "METADATA.CONTEXT" : "context"}' must be a string`);
      const context = rawContext ? cleanContext(rawContext) : "";
      if (version === "head") {
        if (failsWordFilter(instruction) || failsWordFilter(response)) {
          drop.drop("word_filter");
          continue;
        }
      } else {
        instruction = instruction.slice(0, 2048);
        response = response.slice(0, 2048);
      }
      const c = fromPairs([instruction, response], context ? { context } : {});
      if (context) c.legacyProperties = { context };
      train.push(c);
    }
    return { train, dropped: drop.counts, files };
  },
};

// ----- gsm8k -------------------------------------------------------------------------------------

export const gsm8k: DatasetLoader = {
  description: "GSM8K grade-school math (question → worked answer ending in '#### n'); validation = the test split",
  options: {
    input_file_path: "a folder with train.jsonl and test.jsonl (or parquet); default: the hub's openai/gsm8k (main)",
  },
  async load(o, ctx) {
    const hub = { repo: "openai/gsm8k", files: /^main\/.*\.parquet$/ };
    const trainFiles = await inputFiles(o, ctx, hub, /train[^/]*$/);
    const testFiles = await inputFiles(o, ctx, hub, /test[^/]*$/);
    const read = async (files: string[]) =>
      (await readAllRecords(files)).map((r) => {
        const obj = asObject(r);
        return fromPairs([stringField(obj, "question", r.where), stringField(obj, "answer", r.where)]);
      });
    return {
      train: await read(trainFiles),
      val: await read(testFiles),
      dropped: {},
      files: [...trainFiles, ...testFiles],
    };
  },
};

// ----- webgpt ------------------------------------------------------------------------------------

export const webgpt: DatasetLoader = {
  description: "openai/webgpt_comparisons: per question, the best-scored answer (citations removed)",
  options: {
    input_file_path: "a local copy of the comparisons (JSONL or parquet); default: the hub's openai/webgpt_comparisons",
  },
  async load(o, ctx) {
    const files = await inputFiles(o, ctx, { repo: "openai/webgpt_comparisons", files: /\.(parquet|jsonl)$/ });
    const drop = new DropCounter();
    const byQuestion = new Map<string, Map<string, number>>();
    for (const r of await readAllRecords(files)) {
      const obj = asObject(r);
      const question = stringField(obj, "question.full_text", r.where);
      const answers = [0, 1].map((i) => removeReferences(stringField(obj, `answer_${i}`, r.where)).trim());
      const scores = [0, 1].map((i) => {
        const s = obj[`score_${i}`];
        if (typeof s !== "number") throw new DataError(r.where, `field 'score_${i}' must be a number`);
        return s;
      });
      if (!answers[0] || !answers[1] || answers[0] === answers[1]) {
        drop.drop("empty_or_equal_answers");
        continue;
      }
      const group = byQuestion.get(question) ?? new Map<string, number>();
      answers.forEach((a, i) => group.set(a, scores[i]!)); // a later duplicate overwrites, as OA
      byQuestion.set(question, group);
    }
    const train: Conversation[] = [];
    for (const [question, group] of byQuestion) {
      const best = [...group.entries()].sort((a, b) => b[1] - a[1])[0]![0];
      const c = fromPairs([question, best], { lang: "en" });
      c.legacyProperties = { lang: "en" };
      train.push(c);
    }
    return { train, dropped: drop.counts, files };
  },
};

// ----- joke --------------------------------------------------------------------------------------

const JOKE_URL =
  "https://gist.github.com/theblackcat102/42b697e24a13fdb499e20edfbf618361/raw/" +
  "1834dca207898c15f93b809d1195f6f6e47c9e1e/joke_explained.jsonl";

/** The cached copy OA uses ({cache_dir}/joke_explaination.jsonl), downloaded once when missing. */
async function jokeFile(o: DatasetOptions, ctx: LoaderContext): Promise<string> {
  const given = optPaths(o, "input_file_path", ctx.name);
  if (given) return resolveInputPath(given[0]!, ctx);
  const cached = join(ctx.cacheDir, "joke_explaination.jsonl");
  if (existsSync(cached)) return cached;
  if (process.env.HF_HUB_OFFLINE === "1")
    throw new Error(`dataset ${ctx.name}: ${cached} not found and HF_HUB_OFFLINE=1; set input_file_path`);
  const res = await fetch(JOKE_URL).catch((err: Error) => {
    throw new Error(
      `dataset ${ctx.name}: ${cached} not found and the download failed (${err.message}); set input_file_path`,
    );
  });
  if (!res.ok) throw new Error(`dataset ${ctx.name}: download of ${JOKE_URL} failed (HTTP ${res.status})`);
  mkdirSync(ctx.cacheDir, { recursive: true });
  writeFileAtomic(cached, [Buffer.from(await res.arrayBuffer())]);
  return cached;
}

export const joke: DatasetLoader = {
  description: "Explained jokes (theblackcat102's joke_explained.jsonl): joke → explanation",
  options: { input_file_path: "a local copy; default: {cache_dir}/joke_explaination.jsonl, downloaded when missing" },
  async load(o, ctx) {
    const file = await jokeFile(o, ctx);
    const train = (await readRecords(file)).map((r) => {
      const obj = asObject(r);
      // "explaination" is misspelled in the published data; OA reads it as is.
      return fromPairs([stringField(obj, "joke", r.where), stringField(obj, "explaination", r.where)]);
    });
    return { train, dropped: {}, files: [file] };
  },
};
