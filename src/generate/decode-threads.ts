// Intra-op threads for CPU decoding under foreign load. A decode step is a few hundred small ops, each a
// parallel region whose OpenMP workers spin while they wait; when another process holds one of the cores,
// a worker spins against it and every region waits for the descheduled thread: on a 2-core machine with
// one busy process beside it, 2 threads decoded at a quarter of their quiet speed, 1 thread at two thirds.
// Which count is faster is measured, not guessed: after `period` steps, `trial` steps run at the other
// count, and the faster mean wins. A lost trial doubles the wait before the next (up to 32 periods), since
// switching costs milliseconds (BLAS resizes its pool): quiet, trials soon become rare; a won trial
// resets it. A load that comes is noticed within 32 periods at most; one that goes, within the next.
// Passive waiting (OMP_WAIT_POLICY=PASSIVE) was the other candidate: it halved quiet decoding here.
import * as torch from "../torch/index.js";

/** OASFT_ADAPTIVE_THREADS=0 keeps the configured thread count for decoding. */
const adaptiveByDefault = process.env.OASFT_ADAPTIVE_THREADS !== "0";

export interface DecodeThreadsOptions {
  /** Thread counts compared, the first being the configured one (default: the current count, and 1). */
  counts?: [number, number];
  /** Steps before the first trial, and after one that won (default 32). */
  period?: number;
  /** Steps per trial (default 6). */
  trial?: number;
  /** The faster count must win by this fraction to replace the current one (default 0.1). */
  margin?: number;
  /** Test seams: how threads are set and time is read. */
  setThreads?: (n: number) => void;
  now?: () => number;
}

export class DecodeThreads {
  /** The count steps run at outside trials. */
  current: number;
  private other: number;
  private readonly configured: number;
  private wait: number;
  private untilTrial: number;
  private applied: number;
  private readonly recent: number[] = [];
  private readonly tried: number[] = [];
  private readonly o: Required<Omit<DecodeThreadsOptions, "counts">>;

  constructor(o: DecodeThreadsOptions = {}) {
    [this.current, this.other] = o.counts ?? [torch.getNumThreads(), 1];
    this.configured = this.current;
    this.applied = this.current;
    this.o = {
      period: o.period ?? 32,
      trial: o.trial ?? 6,
      margin: o.margin ?? 0.1,
      setThreads: o.setThreads ?? torch.setNumThreads,
      now: o.now ?? (() => performance.now()),
    };
    this.wait = this.untilTrial = this.o.period;
  }

  /** A tuner for decoding on `device`, or undefined where there is nothing to choose (GPU, 1 thread, opted out). */
  static forDevice(device: string): DecodeThreads | undefined {
    if (!adaptiveByDefault || device !== "cpu" || torch.getNumThreads() < 2) return undefined;
    return new DecodeThreads();
  }

  /** Runs one decode step at the count this step is due, timing it. */
  step<T>(fn: () => T): T {
    const inTrial = this.untilTrial === 0;
    this.use(inTrial ? this.other : this.current);
    const start = this.o.now();
    const result = fn();
    const seconds = this.o.now() - start;
    if (!inTrial) {
      this.untilTrial--;
      this.recent.push(seconds);
      if (this.recent.length > this.o.trial) this.recent.shift();
    } else {
      this.tried.push(seconds);
      if (this.tried.length === this.o.trial) this.decide();
    }
    return result;
  }

  /** After a trial: the other count replaces the current one if its steps were faster by the margin. */
  private decide(): void {
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    if (this.recent.length && mean(this.tried) < mean(this.recent) * (1 - this.o.margin)) {
      [this.current, this.other] = [this.other, this.current];
      this.recent.splice(0, this.recent.length, ...this.tried);
      this.wait = this.o.period;
    } else {
      this.wait = Math.min(this.wait * 2, this.o.period * 32);
    }
    this.untilTrial = this.wait;
    this.tried.length = 0;
  }

  /** Back to the configured count (decoding ended; prefill and other work use all threads again). */
  release(): void {
    this.use(this.configured);
  }

  /** Sets the count only when it changes: libtorch's set_num_threads also resizes BLAS's pool (slow). */
  private use(n: number): void {
    if (n === this.applied) return;
    this.o.setThreads(n);
    this.applied = n;
  }
}
