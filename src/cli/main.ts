// The `oasft` command line: one file per command in ./commands, dispatched by name.
import { readFileSync } from "node:fs";
import { UsageError } from "./args.js";
import { Registry } from "../util/registry.js";

export interface Command {
  run(argv: string[]): Promise<number>;
}

/** Each command: its one-line summary (for `oasft --help`) and a lazy loader of its module. */
const commands = new Registry<{ summary: string; load: () => Promise<Command> }>("command");
commands.register("info", {
  summary: "libtorch, BLAS, threads, devices and a measured GEMM rate",
  load: async () => (await import("./commands/info.js")).command,
});
commands.register("init", {
  summary: "a new random-initialised model folder from a config.json",
  load: async () => (await import("./commands/init.js")).command,
});
commands.register("parity", {
  summary: "logits, loss, grads, one AdamW step and greedy tokens of a model, for comparing with HF",
  load: async () => (await import("./commands/parity.js")).command,
});
commands.register("data", {
  summary: "preview, stats and export of a config's SFT data (formatting, masks, truncation)",
  load: async () => (await import("./commands/data.js")).command,
});
commands.register("tokenizer", {
  summary: "train a byte-level BPE tokenizer.json",
  load: async () => (await import("./commands/tokenizer.js")).command,
});
commands.register("train", {
  summary: "supervised fine-tuning with OA's recipe (--configs defaults bloom-zh-3b datasets)",
  load: async () => (await import("./commands/train.js")).command,
});
commands.register("chat", {
  summary: "a terminal chat with a model folder (OA format, streamed)",
  load: async () => (await import("./commands/chat.js")).command,
});
commands.register("serve", {
  summary: "HTTP server: OpenAI and TGI APIs, continuous batching, metrics, a chat page",
  load: async () => (await import("./commands/serve.js")).command,
});
commands.register("eval", {
  summary: "MMLU, BBH and HumanEval pass@k (lm-eval-harness or instruct-eval protocol)",
  load: async () => (await import("./commands/eval.js")).command,
});
commands.register("export", {
  summary: "export a model as one GGUF file for llama.cpp, ollama and LM Studio",
  load: async () => (await import("./commands/export.js")).command,
});
commands.register("merge", {
  summary: "fold a PEFT LoRA adapter into its base model: a plain HF model folder",
  load: async () => (await import("./commands/merge.js")).command,
});
commands.register("demo", {
  summary: "train a small BLOOM on oasst conversations (OA format, assistant-only loss), then ask it a question",
  load: async () => (await import("./commands/demo.js")).command,
});
commands.register("bench", {
  summary: "training / generation throughput (compare with ../shared/bench/peer_torch_bloom.py)",
  load: async () => (await import("./commands/bench.js")).command,
});

function help(): string {
  const width = Math.max(...commands.names().map((n) => n.length));
  return [
    "oasft: Open-Assistant supervised fine-tuning in TypeScript on libtorch",
    "",
    "usage: oasft <command> [flags]   (oasft <command> --help for its flags; oasft --version)",
    "",
    ...commands.names().map((n) => `  ${n.padEnd(width)}  ${commands.get(n).summary}`),
  ].join("\n");
}

/** `oasft --version`: the package's version, Node's, and the libtorch the addon was built against. */
async function version(): Promise<string> {
  const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  let libtorch = "not built";
  try {
    libtorch = (await import("../torch/index.js")).version();
  } catch {
    // The addon is not built yet: the version line still prints.
  }
  return `oasft ${pkg.version} (node ${process.versions.node}, libtorch ${libtorch})`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === "--version" || name === "-V" || name === "version") {
    console.log(await version());
    return 0;
  }
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(help());
    return name ? 0 : 2;
  }
  try {
    const command = await commands.get(name).load();
    return await command.run(rest);
  } catch (err) {
    const e = err as Error;
    console.error(`oasft ${name}: ${e.message}`);
    if (process.env.OASFT_DEBUG) console.error(e.stack);
    return exitCode(err);
  }
}

/** Exit codes, one per kind of failure (documented in the README). */
export const EXIT = { runtime: 1, usage: 2, input: 3 } as const;

// Errors about what the user gave: a config, a data file, a model or checkpoint folder, a template.
// Matched by name, so that this file loads no module that loads libtorch.
const INPUT_ERRORS = new Set([
  "ConfigError",
  "DataError",
  "ChatTemplateError",
  "CheckpointError",
  "LoraError",
  "SafetensorsError",
  "UnknownNameError",
]);

/** 2 for a bad command line (as shells and parsers do), 3 for bad input (config, data, model files), 1 otherwise. */
export function exitCode(err: unknown): number {
  const e = err as Error;
  if (err instanceof UsageError || e?.message?.startsWith("unknown command")) return EXIT.usage;
  return INPUT_ERRORS.has(e?.name) ? EXIT.input : EXIT.runtime;
}
