// The chat format of a run: OA's own (built in, the card's) or any Jinja chat_template (the model's
// tokenizer_config.json, or a .jinja file), rendered with @huggingface/jinja as transformers' own
// apply_chat_template renders it (trim_blocks, lstrip_blocks, raise_exception). One renderer serves
// training, `oasft data`, chat, serve and eval, and its source is what a saved model carries: what
// is trained is what is served.
//
// Training masks come from the rendering itself, for any template: each assistant message's span is
// its content (found in the rendered text after the prompt for that reply) plus the special token
// that ends the turn (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, `</s>`). No family's strings are
// matched, and a template that rewrites or drops a reply is an error, never a silently wrong mask.
import { existsSync, readFileSync } from "node:fs";
import { Template } from "@huggingface/jinja";
import { renderChat, chatTemplateJinja, type ChatMessage } from "./chat-template.js";

export interface ChatTemplate {
  /** How messages name it: "oa", "the model's (DIR/tokenizer_config.json)", or the .jinja path. */
  readonly name: string;
  /** OA's own format: its role tokens, masks by message index, system tags and prefixes. */
  readonly oa: boolean;
  /** The Jinja source a saved model carries as tokenizer_config.json's chat_template. */
  readonly source: string;
  /**
   * true: the rendered text is tokenized with the tokenizer's own special tokens (OA's format, whose
   * BOS comes from the post-processor); false: as rendered (a Jinja template writes its own BOS, and
   * transformers tokenizes its output without adding any).
   */
  readonly addSpecialTokens: boolean;
  /** The conversation's text; with `addGenerationPrompt`, followed by the prompt for the next reply. */
  render(messages: readonly ChatMessage[], addGenerationPrompt: boolean): string;
}

/** The special-token strings a Jinja template may use, as transformers passes them. */
export interface TemplateTokens {
  bos_token?: string;
  eos_token: string;
  pad_token?: string;
  unk_token?: string;
}

/** A template error that names the template (and the message, where there is one). */
export class ChatTemplateError extends Error {
  override name = "ChatTemplateError";
}

/** OA's format (renderChat): `withBos` says whether its saved Jinja copy must write the BOS itself. */
export function oaTemplate(eos: string, withBos: boolean): ChatTemplate {
  return {
    name: "oa",
    oa: true,
    source: chatTemplateJinja(withBos),
    addSpecialTokens: true,
    render: (messages, addGenerationPrompt) => renderChat(messages, { eos, addGenerationPrompt }),
  };
}

// HF's assistant-mask markers: rendering ignores them (spans are found from the text either way).
const GENERATION_TAGS = /\{%-?\s*(end)?generation\s*-?%\}/g;

/** A Jinja chat template; `name` says where it came from (for errors). */
export function jinjaTemplate(source: string, name: string, tokens: TemplateTokens): ChatTemplate {
  let parsed: Template;
  try {
    parsed = new Template(source.replace(GENERATION_TAGS, ""));
  } catch (err) {
    throw new ChatTemplateError(
      `chat template ${name}: not a template @huggingface/jinja can read (${(err as Error).message})`,
    );
  }
  return {
    name,
    oa: false,
    source,
    addSpecialTokens: false,
    render(messages, addGenerationPrompt) {
      try {
        return parsed.render({ messages, add_generation_prompt: addGenerationPrompt, ...tokens });
      } catch (err) {
        throw new ChatTemplateError(`chat template ${name}: ${(err as Error).message}`);
      }
    },
  };
}

/** Where a template setting comes from: the tokenizer folder's own files. */
export interface TemplateSource {
  /** tokenizer_config.json's chat_template (a string, or HF's list of {name, template}). */
  modelTemplate: unknown;
  /** The file it was read from, for messages. */
  configFile: string;
  tokens: TemplateTokens;
  /** OA's format writes BOS when the tokenizer's own encoding adds one. */
  oaWithBos: boolean;
}

/** The model's own template: a string, or the "default" of HF's named list. */
function modelTemplateSource(v: unknown): string | undefined {
  if (typeof v === "string" && v.trim()) return v;
  if (Array.isArray(v)) {
    const named = v.find((t) => (t as { name?: unknown })?.name === "default") as { template?: unknown } | undefined;
    return typeof named?.template === "string" ? named.template : undefined;
  }
  return undefined;
}

/**
 * A `chat_template` setting resolved: "oa"; "model" (the tokenizer_config.json's own, an error when
 * it has none); "auto" (the model's own when it has one that is not OA's, else OA's); or a path to a
 * .jinja file. `key` names the setting in errors (`chat_template`, `--chat-template`).
 */
export function resolveChatTemplate(setting: string, src: TemplateSource, key = "chat_template"): ChatTemplate {
  const oa = oaTemplate(src.tokens.eos_token, src.oaWithBos);
  const own = modelTemplateSource(src.modelTemplate);
  const fromModel = () => jinjaTemplate(own!, `the model's (${src.configFile})`, src.tokens);
  if (setting === "oa") return oa;
  if (setting === "auto") return own === undefined || isOaSource(own) ? oa : fromModel();
  if (setting === "model") {
    if (own === undefined) {
      throw new ChatTemplateError(
        `${key}: model, but ${src.configFile} has no chat_template; use ${key}: oa, or the path of a .jinja file`,
      );
    }
    return isOaSource(own) ? oa : fromModel();
  }
  if (!existsSync(setting)) {
    throw new ChatTemplateError(`${key}: '${setting}' is neither oa, model, auto nor an existing .jinja file`);
  }
  return jinjaTemplate(readFileSync(setting, "utf8"), setting, src.tokens);
}

/** Whether a tokenizer_config.json's chat_template is a model's own (present, and not OA's as oasft saves it). */
export function hasOwnTemplate(modelTemplate: unknown): boolean {
  const own = modelTemplateSource(modelTemplate);
  return own !== undefined && !isOaSource(own);
}

/** OA's own template as oasft saves it: rendering it with Jinja gives exactly renderChat's text. */
function isOaSource(source: string): boolean {
  return source === chatTemplateJinja(true) || source === chatTemplateJinja(false);
}

// ----- assistant spans ----------------------------------------------------------------------------

/** A rendered conversation and the [start, end) UTF-16 offsets of the text trained on. */
export interface RenderedConversation {
  text: string;
  spans: Array<[number, number]>;
}

/** The longest special token the text starts with (the template's end of turn), if any. */
function leadingToken(text: string, specialTokens: readonly string[]): string | undefined {
  let best: string | undefined;
  for (const t of specialTokens) if (t && text.startsWith(t) && (!best || t.length > best.length)) best = t;
  return best;
}

function commonPrefixLength(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

/**
 * The conversation rendered, with each assistant reply's span: its content, searched for after the
 * prompt the template renders for that reply (so a user message that quotes it is never taken), and
 * the special token right after it. `where` names the record in errors.
 */
export function renderWithSpans(
  t: ChatTemplate,
  messages: readonly ChatMessage[],
  specialTokens: readonly string[],
  where: string,
): RenderedConversation {
  const text = t.render(messages, false);
  const spans: Array<[number, number]> = [];
  let cursor = 0;
  messages.forEach((m, i) => {
    if (m.role !== "assistant") return;
    const fail = (why: string) =>
      new ChatTemplateError(`${where}: chat template ${t.name}, message ${i} (assistant): ${why}`);
    // Where this reply's turn begins: the text the prompt for it shares with the whole rendering.
    const prompt = t.render(messages.slice(0, i), true);
    const from = Math.max(cursor, commonPrefixLength(prompt, text));
    let content = m.content;
    let at = content ? text.indexOf(content, from) : -1;
    if (at < 0 && content.trim()) {
      content = content.trim(); // templates that trim (Llama 3's `| trim`) keep the trimmed text
      at = text.indexOf(content, from);
    }
    if (at < 0) throw fail("the rendered text does not contain its content (the template rewrites or drops it)");
    const end = at + content.length;
    const marker = leadingToken(text.slice(end), specialTokens);
    if (!marker) {
      const next = JSON.stringify(text.slice(end, end + 20));
      throw fail(`no special token ends the turn (the text after the reply is ${next}); generation could not stop`);
    }
    spans.push([at, end + marker.length]);
    cursor = end + marker.length;
  });
  return { text, spans };
}

/** The special token that ends an assistant turn in this template (for stopping generation), if any. */
export function endOfTurnToken(t: ChatTemplate, specialTokens: readonly string[]): string | undefined {
  const probe = "oasft-end-of-turn-probe";
  try {
    const text = t.render(
      [
        { role: "user", content: "Hi" },
        { role: "assistant", content: probe },
      ],
      false,
    );
    const at = text.indexOf(probe);
    return at < 0 ? undefined : leadingToken(text.slice(at + probe.length), specialTokens);
  } catch {
    return undefined; // a template that needs more than this probe: stop on the EOS ids alone
  }
}

/**
 * The label mask of a tokenized rendering: `mask[j − 1]` is set when token j overlaps a span
 * (the mask marks the position that predicts the token). `offsets` are the tokenizer's, in Unicode
 * code points; spans are UTF-16 offsets and are converted here.
 */
export function maskFromSpans(
  text: string,
  spans: ReadonlyArray<[number, number]>,
  offsets: Array<[number, number]>,
): boolean[] {
  const mask = offsets.map(() => false);
  if (!spans.length) return mask;
  const cp = codePointIndex(text, spans.flat());
  const cpSpans = spans.map(([s, e]) => [cp.get(s)!, cp.get(e)!] as const);
  let k = 0;
  for (let j = 1; j < offsets.length; j++) {
    const [s, e] = offsets[j]!;
    while (k < cpSpans.length && cpSpans[k]![1] <= s) k++;
    if (k < cpSpans.length && e > cpSpans[k]![0] && s < cpSpans[k]![1]) mask[j - 1] = true;
  }
  return mask;
}

/** UTF-16 offsets → code-point offsets, for the given (sorted or not) positions. */
function codePointIndex(text: string, positions: number[]): Map<number, number> {
  const wanted = [...new Set(positions)].sort((a, b) => a - b);
  const out = new Map<number, number>();
  let cp = 0;
  let i = 0;
  for (const p of wanted) {
    for (; i < p; i++) {
      const c = text.charCodeAt(i);
      if (c < 0xdc00 || c > 0xdfff) cp++; // a low surrogate continues the code point before it
    }
    out.set(p, cp);
  }
  return out;
}
