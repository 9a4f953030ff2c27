// Reading HF config.json values with errors that name the file and the key.

export class ConfigError extends Error {
  constructor(readonly file: string, readonly key: string, what: string) {
    super(`${file} › ${key}: ${what}`);
    this.name = "ConfigError";
  }
}

export function readNumber(json: Record<string, unknown>, file: string, key: string, fallback: number): number {
  const v = json[key];
  if (v === undefined) return fallback;
  if (typeof v !== "number" || !Number.isFinite(v)) throw new ConfigError(file, key, `expected a number, got ${JSON.stringify(v)}`);
  return v;
}

export function readInt(json: Record<string, unknown>, file: string, key: string, fallback: number): number {
  const v = readNumber(json, file, key, fallback);
  if (!Number.isInteger(v)) throw new ConfigError(file, key, `expected an integer, got ${v}`);
  return v;
}

export function readOptionalInt(json: Record<string, unknown>, file: string, key: string, fallback: number | null): number | null {
  if (json[key] === null) return null;
  return json[key] === undefined ? fallback : readInt(json, file, key, 0);
}

export function readBool(json: Record<string, unknown>, file: string, key: string, fallback: boolean): boolean {
  const v = json[key];
  if (v === undefined) return fallback;
  if (typeof v !== "boolean") throw new ConfigError(file, key, `expected true or false, got ${JSON.stringify(v)}`);
  return v;
}

export interface RopeScalingConfig {
  type: "linear" | "dynamic";
  factor: number;
}

/** HF's rope_scaling: null, or {type: "linear" | "dynamic", factor > 1} (both keys required, as HF validates). */
export function readRopeScaling(json: Record<string, unknown>, file: string): RopeScalingConfig | null {
  const v = json.rope_scaling;
  if (v === undefined || v === null) return null;
  if (typeof v !== "object" || Array.isArray(v)) throw new ConfigError(file, "rope_scaling", `expected null or {"type", "factor"}, got ${JSON.stringify(v)}`);
  const o = v as Record<string, unknown>;
  const type = o.type ?? o.rope_type;
  if (type !== "linear" && type !== "dynamic") {
    throw new ConfigError(file, "rope_scaling.type", `expected "linear" or "dynamic", got ${JSON.stringify(type)}`);
  }
  const factor = o.factor;
  if (typeof factor !== "number" || !Number.isFinite(factor) || factor <= 1) {
    throw new ConfigError(file, "rope_scaling.factor", `expected a number > 1, got ${JSON.stringify(factor)}`);
  }
  return { type, factor };
}
