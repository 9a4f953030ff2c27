// How many intra-op threads libtorch uses. The host's core count is the wrong answer in a container
// with a CPU quota or a pinned affinity mask: oversubscribed OpenMP threads spin against each other
// (one thread trained 3.6x faster than two on a loaded 2-core machine). The order of precedence:
//   1. OMP_NUM_THREADS (what PyTorch users set, and what launchers set per rank);
//   2. the CPUs this process may run on (affinity), capped by the cgroup's CPU quota.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

/** The cgroup v2 (cpu.max) or v1 (cfs_quota/period) CPU limit, rounded up; undefined when unlimited. */
export function cgroupCpuLimit(root = "/sys/fs/cgroup"): number | undefined {
  try {
    const v2 = `${root}/cpu.max`;
    if (existsSync(v2)) {
      const [quota, period] = readFileSync(v2, "utf8").trim().split(/\s+/);
      if (quota === "max" || !quota || !period) return undefined;
      return Math.max(1, Math.ceil(Number(quota) / Number(period)));
    }
    const q = `${root}/cpu/cpu.cfs_quota_us`;
    const p = `${root}/cpu/cpu.cfs_period_us`;
    if (existsSync(q) && existsSync(p)) {
      const quota = Number(readFileSync(q, "utf8"));
      const period = Number(readFileSync(p, "utf8"));
      return quota > 0 && period > 0 ? Math.max(1, Math.ceil(quota / period)) : undefined;
    }
  } catch {
    // An unreadable cgroup file means no limit we can see.
  }
  return undefined;
}

/** The default thread count; `env` is the environment to read (process.env unless a test says otherwise). */
export function defaultThreads(env: NodeJS.ProcessEnv = process.env): { threads: number; source: string } {
  const omp = env.OMP_NUM_THREADS?.trim();
  if (omp) {
    const n = Number(omp.split(",")[0]);
    if (Number.isInteger(n) && n >= 1) return { threads: n, source: "OMP_NUM_THREADS" };
  }
  const cpus = usableCpus();
  return { threads: cpus, source: cpus < availableParallelism() ? "cgroup CPU quota" : "available CPUs" };
}

/** The CPUs this process may use: its affinity mask, capped by the cgroup's CPU quota. */
export function usableCpus(): number {
  return Math.min(availableParallelism(), cgroupCpuLimit() ?? Infinity);
}

/**
 * Threads of other processes that are runnable right now: /proc/stat's procs_running less this process's
 * own runnable threads (its spinning OpenMP workers among them); undefined where /proc is not there. One
 * instant's count, so callers confirm what it suggests.
 */
export function foreignRunnable(proc = "/proc"): number | undefined {
  try {
    const stat = readFileSync(`${proc}/stat`, "utf8");
    const running = Number(/^procs_running (\d+)$/m.exec(stat)?.[1]);
    if (!Number.isFinite(running)) return undefined;
    let own = 0;
    for (const task of readdirSync(`${proc}/self/task`)) {
      try {
        // The state follows the command name's closing parenthesis (the name may hold spaces).
        const line = readFileSync(`${proc}/self/task/${task}/stat`, "utf8");
        if (line[line.lastIndexOf(")") + 2] === "R") own++;
      } catch {
        // A thread that ended between the listing and the read is not running.
      }
    }
    return Math.max(0, running - own);
  } catch {
    return undefined;
  }
}
