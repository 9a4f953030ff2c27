// Where this process sits in a multi-process job: the torchrun environment contract (RANK,
// WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), which torchrun, deepspeed and
// `oasft train --nproc_per_node` set; Slurm's srun variables are mapped onto it. Nothing here loads
// libtorch, so the launcher can use it.

export interface DistEnv {
  rank: number;
  worldSize: number;
  localRank: number;
  localWorldSize: number;
  masterAddr: string;
  masterPort: number;
  /** Which variables it came from, for messages. */
  source: "torchrun" | "slurm";
}

function int(env: NodeJS.ProcessEnv, name: string, min: number): number {
  const raw = env[name];
  const n = Number(raw);
  if (raw === undefined || raw.trim() === "" || !Number.isInteger(n) || n < min) {
    throw new Error(`${name}=${raw ?? "(unset)"}: expected an integer ≥ ${min} (the torchrun environment contract)`);
  }
  return n;
}

/**
 * The job this process belongs to, or null when it runs alone (neither WORLD_SIZE nor Slurm's
 * SLURM_PROCID/SLURM_NTASKS of a multi-task step). Inconsistent values are errors naming the variable.
 */
export function distEnv(env: NodeJS.ProcessEnv = process.env): DistEnv | null {
  let source: DistEnv["source"] = "torchrun";
  let vars = env;
  if (env.WORLD_SIZE === undefined) {
    // srun sets SLURM_PROCID for every task of a step; a plain `sbatch` script (one task) does not need it.
    const tasks = Number(env.SLURM_NTASKS ?? "1");
    if (env.SLURM_PROCID === undefined || !(tasks > 1)) return null;
    source = "slurm";
    vars = {
      ...env,
      RANK: env.SLURM_PROCID,
      WORLD_SIZE: env.SLURM_NTASKS,
      LOCAL_RANK: env.SLURM_LOCALID ?? "0",
      LOCAL_WORLD_SIZE: env.LOCAL_WORLD_SIZE ?? (env.SLURM_NTASKS_PER_NODE ?? "").split("(")[0] ?? "1",
    };
  }
  const worldSize = int(vars, "WORLD_SIZE", 1);
  const rank = int(vars, "RANK", 0);
  if (rank >= worldSize) throw new Error(`RANK=${rank} is not below WORLD_SIZE=${worldSize}`);
  const localRank = vars.LOCAL_RANK === undefined ? 0 : int(vars, "LOCAL_RANK", 0);
  const localWorldSize =
    vars.LOCAL_WORLD_SIZE === undefined || vars.LOCAL_WORLD_SIZE === "" ? 1 : int(vars, "LOCAL_WORLD_SIZE", 1);
  if (localRank >= localWorldSize)
    throw new Error(`LOCAL_RANK=${localRank} is not below LOCAL_WORLD_SIZE=${localWorldSize}`);
  const masterAddr = vars.MASTER_ADDR;
  if (!masterAddr) {
    const hint =
      source === "slurm" ? "set it to the first node's address in the sbatch script" : "the rendezvous host, rank 0's";
    throw new Error(`MASTER_ADDR is not set (${hint})`);
  }
  const masterPort = vars.MASTER_PORT === undefined ? 29500 : int(vars, "MASTER_PORT", 1);
  if (masterPort > 65535) throw new Error(`MASTER_PORT=${masterPort}: not a TCP port`);
  return { rank, worldSize, localRank, localWorldSize, masterAddr, masterPort, source };
}
