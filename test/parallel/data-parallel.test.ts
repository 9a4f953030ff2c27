// Training on many processes over c10d (Gloo on loopback): 2 ranks give the losses of 1 process for
// ZeRO stages 0-3, with the optimizer state (stage ≥ 1) and parameters (stage 3) halved per rank;
// checkpoints resume on the same or another world size; a dead rank stops the job; bad setups fail
// on every rank with the cause, never hang.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { distEnv } from "../../src/parallel/env.js";
import { launchOptions, splitLaunchArgs } from "../../src/parallel/launch.js";
import { CLI, REPO, SHARED, maxAbsDiff } from "../helpers.js";

const tmp = () => mkdtempSync(join(tmpdir(), "oasft-dist-"));
const MODEL = join(REPO, "configs/bloom-tiny.json");
/**
 * 63 micro-batches of 24 samples per epoch: with 4 per step the epoch's last step has 3, so one rank
 * has an empty slot there (it still joins the collectives), and step 17 starts the next epoch.
 */
const runArgs = (out: string, extra: string[] = []) => [
  "train",
  "--configs",
  "defaults",
  "shared-sample",
  "tiny-tokenizer",
  "--cache_dir",
  join(SHARED, "data"),
  "--model_name",
  MODEL,
  "--output_dir",
  out,
  "--dtype",
  "fp32",
  "--per_device_train_batch_size",
  "24",
  "--learning_rate",
  "2e-3",
  "--warmup_steps",
  "3",
  "--eval_steps",
  "1000",
  "--logging_steps",
  "1",
  "--max_length",
  "32",
  "--max_steps",
  "20",
  "--save_steps",
  "10",
  ...extra,
];
const trainLosses = (out: string) =>
  readFileSync(join(out, "log.jsonl"), "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .filter((r) => r.type === "train")
    .map((r) => r.loss as number);

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  err: string;
  out: string;
}

function oasft(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  onErr?: (all: string, child: ReturnType<typeof spawn>) => void,
): Promise<Run> {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let err = "";
  let out = "";
  child.stdout!.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr!.on("data", (d: Buffer) => {
    err += d.toString();
    onErr?.(err, child);
  });
  return new Promise((resolve) => child.on("close", (code, signal) => resolve({ code, signal, err, out })));
}

/** Whether process `pid` has ended: gone, or a zombie waiting for its parent (Linux /proc). */
function exited(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] === "Z";
  } catch {
    return true;
  }
}

/** A TCP port nothing listens on right now (the OS picks it). */
function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const launcher = async (n: number) => ["--nproc_per_node", String(n), "--master_port", String(await freePort())];
const rankEnv = (rank: number, world: number, port: number) => ({
  RANK: String(rank),
  WORLD_SIZE: String(world),
  LOCAL_RANK: String(rank),
  LOCAL_WORLD_SIZE: String(world),
  MASTER_ADDR: "127.0.0.1",
  MASTER_PORT: String(port),
});

function assertClose(a: number[], b: number[], tol: number, what: string) {
  assert.equal(a.length, b.length, `${what}: ${a.length} vs ${b.length} steps`);
  a.forEach((x, i) => assert.ok(Math.abs(x - b[i]!) <= tol, `${what}, step ${i + 1}: ${x} vs ${b[i]}`));
}

/** The largest difference between two saved models' weights, and the fraction of weights more than 1e-5 apart. */
function weightsDiff(a: string, b: string): { max: number; farFraction: number } {
  const [x, y] = [
    torch.loadSafetensors(join(a, "model.safetensors")).tensors,
    torch.loadSafetensors(join(b, "model.safetensors")).tensors,
  ];
  let max = 0;
  let far = 0;
  let count = 0;
  for (const [name, t] of x) {
    max = Math.max(max, maxAbsDiff(t, y.get(name)!));
    far += torch.scope(() => t.sub(y.get(name)!).abs().gt(1e-5).sum().item());
    count += t.numel;
  }
  for (const t of [...x.values(), ...y.values()]) t.dispose();
  return { max, farFraction: far / count };
}

const summary = (out: string) => JSON.parse(readFileSync(join(out, "summary.json"), "utf8"));

describe("the torchrun environment and the launcher's flags", () => {
  test(
    "RANK/WORLD_SIZE/... are read as torchrun sets them, Slurm's srun variables map onto them, and bad values " +
      "name the variable",
    () => {
      assert.equal(distEnv({}), null);
      assert.deepEqual(distEnv(rankEnv(1, 2, 29500)), {
        rank: 1,
        worldSize: 2,
        localRank: 1,
        localWorldSize: 2,
        masterAddr: "127.0.0.1",
        masterPort: 29500,
        source: "torchrun",
      });
      const slurm = distEnv({
        SLURM_PROCID: "5",
        SLURM_NTASKS: "8",
        SLURM_LOCALID: "1",
        SLURM_NTASKS_PER_NODE: "4(x2)",
        MASTER_ADDR: "node1",
      });
      assert.deepEqual(slurm, {
        rank: 5,
        worldSize: 8,
        localRank: 1,
        localWorldSize: 4,
        masterAddr: "node1",
        masterPort: 29500,
        source: "slurm",
      });
      assert.equal(distEnv({ SLURM_PROCID: "0", SLURM_NTASKS: "1" }), null, "a one-task Slurm step runs alone");
      assert.throws(() => distEnv({ ...rankEnv(2, 2, 1), RANK: "2" }), /RANK=2 is not below WORLD_SIZE=2/);
      assert.throws(() => distEnv({ ...rankEnv(0, 2, 1), MASTER_ADDR: "" }), /MASTER_ADDR is not set/);
      assert.throws(() => distEnv({ ...rankEnv(0, 2, 1), WORLD_SIZE: "two" }), /WORLD_SIZE=two: expected an integer/);
      const { launch, rest } = splitLaunchArgs([
        "--configs",
        "a",
        "--nproc_per_node=2",
        "--master_port",
        "1234",
        "--lr",
        "1",
      ]);
      assert.deepEqual(launch, { nproc_per_node: "2", master_port: "1234" });
      assert.deepEqual(rest, ["--configs", "a", "--lr", "1"]);
      assert.throws(() => launchOptions({ nnodes: "2" }, []), /--nnodes > 1 needs --master_addr/);
      assert.throws(
        () => launchOptions({ nnodes: "2", node_rank: "2", master_addr: "a" }, []),
        /--node_rank 2: expected an integer from 0 to 1/,
      );
    },
  );
});

describe("data parallel and ZeRO over Gloo (2 processes)", () => {
  const dirs: Record<string, string> = {};

  test(
    "2 ranks give the per-step losses (1e-5) and final weights of 1 process, for ZeRO stages 0, 1, 2 (2 " +
      "ways) and 3",
    async () => {
      dirs.one = tmp();
      const one = await oasft(runArgs(dirs.one, ["--gradient_accumulation_steps", "4"]));
      assert.equal(one.code, 0, one.err);
      const reference = trainLosses(dirs.one);
      assert.equal(reference.length, 20);
      // Stage 2 twice: after accumulation, and (with gradient checkpointing) block by block in backward.
      const runs: Array<[string, number, string[]]> = [
        ["stage0", 0, []],
        ["stage1", 1, []],
        ["stage2", 2, []],
        ["stage3", 3, []],
        ["stage2-per-block", 2, ["--gradient_checkpointing"]],
      ];
      for (const [name, stage, extra] of runs) {
        const out = (dirs[name] = tmp());
        const r = await oasft([
          ...runArgs(out, ["--gradient_accumulation_steps", "2", "--zero_stage", String(stage), ...extra]),
          ...(await launcher(2)),
        ]);
        assert.equal(r.code, 0, r.err);
        assertClose(trainLosses(out), reference, 1e-5, name);
        // Sharding changes no arithmetic: stages 1 and 2 end with stage 0's weights. Against 1 process the
        // gradient sums are ordered differently (stage 3 and per-block stage 2 reduce each micro-batch at
        // once: a third order), and AdamW's g/√v turns float noise in near-zero gradients into steps of
        // up to lr on a few weights; nearly all weights still agree within 1e-5.
        if (name === "stage1" || name === "stage2")
          assert.ok(weightsDiff(out, dirs.stage0!).max <= 1e-6, `${name}: final weights = stage 0's`);
        else assert.ok(weightsDiff(out, dirs.one).farFraction < 0.005, `${name}: final weights of 1 process`);
        assert.deepEqual(
          readdirSync(join(out, "checkpoint-10"))
            .filter((n) => n.startsWith("zero_rank_"))
            .sort(),
          stage ? ["zero_rank_0.safetensors", "zero_rank_1.safetensors"] : [],
          `${name}: a shard per rank`,
        );
      }
    },
  );

  test("under bf16 autocast, ZeRO-3 (weights gathered and freed block by block) gives stage 0's losses", async () => {
    const losses: number[][] = [];
    for (const stage of ["0", "3"]) {
      const out = tmp();
      const extra = [
        "--dtype",
        "bf16",
        "--max_steps",
        "6",
        "--save_strategy",
        "no",
        "--gradient_accumulation_steps",
        "1",
        "--zero_stage",
        stage,
      ];
      const r = await oasft([...runArgs(out, extra), ...(await launcher(2))]);
      assert.equal(r.code, 0, r.err);
      losses.push(trainLosses(out));
    }
    assertClose(losses[1]!, losses[0]!, 1e-5, "bf16 stage 3");
  });

  test("per rank, stage 1 holds half the optimizer state of stage 0, and stage 3 half the parameters", () => {
    const ranks = (stage: number) =>
      summary(dirs[`stage${stage}`]!).ranks as Array<{ params: number; optimizer: number }>;
    const whole = summary(dirs.one!).ranks[0] as { params: number; optimizer: number };
    const units = 3; // bloom-tiny: 2 blocks and the rest; each unit pads to an even length
    for (const stage of [1, 2, 3]) {
      for (const r of ranks(stage))
        assert.ok(
          Math.abs(r.optimizer - whole.optimizer / 2) <= units * 8,
          `stage ${stage}: ${r.optimizer} vs ${whole.optimizer}`,
        );
    }
    for (const r of ranks(0)) assert.equal(r.optimizer, whole.optimizer);
    for (const r of ranks(1)) assert.equal(r.params, whole.params);
    for (const r of ranks(3))
      assert.ok(Math.abs(r.params - whole.params / 2) <= units * 4, `stage 3 params: ${r.params} vs ${whole.params}`);
  });

  test(
    "resume: the same world size repeats the uninterrupted losses exactly; another world size or stage " +
      "re-shards and continues (1e-4)",
    async () => {
      const reference = trainLosses(dirs.one!);
      const cases: Array<[string, string, string[]]> = [
        [
          "stage 2 on 2 ranks, from its own checkpoint",
          "stage2",
          ["--zero_stage", "2", "--gradient_accumulation_steps", "2", ...(await launcher(2))],
        ],
        ["1 process, from a stage-3 checkpoint of 2 ranks", "stage3", ["--gradient_accumulation_steps", "4"]],
        [
          "stage 1 on 2 ranks, from a checkpoint of 1 process",
          "one",
          ["--zero_stage", "1", "--gradient_accumulation_steps", "2", ...(await launcher(2))],
        ],
      ];
      for (const [what, from, extra] of cases) {
        const out = tmp();
        const r = await oasft([
          ...runArgs(out, ["--resume_from_checkpoint", join(dirs[from]!, "checkpoint-10")]),
          ...extra,
        ]);
        assert.equal(r.code, 0, r.err);
        if (from === "stage2") assert.deepEqual(trainLosses(out), trainLosses(dirs.stage2!).slice(10), what);
        else assertClose(trainLosses(out), reference.slice(10), 1e-4, what);
      }
    },
  );

  test("ranks started by an external launcher (only the torchrun environment set) train as one job", async () => {
    const out = tmp();
    const port = await freePort();
    const args = runArgs(out, ["--gradient_accumulation_steps", "2", "--zero_stage", "2", "--save_strategy", "no"]);
    const runs = await Promise.all([0, 1].map((rank) => oasft(args, rankEnv(rank, 2, port))));
    for (const r of runs) assert.equal(r.code, 0, r.err);
    assertClose(trainLosses(out), trainLosses(dirs.one!), 1e-5, "external launch");
    assert.equal(runs[1]!.out, "", "only rank 0 prints the summary");
  });

  test("two nodes of one process each (--nnodes 2 --node_rank 0|1) train as one job", async () => {
    const out = tmp();
    const port = String(await freePort());
    const args = runArgs(out, ["--gradient_accumulation_steps", "2", "--save_strategy", "no"]);
    // Two "machines" on this one: each would take every core, so each gets one.
    const node = (rank: number) =>
      oasft(
        [
          ...args,
          "--nnodes",
          "2",
          "--node_rank",
          String(rank),
          "--nproc_per_node",
          "1",
          "--master_addr",
          "127.0.0.1",
          "--master_port",
          port,
        ],
        { OMP_NUM_THREADS: "1" },
      );
    const runs = await Promise.all([node(0), node(1)]);
    for (const r of runs) assert.equal(r.code, 0, r.err);
    assertClose(trainLosses(out), trainLosses(dirs.one!), 1e-5, "two nodes");
  });
});

describe("a dead rank and bad setups", () => {
  test(
    "kill -9 of one rank: the launcher stops the other and exits non-zero naming the rank; resume latest " +
      "continues",
    async () => {
      const out = tmp();
      const args = [
        ...runArgs(out, ["--max_steps", "400", "--save_steps", "2", "--gradient_accumulation_steps", "1"]),
        ...(await launcher(2)),
      ];
      let pids: number[] = [];
      let killed = false;
      let killedAt = 0;
      const r = await oasft(args, {}, (err) => {
        const m = /rank 0 \(pid (\d+)\), rank 1 \(pid (\d+)\)/.exec(err);
        if (m) pids = [Number(m[1]), Number(m[2])];
        // After the first complete checkpoint (an event in the log, not a delay).
        if (!killed && pids.length && /saved \S*checkpoint-2\b/.test(err)) {
          killed = true;
          killedAt = performance.now();
          process.kill(pids[1]!, "SIGKILL");
        }
      });
      assert.ok(killed, r.err);
      assert.notEqual(r.code, 0);
      assert.ok(performance.now() - killedAt < 60_000, "the launcher exits within 60 s");
      assert.match(r.err, /rank 1 \(pid \d+\) was killed by SIGKILL; stopping the other 1 rank/);
      for (const pid of pids) assert.throws(() => process.kill(pid, 0), /ESRCH/, `rank pid ${pid} is gone`);
      const resumed = await oasft([
        ...runArgs(out, [
          "--max_steps",
          "4",
          "--gradient_accumulation_steps",
          "1",
          "--resume_from_checkpoint",
          "latest",
        ]),
        ...(await launcher(2)),
      ]);
      assert.equal(resumed.code, 0, resumed.err);
      assert.match(resumed.err, /resumed from \S*checkpoint-\d+ at step \d+/);
      assert.ok(existsSync(join(out, "model.safetensors")));
    },
  );

  test(
    "kill -9 of the launcher: its ranks end too (parent-death signal), saving one checkpoint together; resume " +
      "latest continues",
    { timeout: 300_000 },
    async () => {
      const out = tmp();
      const args = [
        ...runArgs(out, ["--max_steps", "400", "--save_steps", "2", "--gradient_accumulation_steps", "1"]),
        ...(await launcher(2)),
      ];
      let pids: number[] = [];
      let killed = false;
      // The ranks inherit the launcher's stderr: "close" comes once they have ended too (the timeout above
      // only stops a hang, the failure this test is about).
      const r = await oasft(args, {}, (err, child) => {
        const m = /rank 0 \(pid (\d+)\), rank 1 \(pid (\d+)\)/.exec(err);
        if (m) pids = [Number(m[1]), Number(m[2])];
        if (!killed && pids.length && /saved \S*checkpoint-2\b/.test(err)) {
          killed = true;
          child.kill("SIGKILL");
        }
      });
      assert.ok(killed, r.err);
      assert.equal(r.signal, "SIGKILL");
      // Their stderr closed when they exited; an exited rank may still await its reaping (a zombie, "Z").
      for (const pid of pids) assert.ok(exited(pid), `rank pid ${pid} has exited`);
      assert.match(r.err, /SIGTERM: finishing this step, then saving a checkpoint/);
      const resumed = await oasft([
        ...runArgs(out, [
          "--max_steps",
          "4",
          "--gradient_accumulation_steps",
          "1",
          "--resume_from_checkpoint",
          "latest",
        ]),
        ...(await launcher(2)),
      ]);
      assert.equal(resumed.code, 0, resumed.err);
      assert.match(resumed.err, /resumed from \S*checkpoint-\d+ at step \d+/);
    },
  );

  test(
    "MASTER_PORT in use, an unreachable master, different configs, a ZeRO stage outside 0-3: errors naming the " +
      "cause, no hang",
    async () => {
      const busy = createServer();
      const port = await new Promise<number>((resolve) =>
        busy.listen(0, "127.0.0.1", () => resolve((busy.address() as { port: number }).port)),
      );
      try {
        const r = await oasft([
          ...runArgs(tmp(), ["--dist_timeout", "20"]),
          "--nproc_per_node",
          "2",
          "--master_port",
          String(port),
        ]);
        assert.notEqual(r.code, 0);
        assert.match(r.err, new RegExp(`MASTER_PORT ${port} is in use`));
      } finally {
        busy.close();
      }
      // Rank 1 alone: rank 0 never comes.
      const lonely = await oasft(runArgs(tmp(), ["--dist_timeout", "3"]), rankEnv(1, 2, await freePort()));
      assert.notEqual(lonely.code, 0);
      assert.match(lonely.err, /rank 1 could not rendezvous at 127\.0\.0\.1:\d+ within 3 s/);
      // Rank 0 alone: rank 1 never comes, and rank 0 names it.
      const alone = await oasft(runArgs(tmp(), ["--dist_timeout", "3"]), rankEnv(0, 2, await freePort()));
      assert.notEqual(alone.code, 0);
      assert.match(
        alone.err,
        /rank 0: rank\(s\) 1 of 2 did not join the rendezvous at 127\.0\.0\.1:\d+ within 3 s \(dist_timeout\)/,
      );
      // The same job, but rank 1 was given another learning rate.
      const port2 = await freePort();
      const out = tmp();
      const runs = await Promise.all([
        oasft(runArgs(out, ["--dist_timeout", "30"]), rankEnv(0, 2, port2)),
        oasft(runArgs(out, ["--dist_timeout", "30", "--learning_rate", "1e-3"]), rankEnv(1, 2, port2)),
      ]);
      for (const [rank, run] of runs.entries()) {
        assert.notEqual(run.code, 0);
        assert.match(
          run.err,
          new RegExp(`rank ${rank}: the ranks were started with different configs \\(rank 1 differs from rank 0\\)`),
        );
      }
      const stage4 = await oasft([...runArgs(tmp(), ["--zero_stage", "4"]), ...(await launcher(2))]);
      assert.notEqual(stage4.code, 0);
      assert.match(stage4.err, /zero_stage/);
      const dir = tmp();
      writeFileSync(join(dir, "ds.json"), JSON.stringify({ zero_optimization: { stage: 5 } }));
      const ds = await oasft(runArgs(tmp(), ["--deepspeed", "--deepspeed_config", join(dir, "ds.json")]));
      assert.notEqual(ds.code, 0);
      assert.match(ds.err, /ds\.json › zero_optimization\.stage: expected 0, 1, 2 or 3, got 5/);
    },
  );
});
