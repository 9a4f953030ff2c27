// DecodeThreads' policy on a fake clock and a fake load probe: a quiet machine runs no trials; a load seen
// by the probe is confirmed by a trial and kept while it lasts; a probe that is wrong is overruled by the
// clock; without a probe, trials alternate with a growing wait. And the real probe sees a busy process.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { test } from "node:test";
import { DecodeThreads } from "../../src/generate/decode-threads.js";
import { foreignRunnable } from "../../src/torch/threads.js";

/** A tuner (2 threads configured) whose steps take `cost(threads)` ms on a fake clock. */
function harness(cost: (threads: number) => number, probe: () => number | undefined) {
  let clock = 0;
  let threads = 2;
  const log: number[] = [];
  const sets: number[] = [];
  const tuner = new DecodeThreads({
    configured: 2,
    probe,
    period: 4,
    trial: 2,
    setThreads: (n) => {
      threads = n;
      sets.push(n);
    },
    now: () => clock,
  });
  const step = () =>
    tuner.step(() => {
      log.push(threads);
      clock += cost(threads);
    });
  return { tuner, log, sets, step, threads: () => threads };
}

const twos = (k: number) => new Array<number>(k).fill(2);
const ones = (k: number) => new Array<number>(k).fill(1);

test("quiet: the probe leaves both cores, so no trial runs and the count is never set", () => {
  const h = harness(
    (n) => (n === 2 ? 5 : 8),
    () => 2,
  );
  for (let i = 0; i < 40; i++) h.step();
  assert.deepEqual(h.log, twos(40));
  assert.deepEqual(h.sets, []);
});

test("a load from the start: the first step already runs at the probe's count", () => {
  const h = harness(
    (n) => (n === 2 ? 20 : 8),
    () => 1,
  );
  for (let i = 0; i < 10; i++) h.step();
  assert.deepEqual(h.log, ones(10));
  assert.equal(h.tuner.current, 1);
});

test("a load that comes is confirmed by a trial and kept; when it goes, 2 threads win back", () => {
  let loaded = false;
  const h = harness(
    (n) => (loaded ? (n === 2 ? 20 : 8) : n === 2 ? 5 : 8),
    () => (loaded ? 1 : 2),
  );
  for (let i = 0; i < 2; i++) h.step();
  loaded = true;
  // Two slow steps at 2 threads, then the check tries 1 thread: one step that switches, 2 timed steps; 1 wins.
  for (let i = 0; i < 9; i++) h.step();
  assert.deepEqual(h.log, [...twos(4), ...ones(7)]);
  assert.equal(h.tuner.current, 1);
  loaded = false;
  for (let i = 0; i < 4; i++) h.step();
  assert.deepEqual(h.log.slice(11), [2, 2, 2, 2], "the next check tries 2 threads, and they win");
  assert.equal(h.tuner.current, 2);
});

test("a probe that is wrong is overruled: the clock keeps the faster count, retrials wait longer", () => {
  // The probe always says 1 (processes outside this container's cores), but 2 threads are faster here.
  const h = harness(
    (n) => (n === 2 ? 5 : 8),
    () => 1,
  );
  const steps = 4 * 32 + 3;
  for (let i = 0; i < steps; i++) h.step();
  assert.equal(h.tuner.current, 2, "after 32 periods, the configured count was retried and won");
  // From now on the probe disagrees with 2 threads: trials of 1 lose, each doubling the wait.
  const before = h.log.length;
  for (let i = 0; i < 4 + 3 + 8 + 3; i++) h.step();
  assert.deepEqual(h.log.slice(before), [...twos(4), ...ones(3), ...twos(8), ...ones(3)]);
  assert.equal(h.tuner.current, 2);
});

test("without a probe, trials alternate between the counts; lost ones double the wait", () => {
  const h = harness(
    (n) => (n === 2 ? 5 : 8),
    () => undefined,
  );
  for (let i = 0; i < 30; i++) h.step();
  assert.deepEqual(h.log, [...twos(4), ...ones(3), ...twos(8), ...ones(3), ...twos(12)]);
  assert.equal(h.tuner.current, 2);
  h.tuner.release();
  assert.equal(h.threads(), 2);
});

test("a trial within the margin changes nothing (noise does not flip the count)", () => {
  const h = harness(
    (n) => (n === 2 ? 10 : 9.5),
    () => undefined,
  );
  for (let i = 0; i < 30; i++) h.step();
  assert.equal(h.tuner.current, 2);
});

test("the load probe counts a busy process beside this one", { skip: process.platform !== "linux" }, async () => {
  const code = "process.send('spinning'); for (;;) {}";
  const busy = spawn(process.execPath, ["-e", code], { stdio: ["ignore", "ignore", "inherit", "ipc"] });
  try {
    await new Promise((resolve) => busy.once("message", resolve));
    const seen = Array.from({ length: 20 }, () => foreignRunnable() ?? 0);
    assert.ok(Math.max(...seen) >= 1, `runnable threads of other processes: ${seen.join(",")}`);
  } finally {
    busy.kill("SIGKILL");
  }
});
