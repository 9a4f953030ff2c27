// The chat tokenizer: any Hugging Face tokenizer.json (through the `tokenizers` package), with OA's
// special tokens added in a fixed order and the pad/eos/sep tokens of the model family.
import { existsSync, readFileSync, statSync, unlinkSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { Tokenizer } from "tokenizers";
import { fsyncDir, writeFileAtomic } from "../util/atomic-file.js";
import { bytesToUnicode } from "./bpe-trainer.js";
import { ASSISTANT, PROMPTER, SYSTEM, chatTemplateJinja } from "./chat-template.js";

/** OA's five chat tokens, in the order we add them (OA took a Python set's order, which varies per process). */
export const QA_SPECIAL_TOKENS = ["<|prompter|>", "<|assistant|>", "<|system|>", "<|prefix_begin|>", "<|prefix_end|>"] as const;
export { ASSISTANT, PROMPTER, SYSTEM, ROLE_TAGS, renderChat, chatTemplateJinja, type ChatMessage, type ChatRole } from "./chat-template.js";

export interface FamilyTokens {
  pad: string;
  eos: string;
  sep: string;
}

/** OA's TOKENIZER_CONFIGS for the causal-LM families: pad/eos/sep per model family (utils.py). */
export const FAMILY_TOKENS: Record<string, FamilyTokens> = {
  bloom: { pad: "<pad>", eos: "</s>", sep: "<s>" },
  pythia: { pad: "<|padding|>", eos: "<|endoftext|>", sep: "<|endoftext|>" },
  "gpt-neox": { pad: "<|padding|>", eos: "<|endoftext|>", sep: "<|endoftext|>" },
  llama: { pad: "</s>", eos: "</s>", sep: "<s>" },
  falcon: { pad: "<|endoftext|>", eos: "<|endoftext|>", sep: "<|endoftext|>" },
  cerebras: { pad: "<|endoftext|>", eos: "<|endoftext|>", sep: "<|endoftext|>" },
  galactica: { pad: "<pad>", eos: "</s>", sep: "" },
};

export interface LoadTokenizerOptions {
  /** A key of FAMILY_TOKENS. Default: matched in modelName as OA does, else the folder's tokenizer_config.json. */
  family?: string;
  modelName?: string;
}

/** tokenizer.json inside a folder, or the file itself. */
export function tokenizerFile(path: string): string {
  if (!existsSync(path)) throw new Error(`tokenizer: ${path} not found`);
  const file = statSync(path).isDirectory() ? join(path, "tokenizer.json") : path;
  if (!existsSync(file)) throw new Error(`tokenizer: no tokenizer.json in ${path}`);
  return file;
}

/** The family's tokens: explicit, by model-name substring (exactly one match, as OA), or from tokenizer_config.json. */
function familyTokens(file: string, o: LoadTokenizerOptions): { family: string; tokens: FamilyTokens } {
  if (o.family) {
    const tokens = FAMILY_TOKENS[o.family];
    if (!tokens) throw new Error(`tokenizer family '${o.family}' is unknown; known: ${Object.keys(FAMILY_TOKENS).join(", ")}`);
    return { family: o.family, tokens };
  }
  if (o.modelName) {
    const matches = Object.keys(FAMILY_TOKENS).filter((k) => o.modelName!.toLowerCase().includes(k.toLowerCase()));
    if (matches.length === 1) return { family: matches[0]!, tokens: FAMILY_TOKENS[matches[0]!]! };
  }
  const configFile = join(dirname(file), "tokenizer_config.json");
  if (existsSync(configFile)) {
    const cfg = JSON.parse(readFileSync(configFile, "utf8")) as Record<string, unknown>;
    const str = (v: unknown) => (typeof v === "string" ? v : v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string" ? (v as { content: string }).content : undefined);
    const eos = str(cfg.eos_token);
    if (eos) return { family: "tokenizer_config", tokens: { eos, pad: str(cfg.pad_token) ?? eos, sep: str(cfg.sep_token) ?? eos } };
  }
  throw new Error(`tokenizer ${file}: cannot tell the model family for pad/eos tokens; set tokenizer_family (one of ${Object.keys(FAMILY_TOKENS).join(", ")})`);
}

export class ChatTokenizer {
  readonly eosId: number;
  readonly padId: number;
  readonly prompterId: number;
  readonly assistantId: number;
  readonly systemId: number;
  /** Tokens this load added to the file's vocabulary (so the model's embedding must grow). */
  readonly added: string[];

  /** Token id → its bytes, for byte-level tokenizers (undefined otherwise); special tokens map to no bytes. */
  readonly tokenBytes: ((id: number) => Uint8Array) | undefined;

  private constructor(
    readonly tok: Tokenizer, readonly family: string, readonly special: FamilyTokens, added: string[],
    byteLevel: { specialIds: Set<number> } | undefined,
    /** The token the tokenizer's own encoding puts first (LLaMA's <s>); undefined for BLOOM and GPT-NeoX. */
    readonly bos: string | undefined,
  ) {
    this.added = added;
    this.tokenBytes = byteLevel ? byteLevelBytes(tok, byteLevel.specialIds) : undefined;
    const id = (t: string) => {
      const i = tok.tokenToId(t);
      if (i === null || i === undefined) throw new Error(`tokenizer: token ${t} missing after adding it`);
      return i;
    };
    this.eosId = id(special.eos);
    this.padId = id(special.pad);
    this.prompterId = id(PROMPTER);
    this.assistantId = id(ASSISTANT);
    this.systemId = id(SYSTEM);
  }

  /** Loads tokenizer.json (a file or a model folder) and adds the family's and OA's special tokens when absent. */
  static load(path: string, o: LoadTokenizerOptions = {}): ChatTokenizer {
    const file = tokenizerFile(path);
    let tok: Tokenizer;
    try {
      tok = Tokenizer.fromFile(file);
    } catch (err) {
      throw new Error(`tokenizer ${file}: not a Hugging Face tokenizer.json (${(err as Error).message})`);
    }
    // Truncation/padding saved in a tokenizer.json are session leftovers; the collator decides both.
    tok.disableTruncation();
    tok.disablePadding();
    const { family, tokens } = familyTokens(file, o);
    const added: string[] = [];
    for (const t of [tokens.pad, tokens.eos, tokens.sep, ...QA_SPECIAL_TOKENS]) {
      if (t && tok.tokenToId(t) == null && !added.includes(t)) {
        tok.addSpecialTokens([t]);
        added.push(t);
      }
    }
    // Byte-level tokenizers can be decoded incrementally without the library (streaming).
    let byteLevel: { specialIds: Set<number> } | undefined;
    const json = JSON.parse(readFileSync(file, "utf8")) as TokenizerJson;
    if (json.decoder?.type === "ByteLevel") {
      const specialIds = new Set((json.added_tokens ?? []).filter((t) => t.special).map((t) => t.id));
      for (const t of added) specialIds.add(tok.tokenToId(t)!);
      byteLevel = { specialIds };
    }
    const loaded = new ChatTokenizer(tok, family, tokens, added, byteLevel, leadingSpecialToken(json.post_processor));
    loaded.carried = carriedSettings(dirname(file));
    return loaded;
  }

  /** The user's own tokenizer_config.json / special_tokens_map.json, written back on save (keys oasft does not own). */
  private carried: { config: Record<string, unknown>; map: Record<string, unknown> } = { config: {}, map: {} };

  get eos(): string {
    return this.special.eos;
  }

  get vocabSize(): number {
    return this.tok.getVocabSize(true);
  }

  /** Token ids of many texts (special-token strings inside a text become their ids, as in OA). */
  async encodeBatch(texts: string[]): Promise<number[][]> {
    const out: number[][] = [];
    for (let i = 0; i < texts.length; i += 512) {
      const encs = await this.tok.encodeBatch(texts.slice(i, i + 512), { addSpecialTokens: true });
      for (const e of encs) out.push(e.getIds());
    }
    return out;
  }

  /** Token ids of a text, with the tokenizer's own special tokens (a LLaMA tokenizer puts <s> first). */
  async encode(text: string): Promise<number[]> {
    return (await this.tok.encode(text, null, { addSpecialTokens: true })).getIds();
  }

  /** Token ids of a text piece without BOS or any post-processing: continuations, stop strings. */
  async encodePlain(text: string): Promise<number[]> {
    return (await this.tok.encode(text, null, { addSpecialTokens: false })).getIds();
  }


  decode(ids: number[], skipSpecialTokens = false): Promise<string> {
    return this.tok.decode(ids, skipSpecialTokens);
  }

  idToToken(id: number): string {
    return this.tok.idToToken(id) ?? `<${id}>`;
  }

  /**
   * Writes tokenizer.json (atomically), special_tokens_map.json and tokenizer_config.json (with the
   * OA chat_template, so other tools format prompts as oasft does) into `dir`.
   */
  save(dir: string): void {
    const bos = this.bos;
    mkdirSync(dir, { recursive: true });
    const target = join(dir, "tokenizer.json");
    const tmp = `${target}.tmp-${process.pid}`;
    try {
      this.tok.save(tmp, false);
      writeFileAtomic(target, [readFileSync(tmp)]);
    } finally {
      if (existsSync(tmp)) unlinkSync(tmp);
    }
    // oasft owns eos/pad/sep, the OA tokens and the chat template; every other setting of the user's
    // files (bos_token, unk_token, model_max_length, clean_up_tokenization_spaces, ...) is kept.
    const { config: theirs, map: theirMap } = this.carried;
    const additional = [...new Set([...asStrings(theirMap.additional_special_tokens), ...QA_SPECIAL_TOKENS])];
    const owned = {
      ...(bos ? { bos_token: bos } : {}), eos_token: this.special.eos, pad_token: this.special.pad, sep_token: this.special.sep || undefined,
      additional_special_tokens: additional,
    };
    const map = { ...theirMap, ...owned };
    writeFileAtomic(join(dir, "special_tokens_map.json"), [JSON.stringify(map, null, 2) + "\n"]);
    const config = {
      tokenizer_class: "PreTrainedTokenizerFast", clean_up_tokenization_spaces: false, model_max_length: 1e30,
      ...theirs, ...owned, chat_template: chatTemplateJinja(bos !== undefined),
    };
    writeFileAtomic(join(dir, "tokenizer_config.json"), [JSON.stringify(config, null, 2) + "\n"]);
    fsyncDir(dir);
  }
}


interface TokenizerJson {
  decoder?: { type?: string } | null;
  added_tokens?: Array<{ id: number; special?: boolean }>;
  post_processor?: PostProcessor | null;
}
interface PostProcessor {
  type?: string;
  single?: Array<{ SpecialToken?: { id: string } }>;
  processors?: PostProcessor[];
}

/** The special token a TemplateProcessing post-processor puts before a single sequence (LLaMA's "<s> $A"). */
function leadingSpecialToken(p: PostProcessor | null | undefined): string | undefined {
  if (!p) return undefined;
  if (p.type === "Sequence") {
    for (const inner of p.processors ?? []) {
      const found = leadingSpecialToken(inner);
      if (found) return found;
    }
    return undefined;
  }
  return p.type === "TemplateProcessing" ? p.single?.[0]?.SpecialToken?.id : undefined;
}

/**
 * A byte-level BPE token's bytes: its vocabulary string spelled in GPT-2's byte alphabet, mapped
 * back. Special tokens give no bytes (they are skipped in decoded text). Cached per id.
 */
function byteLevelBytes(tok: Tokenizer, special: Set<number>): (id: number) => Uint8Array {
  const unicodeToByte = new Map(bytesToUnicode().map((ch, b) => [ch, b]));
  const cache = new Map<number, Uint8Array>();
  const empty = new Uint8Array(0);
  return (id: number) => {
    let bytes = cache.get(id);
    if (bytes) return bytes;
    const token = tok.idToToken(id);
    if (token === null || token === undefined || special.has(id)) bytes = empty;
    else {
      const chars = [...token];
      // Added (non-byte-level) tokens are plain text: they are not spelled in the byte alphabet.
      bytes = chars.every((c) => unicodeToByte.has(c)) ? Uint8Array.from(chars, (c) => unicodeToByte.get(c)!) : new TextEncoder().encode(token);
    }
    cache.set(id, bytes);
    return bytes;
  };
}

/** A tokenizer folder's tokenizer_config.json and special_tokens_map.json, as read (empty when absent or unreadable). */
function carriedSettings(dir: string): { config: Record<string, unknown>; map: Record<string, unknown> } {
  const read = (name: string): Record<string, unknown> => {
    const path = join(dir, name);
    if (!existsSync(path)) return {};
    try {
      const v = JSON.parse(readFileSync(path, "utf8")) as unknown;
      return v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
    } catch {
      return {};
    }
  };
  return { config: read("tokenizer_config.json"), map: read("special_tokens_map.json") };
}

/** Special-token entries as strings (HF writes them as strings or as {content, ...} objects). */
function asStrings(v: unknown): string[] {
  if (!Array.isArray(v)) return [];
  return v.map((x) => (typeof x === "string" ? x : (x as { content?: unknown })?.content)).filter((x): x is string => typeof x === "string");
}
