// The process group the trainer talks to: c10d collectives through the addon (native/dist.h), or a
// one-process group whose collectives are the identity, so that the training loop has one shape.
// Every collective is synchronous and bounded by the group's timeout.
import * as torch from "../torch/index.js";
import type { DistEnv } from "./env.js";

export interface ProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  readonly localWorldSize: number;
  readonly backend: "gloo" | "nccl" | "none";
  /** In place: t ← op over ranks of t. */
  allReduce(t: torch.Tensor, op?: "sum" | "max" | "min"): void;
  /** Every rank's `t` (same shape on all), in rank order; the caller owns the results. */
  allGather(t: torch.Tensor): torch.Tensor[];
  /** Σ over ranks of `flat` (length divisible by the world size), this rank's 1/world slice of it. */
  reduceScatter(flat: torch.Tensor): torch.Tensor;
  /** In place: every rank's t ← root's t. */
  broadcast(t: torch.Tensor, root?: number): void;
  barrier(): void;
  /** Sums (or max/min) of a few host numbers over ranks, in float64. */
  reduceNumbers(values: number[], op?: "sum" | "max" | "min"): number[];
  /** Every rank's few host numbers (the same count on each), in rank order, in float64. */
  gatherNumbers(values: number[]): number[][];
  destroy(): void;
}

/** One process: every collective leaves its input as it is. */
export const soloGroup: ProcessGroup = {
  rank: 0,
  worldSize: 1,
  localWorldSize: 1,
  backend: "none",
  allReduce() {},
  allGather: (t) => [t.clone()],
  reduceScatter: (flat) => flat.clone(),
  broadcast() {},
  barrier() {},
  reduceNumbers: (values) => [...values],
  gatherNumbers: (values) => [[...values]],
  destroy() {},
};

/** The backend for a training device: NCCL for CUDA, Gloo for the CPU, unless `requested` says. */
export function backendFor(device: string, requested: "auto" | "gloo" | "nccl"): "gloo" | "nccl" {
  if (requested !== "auto") return requested;
  return device.startsWith("cuda") ? "nccl" : "gloo";
}

function need<T>(fn: T | undefined): T {
  if (!fn) {
    throw new Error(
      "this oasft addon was built without c10d collectives: on Debian install libgloo-dev " +
        "(apt-get install libgloo-dev), then run `npm rebuild` in the oasft folder",
    );
  }
  return fn;
}

/**
 * Joins the job described by `env`: rendezvous at MASTER_ADDR:MASTER_PORT, then a Gloo or NCCL group.
 * `device` is where reduceNumbers and gatherNumbers stage host numbers (NCCL reduces only CUDA tensors).
 */
export function initProcessGroup(
  env: DistEnv,
  backend: "gloo" | "nccl",
  timeoutS: number,
  device = "cpu",
): ProcessGroup {
  const n = torch.native;
  try {
    need(n.distInit)(env.rank, env.worldSize, env.masterAddr, env.masterPort, backend, Math.round(timeoutS * 1000));
  } catch (err) {
    // The addon's message names the rank, the rendezvous address and the timeout; drop the op name.
    throw new Error((err as Error).message.replace(/^distInit: /, ""), { cause: err });
  }
  const allReduce = need(n.distAllReduce);
  const allGather = need(n.distAllGather);
  const broadcast = need(n.distBroadcast);
  const barrier = need(n.distBarrier);
  const world = env.worldSize;
  // Host numbers cross as a float64 tensor where the backend reduces: NCCL only on the GPU.
  const staged = (values: number[]) => {
    const t = torch.tensor(values, { dtype: "float64" });
    return backend === "nccl" ? t.toDevice(device) : t;
  };
  const group: ProcessGroup = {
    rank: env.rank,
    worldSize: world,
    localWorldSize: env.localWorldSize,
    backend,
    allReduce: (t, op = "sum") => allReduce(t.handle, op),
    allGather(t) {
      const outs = Array.from({ length: world }, () => torch.empty(t.shape, { dtype: t.dtype, device: t.device }));
      allGather(
        outs.map((o) => o.handle),
        t.contiguous().handle,
      );
      return outs;
    },
    reduceScatter(flat) {
      const len = flat.numel / world;
      if (!Number.isInteger(len))
        throw new Error(`reduceScatter: ${flat.numel} elements do not split over ${world} ranks`);
      if (backend === "nccl" && n.distReduceScatter) {
        const out = torch.empty([len], { dtype: flat.dtype, device: flat.device });
        n.distReduceScatter(
          out.handle,
          flat
            .contiguous()
            .view([world, len])
            .unbind(0)
            .map((c) => c.handle),
        );
        return out;
      }
      // Gloo (libtorch 1.13) has no reduce_scatter: an all-reduce, of which this rank keeps its slice.
      const sum = flat.contiguous().clone();
      allReduce(sum.handle, "sum");
      return sum.narrow(0, env.rank * len, len).clone();
    },
    broadcast: (t, root = 0) => broadcast(t.handle, root),
    barrier: () => barrier(),
    reduceNumbers(values, op = "sum") {
      return torch.scope(() => {
        const t = staged(values);
        allReduce(t.handle, op);
        return t.toDevice("cpu").toNumbers();
      });
    },
    gatherNumbers(values) {
      return torch.scope(() => group.allGather(staged(values)).map((t) => t.toDevice("cpu").toNumbers()));
    },
    destroy: () => n.distDestroy?.(),
  };
  return group;
}
