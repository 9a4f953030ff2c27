// `oasft chat --model DIR`: a terminal chat in the model's chat format (OA's, or its own template),
// with streamed replies.
import { createInterface } from "node:readline/promises";
import { writeFileAtomic } from "../../util/atomic-file.js";
import { resolveModelDir } from "../../models/index.js";
import { Engine, type GenerationHandle } from "../../generate/engine.js";
import { chatMessages } from "../../sft/format.js";
import { intFlag, parseFlags, required, UsageError } from "../args.js";
import { CHAT_REPETITION_PENALTY, checkSampling } from "../../generate/sampling.js";
import type { Command } from "../main.js";
import { DEVICE_FLAGS, DEVICE_USAGE, placement } from "../placement.js";
import { ADAPTER_USAGE, MODEL_FLAGS, loadForInference } from "../model-flags.js";
import { RewardScorer } from "../../pref/score.js";
import type { SamplingParams } from "../../generate/sampling.js";
import type { ChatTurn } from "../../data/conversation.js";

const USAGE = `usage: oasft chat --model DIR [--system TEXT] [--max-new-tokens 256] [--context 2048]
                  [--temperature 0] [--top-p 1] [--top-k 0] [--repetition-penalty 1.2] [--seed N]
                  [--reward-model RM_DIR --best-of N] ${ADAPTER_USAGE} ${DEVICE_USAGE}

  --best-of N samples N replies (set --temperature > 0) and shows the one the reward model
  (oasft train --stage rm) scores highest, with every reply's reward.

  Prompts are rendered in the model folder's chat template (OA's when it has none); --chat-template
  picks another. Commands while chatting: /reset (forget the conversation), /save FILE (the
  conversation as one JSONL line: its messages and rendered text), /help, /exit; //text sends a
  message that starts with "/", and any other /command is refused (never sent). Older turns are
  dropped when the prompt would exceed --context tokens.`;

import type { Turn } from "../../sft/format.js";
import type { ChatTokenizer } from "../../tokenizer/index.js";
import type { CausalLM } from "../../models/index.js";

const CHAT_FLAGS = {
  model: { type: "string" },
  system: { type: "string" },
  "max-new-tokens": { type: "string" },
  context: { type: "string" },
  temperature: { type: "string" },
  "top-p": { type: "string" },
  "top-k": { type: "string" },
  "repetition-penalty": { type: "string" },
  seed: { type: "string" },
  "reward-model": { type: "string" },
  "best-of": { type: "string" },
  ...MODEL_FLAGS,
  ...DEVICE_FLAGS,
} as const;

/** A conversation in progress: the model, how it samples, and what was said. */
interface ChatSession {
  model: CausalLM;
  tokenizer: ChatTokenizer;
  engine: Engine;
  scorer: RewardScorer | undefined;
  bestOf: number;
  system: string | undefined;
  params: SamplingParams;
  /** Prompt + reply must fit this many tokens: older exchanges are dropped. */
  context: number;
  history: Turn[];
  /** The reply streaming now (Ctrl-C cancels it). */
  reply?: GenerationHandle;
}

/** Sampling from the flags, checked, with errors naming the flag the user typed (top_p → --top-p). */
function chatSampling(values: Record<string, unknown>): SamplingParams {
  const temperature = Number(values.temperature ?? 0);
  const params = {
    maxNewTokens: intFlag(values, "max-new-tokens", 256),
    doSample: temperature > 0,
    temperature,
    ...(values["top-p"] ? { topP: Number(values["top-p"]) } : {}),
    ...(values["top-k"] ? { topK: Number(values["top-k"]) } : {}),
    repetitionPenalty: values["repetition-penalty"] ? Number(values["repetition-penalty"]) : CHAT_REPETITION_PENALTY,
    ...(values.seed ? { seed: Number(values.seed) } : {}),
  };
  try {
    checkSampling(params);
  } catch (err) {
    const message = (err as Error).message.replace(/^(\w+):/, (_, f: string) => `${f.replaceAll("_", "-")}:`);
    throw new UsageError(`--${message}`);
  }
  return params;
}

/** The model, its sampling, and (with --best-of) the reward model that picks among sampled replies. */
function openSession(values: Record<string, unknown>, dir: string): ChatSession {
  const bestOf = intFlag(values, "best-of", 1);
  if (bestOf > 1 && !values["reward-model"]) {
    throw new UsageError("--best-of needs --reward-model DIR (what scores the replies)");
  }
  if (bestOf > 1 && !(Number(values.temperature ?? 0) > 0)) {
    throw new UsageError("--best-of needs --temperature > 0 (greedy replies are all the same)");
  }
  const params = chatSampling(values);
  const context = intFlag(values, "context", 2048);
  const { device, dtype } = placement(values);
  const { model, tokenizer } = loadForInference(values, dir, { device, dtype });
  let scorer: RewardScorer | undefined;
  try {
    const rmDir = bestOf > 1 ? resolveModelDir(values["reward-model"] as string, "--reward-model") : undefined;
    scorer = rmDir ? RewardScorer.load(rmDir, { device }) : undefined;
  } catch (err) {
    model.dispose();
    throw err;
  }
  const engine = new Engine(model, tokenizer, { maxBatch: bestOf });
  const system = values.system as string | undefined;
  return { model, tokenizer, engine, scorer, bestOf, system, params, context, history: [] };
}

export const command: Command = {
  async run(argv) {
    const { values } = parseFlags(argv, CHAT_FLAGS, USAGE);
    const dir = resolveModelDir(required(values, "model", USAGE), "--model");
    const session = openSession(values, dir);
    const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY });
    console.log(`oasft chat: ${dir} (/help lists the commands)`);
    // Ctrl-C while a reply streams stops that reply (back to the prompt); at the prompt it ends the chat.
    let exitCode = 0;
    const onInterrupt = () => {
      if (session.reply) {
        session.reply.cancel();
        return;
      }
      process.stdout.write("\n");
      exitCode = 130;
      rl.close();
    };
    rl.on("SIGINT", onInterrupt);
    process.on("SIGINT", onInterrupt);
    try {
      // Lines are read through the async iterator, which buffers them: piped input typed ahead of a
      // reply is not lost while the model is generating.
      process.stdout.write("> ");
      for await (const raw of rl) {
        const line = raw.trim();
        if (line && (await handleLine(session, line)) === "exit") break;
        process.stdout.write("> ");
      }
    } finally {
      process.off("SIGINT", onInterrupt);
      rl.close();
      session.model.dispose();
      session.scorer?.dispose();
    }
    return exitCode;
  },
};

/** One typed line: a command, or a message the model answers. */
async function handleLine(s: ChatSession, line: string): Promise<"exit" | undefined> {
  const command = chatCommand(line);
  switch (command.kind) {
    case "exit":
      return "exit";
    case "help":
      console.log(CHAT_HELP);
      return;
    case "unknown":
      console.log(`(unknown command ${command.name}; /help lists them, //text sends "/text")`);
      return;
    case "reset":
      s.history = [];
      console.log("(conversation cleared)");
      return;
    case "save":
      return saveChat(s, command.file);
    case "message":
      return answer(s, command.text);
  }
}

/** /save FILE: the messages and the rendered text as one JSONL line; a failed write keeps the chat going. */
function saveChat(s: ChatSession, file: string): undefined {
  if (!file) {
    console.log("usage: /save FILE");
    return;
  }
  const messages = chatMessages(s.history, s.system);
  const text = s.tokenizer.template.render(messages, false);
  try {
    writeFileAtomic(file, [JSON.stringify({ messages, text }) + "\n"]);
    console.log(`(saved to ${file})`);
  } catch (err) {
    // The conversation is worth more than the file: say why and keep chatting.
    const code = (err as NodeJS.ErrnoException).code;
    console.log(`(not saved: cannot write ${file}${code ? ` (${code})` : ""}; try another path)`);
  }
}

/** The model's reply to `text`, streamed (or the best of N by the reward model), added to the history. */
async function answer(s: ChatSession, text: string): Promise<undefined> {
  s.history.push({ role: "prompter", text });
  // Drop the oldest exchanges until the prompt leaves room for the reply.
  let ids = await s.tokenizer.encodeChatPrompt(chatMessages(s.history, s.system));
  while (ids.length + s.params.maxNewTokens > s.context && s.history.length > 1) {
    s.history = s.history.slice(2);
    ids = await s.tokenizer.encodeChatPrompt(chatMessages(s.history, s.system));
  }
  if (s.scorer) {
    const best = await bestReply(s.engine, s.scorer, ids, s.params, chatMessages(s.history, s.system), s.bestOf);
    s.history.push({ role: "assistant", text: best });
    return;
  }
  s.reply = s.engine.submit({ promptIds: ids, params: s.params, onToken: (e) => process.stdout.write(e.text) });
  const r = await s.reply.result;
  s.reply = undefined;
  process.stdout.write(r.finishReason === "cancelled" ? " (stopped)\n" : "\n");
  s.history.push({ role: "assistant", text: r.text });
}

/** N sampled replies (seeds seed, seed + 1, ...), the reward model's choice printed with every reward. */
async function bestReply(
  engine: Engine,
  scorer: RewardScorer,
  ids: number[],
  params: SamplingParams,
  context: ChatTurn[],
  n: number,
): Promise<string> {
  const seed = params.seed ?? Math.floor(Math.random() * 2 ** 31);
  const sample = (i: number) => engine.submit({ promptIds: ids, params: { ...params, seed: seed + i } }).result;
  const texts = await Promise.all(Array.from({ length: n }, (_, i) => sample(i).then((r) => r.text)));
  const rewards = await scorer.score(context, texts);
  const best = rewards.indexOf(Math.max(...rewards));
  console.log(texts[best]);
  const all = rewards.map((r) => r.toFixed(3)).join(", ");
  console.log(`(best of ${n}: reward ${rewards[best]!.toFixed(3)}; all: ${all})`);
  return texts[best]!;
}

const CHAT_HELP = [
  "/reset      forget the conversation",
  "/save FILE  write the conversation (messages and the rendered text) as JSON",
  "/help       this list",
  "/exit       leave (also /quit, Ctrl-D)",
  "//text      send a message that starts with /",
].join("\n");

export type ChatCommand =
  | { kind: "exit" }
  | { kind: "reset" }
  | { kind: "help" }
  | { kind: "save"; file: string }
  | { kind: "unknown"; name: string }
  | { kind: "message"; text: string };

/** A typed line: one of the commands, an unknown /command (never sent to the model), or a message. */
export function chatCommand(line: string): ChatCommand {
  if (line.startsWith("//")) return { kind: "message", text: line.slice(1) };
  if (!line.startsWith("/")) return { kind: "message", text: line };
  const [name = "", ...rest] = line.split(/\s+/);
  if (name === "/exit" || name === "/quit") return { kind: "exit" };
  if (name === "/reset") return { kind: "reset" };
  if (name === "/help" || name === "/?") return { kind: "help" };
  if (name === "/save") return { kind: "save", file: rest.join(" ") };
  return { kind: "unknown", name };
}
