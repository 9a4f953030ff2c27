// The run folder (output_dir): which checkpoint a run resumes from, taking a folder over from another
// run (or refusing to), and the JSONL log a resumed run continues. A new run never mixes with another
// run's checkpoints, and a run killed before its first save simply starts over.
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { ConfigError } from "../sft/config.js";
import { stageRunFiles } from "./objective.js";
import type { LogRecord } from "./report.js";
import { checkpointDirs, resolveResume } from "./state.js";

/**
 * The checkpoint a run resumes from; none for `latest` in a folder whose run stopped before its first
 * save (it starts over, saying so: there is nothing to resume, and refusing would leave it stuck).
 */
export function resumeFrom(spec: string | null, outputDir: string, print: (l: string) => void): string | undefined {
  if (!spec) return undefined;
  if (
    (spec === "latest" || spec === "true") &&
    !checkpointDirs(outputDir).length &&
    stoppedBeforeFirstSave(outputDir)
  ) {
    print(
      `note: --resume_from_checkpoint ${spec}: ${outputDir} has no checkpoint (its run stopped before the first ` +
        `save): starting over`,
    );
    return undefined;
  }
  return resolveResume(spec, outputDir);
}

/** A run that left only its log (killed before any checkpoint, final model or summary). */
function stoppedBeforeFirstSave(outputDir: string): boolean {
  const earlier = previousRun(outputDir);
  const stageFiles = stageRunFiles();
  return earlier.every((n) => n === "log.jsonl" || n === "training.svg" || stageFiles.includes(n));
}

/** A new run never mixes with another run's checkpoints (rotation and "latest" would pick them up). */
export function takeOver(outputDir: string, overwrite: boolean, print: (l: string) => void): void {
  const earlier = previousRun(outputDir);
  if (earlier.length && !overwrite && stoppedBeforeFirstSave(outputDir)) {
    // Nothing of it can be resumed or would be lost: the same command simply starts over.
    for (const name of earlier) rmSync(join(outputDir, name), { recursive: true, force: true });
    print(
      `note: ${outputDir} held a run that stopped before its first checkpoint (${earlier.join(", ")}): starting over`,
    );
    return;
  }
  if (earlier.length && !overwrite) {
    throw new ConfigError(
      `output_dir ${outputDir} already holds a run ` +
        `(${earlier.slice(0, 4).join(", ")}${earlier.length > 4 ? ", ..." : ""}); ` +
        "pass --resume_from_checkpoint latest to continue it, --overwrite_output_dir to replace it, or another " +
        "--output_dir",
    );
  }
  for (const name of earlier) rmSync(join(outputDir, name), { recursive: true, force: true });
  if (earlier.length) print(`note: --overwrite_output_dir: removed ${earlier.join(", ")} from ${outputDir}`);
}

/**
 * The log records up to `step` (a resumed run rewrites what came after its checkpoint). A torn last
 * line (power loss, a full disk) is dropped with a note; a damaged line elsewhere names the file and line.
 */
export function readLogUpTo(path: string, step: number, print: (line: string) => void): LogRecord[] {
  if (!existsSync(path) || step === 0) return [];
  const lines = readFileSync(path, "utf8").split("\n");
  const records: LogRecord[] = [];
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    try {
      records.push(JSON.parse(line) as LogRecord);
    } catch {
      const last = lines.slice(i + 1).every((l) => !l.trim());
      if (!last) throw new Error(`${path}:${i + 1}: not a JSON log record; fix or remove the line to resume`);
      print(`note: ${path}:${i + 1}: dropped a torn last line (the run stopped while writing it)`);
    }
  });
  return records.filter((r) => r.step <= step);
}

/** What another run left in output_dir: checkpoints, its log, summary and final model. */
function previousRun(outputDir: string): string[] {
  if (!existsSync(outputDir)) return [];
  const marks = new Set([
    "log.jsonl",
    "summary.json",
    "training.svg",
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_model.safetensors",
    ...stageRunFiles(),
  ]);
  return readdirSync(outputDir)
    .filter((n) => marks.has(n) || /^checkpoint-\d+$/.test(n))
    .sort();
}
