// Captured steps: a function of tensors run once eagerly while the addon records its ops, then replayed
// natively with no JavaScript per op (native/tape.h). What may change between replays is the contents of
// the tensors the step reads (weights, caches, input buffers the caller writes in place), never its
// shapes or its JavaScript control flow; an op that moves data into or out of JavaScript during the
// recording makes it unusable, and record() says which.
import { native, type TapeHandle } from "./binding.js";
import { Tensor } from "./tensor.js";

export type Recorded = { tape: Tape; outputs: Tensor[] } | { reason: string; outputs: Tensor[] };

export class Tape {
  #handle: TapeHandle | null;

  private constructor(handle: TapeHandle) {
    this.#handle = handle;
  }

  /**
   * Runs `step` eagerly while recording it: its outputs are returned either way (the recording run is a
   * real step); `tape` replays it, or `reason` says why it cannot be replayed.
   */
  static record(step: () => Tensor[]): Recorded {
    native.tapeBegin();
    let outputs: Tensor[];
    try {
      outputs = step();
    } catch (e) {
      native.tapeAbort();
      throw e;
    }
    const result = native.tapeEnd(outputs.map((t) => t.handle));
    return typeof result === "string" ? { reason: result, outputs } : { tape: new Tape(result), outputs };
  }

  private get handle(): TapeHandle {
    if (this.#handle === null) throw new Error("this tape was disposed");
    return this.#handle;
  }

  /** The step again, on the current contents of the tensors it reads; the outputs join the current scope. */
  replay(): Tensor[] {
    return native.tapeReplay(this.handle).map((h) => new Tensor(h));
  }

  /**
   * Recorded ops, tensor slots, tensors held by reference (weights, caches, input buffers), and on a GPU
   * the CUDA graph: "graph" (replays launch one graph; native/graph.h), "" (none yet, or not on a GPU), or
   * why its capture failed (replays then go op by op).
   */
  get info(): { ops: number; slots: number; constants: number; graph: string } {
    const [ops, slots, constants, graph] = native.tapeInfo(this.handle);
    return { ops, slots, constants, graph };
  }

  /**
   * Per-op time of the replays: `true` starts summing each recorded op's seconds; the call returns the
   * sums so far (by op, in tape order) and `false` stops. For benchmarks: it costs a clock read per op.
   */
  profile(enable: boolean): Array<[string, number]> {
    return native.tapeProfile(this.handle, enable);
  }

  /** Frees what the tape holds now (it references the model's weights and the cache's buffers). */
  dispose(): void {
    if (this.#handle) native.tapeDispose(this.#handle);
    this.#handle = null;
  }
}
