// ZeRO stages 1-3 (see zero.ts for what each stage shards): the optimizer that keeps this rank's
// slices of AdamW's moments (stage ≥ 1), of the gradients (stage ≥ 2) and of the parameters (stage 3),
// gathering and reducing unit by unit over the process group.
import { join } from "node:path";
import * as torch from "../torch/index.js";
import type { CausalLM } from "../models/index.js";
import type { BlockHooks } from "../nn/checkpoint.js";
import type { ProcessGroup } from "../parallel/group.js";
import { adamwUpdate, type ParamGroup } from "./adamw.js";
import { SHARD_FILE, readUnitMoments, zeroUnits, type ZeroUnit } from "./zero-units.js";
import { tensorBytes, type HeldBytes, type OptimizerSettings, type TrainOptimizer } from "./zero.js";

export class ShardedOptimizer implements TrainOptimizer {
  lr: number;
  readonly blockHooks: BlockHooks | undefined;
  private readonly units: ZeroUnit[];
  private readonly shardLen: number[];
  /** This rank's slice of each unit's parameters (stage 3: the only copy), m, v and summed gradient. */
  private readonly master: torch.Tensor[];
  private readonly m: torch.Tensor[];
  private readonly v: torch.Tensor[];
  private grad: Array<torch.Tensor | undefined>;
  private steps = 0;
  private readonly outer: number | undefined;
  private readonly blockUnit: Map<number, number>;
  private gathered = new Set<number>();

  /** Gradients are reduced during backward, block by block (stage 3; stage 2 with checkpointing). */
  private readonly perBlock: boolean;

  /** `checkpointing`: trainStep runs with gradient checkpointing, so stage 2 can reduce block by block. */
  constructor(
    model: CausalLM,
    names: string[],
    groups: ParamGroup[],
    private readonly o: OptimizerSettings,
    private readonly processGroup: ProcessGroup,
    readonly stage: 1 | 2 | 3,
    checkpointing = stage === 3,
  ) {
    this.lr = o.lr;
    this.units = zeroUnits(model, names, groups);
    const world = processGroup.worldSize;
    this.shardLen = this.units.map((u) => Math.ceil(u.numel / world));
    const device = model.device;
    this.master = this.units.map((_, i) =>
      torch.noGrad(() =>
        torch.scope(() => {
          const flat = this.flatten(i, (p) => p);
          return flat
            .narrow(0, processGroup.rank * this.shardLen[i]!, this.shardLen[i]!)
            .to("float32")
            .clone()
            .keep();
        }),
      ),
    );
    const zeros = (n: number) => torch.zeros([n], { dtype: "float32", device }).keep();
    this.m = this.shardLen.map(zeros);
    this.v = this.shardLen.map(zeros);
    this.grad = this.units.map(() => undefined);
    this.blockUnit = new Map(
      this.units.flatMap((u, i) => (u.block === undefined ? [] : [[u.block, i] as [number, number]])),
    );
    const outer = this.units.findIndex((u) => u.block === undefined);
    this.outer = outer >= 0 ? outer : undefined;
    this.perBlock = stage === 3 || (stage === 2 && checkpointing);
    if (this.perBlock) {
      for (let i = 0; i < this.units.length; i++) this.release(i);
      const unitOf = (b: number) => this.blockUnit.get(b);
      this.blockHooks = {
        before: (b) => {
          const u = unitOf(b);
          if (u !== undefined) this.gather(u);
        },
        after: (b, phase) => {
          const u = unitOf(b);
          if (u === undefined) return;
          if (phase === "backward") this.reduceUnit(u);
          this.release(u);
        },
      };
    }
  }

  /** Unit i's tensors (picked by `of` from each parameter) end to end, zero-padded to world × slice. */
  private flatten(i: number, of: (p: torch.Tensor) => torch.Tensor | undefined): torch.Tensor {
    const u = this.units[i]!;
    const device = u.params[0]![1].device;
    const parts = u.params.map(
      ([, p], k) => of(p)?.reshape([-1]) ?? torch.zeros([u.sizes[k]!], { dtype: "float32", device }),
    );
    const pad = this.shardLen[i]! * this.processGroup.worldSize - u.numel;
    if (pad) parts.push(torch.zeros([pad], { dtype: parts[0]!.dtype, device }));
    return torch.cat(parts);
  }

  /** Stage 3: the unit's parameters become whole (views of one gathered flat vector). */
  private gather(i: number): void {
    if (this.stage !== 3 || this.gathered.has(i)) return;
    const u = this.units[i]!;
    torch.noGrad(() =>
      torch.scope(() => {
        const parts = this.processGroup.allGather(this.master[i]!);
        const flat = torch.cat(parts);
        u.params.forEach(([, p], k) => {
          const value = flat.narrow(0, u.offsets[k]!, u.sizes[k]!).view(u.shapes[k]!);
          torch.setData(p, p.dtype === "float32" ? value : value.to(p.dtype));
        });
      }),
    );
    this.gathered.add(i);
  }

  /** Stage 3: the unit's parameters give their storage back (empty tensors until the next gather). */
  private release(i: number): void {
    if (this.stage !== 3) return;
    for (const [, p] of this.units[i]!.params) {
      torch.scope(() => torch.setData(p, torch.empty([0], { dtype: p.dtype, device: p.device })));
    }
    this.gathered.delete(i);
  }

  /** Sums the unit's gradients over ranks into this rank's slice (stage 1: all-reduce; 2, 3: reduce-scatter). */
  private reduceUnit(i: number): void {
    const u = this.units[i]!;
    torch.noGrad(() =>
      torch.scope(() => {
        const flat = this.flatten(i, (p) => p.grad?.to("float32"));
        const L = this.shardLen[i]!;
        let slice: torch.Tensor;
        if (this.stage === 1) {
          this.processGroup.allReduce(flat);
          slice = flat.narrow(0, this.processGroup.rank * L, L);
        } else slice = this.processGroup.reduceScatter(flat);
        const acc = this.grad[i];
        if (acc) acc.add_(slice);
        else this.grad[i] = slice.contiguous().clone().keep();
        for (const [, p] of u.params) p.grad = undefined;
      }),
    );
  }

  beforeMicroBatch(): void {
    if (this.outer !== undefined) this.gather(this.outer);
  }

  afterMicroBatch(): void {
    if (!this.perBlock || this.outer === undefined) return;
    this.reduceUnit(this.outer);
    this.release(this.outer);
  }

  idleMicroBatch(): void {
    if (!this.perBlock) return;
    // The same collectives, in the same order, as a micro-batch: forward gathers, backward gathers and reduces.
    this.beforeMicroBatch();
    const blocks = [...this.blockUnit.keys()].sort((a, b) => a - b);
    for (const b of blocks) {
      this.blockHooks!.before(b, "forward");
      this.blockHooks!.after(b, "forward");
    }
    for (const b of [...blocks].reverse()) {
      this.blockHooks!.before(b, "backward");
      this.blockHooks!.after(b, "backward");
    }
    this.afterMicroBatch();
  }

  reduceGradients(): void {
    if (this.perBlock) return; // reduced block by block during backward
    for (let i = 0; i < this.units.length; i++) this.reduceUnit(i);
  }

  scaleGrads(factor: number): void {
    if (factor === 1) return;
    torch.noGrad(() => {
      for (const g of this.grad) g?.mul_(factor);
    });
  }

  gradNorm(): number {
    const local = torch.noGrad(() =>
      torch.scope(() => this.grad.reduce((n, g) => n + (g ? g.to("float64").pow(2).sum().item() : 0), 0)),
    );
    return Math.sqrt(this.processGroup.reduceNumbers([local])[0]!);
  }

  clip(maxNorm: number): number {
    const norm = this.gradNorm();
    if (Number.isFinite(norm) && maxNorm > 0) {
      const coef = maxNorm / (norm + 1e-6);
      if (coef < 1) this.scaleGrads(coef);
    }
    return norm;
  }

  step(): void {
    this.steps++;
    const { betas, eps } = this.o;
    torch.noGrad(() => {
      this.units.forEach((u, i) =>
        torch.scope(() => {
          const L = this.shardLen[i]!;
          const lo = this.processGroup.rank * L;
          const g = this.grad[i] ?? torch.zeros([L], { dtype: "float32", device: this.master[i]!.device });
          // The slice [lo, lo + L) of the unit meets the decayed segment [0, decayEnd) and the rest [decayEnd, numel).
          const segments: Array<[number, number, number]> = [
            [lo, Math.min(lo + L, u.decayEnd), this.o.weightDecay],
            [Math.max(lo, u.decayEnd), Math.min(lo + L, u.numel), 0],
          ];
          for (const [a, b, wd] of segments) {
            if (b <= a) continue;
            const part = (t: torch.Tensor) => t.narrow(0, a - lo, b - a);
            adamwUpdate(part(this.master[i]!), part(g), part(this.m[i]!), part(this.v[i]!), this.steps, {
              lr: this.lr,
              betas,
              eps,
              weightDecay: wd,
            });
          }
          if (this.stage < 3) {
            // Every rank's updated slice back into the whole parameters.
            const flat = torch.cat(this.processGroup.allGather(this.master[i]!));
            u.params.forEach(([, p], k) => p.copy_(flat.narrow(0, u.offsets[k]!, u.sizes[k]!).view(u.shapes[k]!)));
          }
        }),
      );
    });
  }

  zeroGrad(): void {
    for (const g of this.grad) g?.dispose();
    this.grad = this.units.map(() => undefined);
    for (const u of this.units) for (const [, p] of u.params) p.grad = undefined;
  }

  withFullParams<T>(fn: () => T): T {
    if (this.stage !== 3) return fn();
    const before = new Set(this.gathered);
    for (let i = 0; i < this.units.length; i++) this.gather(i);
    try {
      return fn();
    } finally {
      for (let i = 0; i < this.units.length; i++) if (!before.has(i)) this.release(i);
    }
  }

  heldBytes(): HeldBytes {
    const sum = (ts: Array<torch.Tensor | undefined>) => ts.reduce((n, t) => n + (t ? tensorBytes(t) : 0), 0);
    const params = this.units.flatMap((u) => u.params.map(([, p]) => p));
    return {
      params: this.stage === 3 ? sum(this.master) + sum(params) : sum(params),
      master: this.stage === 3 ? 0 : sum(this.master),
      grads: sum(this.grad) + sum(params.map((p) => p.grad)),
      optimizer: sum(this.m) + sum(this.v),
    };
  }

  // ----- checkpoints ---------------------------------------------------------------------------------

  checkpointParts() {
    return { writeShard: (dir: string) => this.saveShard(dir) };
  }

  /** Writes this rank's moments to dir/zero_rank_<rank>.safetensors (every rank, its own file). */
  saveShard(dir: string): void {
    const tensors: Array<[string, torch.Tensor]> = [];
    this.units.forEach((_, i) => tensors.push([`exp_avg.${i}`, this.m[i]!], [`exp_avg_sq.${i}`, this.v[i]!]));
    torch.saveSafetensors(join(dir, SHARD_FILE(this.processGroup.rank)), tensors, {
      stage: String(this.stage),
      world_size: String(this.processGroup.worldSize),
      rank: String(this.processGroup.rank),
      step: String(this.steps),
      units: JSON.stringify(
        this.units.map((u) => ({ name: u.name, numel: u.numel, params: u.params.map(([n]) => n) })),
      ),
    });
  }

  /**
   * Loads the moments from a checkpoint written with any world size and stage: sharded files are
   * joined unit by unit and cut again for this world; a stage-0 optimizer.safetensors is laid out as
   * units. Only one unit is whole in memory at a time.
   */
  loadState(dir: string): void {
    const units = readUnitMoments(dir, this.units);
    this.steps = units.step;
    this.units.forEach((u, i) =>
      torch.noGrad(() =>
        torch.scope(() => {
          const L = this.shardLen[i]!;
          for (const [which, into] of [
            ["m", this.m[i]!],
            ["v", this.v[i]!],
          ] as const) {
            const whole = units.read(i, which);
            const pad = L * this.processGroup.worldSize - u.numel;
            const padded = pad
              ? torch.cat([whole, torch.zeros([pad], { dtype: "float32", device: whole.device })])
              : whole;
            into.copy_(padded.narrow(0, this.processGroup.rank * L, L));
          }
        }),
      ),
    );
  }

  dispose(): void {
    for (const t of [...this.master, ...this.m, ...this.v]) t.dispose();
    this.zeroGrad();
  }
}
