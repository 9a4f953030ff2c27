// The chat tokenizer: any Hugging Face tokenizer.json (through the `tokenizers` package), with OA's
// special tokens added in a fixed order and the pad/eos/sep tokens of the model family.
import { existsSync, readFileSync, unlinkSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { Tokenizer } from "tokenizers";
import { fsyncDir, writeFileAtomic } from "../util/atomic-file.js";
import { bytesToUnicode } from "./bpe-trainer.js";
import { ASSISTANT, PROMPTER, SYSTEM, type ChatMessage } from "./chat-template.js";
import {
  ChatTemplateError,
  endOfTurnToken,
  hasOwnTemplate,
  resolveChatTemplate,
  type ChatTemplate,
  type TemplateTokens,
} from "./template.js";
import {
  familyTokens,
  generationEosIds,
  tokenizerFile,
  tokenString,
  type FamilyTokens,
  type LoadTokenizerOptions,
} from "./families.js";

/** OA's five chat tokens, in the order we add them (OA took a Python set's order, which varies per process). */
export const QA_SPECIAL_TOKENS = [
  "<|prompter|>",
  "<|assistant|>",
  "<|system|>",
  "<|prefix_begin|>",
  "<|prefix_end|>",
] as const;
export {
  ASSISTANT,
  PROMPTER,
  SYSTEM,
  ROLE_TAGS,
  renderChat,
  chatTemplateJinja,
  type ChatMessage,
  type ChatRole,
} from "./chat-template.js";
export { FAMILY_TOKENS, tokenizerFile, type FamilyTokens, type LoadTokenizerOptions } from "./families.js";
export {
  ChatTemplateError,
  maskFromSpans,
  renderWithSpans,
  resolveChatTemplate,
  type ChatTemplate,
  type RenderedConversation,
} from "./template.js";

export class ChatTokenizer {
  readonly eosId: number;
  readonly padId: number;
  readonly prompterId: number;
  readonly assistantId: number;
  readonly systemId: number;
  /** The folder the tokenizer was loaded from (its tokenizer_config.json, generation_config.json). */
  readonly dir: string;
  /** Every added/special token's text, longest first (where a chat template's turn markers are found). */
  readonly specialTokens: string[];
  /** Ids that end a reply: eos, generation_config.json's eos ids, and the chat template's end of turn. */
  readonly stopIds: Set<number>;
  /** The chat format prompts and training texts are rendered in (OA's unless useTemplate says otherwise). */
  template: ChatTemplate;
  /** Tokens this load added to the file's vocabulary (so the model's embedding must grow). */
  readonly added: string[];

  /** Token id → its bytes, for byte-level tokenizers (undefined otherwise); special tokens map to no bytes. */
  readonly tokenBytes: ((id: number) => Uint8Array) | undefined;

  private constructor(
    readonly tok: Tokenizer,
    readonly family: string,
    readonly special: FamilyTokens,
    added: string[],
    byteLevel: { specialIds: Set<number> } | undefined,
    /** The token the tokenizer's own encoding puts first (LLaMA's <s>); undefined for BLOOM and GPT-NeoX. */
    readonly bos: string | undefined,
    file: string,
    specialTokens: string[],
    private readonly carried: { config: Record<string, unknown>; map: Record<string, unknown> } = {
      config: {},
      map: {},
    },
  ) {
    this.added = added;
    this.dir = dirname(file);
    this.specialTokens = [...new Set(specialTokens)].sort((a, b) => b.length - a.length);
    this.tokenBytes = byteLevel ? byteLevelBytes(tok, byteLevel.specialIds) : undefined;
    const id = (t: string) => {
      const i = tok.tokenToId(t);
      if (i === null || i === undefined) throw new Error(`tokenizer: token ${t} missing after adding it`);
      return i;
    };
    this.eosId = id(special.eos);
    this.padId = id(special.pad);
    // Absent OA tokens (a run in the model's own template) are -1: no token id matches them.
    const optional = (t: string) => tok.tokenToId(t) ?? -1;
    this.prompterId = optional(PROMPTER);
    this.assistantId = optional(ASSISTANT);
    this.systemId = optional(SYSTEM);
    this.baseStopIds = [this.eosId, ...generationEosIds(this.dir)];
    this.stopIds = new Set(this.baseStopIds);
    // The folder's own template when it has one (what it was trained in), else OA's; one that
    // @huggingface/jinja cannot read leaves OA's in place until a command asks for it by name.
    this.template = resolveChatTemplate("oa", this.templateSource());
    try {
      this.useTemplate("auto");
    } catch (err) {
      if (!(err instanceof ChatTemplateError)) throw err;
      this.templateProblem = err.message;
    }
  }

  private readonly baseStopIds: number[];

  private specialIds = new Set<number>();

  /** Whether an id is a special token (the tokenizer's own, and the ones this load added). */
  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  /** Why the folder's own chat template was not taken at load (it could not be read), if it was not. */
  templateProblem: string | undefined;

  /** Loads tokenizer.json (a file or a model folder) and adds the family's and OA's special tokens when absent. */
  static load(path: string, o: LoadTokenizerOptions = {}): ChatTokenizer {
    const file = tokenizerFile(path);
    let tok: Tokenizer;
    try {
      tok = Tokenizer.fromFile(file);
    } catch (err) {
      throw new Error(`tokenizer ${file}: not a Hugging Face tokenizer.json (${(err as Error).message})`, {
        cause: err,
      });
    }
    // Truncation/padding saved in a tokenizer.json are session leftovers; the collator decides both.
    tok.disableTruncation();
    tok.disablePadding();
    const carried = carriedSettings(dirname(file));
    // A folder in its own chat template (trained in it, or a model's) gets no OA tokens unless asked.
    o = { ...o, oaTokens: o.oaTokens ?? !hasOwnTemplate(carried.config.chat_template) };
    const { family, tokens } = familyTokens(file, o);
    const added: string[] = [];
    const wanted = [tokens.pad, tokens.eos, tokens.sep, ...(o.oaTokens === false ? [] : QA_SPECIAL_TOKENS)];
    for (const t of wanted) {
      if (t && tok.tokenToId(t) == null && !added.includes(t)) {
        tok.addSpecialTokens([t]);
        added.push(t);
      }
    }
    // Byte-level tokenizers can be decoded incrementally without the library (streaming).
    let byteLevel: { specialIds: Set<number> } | undefined;
    const json = JSON.parse(readFileSync(file, "utf8")) as TokenizerJson;
    const specialIds = new Set((json.added_tokens ?? []).filter((t) => t.special).map((t) => t.id));
    for (const t of added) specialIds.add(tok.tokenToId(t)!);
    if (json.decoder?.type === "ByteLevel") byteLevel = { specialIds };
    const addedTexts = [...(json.added_tokens ?? []).map((t) => t.content ?? ""), ...added].filter(Boolean);
    const loaded = new ChatTokenizer(
      tok,
      family,
      tokens,
      added,
      byteLevel,
      leadingSpecialToken(json.post_processor),
      file,
      addedTexts,
      carried,
    );
    loaded.specialIds = specialIds;
    return loaded;
  }

  /** tokenizer_config.json's model_max_length, unless absent or transformers' "no limit" (about 1e30). */
  get modelMaxLength(): number | undefined {
    const v = this.carried.config.model_max_length;
    return typeof v === "number" && Number.isInteger(v) && v > 0 && v < 1e29 ? v : undefined;
  }

  /** What a `chat_template` setting resolves against: this folder's template and special tokens. */
  templateSource(): Parameters<typeof resolveChatTemplate>[1] {
    const c = this.carried.config;
    const tokens: TemplateTokens = { eos_token: this.special.eos };
    const bos = tokenString(c.bos_token) ?? this.bos;
    if (bos) tokens.bos_token = bos;
    tokens.pad_token = this.special.pad;
    const unk = tokenString(c.unk_token);
    if (unk) tokens.unk_token = unk;
    const configFile = join(this.dir, "tokenizer_config.json");
    return { modelTemplate: c.chat_template, configFile, tokens, oaWithBos: this.bos !== undefined };
  }

  /**
   * Renders prompts and training text in this chat template from now on ("oa", "model", "auto" or a
   * .jinja path; `key` names the setting in errors); its end-of-turn token also stops generation.
   */
  useTemplate(setting: string, key?: string): ChatTemplate {
    this.template = resolveChatTemplate(setting, this.templateSource(), key);
    this.stopIds.clear();
    for (const id of this.baseStopIds) this.stopIds.add(id);
    const end = endOfTurnToken(this.template, this.specialTokens);
    const id = end !== undefined ? this.tok.tokenToId(end) : undefined;
    if (id !== undefined && id !== null) this.stopIds.add(id);
    return this.template;
  }

  /** Token ids of a conversation's prompt for the next reply, in the current chat template. */
  async encodeChatPrompt(messages: readonly ChatMessage[]): Promise<number[]> {
    const text = this.template.render(messages, true);
    return this.template.addSpecialTokens ? this.encode(text) : this.encodePlain(text);
  }

  /** Token ids and their code-point offsets, for training texts rendered in a Jinja template. */
  async encodeBatchWithOffsets(
    texts: string[],
    addSpecialTokens: boolean,
  ): Promise<Array<{ ids: number[]; offsets: Array<[number, number]> }>> {
    const out: Array<{ ids: number[]; offsets: Array<[number, number]> }> = [];
    for (let i = 0; i < texts.length; i += 512) {
      const encs = await this.tok.encodeBatch(texts.slice(i, i + 512), { addSpecialTokens });
      for (const e of encs) out.push({ ids: e.getIds(), offsets: e.getOffsets() as Array<[number, number]> });
    }
    return out;
  }

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
      ...(bos ? { bos_token: bos } : {}),
      eos_token: this.special.eos,
      pad_token: this.special.pad,
      sep_token: this.special.sep || undefined,
      additional_special_tokens: additional,
    };
    const map = { ...theirMap, ...owned };
    writeFileAtomic(join(dir, "special_tokens_map.json"), [JSON.stringify(map, null, 2) + "\n"]);
    const config = {
      tokenizer_class: "PreTrainedTokenizerFast",
      clean_up_tokenization_spaces: false,
      model_max_length: 1e30,
      ...theirs,
      ...owned,
      chat_template: this.template.source,
    };
    writeFileAtomic(join(dir, "tokenizer_config.json"), [JSON.stringify(config, null, 2) + "\n"]);
    this.saveStopIds(dir);
    fsyncDir(dir);
  }

  /**
   * Every stop id into the folder's generation_config.json (written by the model's save) as its
   * eos_token_id list, as chat models list theirs, so transformers and vLLM stop where oasft does.
   */
  private saveStopIds(dir: string): void {
    const path = join(dir, "generation_config.json");
    if (!existsSync(path) || this.stopIds.size < 2) return;
    const generation = JSON.parse(readFileSync(path, "utf8")) as { eos_token_id?: unknown };
    const first = Number.isInteger(generation.eos_token_id) ? [generation.eos_token_id as number] : [];
    generation.eos_token_id = [...new Set([...first, ...this.stopIds])];
    writeFileAtomic(path, [JSON.stringify(generation, null, 2) + "\n"]);
  }
}

interface TokenizerJson {
  decoder?: { type?: string } | null;
  added_tokens?: Array<{ id: number; special?: boolean; content?: string }>;
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
      bytes = chars.every((c) => unicodeToByte.has(c))
        ? Uint8Array.from(chars, (c) => unicodeToByte.get(c)!)
        : new TextEncoder().encode(token);
    }
    cache.set(id, bytes);
    return bytes;
  };
}

/**
 * A tokenizer folder's tokenizer_config.json and special_tokens_map.json, as read (empty when absent or unreadable).
 */
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
  return v
    .map((x) => (typeof x === "string" ? x : (x as { content?: unknown })?.content))
    .filter((x): x is string => typeof x === "string");
}
