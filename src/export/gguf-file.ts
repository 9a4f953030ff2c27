// The GGUF v3 container (ggml's gguf.md), written as llama.cpp's gguf-py writes it:
//   magic "GGUF", version 3, tensor count (u64), metadata count (u64)
//   metadata: key (u64 length + UTF-8), value type (u32), value (arrays: element type, u64 count, elements)
//   tensor infos: name, n_dims (u32), dims (u64 each, innermost first), ggml type (u32), data offset (u64)
//   padding to general.alignment (32), then each tensor's data, each padded to the alignment.
// Tensors are encoded and written one at a time, so a model of any size streams through one tensor's
// worth of memory. The file is written under a temporary name and renamed when complete.
import { closeSync, existsSync, fsyncSync, openSync, renameSync, rmSync, statSync, writeSync } from "node:fs";
import { basename, dirname } from "node:path";
import type { GgufValue } from "../models/gguf-layout.js";

export const GGUF_ALIGNMENT = 32;

/** ggml tensor types this writer produces, with their codes and block geometry (ggml.h). */
export const GGML_TYPES = {
  f32: { code: 0, blockSize: 1, blockBytes: 4 },
  f16: { code: 1, blockSize: 1, blockBytes: 2 },
  q8_0: { code: 8, blockSize: 32, blockBytes: 34 },
} as const;
export type GgmlType = keyof typeof GGML_TYPES;

const VALUE_TYPE = {
  u8: 0,
  i8: 1,
  u16: 2,
  i16: 3,
  u32: 4,
  i32: 5,
  f32: 6,
  bool: 7,
  str: 8,
  arr: 9,
  u64: 10,
  i64: 11,
  f64: 12,
} as const;

export interface GgufTensorEntry {
  name: string;
  /** PyTorch order (outermost first); the file stores it reversed, as ggml's ne[]. */
  shape: number[];
  type: GgmlType;
  /** The encoded bytes, made when the tensor's turn comes. */
  data: () => Uint8Array;
}

/** Bytes of a tensor of `shape` in `type` (the innermost dimension holds whole blocks). */
export function tensorBytes(shape: number[], type: GgmlType): number {
  const t = GGML_TYPES[type];
  const inner = shape.at(-1) ?? 1;
  if (inner % t.blockSize !== 0)
    throw new Error(`${type} needs rows of a multiple of ${t.blockSize} values, got ${inner}`);
  return (shape.reduce((a, b) => a * b, 1) / t.blockSize) * t.blockBytes;
}

class Bytes {
  private parts: Buffer[] = [];
  length = 0;
  push(b: Buffer): void {
    this.parts.push(b);
    this.length += b.length;
  }
  u32(v: number) {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  i32(v: number) {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    this.push(b);
  }
  u64(v: number) {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  f32(v: number) {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.push(b);
  }
  str(s: string) {
    const b = Buffer.from(s, "utf8");
    this.u64(b.length);
    this.push(b);
  }
  concat(): Buffer {
    return Buffer.concat(this.parts);
  }
}

function writeValue(out: Bytes, key: string, v: GgufValue): void {
  const checkU32 = (n: number) => {
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`GGUF metadata ${key}: ${n} is not a u32`);
    return n;
  };
  switch (v.type) {
    case "u32":
      out.u32(VALUE_TYPE.u32);
      out.u32(checkU32(v.value));
      break;
    case "i32":
      out.u32(VALUE_TYPE.i32);
      out.i32(v.value);
      break;
    case "f32":
      out.u32(VALUE_TYPE.f32);
      out.f32(v.value);
      break;
    case "bool":
      out.u32(VALUE_TYPE.bool);
      out.push(Buffer.from([v.value ? 1 : 0]));
      break;
    case "str":
      out.u32(VALUE_TYPE.str);
      out.str(v.value);
      break;
    case "arr-str":
      out.u32(VALUE_TYPE.arr);
      out.u32(VALUE_TYPE.str);
      out.u64(v.value.length);
      for (const s of v.value) out.str(s);
      break;
    case "arr-i32":
      out.u32(VALUE_TYPE.arr);
      out.u32(VALUE_TYPE.i32);
      out.u64(v.value.length);
      for (const n of v.value) out.i32(n);
      break;
    case "arr-f32":
      out.u32(VALUE_TYPE.arr);
      out.u32(VALUE_TYPE.f32);
      out.u64(v.value.length);
      for (const n of v.value) out.f32(n);
      break;
  }
}

/** Throws, naming the folder, unless `path`'s folder exists: checked before any work is done. */
export function checkOutputFolder(path: string): void {
  const dir = dirname(path);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`${path}: the folder ${dir} does not exist`);
}

const pad = (n: number) => (GGUF_ALIGNMENT - (n % GGUF_ALIGNMENT)) % GGUF_ALIGNMENT;

/**
 * Writes a GGUF v3 file. `onTensor` is told after each tensor (progress). A failure removes the
 * temporary file: `path` is either complete or untouched.
 */
export function writeGguf(
  path: string,
  metadata: Array<[string, GgufValue]>,
  tensors: GgufTensorEntry[],
  onTensor?: (done: number, total: number) => void,
): void {
  checkOutputFolder(path);
  const dir = dirname(path);
  const seen = new Set<string>();
  for (const [k] of metadata) {
    if (seen.has(k)) throw new Error(`GGUF metadata ${k} given twice`);
    seen.add(k);
  }
  const head = new Bytes();
  head.push(Buffer.from("GGUF", "ascii"));
  head.u32(3);
  head.u64(tensors.length);
  head.u64(metadata.length);
  for (const [key, value] of metadata) {
    head.str(key);
    writeValue(head, key, value);
  }
  let offset = 0;
  const sizes = tensors.map((t) => tensorBytes(t.shape, t.type));
  tensors.forEach((t, i) => {
    head.str(t.name);
    head.u32(t.shape.length);
    for (const d of [...t.shape].reverse()) head.u64(d);
    head.u32(GGML_TYPES[t.type].code);
    head.u64(offset);
    offset += sizes[i]! + pad(sizes[i]!);
  });
  const header = head.concat();
  const tmp = `${dir}/.${basename(path)}.tmp-${process.pid}`;
  const fd = openSync(tmp, "w");
  try {
    const write = (b: Uint8Array) => {
      let at = 0;
      while (at < b.length) at += writeSync(fd, b, at, b.length - at);
    };
    write(header);
    write(Buffer.alloc(pad(header.length)));
    tensors.forEach((t, i) => {
      const bytes = t.data();
      if (bytes.length !== sizes[i])
        throw new Error(`${t.name}: ${bytes.length} bytes encoded, ${sizes[i]} expected for [${t.shape}] ${t.type}`);
      write(bytes);
      write(Buffer.alloc(pad(bytes.length)));
      onTensor?.(i + 1, tensors.length);
    });
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, path);
  } catch (err) {
    try {
      closeSync(fd);
    } catch {
      /* already closed */
    }
    rmSync(tmp, { force: true });
    throw err;
  }
}

// ----- encodings ---------------------------------------------------------------------------------

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE binary16 bits of a float32 value, rounded to nearest even (as F16C and numpy's astype). */
export function f32ToF16Bits(v: number): number {
  f32Scratch[0] = v;
  const x = u32Scratch[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 112; // rebias 127 → 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // A binary16 subnormal (or zero): the value in units of 2^-24.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 126 - exp;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    let m = mant >>> shift;
    if (rem > half || (rem === half && m & 1)) m++;
    return sign | m;
  }
  let m = mant >>> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && m & 1)) m++;
  return sign | ((e << 10) + m); // a carry out of m bumps the exponent, as it should
}

/**
 * ggml's reference Q8_0 (quantize_row_q8_0_ref): blocks of 32 values, d = max|x| / 127 stored as
 * binary16, q = roundf(x · (1/d)) as int8, all in float32 arithmetic.
 */
export function quantizeQ8_0(x: Float32Array): Buffer {
  if (x.length % 32 !== 0) throw new Error(`q8_0: ${x.length} values are not whole blocks of 32`);
  const blocks = x.length / 32;
  const out = Buffer.alloc(blocks * 34);
  const fr = Math.fround;
  for (let b = 0; b < blocks; b++) {
    const base = b * 32;
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[base + j]!));
    const d = fr(amax / 127);
    const id = d ? fr(1 / d) : 0;
    out.writeUInt16LE(f32ToF16Bits(d), b * 34);
    for (let j = 0; j < 32; j++) {
      const v = fr(x[base + j]! * id);
      // C's roundf: halfway cases away from zero (exact here: |v| ≤ 127.5 in a double).
      const q = Math.sign(v) * Math.floor(Math.abs(v) + 0.5);
      out.writeInt8(q, b * 34 + 2 + j);
    }
  }
  return out;
}
