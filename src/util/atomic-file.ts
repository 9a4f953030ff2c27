// Writes that never leave a half-written file under the final name: temp file → fsync → rename → fsync dir.
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { basename, dirname, join } from "node:path";

/** Writes `chunks` to `path` atomically; on any error the temp file is removed and `path` is untouched. */
export function writeFileAtomic(path: string, chunks: Iterable<Uint8Array | string>): void {
  writeFileAtomicFd(path, (fd) => {
    for (const chunk of chunks) writeAllSync(fd, chunk);
  });
}

/** Writes a whole chunk at the descriptor's position (writeSync may write less than asked). */
export function writeAllSync(fd: number, chunk: Uint8Array | string): void {
  const buf = typeof chunk === "string" ? Buffer.from(chunk, "utf8") : chunk;
  let off = 0;
  while (off < buf.byteLength) off += writeSync(fd, buf, off, buf.byteLength - off);
}

/**
 * Runs `write(fd)` on a new temporary file beside `path` (created exclusively, so a planted file or
 * symlink is never followed), then fsyncs and renames it to `path`. On any error the temporary file is
 * removed and `path` is untouched.
 */
export function writeFileAtomicFd(path: string, write: (fd: number) => void): void {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(6).toString("hex")}`);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, "wx", 0o644);
    write(fd);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
    fsyncDir(dirname(path));
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
}

export function fsyncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
