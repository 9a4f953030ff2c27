// The Open-Assistant prompt format (formatting.py): one string per message, joined with nothing,
//   [<|system|>{system message}{eos}]<|prompter|>{q}{eos}[{system tag}]<|assistant|>{a}{eos}...
// with eos after every message. Two versions: OA's final code ("head") and the May-2023 code the
// card's run most likely used ("may2023": an always-on leading system tag from entry properties).
import type { Conversation, Utterance } from "../data/conversation.js";
import type { FormatVersion } from "../data/dataset.js";
import type { Rng } from "../data/rng.js";
import { SYSTEM, renderChat, type ChatMessage } from "../tokenizer/index.js";

export interface FormatOptions {
  eos: string;
  formatVersion: FormatVersion;
  /** HEAD: put a system tag built from the reply's properties between a prompt and its reply. */
  useSystemTag: boolean;
  /** Probability of dropping each property from a system tag. */
  systemPropertyDropout: number;
  /** Add "length: words/5 + 1" to the system tag. */
  systemAddLength: boolean;
  rng: Rng;
}

type Property = [string, string | number];

function renderTag(props: Property[], eos: string): string {
  const fragments = props
    .filter(([, v]) => !(typeof v === "string" && !v.trim()))
    // OA formats float properties with one decimal (labels are floats); length is an int.
    .map(([k, v]) => (typeof v === "number" && k !== "length" ? `${k}: ${v.toFixed(1)}` : `${k}: ${v}`));
  return fragments.length ? `${SYSTEM}${fragments.join("\n")}\n${eos}` : "";
}

/** OA's Utterance.system_tag for a reply: shuffled properties, context last, each dropped with p. */
export function systemTag(reply: Utterance, o: FormatOptions): string {
  const props: Property[] = [];
  for (const k of ["lang", "quality", "humor", "creativity"] as const)
    if (reply[k] !== undefined) props.push([k, reply[k]!]);
  if (o.systemAddLength) props.push(["length", Math.floor((reply.text.match(/\w+/gu)?.length ?? 0) / 5) + 1]);
  o.rng.shuffle(props);
  if (reply.context) props.push(["context", reply.context]);
  return renderTag(
    props.filter(() => o.rng.next() >= o.systemPropertyDropout),
    o.eos,
  );
}

/** May-2023: every entry field kept with probability 0.5 (random() > 0.5), shuffled, at the very start. */
function legacyTag(c: Conversation, o: FormatOptions): string {
  const props = Object.entries(c.legacyProperties ?? {}).filter(() => o.rng.next() > 0.5);
  return renderTag(o.rng.shuffle(props), o.eos);
}

/** The formatted messages of a conversation; their concatenation is the training text. */
export function formatConversation(c: Conversation, o: FormatOptions): string[] {
  const out: string[] = [];
  const lead = o.formatVersion === "may2023" ? legacyTag(c, o) : "";
  c.messages.forEach((m, i) => {
    if (m.role === "assistant") {
      out.push(renderChat([{ role: "assistant", content: m.text }], { eos: o.eos }));
      return;
    }
    const system =
      i === 0 && c.systemMessage !== undefined ? [{ role: "system" as const, content: c.systemMessage }] : [];
    let s = renderChat([...system, { role: "user", content: m.text }], { eos: o.eos });
    if (i === 0 && lead) s = lead + s;
    const reply = c.messages[i + 1];
    if (o.useSystemTag && o.formatVersion === "head" && reply) s += systemTag(reply, o);
    out.push(s);
  });
  return out;
}

/** A conversation as a chat template's messages: the file's own list when it has one. */
export function conversationMessages(c: Conversation): ChatMessage[] {
  if (c.chat) return c.chat;
  const system = c.systemMessage !== undefined ? [{ role: "system" as const, content: c.systemMessage }] : [];
  return [
    ...system,
    ...c.messages.map((m): ChatMessage => ({ role: m.role === "prompter" ? "user" : "assistant", content: m.text })),
  ];
}

export type Turn = { role: "prompter" | "assistant"; text: string };

/** A chat in OA's terms as the chat template's messages (system first when given). */
export function chatMessages(history: readonly Turn[], systemMessage?: string): ChatMessage[] {
  return [
    ...(systemMessage !== undefined ? [{ role: "system" as const, content: systemMessage }] : []),
    ...history.map((m): ChatMessage => ({ role: m.role === "prompter" ? "user" : "assistant", content: m.text })),
  ];
}

/** The inference prompt for a chat so far (ends with "<|assistant|>", as the card prompts). */
export function formatPrompt(history: readonly Turn[], eos: string, systemMessage?: string): string {
  return renderChat(chatMessages(history, systemMessage), { eos, addGenerationPrompt: true });
}
