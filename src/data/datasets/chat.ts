// Multi-turn chat datasets: ShareGPT/Vicuna conversations, and our generic {"messages": [...]} JSONL
// for users' own data.
import type { ChatTurn, Conversation, Role, Utterance } from "../conversation.js";
import { DropCounter, inputFiles, optNumber, type DatasetLoader } from "../dataset.js";
import { removeReferences } from "../filters.js";
import { asObject, DataError, readAllRecords, type SourcedRecord } from "../io.js";

// ----- vicuna / ShareGPT ------------------------------------------------------------------------

const SHAREGPT_ROLES: Record<string, Role> = {
  human: "prompter",
  user: "prompter",
  gpt: "assistant",
  chatgpt: "assistant",
  bing: "assistant",
  bard: "assistant",
  assistant: "assistant",
};
const EMPTY_PROMPT_REPLACEMENTS = ["...", "Please continue", "Go on", ""];

export const vicuna: DatasetLoader = {
  description: "ShareGPT/Vicuna conversations ([{id, conversations: [{from: system|human|gpt, value}]}])",
  options: {
    input_file_path:
      "a local ShareGPT JSON file; default: the hub's Aeala/ShareGPT_Vicuna_unfiltered (V4.3 cleaned split)",
    input_max_length: "cap on each turn, in characters (default 32768, OA HEAD; May-2023 used 2048)",
  },
  async load(o, ctx) {
    const maxChars = optNumber(o, "input_max_length", ctx.name, { min: 1, integer: true }) ?? 32 * 1024;
    const files = await inputFiles(o, ctx, {
      repo: "Aeala/ShareGPT_Vicuna_unfiltered",
      files: /^ShareGPT_V4\.3_unfiltered_cleaned_split\.json$/,
    });
    const drop = new DropCounter();
    const train: Conversation[] = [];
    for (const r of await readAllRecords(files)) {
      const turns = asObject(r).conversations;
      if (!Array.isArray(turns)) throw new DataError(r.where, "field 'conversations' must be a list of {from, value}");
      const merged: Utterance[] = [];
      let bad: string | undefined;
      let system: string | undefined;
      turns.forEach((t, i) => {
        if (bad) return;
        const from = (t as { from?: unknown })?.from;
        const raw = (t as { value?: unknown })?.value;
        if (typeof from !== "string" || typeof raw !== "string")
          throw new DataError(r.where, `conversations[${i}]: expected {from: string, value: string}`);
        if (from === "system" && i === 0) {
          system = raw;
          return;
        } // ShareGPT files of fine-tuning tools lead with one
        const role = SHAREGPT_ROLES[from];
        if (!role) {
          bad = "unknown_role";
          return;
        }
        let value: string = raw;
        if (!value.trim()) {
          if (role === "assistant") {
            bad = "empty_reply";
            return;
          }
          value = ctx.rng.choice(EMPTY_PROMPT_REPLACEMENTS);
        }
        // Markdown escapes left by the ShareGPT scrape (OA issue #2510), and [n] references.
        const text = removeReferences(value.replaceAll("\\_", "_").replaceAll("\\*", "*"));
        const last = merged.at(-1);
        if (last && last.role === role)
          last.text += `\n${text}`; // consecutive turns of one speaker merge
        else merged.push({ role, text });
      });
      if (bad) {
        drop.drop(bad);
        continue;
      }
      if (!merged.length || merged[0]!.role !== "prompter") {
        drop.drop("empty_or_not_starting_with_human");
        continue;
      }
      if (merged.at(-1)!.role === "prompter") merged.pop(); // a trailing question has no answer to train on
      for (const m of merged) m.text = m.text.slice(0, maxChars);
      if (merged.length < 2) {
        drop.drop("no_answer");
        continue;
      }
      train.push({ messages: merged, where: r.where, ...(system !== undefined ? { systemMessage: system } : {}) });
    }
    return { train, dropped: drop.counts, files };
  },
};

// ----- generic {"messages": [...]} (OpenAI's chat format) ---------------------------------------

const CHAT_ROLES: Record<string, ChatTurn["role"]> = {
  user: "user",
  prompter: "user",
  human: "user",
  assistant: "assistant",
  system: "system",
  tool: "tool",
};

/**
 * A chat as OA's format can hold it (an optional first system message, then user/assistant turns
 * alternating, user first), or why it cannot: a model's own template can still train on it.
 */
function asOaConversation(chat: ChatTurn[], c: Conversation): string | undefined {
  for (const [i, m] of chat.entries()) {
    if (m.role === "tool") return `messages[${i}] is a tool message`;
    if (m.role === "system") {
      if (i !== 0) return `messages[${i}] is a system message after the first`;
      c.systemMessage = m.content;
      continue;
    }
    const role: Role = m.role === "user" ? "prompter" : "assistant";
    const expected: Role = c.messages.length % 2 === 0 ? "prompter" : "assistant";
    if (role !== expected) return `messages[${i}]: roles do not alternate user/assistant, user first`;
    c.messages.push({ role, text: m.content });
  }
  return undefined;
}

/**
 * One {"messages": [{role, content}]} record: roles system/user/assistant/tool, contents strings,
 * ending with an assistant reply (the text trained on); the file, line and field named on error.
 */
export function parseMessagesRecord(r: SourcedRecord, field = "messages"): Conversation {
  const list = asObject(r)[field];
  if (!Array.isArray(list)) throw new DataError(r.where, `field '${field}' must be a list of {role, content}`);
  return chatConversation(chatTurns(list, r.where, field), r.where, field);
}

/** A list of {role, content} messages as chat turns; `field` and the index named on error. */
export function chatTurns(list: unknown[], where: string, field: string): ChatTurn[] {
  return list.map((m, i) => {
    const role = (m as { role?: unknown })?.role;
    const content = (m as { content?: unknown })?.content;
    if (typeof role !== "string" || !(role in CHAT_ROLES)) {
      const expected = `expected "system", "user", "assistant" or "tool", got ${JSON.stringify(role)}`;
      throw new DataError(where, `${field}[${i}].role: ${expected}`);
    }
    if (typeof content !== "string") {
      throw new DataError(where, `${field}[${i}].content: expected a string, got ${JSON.stringify(content)}`);
    }
    return { role: CHAT_ROLES[role]!, content };
  });
}

/** A checked chat as a conversation: it must end with an assistant reply (there is nothing else to train on). */
export function chatConversation(chat: ChatTurn[], where: string, field: string): Conversation {
  if (!chat.some((m) => m.role === "user")) throw new DataError(where, `${field}: no user message`);
  if (chat.at(-1)?.role !== "assistant") {
    throw new DataError(
      where,
      `${field}: the conversation ends on a ${chat.at(-1)?.role ?? "missing"} message, not an assistant reply ` +
        `(nothing to train on)`,
    );
  }
  const c: Conversation = { messages: [], where };
  const problem = asOaConversation(chat, c);
  if (problem) Object.assign(c, { messages: [], systemMessage: undefined, chat, oaProblem: problem });
  else if (chat.some((m, i) => m.role === "system" && i > 0)) c.chat = chat;
  if (c.systemMessage === undefined) delete c.systemMessage;
  return c;
}

export const messages: DatasetLoader = {
  description:
    'your own chats (OpenAI\'s shape): JSONL/JSON/Parquet of {"messages": [{"role": ' +
    '"system"|"user"|"assistant"|"tool", "content": ...}]}',
  options: { input_file_path: "the file(s) (.jsonl, .json, .parquet, optionally .gz) or a folder of them (required)" },
  async load(o, ctx) {
    const files = await inputFiles(o, ctx, undefined);
    return { train: (await readAllRecords(files)).map((r) => parseMessagesRecord(r)), dropped: {}, files };
  },
};

// ----- alpaca: {"instruction", "input", "output"} ---------------------------------------------------

/**
 * One Alpaca record as a one-turn chat: the user asks the instruction, followed by the input when there
 * is one (after a blank line), and the output is the reply; an optional `system` field leads.
 */
export function parseAlpacaRecord(r: SourcedRecord): Conversation {
  const o = asObject(r);
  const field = (k: string, required: boolean): string | undefined => {
    const v = o[k];
    if (v === undefined || v === null) {
      if (required) throw new DataError(r.where, `field '${k}' is missing (expected instruction, input, output)`);
      return undefined;
    }
    if (typeof v !== "string")
      throw new DataError(r.where, `field '${k}': expected a string, got ${JSON.stringify(v)}`);
    return v;
  };
  const instruction = field("instruction", true)!;
  const input = field("input", false);
  const output = field("output", true)!;
  const system = field("system", false);
  if (!output.trim()) throw new DataError(r.where, "field 'output' is empty (nothing to train on)");
  const prompt = input?.trim() ? `${instruction}\n\n${input}` : instruction;
  const chat: ChatTurn[] = [
    ...(system ? [{ role: "system" as const, content: system }] : []),
    { role: "user", content: prompt },
  ];
  return chatConversation([...chat, { role: "assistant", content: output }], r.where, "output");
}

export const alpaca: DatasetLoader = {
  description: "your own instructions (Alpaca's shape): records of {instruction, input, output} (optional system)",
  options: { input_file_path: "the file(s) (.jsonl, .json, .parquet, optionally .gz) or a folder of them (required)" },
  async load(o, ctx) {
    const files = await inputFiles(o, ctx, undefined);
    return { train: (await readAllRecords(files)).map(parseAlpacaRecord), dropped: {}, files };
  },
};
