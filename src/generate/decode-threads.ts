// Intra-op threads for CPU decoding under foreign load. A decode step is a few hundred small ops, each a
// parallel region whose OpenMP workers spin while they wait; when another process holds one of the cores,
// a worker spins against it and every region waits for the descheduled thread: on a 2-core machine with
// one busy process beside it, 2 threads decoded at a quarter of their quiet speed, 1 thread at two thirds.
// Passive waiting (OMP_WAIT_POLICY=PASSIVE) was the other candidate: it halved quiet decoding here.
//
// The load is read, then confirmed by the clock. Every `period` steps a probe (0.2 ms: /proc's runnable
// threads less our own) says how many cores the other processes leave; the first step starts at that count.
// When a later probe disagrees with the current count, `trial` steps run at the probe's count and the faster
// mean wins by a margin; a lost trial doubles the wait before the next (up to 32 periods), since switching
// costs milliseconds (BLAS resizes its pool). A quiet machine thus runs no trials at all; and a count below
// the configured one is retried now and then even when the probe agrees, since /proc may count processes
// outside this container's cores. Without /proc, trials alternate between the two counts on the same clock.
import * as torch from "../torch/index.js";

/** OASFT_ADAPTIVE_THREADS=0 keeps the configured thread count for decoding. */
const adaptiveByDefault = process.env.OASFT_ADAPTIVE_THREADS !== "0";

export interface DecodeThreadsOptions {
  /** The configured count (default: the current one); the fallback count without a probe is 1. */
  configured?: number;
  /** The count the current load leaves (default: usable CPUs less other processes' runnable threads). */
  probe?: () => number | undefined;
  /** Steps between probes (default 32). */
  period?: number;
  /** Timed steps per trial, after the one that switched (default 6). */
  trial?: number;
  /** The tried count must be faster by this fraction to replace the current one (default 0.1). */
  margin?: number;
  /** Test seams: how threads are set and time is read. */
  setThreads?: (n: number) => void;
  now?: () => number;
}

/** The count that cores left by other processes allow, between 1 and `configured`. */
function loadProbe(configured: number): () => number | undefined {
  const cpus = torch.usableCpus();
  return () => {
    const foreign = torch.foreignRunnable();
    return foreign === undefined ? undefined : Math.max(1, Math.min(configured, cpus - foreign));
  };
}

export class DecodeThreads {
  /** The count steps run at outside trials (settled by the first step). */
  current: number;
  private readonly configured: number;
  private readonly probe: () => number | undefined;
  private started = false;
  /** The count under trial, if a trial runs. */
  private trying: number | undefined;
  private wait: number;
  private untilCheck: number;
  private sinceTrial = 0;
  private applied: number;
  private readonly recent: number[] = [];
  private readonly tried: number[] = [];
  private readonly o: Required<Omit<DecodeThreadsOptions, "configured" | "probe">>;

  constructor(o: DecodeThreadsOptions = {}) {
    this.configured = this.current = this.applied = o.configured ?? torch.getNumThreads();
    this.probe = o.probe ?? loadProbe(this.configured);
    this.o = {
      period: o.period ?? 32,
      trial: o.trial ?? 6,
      margin: o.margin ?? 0.1,
      setThreads: o.setThreads ?? torch.setNumThreads,
      now: o.now ?? (() => performance.now()),
    };
    this.wait = this.untilCheck = this.o.period;
  }

  /** A tuner for decoding on `device`, or undefined where there is nothing to choose (GPU, 1 thread, opted out). */
  static forDevice(device: string): DecodeThreads | undefined {
    if (!adaptiveByDefault || device !== "cpu" || torch.getNumThreads() < 2) return undefined;
    return new DecodeThreads();
  }

  /** Runs one decode step at the count this step is due, timing it. */
  step<T>(fn: () => T): T {
    if (!this.started) {
      this.started = true;
      this.current = this.probe() ?? this.configured;
    } else if (this.trying === undefined && this.untilCheck === 0) this.check();
    const trying = this.trying;
    // A step that switched pays the switch: it counts as a step, but its time is not a sample.
    const switched = this.use(trying ?? this.current);
    const start = this.o.now();
    const result = fn();
    const seconds = this.o.now() - start;
    if (trying === undefined) {
      this.untilCheck--;
      this.sinceTrial++;
      if (!switched) this.recent.push(seconds);
      if (this.recent.length > this.o.trial) this.recent.shift();
    } else {
      if (!switched) this.tried.push(seconds);
      if (this.tried.length === this.o.trial) this.decide(trying);
    }
    return result;
  }

  /** At a check: a trial of the probe's count where it disagrees, or of the configured one now and then. */
  private check(): void {
    const suggested = this.probe();
    const fallback = this.current === this.configured ? 1 : this.configured;
    if (suggested === undefined) this.trying = fallback;
    else if (suggested !== this.current) this.trying = suggested;
    else if (this.current !== this.configured && this.sinceTrial >= this.o.period * 32) this.trying = fallback;
    if (this.trying === undefined) this.untilCheck = this.wait;
  }

  /** After a trial: the tried count replaces the current one if its steps were faster by the margin. */
  private decide(trying: number): void {
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    if (this.recent.length && mean(this.tried) < mean(this.recent) * (1 - this.o.margin)) {
      this.current = trying;
      this.recent.splice(0, this.recent.length, ...this.tried);
      this.wait = this.o.period;
    } else {
      this.wait = Math.min(this.wait * 2, this.o.period * 32);
    }
    this.untilCheck = this.wait;
    this.sinceTrial = 0;
    this.trying = undefined;
    this.tried.length = 0;
  }

  /** Back to the configured count (decoding ended; prefill and other work use all threads again). */
  release(): void {
    this.use(this.configured);
  }

  /** Sets the count only when it changes: libtorch's set_num_threads also resizes BLAS's pool (slow). */
  private use(n: number): boolean {
    if (n === this.applied) return false;
    this.o.setThreads(n);
    this.applied = n;
    return true;
  }
}
