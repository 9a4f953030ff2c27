// The SFT config: the key table's groups (config-keys*.ts) as one flat set of keys, as TRL's SFTConfig,
// composed from OA-style YAML files of named blocks:  --configs defaults bloom-zh-3b datasets
// merges the blocks shallowly in order (a later block's value replaces, lists included), then
// `--key value` flags override, typed by the key. Unknown keys and wrong types are errors naming the
// key, the block and the file.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";
import { editDistance } from "../util/registry.js";
import { ConfigError } from "../util/config-error.js";
import { describeRange, keepsRule } from "../util/validate.js";
import { MIX_OPTIONS, parseDatasetEntries, type DatasetEntry } from "../data/mix.js";
import { datasetLoader } from "../data/registry.js";
import { DATA_KEYS, FORMAT_KEYS, MODEL_KEYS, type KeySpec } from "./config-keys.js";
import { KEY_GROUPS, LORA_KEYS, OA_KEYS, OPTIM_KEYS, PARALLEL_KEYS, PREF_KEYS, RUN_KEYS } from "./config-keys-train.js";

export { KEY_GROUPS } from "./config-keys-train.js";

/** Every key: the groups' tables as one flat table, as OA's YAML blocks name them. */
export const CONFIG_KEYS = {
  ...MODEL_KEYS,
  ...DATA_KEYS,
  ...FORMAT_KEYS,
  ...OPTIM_KEYS,
  ...PARALLEL_KEYS,
  ...RUN_KEYS,
  ...LORA_KEYS,
  ...PREF_KEYS,
  ...OA_KEYS,
} as const;

export type ConfigKey = keyof typeof CONFIG_KEYS;

/** The TypeScript type of one key's value, read from its spec (type, choices, nullable). */
type ValueOf<S> =
  | (S extends { type: "number" | "integer" }
      ? number
      : S extends { type: "boolean" }
        ? boolean
        : S extends { type: "list" }
          ? unknown[]
          : S extends { type: "map" }
            ? Record<string, unknown>
            : S extends { choices: readonly (infer C)[] }
              ? C
              : string)
  | (S extends { nullable: true } ? null : never);

/** The effective config: every key of CONFIG_KEYS, typed from its entry there (the one key table). */
export type SFTConfig = { -readonly [K in ConfigKey]: ValueOf<(typeof CONFIG_KEYS)[K]> };

export type KeyGroup = keyof typeof KEY_GROUPS;

/**
 * The keys of some groups, typed as in SFTConfig: what a component reads. A component typed with
 * Settings<"optim" | "model"> cannot read another group's key; the whole config still fits it.
 */
export type Settings<G extends KeyGroup> = { -readonly [K in GroupKeys<G>]: SFTConfig[K] };
type GroupKeys<G extends KeyGroup> = G extends KeyGroup ? keyof (typeof KEY_GROUPS)[G] & ConfigKey : never;

export { ConfigError } from "../util/config-error.js";

const SPECS = CONFIG_KEYS as Record<string, KeySpec>;

/** The package's own configs/ folder. */
export const BUILTIN_CONFIG_DIR = resolve(fileURLToPath(import.meta.url), "../../../../configs");

export interface ConfigBlock {
  values: Record<string, unknown>;
  file: string;
}

/**
 * Every named block of every *.yaml file in the folders (the built-in configs/ first, then the
 * working folder's configs/ when it exists). A name defined twice in one folder is an error; a
 * user's block replaces a built-in one of the same name.
 */
export function readConfigBlocks(dirs: string[] = defaultConfigDirs()): Map<string, ConfigBlock> {
  const blocks = new Map<string, ConfigBlock>();
  for (const dir of dirs) {
    if (!existsSync(dir)) throw new ConfigError(`config folder ${dir} not found`);
    const inDir = new Map<string, string>();
    for (const name of readdirSync(dir)
      .filter((f) => /\.ya?ml$/.test(f))
      .sort()) {
      const file = join(dir, name);
      let doc: unknown;
      try {
        doc = parseYaml(readFileSync(file, "utf8"));
      } catch (err) {
        throw new ConfigError(`${file}: not valid YAML (${(err as Error).message})`);
      }
      if (doc === null || doc === undefined) continue;
      if (typeof doc !== "object" || Array.isArray(doc))
        throw new ConfigError(`${file}: expected named blocks at the top level (name: {key: value})`);
      for (const [block, values] of Object.entries(doc as Record<string, unknown>)) {
        if (!values || typeof values !== "object" || Array.isArray(values))
          throw new ConfigError(`${file}: block '${block}' must be a map of keys`);
        if (inDir.has(block))
          throw new ConfigError(`block '${block}' is defined in both ${inDir.get(block)} and ${file}`);
        inDir.set(block, file);
        blocks.set(block, { values: values as Record<string, unknown>, file });
      }
    }
  }
  return blocks;
}

export function defaultConfigDirs(): string[] {
  const local = resolve("configs");
  return existsSync(local) && local !== BUILTIN_CONFIG_DIR ? [BUILTIN_CONFIG_DIR, local] : [BUILTIN_CONFIG_DIR];
}

/** A value checked against its key's type; numbers written as strings ("1e-5", PyYAML's habit) become numbers. */
export function coerceValue(key: string, value: unknown, where: string): unknown {
  const spec = SPECS[key];
  if (!spec) {
    const close = Object.keys(SPECS).filter((k) => k.includes(key) || key.includes(k) || editDistance(k, key) <= 2);
    throw new ConfigError(
      `${where}: unknown key '${key}'.${close.length ? ` Did you mean: ${close.join(", ")}?` : ""}`,
    );
  }
  if (value === null) {
    if (spec.nullable) return null;
    throw new ConfigError(`${where}: key '${key}' cannot be null (expected ${spec.type})`);
  }
  const bad = () =>
    new ConfigError(
      `${where}: key '${key}' expects ${spec.type}${spec.choices ? ` (one of ${spec.choices.join(", ")})` : ""}, ` +
        `got ${JSON.stringify(value)}`,
    );
  switch (spec.type) {
    case "number":
    case "integer": {
      const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
      if (typeof n !== "number" || !Number.isFinite(n) || (spec.type === "integer" && !Number.isInteger(n)))
        throw bad();
      const r = spec.range;
      if (r && !keepsRule(n, r)) throw new ConfigError(`${where}: key '${key}' must be ${describeRange(r)}, got ${n}`);
      return n;
    }
    case "boolean":
      if (typeof value === "boolean") return value;
      if (typeof value === "string" && /^(true|yes|1|false|no|0)$/i.test(value)) return /^(true|yes|1)$/i.test(value);
      throw bad();
    case "string":
      if (typeof value !== "string" && typeof value !== "number") throw bad();
      if (spec.choices && !spec.choices.includes(String(value))) throw bad();
      return String(value);
    case "list":
      if (!Array.isArray(value)) throw bad();
      return value;
    case "map":
      if (!value || typeof value !== "object" || Array.isArray(value)) throw bad();
      return value;
  }
}

/** "≥ 1", "> 0", "in [0, 1]", "in [0, 1)" */
export interface ComposedConfig {
  config: SFTConfig;
  /** For each key, where its value came from ("default", "block X (file)", "--flag"). */
  origin: Record<string, string>;
  /** Notes on set keys oasft does not act on. */
  notes: string[];
}

/**
 * OA's composition: defaults, then each named block in order (comma lists allowed), then flags
 * `--key value` / `--key=value` / `--no-key` (null). Returns the effective config.
 */
export function composeConfig(names: string[], flags: string[] = [], blocks = readConfigBlocks()): ComposedConfig {
  const config: Record<string, unknown> = {};
  const origin: Record<string, string> = {};
  // Every problem is collected and reported at once, so that one run shows all the typos.
  const errors: string[] = [];
  const set = (key: string, value: unknown, where: string, from: string) => {
    try {
      config[key] = coerceValue(key, value, where);
      origin[key] = from;
    } catch (err) {
      errors.push((err as Error).message);
    }
  };
  for (const [k, spec] of Object.entries(SPECS)) {
    config[k] = spec.default;
    origin[k] = "default";
  }
  for (const name of names
    .flatMap((n) => n.split(","))
    .map((n) => n.trim())
    .filter(Boolean)) {
    const block = blocks.get(name);
    if (!block) {
      errors.push(`config block '${name}' not found; known blocks: ${[...blocks.keys()].sort().join(", ")}`);
      continue;
    }
    for (const [k, v] of Object.entries(block.values))
      set(k, v, `${block.file} › ${name}`, `block ${name} (${block.file})`);
  }
  for (let i = 0; i < flags.length; i++) {
    const flag = flags[i]!;
    if (!flag.startsWith("--")) {
      errors.push(`unexpected argument '${flag}' (config overrides are --key value)`);
      continue;
    }
    const eq = flag.indexOf("=");
    let key = (eq >= 0 ? flag.slice(2, eq) : flag.slice(2)).replaceAll("-", "_");
    if (key.startsWith("no_") && !(key in SPECS) && key.slice(3) in SPECS && eq < 0) {
      key = key.slice(3);
      set(key, null, `--no-${key}`, `--no-${key}`);
      continue;
    }
    const spec = SPECS[key];
    let raw: string | undefined = eq >= 0 ? flag.slice(eq + 1) : flags[i + 1];
    if (spec?.type === "boolean" && eq < 0 && (raw === undefined || raw.startsWith("--"))) raw = "true";
    else if (eq < 0) i++;
    if (raw === undefined) {
      errors.push(`--${key}: missing value`);
      continue;
    }
    let value: unknown = raw;
    if (spec?.type === "list" || spec?.type === "map") {
      try {
        value = parseYaml(raw);
      } catch {
        errors.push(`--${key}: expected a YAML/JSON ${spec.type}, got '${raw}'`);
        continue;
      }
    }
    set(key, value, `--${key}`, `--${key}`);
  }
  errors.push(...nestedProblems(config, origin));
  if (errors.length)
    throw new ConfigError(
      errors.length === 1 ? errors[0]! : `${errors.length} problems in the config:\n  ${errors.join("\n  ")}`,
    );
  const notes = Object.entries(SPECS)
    .filter(([k, spec]) => spec.unsupported && JSON.stringify(config[k]) !== JSON.stringify(spec.default))
    .map(
      ([k, spec]) =>
        `${k} = ${JSON.stringify(config[k])} is ignored by oasft: ${spec.unsupported} (set in ${origin[k]})`,
    );
  return { config: config as SFTConfig, origin, notes };
}

/** The keys of a peft_config block (PEFT's LoraConfig fields oasft reads). */
export const PEFT_CONFIG_KEYS = [
  "r",
  "lora_alpha",
  "lora_dropout",
  "target_modules",
  "bias",
  "modules_to_save",
  "task_type",
  "peft_type",
];

/**
 * Problems one level down, found with the top level's, so that one run shows every typo: unknown
 * peft_config keys, unknown dataset names and every unknown option of every dataset entry.
 */
function nestedProblems(config: Record<string, unknown>, origin: Record<string, string>): string[] {
  const problems: string[] = [];
  const peft = config.peft_config as Record<string, unknown> | null;
  const badPeft = Object.keys(peft ?? {}).filter((k) => !PEFT_CONFIG_KEYS.includes(k));
  if (badPeft.length) {
    const known = PEFT_CONFIG_KEYS.filter((k) => k !== "peft_type").join(", ");
    problems.push(`peft_config (${origin.peft_config}): unknown key(s) ${badPeft.join(", ")}; expected ${known}`);
  }
  for (const key of ["datasets", "datasets_extra"] as const) {
    let entries: DatasetEntry[];
    try {
      entries = parseDatasetEntries(config[key], key);
    } catch (err) {
      problems.push((err as Error).message);
      continue;
    }
    for (const entry of entries) {
      let loader;
      try {
        loader = datasetLoader(entry.name);
      } catch (err) {
        problems.push(`${key} (${origin[key]}): ${(err as Error).message}`);
        continue;
      }
      const allowed = { ...loader.options, ...MIX_OPTIONS };
      const unknown = Object.keys(entry.options).filter((k) => !(k in allowed));
      if (unknown.length) {
        const known = Object.keys(allowed).sort().join(", ");
        problems.push(
          `dataset ${entry.name} (${origin[key]}): unknown option(s) ${unknown.join(", ")}. Known options: ${known}`,
        );
      }
    }
  }
  return problems;
}

/**
 * Every key as help text, grouped as the table: `--key <type> (default: value)  meaning`, plus what
 * the key's range or choices are, and a mark on keys oasft accepts but does not act on.
 */
export function configKeysHelp(): string {
  const row = ([key, spec]: [string, KeySpec]) => {
    const type = spec.choices ? spec.choices.join("|") : spec.type;
    const bounds = spec.range ? ` ${describeRange(spec.range)}` : "";
    const value =
      typeof spec.default === "string" && spec.default.length > 40
        ? `"${spec.default.slice(0, 37)}..."`
        : JSON.stringify(spec.default);
    const note = spec.unsupported ? ` [accepted, not acted on: ${spec.unsupported}]` : "";
    return { flag: `--${key} <${type}${bounds}>`, text: `${spec.doc} (default ${value})${note}` };
  };
  const groups = Object.entries(KEY_GROUPS).map(([g, keys]) => ({
    g,
    rows: Object.entries(keys as Record<string, KeySpec>).map(row),
  }));
  const width = Math.min(48, Math.max(...groups.flatMap((x) => x.rows.map((r) => r.flag.length))));
  return groups
    .map(({ g, rows }) => [`  ${g}:`, ...rows.map((r) => `    ${r.flag.padEnd(width)}  ${r.text}`)].join("\n"))
    .join("\n");
}

/** Splits argv into `--configs a b c` names and the remaining override flags. */
export function splitConfigArgs(argv: string[]): { names: string[]; rest: string[] } {
  const names: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--configs") {
      while (i + 1 < argv.length && !argv[i + 1]!.startsWith("--")) names.push(argv[++i]!);
    } else rest.push(argv[i]!);
  }
  return { names, rest };
}
