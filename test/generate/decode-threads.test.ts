// DecodeThreads' policy on a fake clock: it keeps the configured count while that is faster, moves to
// the other count when a trial is faster by the margin, moves back when the load goes away, and restores
// the configured count on release.
import assert from "node:assert/strict";
import { test } from "node:test";
import { DecodeThreads } from "../../src/generate/decode-threads.js";

/** A tuner whose steps take `cost(threads)` ms on a fake clock; returns it and the thread log. */
function harness(cost: (threads: number) => number) {
  let clock = 0;
  let threads = 2;
  const log: number[] = [];
  const tuner = new DecodeThreads({
    counts: [2, 1],
    period: 4,
    trial: 2,
    setThreads: (n) => {
      threads = n;
    },
    now: () => clock,
  });
  const step = () =>
    tuner.step(() => {
      log.push(threads);
      clock += cost(threads);
    });
  return { tuner, log, step, threads: () => threads };
}

test("quiet: trials of 1 thread lose, and each lost trial doubles the wait before the next", () => {
  const h = harness((n) => (n === 2 ? 5 : 8));
  for (let i = 0; i < 30; i++) h.step();
  const twos = (k: number) => new Array<number>(k).fill(2);
  assert.deepEqual(h.log, [...twos(4), 1, 1, ...twos(8), 1, 1, ...twos(14)]);
  assert.equal(h.tuner.current, 2);
});

test("under load: 1 thread wins its trial and stays; when the load goes, 2 threads win back", () => {
  let loaded = true;
  const h = harness((n) => (loaded ? (n === 2 ? 20 : 8) : n === 2 ? 5 : 8));
  for (let i = 0; i < 6; i++) h.step();
  assert.equal(h.tuner.current, 1, "the trial of 1 thread was faster");
  for (let i = 0; i < 6; i++) h.step();
  assert.deepEqual(h.log.slice(6), [1, 1, 1, 1, 2, 2], "the trial now tries 2 threads, and loses");
  loaded = false;
  for (let i = 0; i < 10; i++) h.step();
  assert.deepEqual(h.log.slice(12), [1, 1, 1, 1, 1, 1, 1, 1, 2, 2], "after a wait of 8, 2 threads win");
  assert.equal(h.tuner.current, 2);
  h.tuner.release();
  assert.equal(h.threads(), 2);
});

test("a trial within the margin changes nothing (noise does not flip the count)", () => {
  const h = harness((n) => (n === 2 ? 10 : 9.5));
  for (let i = 0; i < 30; i++) h.step();
  assert.equal(h.tuner.current, 2);
});
