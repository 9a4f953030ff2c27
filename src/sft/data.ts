// The SFT data pipeline of a config: the dataset mix → formatted conversations → token ids and label
// masks (whole, before truncation; a run cuts them to max_length anew each epoch) → lint.
import { existsSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import type { Conversation } from "../data/conversation.js";
import { loadDatasetMix, parseDatasetEntries } from "../data/mix.js";
import { Rng } from "../data/rng.js";
import {
  ChatTemplateError,
  ChatTokenizer,
  maskFromSpans,
  renderWithSpans,
  SYSTEM,
  type ChatTemplate,
} from "../tokenizer/index.js";
import { DataError } from "../data/io.js";
import { cachedSnapshot, hubCacheDir } from "../util/hub-cache.js";
import { ConfigError, type Settings } from "./config.js";
import {
  labelMaskFor,
  lintSample,
  truncateSample,
  withPrefix,
  type EncodedSample,
  type LintProblem,
} from "./encode.js";
import { conversationMessages, formatConversation } from "./format.js";

/** A whole formatted sample: ids and label mask before truncation. */
export interface FullSample {
  ids: number[];
  mask: boolean[];
}

export interface SftDataset {
  name: string;
  train: FullSample[];
  val: FullSample[];
  dropped: Record<string, number>;
  files: string[];
  fraction?: number;
  size?: number;
}

export interface LintReport {
  dataset: string;
  split: "train" | "val";
  index: number;
  problems: LintProblem[];
}

export interface SftData {
  tokenizer: ChatTokenizer;
  datasets: SftDataset[];
  /** Tokens of the global system prefix (use_system_prefix), prepended after truncation. */
  prefixIds: number[];
  lint: LintReport[];
}

/** A path from the config: as written (working folder), else under cache_dir. */
function configPath(p: string, cfg: Settings<"data">): string {
  if (isAbsolute(p) || existsSync(resolve(p))) return resolve(p);
  const underCache = join(cfg.cache_dir, p);
  return existsSync(underCache) ? underCache : resolve(p);
}

export function loadConfigTokenizer(cfg: Settings<"model" | "data" | "format">): ChatTokenizer {
  const source = cfg.tokenizer_name ?? cfg.model_name;
  if (!source)
    throw new ConfigError(
      "no tokenizer: set tokenizer_name (a tokenizer.json or folder) or model_name (a model folder with " +
        "tokenizer.json)",
    );
  // The tokenizer usually comes with the model: a missing model is named as the model, not as a tokenizer.
  const key = cfg.tokenizer_name ? "tokenizer_name" : "model_name";
  const path = configPath(source, cfg);
  const found = existsSync(path) ? path : cachedSnapshot(source, "model");
  if (!found) {
    const looked = isAbsolute(source) ? [source] : [resolve(source), resolve(cfg.cache_dir, source)];
    const noCache = existsSync(cfg.cache_dir) ? "" : `; cache_dir ${resolve(cfg.cache_dir)} does not exist`;
    throw new ConfigError(
      `${key} ${source}: not found (looked at ${looked.join(" and ")}${noCache}; ` +
        `nor a hub name ORG/NAME in the Hugging Face cache ${hubCacheDir()})`,
    );
  }
  // In the model's own chat template the tokenizer stays as it is: no OA tokens, no embedding growth.
  return ChatTokenizer.load(found, {
    family: cfg.tokenizer_family ?? undefined,
    modelName: cfg.model_name ?? undefined,
    oaTokens: cfg.chat_template === "oa",
  });
}

/** Formats and tokenises conversations; `rng` draws system-tag choices. */
export async function encodeConversations(
  convs: Conversation[],
  tok: ChatTokenizer,
  cfg: Settings<"format">,
  rng: Rng,
  where = "conversation",
): Promise<FullSample[]> {
  if (!tok.template.oa) return encodeInTemplate(convs, tok, cfg, where);
  const texts = convs.map((c, i) => {
    if (c.oaProblem) {
      throw new DataError(
        c.where ?? `${where}[${i}]`,
        `${c.oaProblem}: OA's format cannot hold it (set chat_template: model, or a .jinja file)`,
      );
    }
    return formatConversation(c, {
      eos: tok.eos,
      formatVersion: cfg.format_version,
      useSystemTag: cfg.use_system_tag,
      systemPropertyDropout: cfg.system_property_dropout,
      systemAddLength: cfg.system_add_length,
      rng,
    }).join("");
  });
  const ids = await tok.encodeBatch(texts);
  const maskOptions = {
    formatVersion: cfg.format_version,
    labelMasking: cfg.label_masking,
    trainOnPreamble: cfg.train_on_preamble,
  };
  return ids.map((x) => ({ ids: x, mask: labelMaskFor(x, tok, maskOptions) }));
}

/**
 * Conversations in a Jinja chat template: rendered, each assistant reply's span located (its content
 * and the special token ending its turn), tokenized once with offsets, and the tokens inside the
 * spans trained. With label_masking off every token is trained.
 */
async function encodeInTemplate(
  convs: Conversation[],
  tok: ChatTokenizer,
  cfg: Settings<"format">,
  where: string,
): Promise<FullSample[]> {
  const t = tok.template;
  const rendered = convs.map((c, i) =>
    renderWithSpans(t, conversationMessages(c), tok.specialTokens, c.where ?? `${where}[${i}]`),
  );
  const encoded = await tok.encodeBatchWithOffsets(
    rendered.map((r) => r.text),
    t.addSpecialTokens,
  );
  return encoded.map((e, i) => ({
    ids: e.ids,
    mask: cfg.label_masking
      ? maskFromSpans(rendered[i]!.text, rendered[i]!.spans, e.offsets)
      : e.ids.map((_, j) => j < e.ids.length - 1),
  }));
}

/** OA-format features that have no meaning in another chat template: an error naming the key. */
function checkTemplateKeys(cfg: Settings<"format">, t: ChatTemplate): void {
  if (t.oa) return;
  for (const key of ["use_system_tag", "use_system_prefix"] as const) {
    if (cfg[key]) {
      throw new ConfigError(
        `${key}: OA's format only; chat_template ${t.name} has none (put a system message in the data instead)`,
      );
    }
  }
}

export async function prepareSftData(
  cfg: Settings<"data" | "format" | "model">,
  tokenizer = loadConfigTokenizer(cfg),
): Promise<SftData> {
  const entries = parseDatasetEntries([...cfg.datasets, ...cfg.datasets_extra], "config › datasets");
  if (!entries.length)
    throw new ConfigError(
      "the config has no datasets: add a block with a `datasets:` list (e.g. --configs defaults shared-sample)",
    );
  let template: ChatTemplate;
  try {
    template = tokenizer.useTemplate(cfg.chat_template);
  } catch (err) {
    if (err instanceof ChatTemplateError) throw new ConfigError(err.message);
    throw err;
  }
  checkTemplateKeys(cfg, template);
  const mix = await loadDatasetMix(entries, {
    seed: cfg.rng_seed,
    cacheDir: cfg.cache_dir,
    formatVersion: cfg.format_version,
    evalSize: cfg.eval_size ?? undefined,
  });
  const datasets: SftDataset[] = [];
  const lint: LintReport[] = [];
  for (const d of mix) {
    const train = await encodeConversations(
      d.train,
      tokenizer,
      cfg,
      new Rng(cfg.rng_seed, `${d.name}/format/train`),
      `${d.name} train`,
    );
    const val = await encodeConversations(
      d.val,
      tokenizer,
      cfg,
      new Rng(cfg.rng_seed, `${d.name}/format/val`),
      `${d.name} val`,
    );
    for (const [split, samples] of [
      ["train", train],
      ["val", val],
    ] as const) {
      samples.forEach((s, index) => {
        const problems = template.oa
          ? lintSample(s.ids, s.mask, tokenizer, cfg.format_version)
          : lintTemplateSample(s.mask);
        if (problems.length) lint.push({ dataset: d.name, split, index, problems });
      });
    }
    datasets.push({
      name: d.name,
      train,
      val,
      dropped: d.dropped,
      files: d.files,
      ...(d.fraction !== undefined ? { fraction: d.fraction } : {}),
      ...(d.size !== undefined ? { size: d.size } : {}),
    });
  }
  const prefixIds = cfg.use_system_prefix
    ? (
        await tokenizer.tok.encode(`${SYSTEM}${cfg.system_prefix}${tokenizer.eos}`, null, { addSpecialTokens: false })
      ).getIds()
    : [];
  return { tokenizer, datasets, prefixIds, lint };
}

/** A sample in a Jinja template needs one trained token (its spans were checked while rendering). */
function lintTemplateSample(mask: boolean[]): LintProblem[] {
  if (mask.slice(0, -1).some(Boolean)) return [];
  return [{ rule: "no_trained_token", message: "no token is trained (no assistant text survives rendering)" }];
}

/** Lint problems as one error message (the first few, then a count). */
export function lintMessage(lint: LintReport[]): string {
  const lines = lint
    .slice(0, 10)
    .map((r) => `  ${r.dataset} ${r.split}[${r.index}]: ${r.problems.map((p) => p.message).join("; ")}`);
  return (
    `data lint failed for ${lint.length} ` +
    `sample(s):\n${lines.join("\n")}${lint.length > 10 ? `\n  ... and ${lint.length - 10} more` : ""}`
  );
}

/** A sample cut to the training length (a random window or the head), with the system prefix. */
export function trainingSample(
  s: FullSample,
  cfg: Settings<"format" | "data">,
  prefixIds: number[],
  rng: Rng,
  split: "train" | "val" = "train",
): EncodedSample {
  const maxLength = (split === "val" ? (cfg.val_max_length ?? cfg.max_length) : cfg.max_length) - prefixIds.length;
  if (maxLength < 1)
    throw new ConfigError(
      `max_length ${cfg.max_length} leaves no room after the ${prefixIds.length}-token system prefix`,
    );
  return withPrefix(
    truncateSample(s.ids, s.mask, { maxLength, randomOffsetProbability: cfg.random_offset_probability }, rng),
    prefixIds,
  );
}

/**
 * Sample `i` of a dataset exactly as training sees it: a train sample cut to its own random window of
 * `epoch` (a fresh draw per sample and epoch, independent of the order), a validation sample cut to
 * its head, as evaluation cuts it. The one rule for the trainer and `oasft data`.
 */
export function splitSample(
  data: SftData,
  cfg: Settings<"format" | "data">,
  d: SftDataset,
  i: number,
  split: "train" | "val",
  epoch = 0,
): EncodedSample {
  if (split === "val") {
    // Evaluation cuts to the head (no random window), so that numbers compare across steps.
    return trainingSample(
      d.val[i]!,
      { ...cfg, random_offset_probability: 0 },
      data.prefixIds,
      new Rng(cfg.rng_seed, `${d.name}/eval`),
      "val",
    );
  }
  return trainingSample(d.train[i]!, cfg, data.prefixIds, new Rng(cfg.rng_seed, `${d.name}/window/${epoch}/${i}`));
}
