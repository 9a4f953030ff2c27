// The `oasft` command line: one file per command in ./commands, dispatched by name.
import { UsageError } from "./args.js";
import { Registry } from "../util/registry.js";

export interface Command {
  name: string;
  summary: string;
  run(argv: string[]): Promise<number>;
}

const commands = new Registry<() => Promise<Command>>("command");
commands.register("info", async () => (await import("./commands/info.js")).command);
commands.register("init", async () => (await import("./commands/init.js")).command);
commands.register("parity", async () => (await import("./commands/parity.js")).command);
commands.register("demo", async () => (await import("./commands/demo.js")).command);
commands.register("bench", async () => (await import("./commands/bench.js")).command);

const SUMMARIES: Record<string, string> = {
  info: "libtorch, BLAS, threads, devices and a measured GEMM rate",
  init: "a new random-initialised model folder from a config.json",
  parity: "logits, loss, grads, one AdamW step and greedy tokens of a model, for comparing with HF",
  demo: "train a small BLOOM on oasst conversations (OA format, assistant-only loss), then ask it a question",
  bench: "training / generation throughput (compare with ../shared/bench/peer_torch_bloom.py)",
};

function help(): string {
  const width = Math.max(...commands.names().map((n) => n.length));
  return [
    "oasft: Open-Assistant supervised fine-tuning in TypeScript on libtorch",
    "",
    "usage: oasft <command> [flags]   (oasft <command> --help for its flags)",
    "",
    ...commands.names().map((n) => `  ${n.padEnd(width)}  ${SUMMARIES[n] ?? ""}`),
  ].join("\n");
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(help());
    return name ? 0 : 2;
  }
  try {
    const command = await commands.get(name)();
    return await command.run(rest);
  } catch (err) {
    const e = err as Error;
    if (err instanceof UsageError || e.message.startsWith("unknown command")) {
      console.error(`oasft ${name}: ${e.message}`);
      return 2;
    }
    console.error(`oasft ${name}: ${e.message}`);
    if (process.env.OASFT_DEBUG) console.error(e.stack);
    return 1;
  }
}
