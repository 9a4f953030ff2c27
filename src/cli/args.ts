// Strict flag parsing for commands: unknown flags and bad values are errors that name the flag.
import { parseArgs, type ParseArgsConfig } from "node:util";

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

type Options = NonNullable<ParseArgsConfig["options"]>;

export function parseFlags<O extends Options>(argv: string[], options: O, usage: string): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  try {
    const parsed = parseArgs({ args: argv, options: { ...options, help: { type: "boolean", short: "h" } }, strict: true, allowPositionals: true });
    const values = parsed.values as Record<string, string | boolean | undefined>;
    const positionals = parsed.positionals;
    if (values.help) {
      console.log(usage);
      process.exit(0);
    }
    return { values, positionals };
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`${(err as Error).message}\n\n${usage}`);
  }
}

export function required(values: Record<string, unknown>, flag: string, usage: string): string {
  const v = values[flag];
  if (typeof v !== "string" || v === "") throw new UsageError(`--${flag} is required\n\n${usage}`);
  return v;
}

export function intFlag(values: Record<string, unknown>, flag: string, fallback: number, min = 1): number {
  const v = values[flag];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${flag}: expected an integer ≥ ${min}, got '${String(v)}'`);
  return n;
}

