// Strict flag parsing for commands: unknown flags and bad values are errors that name the flag.
import { parseArgs, type ParseArgsConfig } from "node:util";
import { editDistance } from "../util/registry.js";

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

type Options = NonNullable<ParseArgsConfig["options"]>;

export function parseFlags<O extends Options>(
  argv: string[],
  options: O,
  usage: string,
): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  try {
    const parsed = parseArgs({
      args: argv,
      options: { ...options, help: { type: "boolean", short: "h" } },
      strict: true,
      allowPositionals: true,
    });
    const values = parsed.values as Record<string, string | boolean | undefined>;
    const positionals = parsed.positionals;
    if (values.help) {
      console.log(usage);
      process.exit(0);
    }
    return { values, positionals };
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`${withSuggestion((err as Error).message, Object.keys(options))}\n\n${usage}`);
  }
}

/** Adds "Did you mean --x?" to node:util's "Unknown option '--y'" when a known flag is close. */
function withSuggestion(message: string, flags: string[]): string {
  const m = /Unknown option '--([^']+)'/.exec(message);
  if (!m) return message;
  const typed = m[1]!;
  const close = flags.filter(
    (f) => editDistance(f, typed) <= Math.max(2, Math.floor(typed.length / 4)) || f.startsWith(typed),
  );
  return `unknown flag --${typed}${close.length ? `. Did you mean: ${close.map((f) => `--${f}`).join(", ")}?` : ""}`;
}

export function required(values: Record<string, unknown>, flag: string, usage: string): string {
  const v = values[flag];
  if (typeof v !== "string" || v === "") throw new UsageError(`--${flag} is required\n\n${usage}`);
  return v;
}

export function intFlag(
  values: Record<string, unknown>,
  flag: string,
  fallback: number,
  min = 1,
  max = Number.MAX_SAFE_INTEGER,
): number {
  const v = values[flag];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `from ${min} to ${max}`;
    throw new UsageError(`--${flag}: expected an integer ${range}, got '${String(v)}'`);
  }
  return n;
}
