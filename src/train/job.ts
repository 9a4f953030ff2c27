// A training job of many processes: joining the job's process group (c10d, from the torchrun
// environment) with every rank checked to run the same config, the threads each rank takes, and the
// memory each rank holds, gathered for the summary.
import { createHash } from "node:crypto";
import * as torch from "../torch/index.js";
import { ConfigError, type Settings } from "../sft/config.js";
import type { DistEnv } from "../parallel/env.js";
import { backendFor, initProcessGroup, soloGroup, type ProcessGroup } from "../parallel/group.js";
import type { TrainOptimizer } from "./zero.js";

/** The job's process group (c10d, from the torchrun environment), or the one-process group. */
export function joinJob(env: DistEnv | null, cfg: Settings<"parallel">, device: string): ProcessGroup {
  if (!env) return soloGroup;
  const processGroup = initProcessGroup(env, backendFor(device, cfg.dist_backend), cfg.dist_timeout, device);
  // Every rank must run the same config: a mismatch would silently train on different data or shapes.
  // The hash covers every key the object holds (the trainer passes the whole config), not only this slice's.
  const hash = Number.parseInt(createHash("sha256").update(JSON.stringify(cfg)).digest("hex").slice(0, 12), 16);
  const all = processGroup.gatherNumbers([hash]).map(([h]) => h!);
  const differ = all.map((h, r) => (h !== all[0] ? r : -1)).filter((r) => r >= 0);
  if (differ.length) {
    processGroup.destroy();
    const who = differ.length > 1 ? `ranks ${differ.join(", ")} differ` : `rank ${differ[0]} differs`;
    throw new ConfigError(
      `rank ${processGroup.rank}: the ranks were started with different configs (${who} from rank 0); ` +
        "start every rank with the same arguments",
    );
  }
  return processGroup;
}

/** Threads per rank: the CPUs shared among the ranks of this machine, unless threads or OMP_NUM_THREADS say. */
export function setThreads(cfg: Settings<"model">, env: DistEnv | null): void {
  if (cfg.threads !== null) torch.setNumThreads(cfg.threads);
  else if (env && env.localWorldSize > 1 && !process.env.OMP_NUM_THREADS) {
    torch.setNumThreads(Math.max(1, Math.floor(torch.defaultThreads().threads / env.localWorldSize)));
  }
}

/** Bytes of parameters, master copies, gradients and AdamW moments each rank holds (gathered to every rank). */
export function rankMemory(
  optimizer: TrainOptimizer,
  processGroup: ProcessGroup,
): Array<{ rank: number } & ReturnType<TrainOptimizer["heldBytes"]>> {
  const h = optimizer.heldBytes();
  return processGroup
    .gatherNumbers([h.params, h.master, h.grads, h.optimizer])
    .map(([params, master, grads, opt], rank) => ({
      rank,
      params: params!,
      master: master!,
      grads: grads!,
      optimizer: opt!,
    }));
}
