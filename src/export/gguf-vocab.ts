// The tokenizer in llama.cpp's GGUF keys, from a Hugging Face tokenizer.json (+ tokenizer_config.json
// and config.json), as convert_hf_to_gguf.py and gguf-py's SpecialVocab write it:
//   byte-level BPE (GPT-2, BLOOM, GPT-NeoX)  → tokenizer.ggml.model "gpt2", with merges and a
//                                              pre-tokenizer name llama.cpp knows ("gpt-2", "bloom");
//   BPE with byte fallback (LLaMA-2's HF tokenizer) → "llama" (SentencePiece): <0xNN> tokens are BYTE.
// Ids past the tokenizer's last token (the model's vocabulary is rounded up) become [PADn], UNUSED.
// Added special tokens are CONTROL (llama.cpp matches them in text only when asked to parse specials).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { GgufValue } from "../models/gguf-layout.js";

const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

/** The Split regex of BLOOM's tokenizer.json (llama.cpp's LLAMA_VOCAB_PRE_TYPE_BLOOM). */
const BLOOM_SPLIT = " ?[^(\\s|[.,!?…。，、।۔،])]+";

/** The parts of a tokenizer.json this export reads (what the `tokenizers` library writes). */
interface PreTokenizer {
  type?: string;
  pretokenizers?: PreTokenizer[];
  use_regex?: boolean;
  pattern?: { Regex?: string };
}
interface TokenizerJson {
  model?: {
    type?: string;
    vocab?: Record<string, number>;
    merges?: Array<string | [string, string]>;
    byte_fallback?: boolean;
  };
  added_tokens?: Added;
  pre_tokenizer?: PreTokenizer | null;
  post_processor?: unknown;
}
/** tokenizer_config.json and config.json: read key by key, each checked for its type where used. */
type JsonObject = Record<string, unknown>;

function readJson<T>(path: string): T | undefined {
  if (!existsSync(path)) return undefined;
  try {
    return JSON.parse(readFileSync(path, "utf8")) as T;
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message})`, { cause: err });
  }
}

/** llama.cpp's pre-tokenizer name for a tokenizer.json pre_tokenizer, or an error naming what it is. */
function preTokenizerName(pre: PreTokenizer | null | undefined, file: string): string {
  const parts: PreTokenizer[] = pre?.type === "Sequence" ? (pre.pretokenizers ?? []) : pre ? [pre] : [];
  const byteLevel = parts.find((p) => p.type === "ByteLevel");
  const splits = parts.filter((p) => p.type === "Split");
  if (parts.length === 1 && byteLevel && byteLevel.use_regex !== false) return "gpt-2";
  if (parts.length === 2 && byteLevel && byteLevel.use_regex === false && splits[0]?.pattern?.Regex === BLOOM_SPLIT)
    return "bloom";
  throw new Error(
    `${file}: llama.cpp has no pre-tokenizer matching ${JSON.stringify(pre)} (known here: GPT-2's ByteLevel ` +
      `regex, BLOOM's split)`,
  );
}

type Added = Array<{ id: number; content: string; special: boolean }>;

/**
 * The tokenizer keys for a model of `vocabSize` rows whose tokenizer files are in `dir`. Special token
 * ids come from tokenizer_config.json's tokens (then config.json's *_token_id), as SpecialVocab does.
 */
export function ggufTokenizer(dir: string, vocabSize: number): Array<[string, GgufValue]> {
  const file = join(dir, "tokenizer.json");
  const tok = readJson<TokenizerJson>(file);
  if (!tok) throw new Error(`${dir}: no tokenizer.json (GGUF needs the tokenizer in the model folder)`);
  const model = tok.model;
  if (model?.type !== "BPE") {
    const supported = "GGUF export supports BPE tokenizers (byte-level, or with byte fallback)";
    throw new Error(`${file}: a ${model?.type} tokenizer; ${supported}`);
  }
  if (typeof model.vocab !== "object" || model.vocab === null) throw new Error(`${file}: model.vocab is missing`);
  const added = tok.added_tokens ?? [];
  const vocab = model.vocab;
  const spm = model.byte_fallback === true;
  const { tokens, types } = tokenTable(file, vocab, added, vocabSize, spm);
  const merges = (model.merges ?? []).map((m) => (Array.isArray(m) ? m.join(" ") : m));
  const keys: Array<[string, GgufValue]> = [];
  if (spm) {
    // SentencePiece's merge order is its scores: a token made by merge r scores −r (earlier merges win).
    const scores = new Array<number>(vocabSize).fill(0);
    merges.forEach((m, r) => {
      const id = vocab[m.replace(" ", "")];
      if (id !== undefined && scores[id] === 0) scores[id] = -(r + 1);
    });
    for (const a of added) scores[a.id] = -1000;
    keys.push(
      ["tokenizer.ggml.model", { type: "str", value: "llama" }],
      ["tokenizer.ggml.tokens", { type: "arr-str", value: tokens }],
      ["tokenizer.ggml.scores", { type: "arr-f32", value: scores }],
      ["tokenizer.ggml.token_type", { type: "arr-i32", value: types }],
    );
  } else {
    keys.push(
      ["tokenizer.ggml.model", { type: "str", value: "gpt2" }],
      ["tokenizer.ggml.pre", { type: "str", value: preTokenizerName(tok.pre_tokenizer, file) }],
      ["tokenizer.ggml.tokens", { type: "arr-str", value: tokens }],
      ["tokenizer.ggml.token_type", { type: "arr-i32", value: types }],
      ["tokenizer.ggml.merges", { type: "arr-str", value: merges }],
    );
  }
  return [...keys, ...specialTokenKeys(dir, tok, vocab, added)];
}

/** Every row's text and llama.cpp token type (rows no token uses are [PADn], unused). */
function tokenTable(file: string, vocab: Record<string, number>, added: Added, vocabSize: number, spm: boolean) {
  const tokens: string[] = Array.from({ length: vocabSize }, (_, i) => `[PAD${i}]`);
  const types: number[] = new Array(vocabSize).fill(TOKEN_TYPE.unused);
  const past = (what: string, text: string, id: number) =>
    new Error(`${file}: ${what} ${JSON.stringify(text)} has id ${id}, past the model's ${vocabSize} embeddings`);
  for (const [text, id] of Object.entries(vocab)) {
    if (id >= vocabSize) throw past("token", text, id);
    tokens[id] = text;
    types[id] = spm && /^<0x[0-9A-F]{2}>$/.test(text) ? TOKEN_TYPE.byte : TOKEN_TYPE.normal;
  }
  for (const a of added) {
    if (a.id >= vocabSize) throw past("added token", a.content, a.id);
    tokens[a.id] = a.content;
    types[a.id] = a.special ? TOKEN_TYPE.control : TOKEN_TYPE.userDefined;
  }
  return { tokens, types };
}

/** The special token ids, whether BOS/EOS are added, the chat template and its end-of-turn token. */
function specialTokenKeys(dir: string, tok: TokenizerJson, vocab: Record<string, number>, added: Added) {
  const tcfg = readJson<JsonObject>(join(dir, "tokenizer_config.json")) ?? {};
  const config = readJson<JsonObject>(join(dir, "config.json")) ?? {};
  const keys: Array<[string, GgufValue]> = [];
  const idOf = (kind: string): number | undefined => {
    const entry = tcfg[`${kind}_token`];
    const inner = typeof entry === "object" && entry !== null ? (entry as { content?: unknown }).content : undefined;
    const content = typeof entry === "string" ? entry : typeof inner === "string" ? inner : undefined;
    const fromTokenizer =
      content === undefined ? undefined : (added.find((a) => a.content === content)?.id ?? vocab[content]);
    const fromConfig = config[`${kind}_token_id`];
    return fromTokenizer ?? (typeof fromConfig === "number" ? fromConfig : undefined);
  };
  const names = {
    bos: "bos_token_id",
    eos: "eos_token_id",
    unk: "unknown_token_id",
    sep: "seperator_token_id",
    pad: "padding_token_id",
  };
  for (const [kind, key] of Object.entries(names)) {
    const id = idOf(kind);
    if (id !== undefined) keys.push([`tokenizer.ggml.${key}`, { type: "u32", value: id }]);
  }
  // Whether a BOS is prepended: tokenizer_config's flag, else what the post-processor does.
  const post = JSON.stringify(tok.post_processor ?? null);
  const addBos =
    typeof tcfg.add_bos_token === "boolean"
      ? tcfg.add_bos_token
      : /"TemplateProcessing"/.test(post) && /"single":\[\{"SpecialToken"/.test(post);
  keys.push(["tokenizer.ggml.add_bos_token", { type: "bool", value: addBos }]);
  if (typeof tcfg.add_eos_token === "boolean")
    keys.push(["tokenizer.ggml.add_eos_token", { type: "bool", value: tcfg.add_eos_token }]);
  if (typeof tcfg.chat_template === "string")
    keys.push(["tokenizer.chat_template", { type: "str", value: tcfg.chat_template }]);
  // The chat template's end of turn (<|im_end|>, <|eot_id|>): the special token among
  // generation_config.json's eos ids that is not the eos, as llama.cpp's end-of-turn key.
  const eos = idOf("eos");
  const eot = generationEosIds(dir).find((id) => id !== eos && added.some((a) => a.id === id && a.special));
  if (eot !== undefined) keys.push(["tokenizer.ggml.eot_token_id", { type: "u32", value: eot }]);
  return keys;
}

/** generation_config.json's eos_token_id as a list (empty when absent). */
function generationEosIds(dir: string): number[] {
  const path = join(dir, "generation_config.json");
  if (!existsSync(path)) return [];
  const v = (JSON.parse(readFileSync(path, "utf8")) as { eos_token_id?: unknown }).eos_token_id;
  return (Array.isArray(v) ? v : [v]).filter((x): x is number => Number.isInteger(x));
}
