// The data model every loader produces and the SFT formatter consumes (OA's DatasetEntrySft).
import { DataError } from "./io.js";

export type Role = "prompter" | "assistant";

/** One message. The optional properties feed OA's "system tag" (use_system_tag) of the reply they belong to. */
export interface Utterance {
  text: string;
  role: Role;
  lang?: string;
  quality?: number;
  humor?: number;
  creativity?: number;
  context?: string;
}

/** A message as a user's chat file has it: a model's own chat template renders these. */
export interface ChatTurn {
  role: "system" | "user" | "assistant" | "tool";
  content: string;
}

/** A dialogue that starts with a prompter message and alternates roles. */
export interface Conversation {
  messages: Utterance[];
  /**
   * The messages as the user's file has them (system or tool messages anywhere), when that differs
   * from `messages` + `systemMessage`: a model's own chat template renders these. `oaProblem` says why
   * OA's format cannot express them (then `messages` is empty).
   */
  chat?: ChatTurn[];
  oaProblem?: string;
  /** Where the record came from ("file:line"), for errors found after loading. */
  where?: string;
  /** A per-conversation system message (OA's `system_message`), formatted before the first prompt. */
  systemMessage?: string;
  /**
   * The entry-level fields OA's May-2023 formatter turned into a leading system tag (dolly's
   * context, webgpt's lang). HEAD ignores them; only format_version "may2023" uses them.
   */
  legacyProperties?: Record<string, string | number>;
}

/** [q, a, q, a, ...] as a conversation (OA's format_pairs for tuples and lists of strings). */
export function fromPairs(texts: string[], extra: Partial<Utterance> = {}): Conversation {
  return {
    messages: texts.map((text, i) => ({
      text,
      role: i % 2 === 0 ? "prompter" : "assistant",
      ...(i % 2 === 1 ? extra : {}),
    })),
  };
}

/** Checks the invariants the formatter relies on; `where` names the record in the error. */
export function checkConversation(c: Conversation, where: string): void {
  if (c.messages.length < 2)
    throw new DataError(`${where}`, `a conversation needs a prompt and a reply, got ${c.messages.length} message(s)`);
  c.messages.forEach((m, i) => {
    const expected: Role = i % 2 === 0 ? "prompter" : "assistant";
    if (m.role !== expected)
      throw new DataError(
        `${where}`,
        `message ${i} has role '${m.role}', expected '${expected}' (roles must alternate, prompter first)`,
      );
  });
}
