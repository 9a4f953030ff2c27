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
  conversation as one JSONL line: its messages and rendered text), /help, /exit; //text sends a message that starts with "/", and any other
  /command is refused (never sent). Older turns are dropped when the prompt would exceed --context tokens.`;

import type { Turn } from "../../sft/format.js";

export const command: Command = {
  async run(argv) {
    const { values } = parseFlags(
      argv,
      {
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
      },
      USAGE,
    );
    const dir = resolveModelDir(required(values, "model", USAGE), "--model");
    const { device, dtype } = placement(values);
    const { model, tokenizer } = loadForInference(values, dir, { device, dtype });
    const bestOf = intFlag(values, "best-of", 1);
    if (bestOf > 1 && !values["reward-model"]) {
      throw new UsageError("--best-of needs --reward-model DIR (what scores the replies)");
    }
    if (bestOf > 1 && !(Number(values.temperature ?? 0) > 0)) {
      throw new UsageError("--best-of needs --temperature > 0 (greedy replies are all the same)");
    }
    const rmDir = bestOf > 1 ? resolveModelDir(values["reward-model"] as string, "--reward-model") : undefined;
    const scorer = rmDir ? RewardScorer.load(rmDir, { device }) : undefined;
    const engine = new Engine(model, tokenizer, { maxBatch: bestOf });
    const system = values.system as string | undefined;
    const maxNew = intFlag(values, "max-new-tokens", 256);
    const context = intFlag(values, "context", 2048);
    const temperature = Number(values.temperature ?? 0);
    const params = {
      maxNewTokens: maxNew,
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
      // Name the flag the user typed (top_p → --top-p).
      throw new UsageError(
        `--${(err as Error).message.replace(/^(\w+):/, (_, f: string) => `${f.replaceAll("_", "-")}:`)}`,
      );
    }
    let history: Turn[] = [];
    const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY });
    console.log(`oasft chat: ${dir} (/help lists the commands)`);
    // Lines are read through the async iterator, which buffers them: piped input typed ahead of a
    // reply is not lost while the model is generating.
    const prompt = () => process.stdout.write("> ");
    // Ctrl-C while a reply streams stops that reply (back to the prompt); at the prompt it ends the chat.
    let reply: GenerationHandle | undefined;
    let exitCode = 0;
    const onInterrupt = () => {
      if (reply) {
        reply.cancel();
        return;
      }
      process.stdout.write("\n");
      exitCode = 130;
      rl.close();
    };
    rl.on("SIGINT", onInterrupt);
    process.on("SIGINT", onInterrupt);
    try {
      prompt();
      for await (const raw of rl) {
        const line = raw.trim();
        if (!line) {
          prompt();
          continue;
        }
        const command = chatCommand(line);
        if (command.kind === "exit") break;
        if (command.kind === "help") {
          console.log(CHAT_HELP);
          prompt();
          continue;
        }
        if (command.kind === "unknown") {
          console.log(`(unknown command ${command.name}; /help lists them, //text sends "/text")`);
          prompt();
          continue;
        }
        if (command.kind === "reset") {
          history = [];
          console.log("(conversation cleared)");
          prompt();
          continue;
        }
        if (command.kind === "save") {
          const file = command.file;
          if (!file) {
            console.log("usage: /save FILE");
            prompt();
            continue;
          }
          const messages = chatMessages(history, system);
          const text = tokenizer.template.render(messages, false);
          try {
            writeFileAtomic(file, [JSON.stringify({ messages, text }) + "\n"]);
            console.log(`(saved to ${file})`);
          } catch (err) {
            // The conversation is worth more than the file: say why and keep chatting.
            const code = (err as NodeJS.ErrnoException).code;
            console.log(`(not saved: cannot write ${file}${code ? ` (${code})` : ""}; try another path)`);
          }
          prompt();
          continue;
        }
        if (command.kind !== "message") continue;
        history.push({ role: "prompter", text: command.text });
        // Drop the oldest exchanges until the prompt leaves room for the reply.
        let ids = await tokenizer.encodeChatPrompt(chatMessages(history, system));
        while (ids.length + maxNew > context && history.length > 1) {
          history = history.slice(2);
          ids = await tokenizer.encodeChatPrompt(chatMessages(history, system));
        }
        if (scorer) {
          const text = await bestReply(engine, scorer, ids, params, chatMessages(history, system), bestOf);
          history.push({ role: "assistant", text });
          prompt();
          continue;
        }
        reply = engine.submit({ promptIds: ids, params, onToken: (e) => process.stdout.write(e.text) });
        const r = await reply.result;
        reply = undefined;
        process.stdout.write(r.finishReason === "cancelled" ? " (stopped)\n" : "\n");
        history.push({ role: "assistant", text: r.text });
        prompt();
      }
    } finally {
      process.off("SIGINT", onInterrupt);
      rl.close();
      model.dispose();
      scorer?.dispose();
    }
    return exitCode;
  },
};

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
