// `oasft chat --model DIR`: a terminal chat in the OA format with streamed replies.
import { createInterface } from "node:readline/promises";
import { writeFileSync } from "node:fs";
import { loadCausalLM } from "../../models/index.js";
import { Engine } from "../../generate/engine.js";
import { formatPrompt } from "../../sft/format.js";
import { ChatTokenizer } from "../../tokenizer/index.js";
import { intFlag, parseFlags, required } from "../args.js";
import type { Command } from "../main.js";

const USAGE = `usage: oasft chat --model DIR [--system TEXT] [--max-new-tokens 256] [--context 2048]
                  [--temperature 0] [--top-p 1] [--top-k 0] [--repetition-penalty 1] [--seed N]

  Commands while chatting: /reset (forget the conversation), /save FILE (the conversation as one
  OA-format JSONL line), /exit. Older turns are dropped when the prompt would exceed --context tokens.`;

type Turn = { role: "prompter" | "assistant"; text: string };

export const command: Command = {
  async run(argv) {
    const { values } = parseFlags(argv, {
      model: { type: "string" }, system: { type: "string" }, "max-new-tokens": { type: "string" }, context: { type: "string" },
      temperature: { type: "string" }, "top-p": { type: "string" }, "top-k": { type: "string" }, "repetition-penalty": { type: "string" }, seed: { type: "string" },
    }, USAGE);
    const dir = required(values, "model", USAGE);
    const tokenizer = ChatTokenizer.load(dir);
    const model = loadCausalLM(dir);
    const engine = new Engine(model, tokenizer, { maxBatch: 1 });
    const system = values.system as string | undefined;
    const maxNew = intFlag(values, "max-new-tokens", 256);
    const context = intFlag(values, "context", 2048);
    const temperature = Number(values.temperature ?? 0);
    const params = {
      maxNewTokens: maxNew, doSample: temperature > 0, temperature,
      ...(values["top-p"] ? { topP: Number(values["top-p"]) } : {}), ...(values["top-k"] ? { topK: Number(values["top-k"]) } : {}),
      ...(values["repetition-penalty"] ? { repetitionPenalty: Number(values["repetition-penalty"]) } : {}), ...(values.seed ? { seed: Number(values.seed) } : {}),
    };
    let history: Turn[] = [];
    const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY });
    console.log(`oasft chat: ${dir} (/reset, /save FILE, /exit)`);
    try {
      for (;;) {
        let line: string;
        try {
          line = (await rl.question("> ")).trim();
        } catch {
          break; // stdin closed
        }
        if (!line) continue;
        if (line === "/exit" || line === "/quit") break;
        if (line === "/reset") { history = []; console.log("(conversation cleared)"); continue; }
        if (line.startsWith("/save")) {
          const file = line.slice(5).trim();
          if (!file) { console.log("usage: /save FILE"); continue; }
          const text = (system !== undefined ? `<|system|>${system}${tokenizer.eos}` : "") + history.map((t) => `${t.role === "prompter" ? "<|prompter|>" : "<|assistant|>"}${t.text}${tokenizer.eos}`).join("");
          writeFileSync(file, JSON.stringify({ messages: [...(system !== undefined ? [{ role: "system", content: system }] : []), ...history.map((t) => ({ role: t.role === "prompter" ? "user" : "assistant", content: t.text }))], text }) + "\n");
          console.log(`(saved to ${file})`);
          continue;
        }
        history.push({ role: "prompter", text: line });
        // Drop the oldest exchanges until the prompt leaves room for the reply.
        let ids = await tokenizer.encode(formatPrompt(history, tokenizer.eos, system));
        while (ids.length + maxNew > context && history.length > 1) {
          history = history.slice(2);
          ids = await tokenizer.encode(formatPrompt(history, tokenizer.eos, system));
        }
        const r = await engine.submit({ promptIds: ids, params, onToken: (e) => process.stdout.write(e.text) }).result;
        process.stdout.write("\n");
        history.push({ role: "assistant", text: r.text });
      }
    } finally {
      rl.close();
      model.dispose();
    }
    return 0;
  },
};
