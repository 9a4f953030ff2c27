// preference_pairs: a user's own preference data, in the shapes TRL's DPO and reward trainers read:
//   {"prompt": "...", "chosen": "...", "rejected": "..."}                       (standard, explicit prompt)
//   {"prompt": [messages], "chosen": [assistant message], "rejected": [...]}    (conversational)
//   {"chosen": [messages], "rejected": [messages]}                              (implicit prompt)
//   {"chosen": "\n\nHuman: ...\n\nAssistant: ...", "rejected": "..."}          (Anthropic HH)
// Each line becomes a ranked group of two (chosen first). As SFT data the chosen conversation is trained.
import type { ChatTurn, Conversation } from "../conversation.js";
import { inputFiles, type DatasetLoader, type RankedGroup } from "../dataset.js";
import { asObject, DataError, readAllRecords, type SourcedRecord } from "../io.js";
import { chatConversation, chatTurns } from "./chat.js";

function turns(value: unknown, where: string, field: string): ChatTurn[] {
  if (!Array.isArray(value)) throw new DataError(where, `${field}: expected a string or a list of {role, content}`);
  return chatTurns(value, where, field);
}

/** An Anthropic HH transcript ("\n\nHuman: ...\n\nAssistant: ...") as chat turns. */
function hhTurns(text: string, where: string, field: string): ChatTurn[] {
  const parts = text.split(/\n\n(Human|Assistant): /);
  if (parts.length < 3 || parts[0]!.trim()) {
    throw new DataError(where, `${field}: expected a transcript of "\\n\\nHuman: " and "\\n\\nAssistant: " turns`);
  }
  const out: ChatTurn[] = [];
  for (let i = 1; i < parts.length; i += 2) {
    out.push({ role: parts[i] === "Human" ? "user" : "assistant", content: parts[i + 1]! });
  }
  return out;
}

const same = (a: ChatTurn, b: ChatTurn) => a.role === b.role && a.content === b.content;

/** The context and the two replies of one record, whichever of TRL's shapes it has. */
function pairOf(r: SourcedRecord): { context: ChatTurn[]; chosen: string; rejected: string } {
  const o = asObject(r);
  for (const f of ["chosen", "rejected"]) if (!(f in o)) throw new DataError(r.where, `missing field '${f}'`);
  const reply = (v: unknown, field: string): string => {
    if (typeof v === "string") return v;
    const t = turns(v, r.where, field);
    if (t.length !== 1 || t[0]!.role !== "assistant") {
      throw new DataError(r.where, `${field}: expected one assistant message`);
    }
    return t[0]!.content;
  };
  if ("prompt" in o) {
    const context =
      typeof o.prompt === "string"
        ? [{ role: "user" as const, content: o.prompt }]
        : turns(o.prompt, r.where, "prompt");
    return { context, chosen: reply(o.chosen, "chosen"), rejected: reply(o.rejected, "rejected") };
  }
  // An implicit prompt: the turns both conversations share, up to the last assistant reply.
  const whole = (v: unknown, field: string) =>
    typeof v === "string" ? hhTurns(v, r.where, field) : turns(v, r.where, field);
  const c = whole(o.chosen, "chosen");
  const j = whole(o.rejected, "rejected");
  for (const [t, field] of [
    [c, "chosen"],
    [j, "rejected"],
  ] as const) {
    if (t.at(-1)?.role !== "assistant") {
      throw new DataError(r.where, `${field}: the conversation does not end on an assistant reply`);
    }
  }
  if (c.length !== j.length || !c.slice(0, -1).every((m, i) => same(m, j[i]!))) {
    const why = "chosen and rejected do not share their turns before the last reply (no common prompt)";
    throw new DataError(r.where, why);
  }
  return { context: c.slice(0, -1), chosen: c.at(-1)!.content, rejected: j.at(-1)!.content };
}

/** One record as a ranked group of two: checked replies, each as a whole conversation. */
export function parsePreferenceRecord(r: SourcedRecord): RankedGroup {
  const { context, chosen, rejected } = pairOf(r);
  if (!chosen.trim()) throw new DataError(r.where, "chosen: the reply is empty");
  if (!rejected.trim()) throw new DataError(r.where, "rejected: the reply is empty");
  if (chosen === rejected) {
    throw new DataError(r.where, "chosen and rejected are the same reply (nothing to learn from)");
  }
  const conv = (text: string, field: string): Conversation =>
    chatConversation([...context, { role: "assistant", content: text }], r.where, field);
  return { candidates: [conv(chosen, "chosen"), conv(rejected, "rejected")], where: r.where };
}

export const preferencePairs: DatasetLoader = {
  description:
    "your own preference pairs (TRL's shapes): {prompt, chosen, rejected} as strings or messages, " +
    "or HH-style chosen/rejected transcripts",
  options: { input_file_path: "the file(s) (.jsonl, .json, .parquet, optionally .gz) or a folder of them (required)" },
  async load(o, ctx) {
    const files = await inputFiles(o, ctx, undefined);
    const groups = (await readAllRecords(files)).map(parsePreferenceRecord);
    return { train: groups.map((g) => g.candidates[0]!), dropped: {}, files };
  },
  async loadRanked(o, ctx) {
    const files = await inputFiles(o, ctx, undefined);
    return { groups: (await readAllRecords(files)).map(parsePreferenceRecord), dropped: {}, files };
  },
};
