// Reading dataset files in their published formats: JSON Lines (optionally gzipped), a JSON array,
// Parquet (Hugging Face's hub format), and plain text. Every record keeps its origin (file and line or
// row) so that a loader can name exactly what was wrong with it.
import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import { parquetReadObjects } from "hyparquet";

/** A record and where it came from: "file:line" for JSONL, "file[row]" for JSON arrays and Parquet. */
export interface SourcedRecord {
  value: unknown;
  where: string;
}

/** A dataset record that is not what its loader expects. The message names the file, line and field. */
export class DataError extends Error {
  constructor(where: string, message: string) {
    super(`${where}: ${message}`);
    this.name = "DataError";
  }
}

/**
 * A file's text. A damaged .gz is an error naming the file; bytes that are not UTF-8 are an error
 * naming the file and line (they would silently become U+FFFD in training text otherwise).
 */
function readText(path: string): string {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new DataError(path, `cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (path.endsWith(".gz")) {
    try {
      bytes = gunzipSync(bytes);
    } catch (err) {
      throw new DataError(path, `not a complete gzip file (${(err as Error).message}); was the download cut short?`);
    }
  }
  try {
    return STRICT_UTF8.decode(bytes);
  } catch {
    const bad = firstInvalidUtf8(bytes);
    const line = bytes.subarray(0, bad).reduce((n, b) => n + (b === 0x0a ? 1 : 0), 1);
    throw new DataError(`${path}:${line}`, `bytes that are not UTF-8 (at byte ${bad}); re-encode the file as UTF-8`);
  }
}

const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true });

/** The offset of the first byte that does not start or continue a valid UTF-8 sequence. */
function firstInvalidUtf8(bytes: Uint8Array): number {
  for (let i = 0; i < bytes.length;) {
    const b = bytes[i]!;
    const n = b < 0x80 ? 1 : b >= 0xc2 && b < 0xe0 ? 2 : b >= 0xe0 && b < 0xf0 ? 3 : b >= 0xf0 && b < 0xf5 ? 4 : 0;
    if (n === 0) return i;
    try {
      STRICT_UTF8.decode(bytes.subarray(i, i + n));
    } catch {
      return i;
    }
    i += n;
  }
  return bytes.length;
}

export function readJsonl(path: string): SourcedRecord[] {
  const out: SourcedRecord[] = [];
  readText(path)
    .split("\n")
    .forEach((line, i) => {
      if (!line.trim()) return;
      const where = `${path}:${i + 1}`;
      try {
        out.push({ value: JSON.parse(line), where });
      } catch (err) {
        throw new DataError(where, `not valid JSON (${(err as Error).message})`);
      }
    });
  return out;
}

export function readJsonArray(path: string): SourcedRecord[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readText(path));
  } catch (err) {
    throw new DataError(path, `not valid JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(parsed)) throw new DataError(path, "expected a JSON array of records");
  return parsed.map((value, i) => ({ value, where: `${path}[${i}]` }));
}

export async function readParquet(path: string): Promise<SourcedRecord[]> {
  const bytes = readFileSync(path);
  const file = {
    byteLength: bytes.byteLength,
    slice: (s: number, e?: number) =>
      bytes.buffer.slice(bytes.byteOffset + s, bytes.byteOffset + (e ?? bytes.byteLength)),
  };
  let rows: Array<Record<string, unknown>>;
  try {
    rows = await parquetReadObjects({ file, rowFormat: "object" });
  } catch (err) {
    throw new DataError(path, `not a readable Parquet file (${(err as Error).message})`);
  }
  return rows.map((value, i) => ({ value: normaliseParquet(value), where: `${path}[row ${i}]` }));
}

/** Parquet gives BigInt for int64 columns; dataset records want plain numbers. */
function normaliseParquet(v: unknown): unknown {
  if (typeof v === "bigint") return Number(v);
  if (Array.isArray(v)) return v.map(normaliseParquet);
  if (v && typeof v === "object" && !(v instanceof Uint8Array) && !(v instanceof Date)) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normaliseParquet(x)]));
  }
  return v;
}

/** Plain text, one segment per line (parallel corpora such as WMT's txt/ files). */
export function readLines(path: string): string[] {
  const lines = readText(path).split("\n");
  if (lines.at(-1) === "") lines.pop();
  return lines;
}

/** Any record file, by extension: .jsonl[.gz], .json[.gz] (an array, or JSON Lines), .parquet. */
export async function readRecords(path: string): Promise<SourcedRecord[]> {
  const p = path.replace(/\.gz$/, "");
  if (p.endsWith(".parquet")) return readParquet(path);
  if (p.endsWith(".jsonl")) return readJsonl(path);
  if (p.endsWith(".json")) {
    // Some ".json" dataset files are JSON Lines; an array starts with '['.
    const head = readText(path).trimStart()[0];
    return head === "[" ? readJsonArray(path) : readJsonl(path);
  }
  throw new DataError(path, "unknown file type: expected .jsonl, .jsonl.gz, .json or .parquet");
}

/** The records of several files, in order. */
export async function readAllRecords(files: string[]): Promise<SourcedRecord[]> {
  const out: SourcedRecord[] = [];
  for (const f of files) out.push(...(await readRecords(f)));
  return out;
}

// ----- field access with errors that name the record and the field ----------------------------

import type { Json } from "../util/config-error.js";
export type { Json };

export function asObject(r: SourcedRecord): Json {
  if (!r.value || typeof r.value !== "object" || Array.isArray(r.value))
    throw new DataError(r.where, "expected a JSON object");
  return r.value as Json;
}

export function stringField(obj: Json, field: string, where: string, opts: { optional?: boolean } = {}): string {
  const v = getPath(obj, field);
  if (v === undefined || v === null) {
    if (opts.optional) return "";
    throw new DataError(where, `missing field '${field}' (expected a string)`);
  }
  if (typeof v !== "string") throw new DataError(where, `field '${field}' must be a string, got ${typeof v}`);
  return v;
}

/** `a.b.c` paths into nested objects. */
export function getPath(obj: Json, path: string): unknown {
  let v: unknown = obj;
  for (const k of path.split(".")) {
    if (!v || typeof v !== "object") return undefined;
    v = (v as Json)[k];
  }
  return v;
}
