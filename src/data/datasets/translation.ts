// Translation pairs as single-turn chats (OA's translation.py): wmt2019_<src>-<tgt> and
// ted_trans_<a>-<b>. Each pair is asked in a random direction with a random prompt template.
import { extname } from "node:path";
import { fromPairs, type Conversation } from "../conversation.js";
import {
  DropCounter,
  inputFiles,
  optNumber,
  optPaths,
  resolveInputPath,
  type DatasetLoader,
  type LoaderContext,
  type DatasetOptions,
} from "../dataset.js";
import { asObject, DataError, readLines, readRecords } from "../io.js";

/** OA's prompt templates (translation.py), verbatim; `{}` is replaced by the text to translate. */
export const TRANSLATION_PROMPTS: Record<string, string[]> = {
  zh: [
    "Translate to chinese simplified: {}",
    "{}, translate to chinese",
    "{} give me the chinese translation",
    "翻译成中文: {}",
    "{} 这句中文翻译怎麽写？",
    "我需要这句话的中文翻译: {}",
  ],
  "zh-tw": [
    "{}. Translate to chinese traditional",
    "{}, translate to chinese",
    "{}. get chinese translation",
    "中文翻譯: {}",
    "幫我翻譯成中文: '{}'",
    "{} 這句中文翻譯怎麼寫？",
  ],
  ja: [
    "{}: help me translate to japanese",
    "Need japanese translation: {}",
    "{}: にほんごやくをよこす",
    "{}: にほんごやくをおくれ",
    "{}: にほんごやくを じょす",
    "give me the japanese translation, {}",
  ],
  en: ["{}. translate to english", "{} write in english", "english translation: '{}'"],
};

type Pair = { src: string; tgt: string };

/** "wmt2019_zh-en" → {source: "wmt2019", src: "zh", tgt: "en"}. */
export function parseTranslationName(name: string): { family: "wmt2019" | "ted_trans"; src: string; tgt: string } {
  const m = /^(wmt2019|ted_trans)_([a-z-]+?)-([a-z]+)$/.exec(name);
  if (!m) throw new Error(`translation dataset '${name}': expected wmt2019_<src>-<tgt> or ted_trans_<a>-<b>`);
  const [, family, src, tgt] = m as unknown as [string, "wmt2019" | "ted_trans", string, string];
  for (const lang of [src, tgt]) {
    if (!TRANSLATION_PROMPTS[lang])
      throw new Error(
        `translation dataset '${name}': no prompt templates for language '${lang}' (have: ` +
          `${Object.keys(TRANSLATION_PROMPTS).join(", ")})`,
      );
  }
  return { family, src, tgt };
}

/**
 * Rows {translation: {src, tgt}} (the hub's format), or two aligned plain-text files named by language (x.zh, y.en).
 */
async function readPairs(files: string[], src: string, tgt: string, ctx: LoaderContext): Promise<Pair[]> {
  const text = files.filter((f) => extname(f).slice(1) === src || extname(f).slice(1) === tgt);
  if (text.length === 2 && files.length === 2) {
    const bySide = Object.fromEntries(text.map((f) => [extname(f).slice(1), f])) as Record<string, string>;
    if (!bySide[src] || !bySide[tgt])
      throw new Error(`dataset ${ctx.name}: expected one .${src} and one .${tgt} file, got ${files.join(", ")}`);
    const a = readLines(bySide[src]!);
    const b = readLines(bySide[tgt]!);
    if (a.length !== b.length)
      throw new Error(
        `dataset ${ctx.name}: ${bySide[src]} has ${a.length} lines but ${bySide[tgt]} has ${b.length}; parallel ` +
          `files must align line by line`,
      );
    return a.map((s, i) => ({ src: s, tgt: b[i]! }));
  }
  const pairs: Pair[] = [];
  for (const f of files) {
    for (const r of await readRecords(f)) {
      const t = asObject(r).translation as Record<string, unknown> | undefined;
      if (!t || typeof t[src] !== "string" || typeof t[tgt] !== "string")
        throw new DataError(r.where, `field 'translation' must be {"${src}": string, "${tgt}": string}`);
      pairs.push({ src: t[src] as string, tgt: t[tgt] as string });
    }
  }
  return pairs;
}

/**
 * Pairs → chats. Direction and template are drawn per pair. OA also mixes in a neighbouring pair as
 * history with probability 0.2, but that code raises a TypeError upstream (tuple + list); we build
 * the intended two-turn dialogue, choosing a neighbour other than the pair itself.
 */
function toConversations(
  pairs: Pair[],
  src: string,
  tgt: string,
  o: DatasetOptions,
  ctx: LoaderContext,
  drop: DropCounter,
): Conversation[] {
  const rng = ctx.rng;
  const mixProb = optNumber(o, "mix_prob", ctx.name, { min: 0, max: 1 }) ?? 0.2;
  const qa = pairs.map(({ src: s, tgt: t }) => {
    const forward = rng.next() > 0.5;
    const [lang, text, answer] = forward ? [tgt, s, t] : [src, t, s];
    return [rng.choice(TRANSLATION_PROMPTS[lang]!).replace("{}", text), answer] as [string, string];
  });
  const out: Conversation[] = [];
  qa.forEach(([q, a], i) => {
    if (!q.trim() || !a.trim()) {
      drop.drop("empty_side");
      return;
    }
    if (rng.next() < mixProb && i > 5 && i < qa.length - 5) {
      let offset = 0;
      while (offset === 0) offset = rng.int(-5, 5);
      const [hq, ha] = qa[i + offset]!;
      out.push(fromPairs([hq, ha, q, a]));
    } else out.push(fromPairs([q, a]));
  });
  return out;
}

export const translation: DatasetLoader = {
  description: "translation pairs as chats: wmt2019_<src>-<tgt> (hub wmt/wmt19) and ted_trans_<a>-<b> (local files)",
  options: {
    input_file_path:
      "JSONL/parquet rows {translation: {a, b}}, two aligned text files ending in .<a> and .<b>, or a folder with " +
      "train/validation files",
    maximum_size: "keep the first N pairs of the train split (default 100000, as OA)",
    mix_prob: "probability of prefixing a neighbouring pair as a first turn (default 0.2)",
  },
  async load(o, ctx) {
    const { family, src, tgt } = parseTranslationName(ctx.name);
    const maxSize = optNumber(o, "maximum_size", ctx.name, { min: 1, integer: true }) ?? 100_000;
    const drop = new DropCounter();
    const given = optPaths(o, "input_file_path", ctx.name);
    const hub =
      family === "wmt2019" ? { repo: "wmt/wmt19", files: new RegExp(`^${src}-${tgt}/.*\\.parquet$`) } : undefined;
    let trainFiles: string[];
    let valFiles: string[] = [];
    if (given && given.length === 2 && given.every((p) => [src, tgt].includes(extname(p).slice(1)))) {
      trainFiles = given.map((p) => resolveInputPath(p, ctx));
    } else {
      trainFiles = await inputFiles(o, ctx, hub, /train[^/]*$/);
      // WMT has its own validation split; TED has none (the mix splits off val_split).
      if (family === "wmt2019") valFiles = await inputFiles(o, ctx, hub, /validation[^/]*$/).catch(() => []);
    }
    const trainPairs = (await readPairs(trainFiles, src, tgt, ctx)).slice(0, maxSize);
    const train = toConversations(trainPairs, src, tgt, o, ctx, drop);
    const val = valFiles.length
      ? toConversations(await readPairs(valFiles, src, tgt, ctx), src, tgt, { ...o, mix_prob: 0 }, ctx, drop)
      : undefined;
    return { train, val, dropped: drop.counts, files: [...trainFiles, ...valFiles] };
  },
};
