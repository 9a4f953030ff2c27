// `oasft train --nproc_per_node N [--nnodes M --node_rank R --master_addr A --master_port P]`: starts
// this machine's ranks as torchrun does (one `oasft train` process per rank, with the torchrun
// environment) and supervises them. If one rank fails, the others are stopped (SIGTERM, then SIGKILL
// after a grace period) and the launcher exits non-zero, naming the rank and how it ended. Nothing
// here loads libtorch.
import { spawn, type ChildProcess } from "node:child_process";
import { native } from "../torch/binding.js";

export interface LaunchOptions {
  nprocPerNode: number;
  nnodes: number;
  nodeRank: number;
  masterAddr: string;
  masterPort: number;
  /** The command each rank runs: [script, ...args], started with this Node. */
  command: string[];
  print?: (line: string) => void;
  /** Seconds between SIGTERM and SIGKILL when stopping the remaining ranks (default 3). */
  graceS?: number;
}

/** The launcher flags, taken out of a train command line (`--flag value` or `--flag=value`). */
export const LAUNCH_FLAGS = ["nproc_per_node", "nnodes", "node_rank", "master_addr", "master_port"] as const;

export function splitLaunchArgs(argv: string[]): {
  launch: Partial<Record<(typeof LAUNCH_FLAGS)[number], string>>;
  rest: string[];
} {
  const launch: Partial<Record<(typeof LAUNCH_FLAGS)[number], string>> = {};
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z_]+)(?:=(.*))?$/.exec(argv[i]!);
    const flag = m?.[1] as (typeof LAUNCH_FLAGS)[number] | undefined;
    if (!m || !flag || !LAUNCH_FLAGS.includes(flag)) {
      rest.push(argv[i]!);
      continue;
    }
    const value = m[2] ?? argv[++i];
    if (value === undefined || value.startsWith("--")) throw new Error(`--${flag} needs a value`);
    launch[flag] = value;
  }
  return { launch, rest };
}

/** Parses the launcher flags into options, with torchrun's defaults (one node, 127.0.0.1:29500). */
export function launchOptions(launch: ReturnType<typeof splitLaunchArgs>["launch"], command: string[]): LaunchOptions {
  const int = (flag: (typeof LAUNCH_FLAGS)[number], fallback: number, min: number, max = Infinity) => {
    const raw = launch[flag];
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new Error(`--${flag} ${raw}: expected an integer from ${min}${max < Infinity ? ` to ${max}` : " up"}`);
    }
    return n;
  };
  const nnodes = int("nnodes", 1, 1);
  const o: LaunchOptions = {
    nprocPerNode: int("nproc_per_node", 1, 1),
    nnodes,
    nodeRank: int("node_rank", 0, 0, nnodes - 1),
    masterAddr: launch.master_addr ?? "127.0.0.1",
    masterPort: int("master_port", 29500, 1, 65535),
    command,
  };
  if (nnodes > 1 && launch.master_addr === undefined)
    throw new Error("--nnodes > 1 needs --master_addr (node 0's address, reachable from every node)");
  return o;
}

/** Starts this node's ranks and waits for them; resolves to the exit code for the launcher. */
export function launch(o: LaunchOptions): Promise<number> {
  const print = o.print ?? ((l: string) => process.stderr.write(`${l}\n`));
  const world = o.nprocPerNode * o.nnodes;
  const ranks: Array<{ rank: number; child: ChildProcess; done: boolean }> = [];
  for (let local = 0; local < o.nprocPerNode; local++) {
    const rank = o.nodeRank * o.nprocPerNode + local;
    const env = {
      ...process.env,
      RANK: String(rank),
      WORLD_SIZE: String(world),
      LOCAL_RANK: String(local),
      LOCAL_WORLD_SIZE: String(o.nprocPerNode),
      GROUP_RANK: String(o.nodeRank),
      MASTER_ADDR: o.masterAddr,
      MASTER_PORT: String(o.masterPort),
      // The rank ties its life to this process (bindToLauncher): a launcher killed outright takes it along.
      OASFT_LAUNCHER_PID: String(process.pid),
    };
    const child = spawn(process.execPath, o.command, { env, stdio: "inherit" });
    ranks.push({ rank, child, done: false });
  }
  print(
    `launched ${ranks.map((r) => `rank ${r.rank} (pid ${r.child.pid})`).join(", ")} of ${world}, rendezvous at ` +
      `${o.masterAddr}:${o.masterPort}`,
  );

  return new Promise((resolve) => {
    let failure: { rank: number; code: number } | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    const running = () => ranks.filter((r) => !r.done);
    const stopOthers = () => {
      for (const r of running()) r.child.kill("SIGTERM");
      killTimer = setTimeout(
        () => {
          for (const r of running()) r.child.kill("SIGKILL");
        },
        (o.graceS ?? 3) * 1000,
      );
      killTimer.unref();
    };
    // Preemption (SIGTERM to the launcher) goes to every rank: each saves its part of one checkpoint.
    // Ctrl-C reaches the ranks from the terminal itself; the launcher only waits for them.
    const onTerm = () => {
      for (const r of running()) r.child.kill("SIGTERM");
    };
    const onInt = () => {};
    process.on("SIGTERM", onTerm);
    process.on("SIGINT", onInt);
    const finish = () => {
      process.off("SIGTERM", onTerm);
      process.off("SIGINT", onInt);
      if (killTimer) clearTimeout(killTimer);
      resolve(failure ? failure.code : Math.max(...ranks.map((r) => r.child.exitCode ?? 0)));
    };
    for (const r of ranks) {
      const onEnd = (code: number | null, signal: NodeJS.Signals | null) => {
        if (r.done) return;
        r.done = true;
        const bad = signal !== null || (code !== 0 && code !== 130 && code !== 143);
        if (bad && !failure) {
          failure = { rank: r.rank, code: code && code !== 0 ? code : 1 };
          const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
          print(`rank ${r.rank} (pid ${r.child.pid}) ${how}; stopping the other ${running().length} rank(s)`);
          stopOthers();
        }
        if (!running().length) finish();
      };
      r.child.on("exit", onEnd);
      r.child.on("error", (err) => {
        print(`rank ${r.rank}: could not start: ${err.message}`);
        onEnd(1, null);
      });
    }
  });
}

/**
 * In a rank this launcher started: SIGTERM when the launcher dies, however it dies (kill -9 included),
 * so the rank saves a checkpoint with its peers and ends instead of training on alone. A launcher that
 * is already gone (it died before this line ran) ends the rank at once.
 */
export function bindToLauncher(env: NodeJS.ProcessEnv = process.env): void {
  const launcher = Number(env.OASFT_LAUNCHER_PID);
  if (!Number.isInteger(launcher) || launcher <= 0) return;
  native.setParentDeathSignal(15);
  if (native.parentPid() !== launcher) {
    process.stderr.write(`rank ${env.RANK ?? "?"}: the launcher (pid ${launcher}) is gone; stopping\n`);
    process.exit(143);
  }
}
