// Reading HF config.json values with errors that name the file and the key.

export { ConfigError } from "../util/config-error.js";
import { ConfigError } from "../util/config-error.js";
import { describeNumber, keepsRule } from "../util/validate.js";

export function readNumber(json: Record<string, unknown>, file: string, key: string, fallback: number): number {
  const v = json[key];
  if (v === undefined) return fallback;
  if (!keepsRule(v, {})) throw new ConfigError(file, key, `expected ${describeNumber({})}, got ${JSON.stringify(v)}`);
  return v;
}

export function readInt(json: Record<string, unknown>, file: string, key: string, fallback: number): number {
  const v = readNumber(json, file, key, fallback);
  const rule = { integer: true };
  if (!keepsRule(v, rule)) throw new ConfigError(file, key, `expected ${describeNumber(rule)}, got ${v}`);
  return v;
}

export function readOptionalInt(
  json: Record<string, unknown>,
  file: string,
  key: string,
  fallback: number | null,
): number | null {
  if (json[key] === null) return null;
  return json[key] === undefined ? fallback : readInt(json, file, key, 0);
}

export function readBool(json: Record<string, unknown>, file: string, key: string, fallback: boolean): boolean {
  const v = json[key];
  if (v === undefined) return fallback;
  if (typeof v !== "boolean") throw new ConfigError(file, key, `expected true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** HF's rope_scaling, normalised: linear/dynamic (Llama 2 era) or llama3 (Llama 3.1/3.2). */
export type RopeScalingConfig =
  | { type: "linear" | "dynamic"; factor: number }
  | { type: "llama3"; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number };

/**
 * HF's rope_scaling: null, {type: "linear" | "dynamic", factor > 1}, or {rope_type: "llama3", factor,
 * low_freq_factor, high_freq_factor, original_max_position_embeddings}. `type` and `rope_type` are
 * aliases, as in HF's rope_config_validation.
 */
export function readRopeScaling(json: Record<string, unknown>, file: string): RopeScalingConfig | null {
  const v = json.rope_scaling;
  if (v === undefined || v === null) return null;
  if (typeof v !== "object" || Array.isArray(v))
    throw new ConfigError(
      file,
      "rope_scaling",
      `expected null or {"rope_type", "factor", ...}, got ${JSON.stringify(v)}`,
    );
  const o = v as Record<string, unknown>;
  const type = o.rope_type ?? o.type;
  const key = o.rope_type !== undefined ? "rope_scaling.rope_type" : "rope_scaling.type";
  if (type === "default") return null;
  if (type !== "linear" && type !== "dynamic" && type !== "llama3") {
    throw new ConfigError(
      file,
      key,
      `expected "linear", "dynamic" or "llama3", got ${JSON.stringify(type)} (not implemented)`,
    );
  }
  const positive = (name: string, min: number, what: string): number => {
    const x = o[name];
    if (typeof x !== "number" || !Number.isFinite(x) || x <= min)
      throw new ConfigError(file, `rope_scaling.${name}`, `expected ${what}, got ${JSON.stringify(x)}`);
    return x;
  };
  if (type !== "llama3") return { type, factor: positive("factor", 1, "a number > 1") };
  const cfg = {
    type,
    factor: positive("factor", 0, "a number > 0"),
    lowFreqFactor: positive("low_freq_factor", 0, "a number > 0"),
    highFreqFactor: positive("high_freq_factor", 0, "a number > 0"),
    originalMaxPositions: positive("original_max_position_embeddings", 0, "a positive integer"),
  } as const;
  if (cfg.highFreqFactor <= cfg.lowFreqFactor) {
    throw new ConfigError(
      file,
      "rope_scaling.high_freq_factor",
      `must exceed low_freq_factor (${cfg.lowFreqFactor}), got ${cfg.highFreqFactor}`,
    );
  }
  return cfg;
}
