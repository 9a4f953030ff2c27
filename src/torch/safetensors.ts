// The safetensors format (Hugging Face): u64 little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the raw
// little-endian row-major data; offsets are relative to the end of the header.
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { writeAllSync, writeFileAtomicFd } from "../util/atomic-file.js";
import { native } from "./binding.js";
import { BYTES_PER_ELEMENT, DTYPE_CODE, type DType } from "./dtype.js";
import { Tensor } from "./tensor.js";

const FORMAT_TO_DTYPE: Record<string, DType> = {
  F64: "float64",
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
  I64: "int64",
  I32: "int32",
  I16: "int16",
  I8: "int8",
  U8: "uint8",
  BOOL: "bool",
};
const DTYPE_TO_FORMAT = Object.fromEntries(Object.entries(FORMAT_TO_DTYPE).map(([f, d]) => [d, f])) as Record<
  DType,
  string
>;
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface SafetensorsEntry {
  dtype: DType;
  shape: number[];
  /** Absolute byte offset of the data in the file. */
  offset: number;
  byteLength: number;
}
export interface SafetensorsHeader {
  path: string;
  entries: Map<string, SafetensorsEntry>;
  metadata: Record<string, string>;
}

class SafetensorsError extends Error {
  constructor(path: string, what: string) {
    super(`${path}: not a valid safetensors file: ${what}`);
    this.name = "SafetensorsError";
  }
}

function readExactly(fd: number, length: number, position: number): Buffer {
  const buf = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const n = readSync(fd, buf, got, length - got, position + got);
    if (n === 0) break;
    got += n;
  }
  if (got !== length) throw new Error(`short read: ${got} of ${length} bytes at ${position}`);
  return buf;
}

function parseHeader(path: string, fd: number): SafetensorsHeader {
  const fileSize = fstatSync(fd).size;
  if (fileSize < 8)
    throw new SafetensorsError(path, `file is ${fileSize} bytes, shorter than the 8-byte header length`);
  const n = Number(readExactly(fd, 8, 0).readBigUInt64LE(0));
  if (n > MAX_HEADER_BYTES || 8 + n > fileSize)
    throw new SafetensorsError(path, `header length ${n} does not fit a ${fileSize}-byte file`);
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(readExactly(fd, n, 8).toString("utf8")) as Record<string, unknown>;
  } catch (err) {
    throw new SafetensorsError(path, `header is not JSON (${(err as Error).message})`);
  }
  const dataStart = 8 + n;
  const entries = new Map<string, SafetensorsEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(json)) {
    if (name === "__metadata__") {
      metadata = (raw ?? {}) as Record<string, string>;
      continue;
    }
    const info = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dtype = FORMAT_TO_DTYPE[String(info?.dtype)];
    if (!dtype) throw new SafetensorsError(path, `tensor '${name}': unsupported dtype ${JSON.stringify(info?.dtype)}`);
    const shape = info.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new SafetensorsError(path, `tensor '${name}': shape must be a list of non-negative integers`);
    }
    const offs = info.data_offsets;
    if (
      !Array.isArray(offs) ||
      offs.length !== 2 ||
      !offs.every((o) => Number.isInteger(o) && o >= 0) ||
      offs[1] < offs[0]
    ) {
      throw new SafetensorsError(path, `tensor '${name}': data_offsets must be [begin, end]`);
    }
    const byteLength = (shape as number[]).reduce((a, b) => a * b, 1) * BYTES_PER_ELEMENT[dtype];
    if (offs[1] - offs[0] !== byteLength) {
      throw new SafetensorsError(
        path,
        `tensor '${name}': ${offs[1] - offs[0]} data bytes for shape [${shape}] ${info.dtype} (expected ${byteLength})`,
      );
    }
    if (dataStart + offs[1] > fileSize)
      throw new SafetensorsError(path, `tensor '${name}': data ends past the end of the file (truncated?)`);
    entries.set(name, { dtype, shape: shape as number[], offset: dataStart + offs[0], byteLength });
  }
  // As the reference reader: tensors tile the data region, with no overlap and nothing after the last
  // one (a file longer than its header says was written by something else, or appended to).
  const sorted = [...entries].sort((a, b) => a[1].offset - b[1].offset);
  let end = dataStart;
  for (const [name, e] of sorted) {
    if (e.offset < end) throw new SafetensorsError(path, `tensor '${name}': its data overlaps the previous tensor's`);
    end = e.offset + e.byteLength;
  }
  if (end !== fileSize) {
    throw new SafetensorsError(
      path,
      `${fileSize - end} bytes after the last tensor${sorted.length ? ` ('${sorted.at(-1)![0]}')` : ""} (the ` +
        `header covers ${end} of ${fileSize} bytes)`,
    );
  }
  return { path, entries, metadata };
}

/** Reads only the header: names, dtypes, shapes, metadata. */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  const fd = openFile(path);
  try {
    return parseHeader(path, fd);
  } finally {
    closeSync(fd);
  }
}

/** Reads one entry's bytes straight into a new CPU tensor; errors name the file and the tensor. */
function readEntry(path: string, fd: number, name: string, e: SafetensorsEntry): Tensor {
  try {
    return new Tensor(native.readFromFd(fd, e.offset, DTYPE_CODE[e.dtype], e.shape));
  } catch (err) {
    throw new Error(`${path} › ${name}: ${(err as Error).message.replace(/^readFromFd: /, "")}`, { cause: err });
  }
}

/**
 * Loads tensors (all, or those `select` accepts) as CPU tensors of their stored dtype.
 * The caller owns the returned tensors (they join the current scope, if any).
 */
export function loadSafetensors(
  path: string,
  select?: (name: string, entry: SafetensorsEntry) => boolean,
): { header: SafetensorsHeader; tensors: Map<string, Tensor> } {
  const fd = openFile(path);
  try {
    const header = parseHeader(path, fd);
    const tensors = new Map<string, Tensor>();
    for (const [name, e] of header.entries) {
      if (select && !select(name, e)) continue;
      tensors.set(name, readEntry(path, fd, name, e));
    }
    return { header, tensors };
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads one tensor given its header entry (lazy, one-at-a-time loading of big checkpoints). With
 * `into` (a contiguous CPU tensor of the entry's dtype and size) the bytes land in it directly.
 */
export function loadSafetensorsEntry(path: string, entry: SafetensorsEntry, name = "tensor", into?: Tensor): Tensor {
  const fd = openFile(path);
  try {
    if (
      into &&
      into.device === "cpu" &&
      into.dtype === entry.dtype &&
      into.numel * BYTES_PER_ELEMENT[into.dtype] === entry.byteLength &&
      into.isContiguous()
    ) {
      try {
        native.readIntoFromFd(fd, entry.offset, into.handle);
      } catch (err) {
        throw new Error(`${path} › ${name}: ${(err as Error).message.replace(/^readIntoFromFd: /, "")}`, {
          cause: err,
        });
      }
      return into;
    }
    return readEntry(path, fd, name, entry);
  } finally {
    closeSync(fd);
  }
}

function openFile(path: string): number {
  try {
    return openSync(path, "r");
  } catch (err) {
    throw new Error(`${path}: cannot open (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, {
      cause: err,
    });
  }
}

/**
 * Writes tensors (any device, any size) atomically, in the given order: the header, then each
 * tensor's bytes streamed by the addon straight from its memory (CUDA tensors through small host
 * chunks), so a save never holds a second copy of the model in host memory.
 */
export function saveSafetensors(
  path: string,
  tensors: Iterable<[string, Tensor]>,
  metadata: Record<string, string> = {},
): void {
  const list = [...tensors];
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of list) {
    const fmt = DTYPE_TO_FORMAT[t.dtype];
    if (!fmt) throw new Error(`${path} › ${name}: dtype ${t.dtype} has no safetensors format`);
    const byteLength = t.numel * BYTES_PER_ELEMENT[t.dtype];
    header[name] = { dtype: fmt, shape: t.shape, data_offsets: [offset, offset + byteLength] };
    offset += byteLength;
  }
  // The header is padded with spaces to a multiple of 8 bytes, as the reference writer does, so that
  // every tensor's data starts aligned.
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  writeFileAtomicFd(path, (fd) => {
    writeAllSync(fd, len);
    writeAllSync(fd, json);
    for (const [name, t] of list) {
      try {
        native.writeToFd(t.handle, fd);
      } catch (err) {
        throw new Error(`${path} › ${name}: ${(err as Error).message.replace(/^writeToFd: /, "")}`, { cause: err });
      }
    }
  });
}
