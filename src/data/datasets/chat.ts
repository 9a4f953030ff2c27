// Multi-turn chat datasets: ShareGPT/Vicuna conversations, and our generic {"messages": [...]} JSONL
// for users' own data.
import type { Conversation, Role, Utterance } from "../conversation.js";
import { DropCounter, inputFiles, optNumber, type DatasetLoader } from "../dataset.js";
import { removeReferences } from "../filters.js";
import { asObject, DataError, readAllRecords, type SourcedRecord } from "../io.js";

// ----- vicuna / ShareGPT ------------------------------------------------------------------------

const SHAREGPT_ROLES: Record<string, Role> = { human: "prompter", user: "prompter", gpt: "assistant", chatgpt: "assistant", bing: "assistant", bard: "assistant", assistant: "assistant" };
const EMPTY_PROMPT_REPLACEMENTS = ["...", "Please continue", "Go on", ""];

export const vicuna: DatasetLoader = {
  description: "ShareGPT/Vicuna conversations ([{id, conversations: [{from: human|gpt, value}]}])",
  options: {
    input_file_path: "a local ShareGPT JSON file; default: the hub's Aeala/ShareGPT_Vicuna_unfiltered (V4.3 cleaned split)",
    input_max_length: "cap on each turn, in characters (default 32768, OA HEAD; May-2023 used 2048)",
  },
  async load(o, ctx) {
    const maxChars = optNumber(o, "input_max_length", ctx.name, { min: 1, integer: true }) ?? 32 * 1024;
    const files = await inputFiles(o, ctx, { repo: "Aeala/ShareGPT_Vicuna_unfiltered", files: /^ShareGPT_V4\.3_unfiltered_cleaned_split\.json$/ });
    const drop = new DropCounter();
    const train: Conversation[] = [];
    for (const r of await readAllRecords(files)) {
      const turns = asObject(r).conversations;
      if (!Array.isArray(turns)) throw new DataError(r.where, "field 'conversations' must be a list of {from, value}");
      const merged: Utterance[] = [];
      let bad: string | undefined;
      turns.forEach((t, i) => {
        if (bad) return;
        const from = (t as { from?: unknown })?.from;
        const raw = (t as { value?: unknown })?.value;
        if (typeof from !== "string" || typeof raw !== "string") throw new DataError(r.where, `conversations[${i}]: expected {from: string, value: string}`);
        const role = SHAREGPT_ROLES[from];
        if (!role) { bad = "unknown_role"; return; }
        let value: string = raw;
        if (!value.trim()) {
          if (role === "assistant") { bad = "empty_reply"; return; }
          value = ctx.rng.choice(EMPTY_PROMPT_REPLACEMENTS);
        }
        // Markdown escapes left by the ShareGPT scrape (OA issue #2510), and [n] references.
        const text = removeReferences(value.replaceAll("\\_", "_").replaceAll("\\*", "*"));
        const last = merged.at(-1);
        if (last && last.role === role) last.text += `\n${text}`; // consecutive turns of one speaker merge
        else merged.push({ role, text });
      });
      if (bad) { drop.drop(bad); continue; }
      if (!merged.length || merged[0]!.role !== "prompter") { drop.drop("empty_or_not_starting_with_human"); continue; }
      if (merged.at(-1)!.role === "prompter") merged.pop(); // a trailing question has no answer to train on
      for (const m of merged) m.text = m.text.slice(0, maxChars);
      if (merged.length < 2) { drop.drop("no_answer"); continue; }
      train.push({ messages: merged });
    }
    return { train, dropped: drop.counts, files };
  },
};

// ----- generic {"messages": [...]} --------------------------------------------------------------

const MESSAGE_ROLES: Record<string, Role | "system"> = { user: "prompter", prompter: "prompter", human: "prompter", assistant: "assistant", system: "system" };

/** One {"messages": [{role, content}]} record: optional leading system message, then user/assistant alternating. */
export function parseMessagesRecord(r: SourcedRecord): Conversation {
  const list = asObject(r).messages;
  if (!Array.isArray(list)) throw new DataError(r.where, "field 'messages' must be a list of {role, content}");
  const c: Conversation = { messages: [] };
  list.forEach((m, i) => {
    const role = (m as { role?: unknown })?.role;
    const content = (m as { content?: unknown })?.content;
    if (typeof role !== "string" || !(role in MESSAGE_ROLES)) throw new DataError(r.where, `messages[${i}].role: expected "system", "user" or "assistant", got ${JSON.stringify(role)}`);
    if (typeof content !== "string") throw new DataError(r.where, `messages[${i}].content: expected a string`);
    const mapped = MESSAGE_ROLES[role]!;
    if (mapped === "system") {
      if (i !== 0) throw new DataError(r.where, `messages[${i}].role: a system message must come first`);
      c.systemMessage = content;
      return;
    }
    const expected: Role = c.messages.length % 2 === 0 ? "prompter" : "assistant";
    if (mapped !== expected) throw new DataError(r.where, `messages[${i}].role: expected ${expected === "prompter" ? "user" : "assistant"} (roles alternate, user first), got "${role}"`);
    c.messages.push({ role: mapped, text: content });
  });
  if (c.messages.length < 2 || c.messages.at(-1)!.role !== "assistant") throw new DataError(r.where, "messages: expected at least one user message and a final assistant reply");
  return c;
}

export const messages: DatasetLoader = {
  description: "your own chats: JSONL of {\"messages\": [{\"role\": \"system\"|\"user\"|\"assistant\", \"content\": ...}]}",
  options: { input_file_path: "the JSONL file(s) or a folder of them (required)" },
  async load(o, ctx) {
    const files = await inputFiles(o, ctx, undefined);
    return { train: (await readAllRecords(files)).map(parseMessagesRecord), dropped: {}, files };
  },
};
