// MMLU and BBH from their original files, with the prompt templates of the two harnesses:
//   lm-eval-harness ("lm-eval"): MMLU 5-shot log-likelihood of " A".." D"; BBH 3-shot chain of thought;
//   declare-lab instruct-eval ("instruct-eval", the card's most likely harness): generative, startswith.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { DataError } from "../data/io.js";

// ----- MMLU ----------------------------------------------------------------------------------------

export interface MmluItem {
  question: string;
  choices: [string, string, string, string];
  answer: "A" | "B" | "C" | "D";
}

/** RFC-4180 CSV (quoted fields with commas, quotes and newlines); errors name the file and record. */
export function parseCsv(text: string, file: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let quoted = false;
  let line = 1;
  let quoteLine = 1;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else {
        if (ch === "\n") line++;
        field += ch;
      }
    } else if (ch === '"' && field === "") {
      quoted = true;
      quoteLine = line;
    } else if (ch === ",") {
      row.push(field);
      field = "";
    } else if (ch === "\n") {
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
      line++;
    } else if (ch !== "\r") field += ch;
  }
  if (quoted) throw new DataError(`${file}:${quoteLine}`, "unterminated quoted field");
  if (field !== "" || row.length) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

export function readMmluCsv(file: string): MmluItem[] {
  return parseCsv(readFileSync(file, "utf8"), file).map((r, i) => {
    if (r.length !== 6 || !["A", "B", "C", "D"].includes(r[5]!))
      throw new DataError(
        `${file}: record ${i + 1}`,
        `expected 6 fields question,A,B,C,D,answer with answer A-D, got ${r.length} fields`,
      );
    return { question: r[0]!, choices: [r[1]!, r[2]!, r[3]!, r[4]!], answer: r[5] as MmluItem["answer"] };
  });
}

/** The 57 subjects of the hendrycks data folder (dev/<s>_dev.csv, test/<s>_test.csv). */
export function mmluSubjects(dataDir: string): string[] {
  const dir = join(dataDir, "test");
  if (!existsSync(dir))
    throw new Error(`mmlu: ${dir} not found (expected the hendrycks layout data/{dev,test}/<subject>_{dev,test}.csv)`);
  return readdirSync(dir)
    .filter((f) => f.endsWith("_test.csv"))
    .map((f) => basename(f, "_test.csv"))
    .sort();
}

/** lm-eval's MMLU groups (hendrycks' categories). */
export const MMLU_GROUPS: Record<string, string[]> = {
  stem: [
    "abstract_algebra",
    "anatomy",
    "astronomy",
    "college_biology",
    "college_chemistry",
    "college_computer_science",
    "college_mathematics",
    "college_physics",
    "computer_security",
    "conceptual_physics",
    "electrical_engineering",
    "elementary_mathematics",
    "high_school_biology",
    "high_school_chemistry",
    "high_school_computer_science",
    "high_school_mathematics",
    "high_school_physics",
    "high_school_statistics",
    "machine_learning",
  ],
  humanities: [
    "formal_logic",
    "high_school_european_history",
    "high_school_us_history",
    "high_school_world_history",
    "international_law",
    "jurisprudence",
    "logical_fallacies",
    "moral_disputes",
    "moral_scenarios",
    "philosophy",
    "prehistory",
    "professional_law",
    "world_religions",
  ],
  social_sciences: [
    "econometrics",
    "high_school_geography",
    "high_school_government_and_politics",
    "high_school_macroeconomics",
    "high_school_microeconomics",
    "high_school_psychology",
    "human_sexuality",
    "professional_psychology",
    "public_relations",
    "security_studies",
    "sociology",
    "us_foreign_policy",
  ],
  other: [
    "business_ethics",
    "clinical_knowledge",
    "college_medicine",
    "global_facts",
    "human_aging",
    "management",
    "marketing",
    "medical_genetics",
    "miscellaneous",
    "nutrition",
    "professional_accounting",
    "professional_medicine",
    "virology",
  ],
};

const LETTERS = ["A", "B", "C", "D"] as const;

/** lm-eval: description + k shots (first_n of dev) joined by "\n\n" + the question; the choices are " A".." D". */
export function mmluLmEvalPrompt(subject: string, dev: MmluItem[], item: MmluItem, k = 5): string {
  const text = (d: MmluItem) =>
    `${d.question.trim()}\nA. ${d.choices[0]}\nB. ${d.choices[1]}\nC. ${d.choices[2]}\nD. ${d.choices[3]}\nAnswer:`;
  const description =
    `The following are multiple choice questions (with answers) about ` + `${subject.replaceAll("_", " ")}.\n\n`;
  return description + [...dev.slice(0, k).map((d) => `${text(d)} ${d.answer}`), text(item)].join("\n\n");
}

/** pandas ≥ 2 reads these CSV cells as NaN, which instruct-eval then prints as "nan" (its real prompts). */
const PANDAS_NA = new Set([
  "",
  "#N/A",
  "#N/A N/A",
  "#NA",
  "-1.#IND",
  "-1.#QNAN",
  "-NaN",
  "-nan",
  "1.#IND",
  "1.#QNAN",
  "<NA>",
  "N/A",
  "NA",
  "NULL",
  "NaN",
  "None",
  "n/a",
  "nan",
  "null",
]);
const asPandas = (cell: string) => (PANDAS_NA.has(cell) ? "nan" : cell);

/** instruct-eval (hendrycks' format_subject adds a space per word: "about  abstract algebra"). */
export function mmluInstructEvalPrompt(subject: string, dev: MmluItem[], item: MmluItem, k = 5): string {
  const example = (d: MmluItem, withAnswer: boolean) =>
    `${asPandas(d.question)}${d.choices
      .map((c, i) => `\n${LETTERS[i]}. ` + `${asPandas(c)}`)
      .join("")}\nAnswer:${withAnswer ? ` ${d.answer}\n\n` : ""}`;
  // "about {}".format(format_subject(s)) where format_subject returns " abstract algebra".
  const header = `The following are multiple choice questions (with answers) about ${subject
    .split("_")
    .map((w) => ` ${w}`)
    .join("")}.\n\n`;
  return (
    header +
    dev
      .slice(0, k)
      .map((d) => example(d, true))
      .join("") +
    example(item, false)
  );
}

// ----- BBH ------------------------------------------------------------------------------------------

export interface BbhItem {
  input: string;
  target: string;
}

export function readBbhTask(file: string): BbhItem[] {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new DataError(file, `not valid JSON (${(err as Error).message})`);
  }
  const examples = (json as { examples?: unknown }).examples;
  if (!Array.isArray(examples)) throw new DataError(file, 'expected {"examples": [{input, target}]}');
  return examples.map((e, i) => {
    const o = e as { input?: unknown; target?: unknown };
    if (typeof o.input !== "string" || typeof o.target !== "string")
      throw new DataError(`${file}: examples[${i}]`, "expected {input: string, target: string}");
    return { input: o.input, target: o.target };
  });
}

/** A cot-prompts/<task>.txt file: the task sentence and its three "Q: … A: Let's think step by step. …" exemplars. */
export function readBbhCotPrompt(file: string): { description: string; shots: string[] } {
  const text = readFileSync(file, "utf8");
  const cut = text.indexOf("-----\n");
  if (cut < 0) throw new DataError(file, "expected the canary header ending in a '-----' line");
  const body = text.slice(cut + 6).replace(/\s+$/, "");
  const [description, ...raw] = body.split(/\n\n(?=Q: )/);
  if (!description || !raw.length) throw new DataError(file, "expected a task sentence and Q:/A: exemplars");
  // lm-eval v4 rebuilds each exemplar as "Q: …\nA: Let's think step by step.\n" + its reasoning; one
  // file (sports_understanding) has a space there instead of the newline.
  const shots = raw.map((s) => s.replace(/\nA: Let's think step by step\. (?=\S)/, "\nA: Let's think step by step.\n"));
  return { description: description.trim(), shots };
}

/**
 * lm-eval bbh_cot_fewshot (v4): description + "\n\n" + shots joined by "\n\n" + "Q: {input}\nA: Let's think step by
 * step.\n".
 */
export function bbhCotPrompt(cot: { description: string; shots: string[] }, item: BbhItem): string {
  return (
    `${cot.description}\n\n${cot.shots.map((s) => `${s}\n\n`).join("")}Q: ${item.input}\nA: Let's think step ` +
    `by step.\n`
  );
}
export const BBH_COT_STOP = ["</s>", "Q", "\n\n"];
/**
 * lm-eval's get-answer filter: (?<=the answer is )(.*)(?=.), first match, else "[invalid]", in
 * Python's semantics: `.` is anything but "\n" (JavaScript's also stops at \r, U+2028 and U+2029).
 */
export function bbhCotAnswer(generation: string): string {
  const m = /(?<=the answer is )([^\n]*)(?=[^\n])/u.exec(generation);
  // lm-eval's RegexFilter strips the match.
  return m ? pyStrip(m[1]!) : "[invalid]";
}

// Python's str.isspace() characters (JavaScript's trim also strips U+FEFF and not U+001C-U+001F or U+0085).
const PY_SPACE =
  "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f " +
  "\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000";
const PY_STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, "gu");

/** Python's str.strip(): what the harnesses apply to generations. */
export function pyStrip(s: string): string {
  return s.replace(PY_STRIP, "");
}

/** instruct-eval: the first 3 test items as direct-answer shots; evaluation on the rest. */
export function bbhInstructEvalPrompt(shots: BbhItem[], item: BbhItem): string {
  return shots.map((s) => `${s.input}\nAnswer: ${s.target}\n\n`).join("") + `${item.input}\nAnswer:`;
}
