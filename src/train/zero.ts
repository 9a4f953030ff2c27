// The trainer's optimizer across ranks: data parallel, and ZeRO (Rajbhandari et al., 2020) stages
// 1-3 as DeepSpeed's zero_optimization.stage names them, over the process group's collectives.
//
//   stage 0  every rank holds everything; gradients are all-reduced in buckets after accumulation.
//   stage 1  + AdamW's moments are sharded: rank r updates only its 1/world slice of the parameters
//            (from all-reduced gradients), then the slices are all-gathered back into every rank.
//   stage 2  + gradients are sharded: they are reduce-scattered, each rank keeps only its slice. With
//            gradient checkpointing this happens block by block during backward, so no rank ever
//            holds more than one block's whole gradients (plus those outside the blocks).
//   stage 3  + parameters are sharded: between uses a rank holds only its slice. Each block's
//            parameters are gathered just before its forward and again for its recomputation in
//            backward (so stage 3 runs with gradient checkpointing), then freed, and the block's
//            gradients are reduce-scattered at once. The parameters outside the blocks (embeddings,
//            final norm, LM head) are one more unit, gathered for each micro-batch.
//
// Sharding is FSDP's: the parameters of one unit (a block, or everything outside the blocks) are laid
// end to end in one flat vector, padded to a multiple of the world size, and rank r owns elements
// [r·L, (r+1)·L). AdamW is elementwise, so a sharded step is the same arithmetic as a whole one. In
// a unit the decayed parameters come first, so a slice meets at most two weight-decay segments.
import { join } from "node:path";
import { existsSync } from "node:fs";
import * as torch from "../torch/index.js";
import type { CausalLM } from "../models/index.js";
import type { BlockHooks } from "../nn/checkpoint.js";
import type { ProcessGroup } from "../parallel/group.js";
import { AdamW, adamwUpdate, type ParamGroup } from "./adamw.js";
import { clipGradNorm, globalGradNorm, scaleGrads } from "./grad.js";
import { hasWholeOptimizerState, loadWholeOptimizer, type SaveCheckpointArgs } from "./state.js";

export type ZeroStage = 0 | 1 | 2 | 3;

export interface OptimizerSettings {
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
}

/** What a rank holds, in bytes, for the memory report and the ZeRO tests. */
export interface HeldBytes {
  /** The parameters as the model holds them (stage 3: the rank's slices only, between uses). */
  params: number;
  /** fp32 master slices kept beside full parameters (stages 1 and 2). */
  master: number;
  grads: number;
  /** AdamW's two moments. */
  optimizer: number;
}

/** The optimizer the training loop drives, whatever the stage and world size. */
export interface TrainOptimizer {
  lr: number;
  readonly stage: ZeroStage;
  /** trainStep's hooks (stage 3: gather and free each block); undefined otherwise. */
  readonly blockHooks: BlockHooks | undefined;
  /** Around each micro-batch's trainStep (stage 3: the parameters outside the blocks). */
  beforeMicroBatch(): void;
  afterMicroBatch(): void;
  /**
   * A micro-batch slot this rank has no data for (the last step of an epoch, or no trained token):
   * it takes part in the collectives the other ranks' micro-batches make, with zero gradients.
   */
  idleMicroBatch(): void;
  /** After the step's micro-batches: every rank's gradient summed (stage ≥ 1: into its slice). */
  reduceGradients(): void;
  scaleGrads(factor: number): void;
  /** The global L2 norm of the summed gradient. */
  gradNorm(): number;
  /** Clips to maxNorm as torch.nn.utils.clip_grad_norm_; returns the norm before clipping. */
  clip(maxNorm: number): number;
  step(): void;
  zeroGrad(): void;
  /** Runs fn with every parameter whole on every rank (stage 3 gathers them, then frees them). A collective. */
  withFullParams<T>(fn: () => T): T;
  /** What a checkpoint gets from the optimizer: whole AdamW state (rank 0 writes it), or each rank's shard. */
  checkpointParts(): Pick<SaveCheckpointArgs, "optimizer" | "writeShard">;
  /** Restores the moments from a checkpoint of any stage and world size. */
  loadState(dir: string): void;
  heldBytes(): HeldBytes;
  dispose(): void;
}

const tensorBytes = (t: torch.Tensor) => t.numel * torch.BYTES_PER_ELEMENT[t.dtype];

// ----- stage 0 ----------------------------------------------------------------------------------

const BUCKET_ELEMENTS = 1 << 24; // 64 MiB of float32 per all-reduce

/** Stage 0: one AdamW per rank over whole parameters; gradients all-reduced in buckets. */
export class ReplicatedOptimizer implements TrainOptimizer {
  readonly stage = 0;
  readonly blockHooks = undefined;
  readonly adamw: AdamW;
  private readonly params: torch.Tensor[];

  constructor(
    private readonly model: CausalLM,
    private readonly names: string[],
    private readonly groups: ParamGroup[],
    o: OptimizerSettings,
    private readonly group: ProcessGroup,
  ) {
    this.adamw = new AdamW(groups, o);
    this.params = groups.flatMap((g) => g.params);
  }

  get lr() {
    return this.adamw.lr;
  }
  set lr(v: number) {
    this.adamw.lr = v;
  }
  beforeMicroBatch() {}
  afterMicroBatch() {}
  idleMicroBatch() {}

  reduceGradients(): void {
    if (this.group.worldSize === 1) return;
    torch.noGrad(() => {
      // A rank without data this step has no .grad yet: its share of the sum is zero.
      for (const p of this.params) if (!p.grad) p.grad = torch.zeros(p.shape, { dtype: p.dtype, device: p.device });
      let bucket: torch.Tensor[] = [];
      let size = 0;
      const flush = () =>
        torch.scope(() => {
          if (!bucket.length) return;
          const flat = torch.cat(bucket.map((p) => p.grad!.reshape([-1])));
          this.group.allReduce(flat);
          let at = 0;
          for (const p of bucket) {
            p.grad!.copy_(flat.narrow(0, at, p.numel).view(p.shape));
            at += p.numel;
          }
          bucket = [];
          size = 0;
        });
      for (const p of this.params) {
        if (size + p.numel > BUCKET_ELEMENTS) flush();
        bucket.push(p);
        size += p.numel;
      }
      flush();
    });
  }

  scaleGrads(factor: number) {
    scaleGrads(this.params, factor);
  }
  gradNorm() {
    return globalGradNorm(this.params);
  }
  clip(maxNorm: number) {
    return clipGradNorm(this.params, maxNorm);
  }
  step() {
    this.adamw.step();
  }
  zeroGrad() {
    this.adamw.zeroGrad();
  }
  withFullParams<T>(fn: () => T): T {
    return fn();
  }
  checkpointParts() {
    return { optimizer: this.adamw };
  }

  /** Whole moments by name (a stage-0 checkpoint), or a sharded checkpoint's units cut back into tensors. */
  loadState(dir: string): void {
    if (hasWholeOptimizerState(dir)) {
      loadWholeOptimizer(dir, this.adamw, this.names);
      return;
    }
    const units = zeroUnits(this.model, this.names, this.groups);
    const moments = readUnitMoments(dir, units);
    const index = new Map(this.names.map((n, i) => [n, i]));
    const list = units.flatMap((u, i) =>
      torch.scope(() => {
        const [m, v] = [moments.read(i, "m"), moments.read(i, "v")];
        return u.params.map(([n], k) => ({
          index: index.get(n)!,
          step: moments.step,
          expAvg: m.narrow(0, u.offsets[k]!, u.sizes[k]!).view(u.shapes[k]!).keep(),
          expAvgSq: v.narrow(0, u.offsets[k]!, u.sizes[k]!).view(u.shapes[k]!).keep(),
        }));
      }),
    );
    try {
      this.adamw.loadState(list);
    } finally {
      for (const s of list) {
        s.expAvg.dispose();
        s.expAvgSq.dispose();
      }
    }
  }

  heldBytes(): HeldBytes {
    const moments = this.adamw.stateList().reduce((n, s) => n + tensorBytes(s.expAvg) + tensorBytes(s.expAvgSq), 0);
    return {
      params: this.params.reduce((n, p) => n + tensorBytes(p), 0),
      master: 0,
      grads: this.params.reduce((n, p) => n + (p.grad ? tensorBytes(p.grad) : 0), 0),
      optimizer: moments,
    };
  }

  dispose() {
    this.adamw.dispose();
  }
}

// ----- stages 1-3 -----------------------------------------------------------------------------------

/** One unit of sharding: a block's parameters, or those outside the blocks. */
export interface ZeroUnit {
  name: string;
  /** The block's index; undefined for the parameters outside the blocks. */
  block: number | undefined;
  /** Checkpoint names and tensors, decayed ones first. */
  params: Array<[string, torch.Tensor]>;
  shapes: number[][];
  sizes: number[];
  offsets: number[];
  /** Elements [0, decayEnd) take weight decay. */
  decayEnd: number;
  numel: number;
}

/**
 * The units of a model's trainable parameters: one per block, then everything else. `names` and
 * `groups` are paramGroups' (names in group order, group 0 decayed).
 */
export function zeroUnits(model: CausalLM, names: string[], groups: ParamGroup[]): ZeroUnit[] {
  const decayed = new Set(groups[0]?.params ?? []);
  const owner = new Map<torch.Tensor, number>();
  model.blocks.forEach((block, i) => {
    for (const [, t] of block.namedParameters()) owner.set(t, i);
  });
  const members: Array<Array<[string, torch.Tensor]>> = Array.from({ length: model.blocks.length + 1 }, () => []);
  groups.flatMap((g) => g.params).forEach((p, k) => members[owner.get(p) ?? model.blocks.length]!.push([names[k]!, p]));
  return members
    .map((list, i) => {
      const params = [...list.filter(([, p]) => decayed.has(p)), ...list.filter(([, p]) => !decayed.has(p))];
      const sizes = params.map(([, p]) => p.numel);
      const offsets = sizes.map((_, k) => sizes.slice(0, k).reduce((a, b) => a + b, 0));
      const decayEnd = params.filter(([, p]) => decayed.has(p)).reduce((n, [, p]) => n + p.numel, 0);
      const block = i < model.blocks.length ? i : undefined;
      return {
        name: block === undefined ? "outside the blocks" : `block ${block}`,
        block,
        params,
        sizes,
        offsets,
        decayEnd,
        shapes: params.map(([, p]) => p.shape),
        numel: sizes.reduce((a, b) => a + b, 0),
      };
    })
    .filter((u) => u.numel > 0);
}

/** Rank r's file of AdamW moment slices in a stage ≥ 1 checkpoint. */
export const SHARD_FILE = (rank: number) => `zero_rank_${rank}.safetensors`;

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
    private readonly group: ProcessGroup,
    readonly stage: 1 | 2 | 3,
    checkpointing = stage === 3,
  ) {
    this.lr = o.lr;
    this.units = zeroUnits(model, names, groups);
    const world = group.worldSize;
    this.shardLen = this.units.map((u) => Math.ceil(u.numel / world));
    const device = model.device;
    this.master = this.units.map((_, i) =>
      torch.noGrad(() =>
        torch.scope(() => {
          const flat = this.flatten(i, (p) => p);
          return flat
            .narrow(0, group.rank * this.shardLen[i]!, this.shardLen[i]!)
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
    const pad = this.shardLen[i]! * this.group.worldSize - u.numel;
    if (pad) parts.push(torch.zeros([pad], { dtype: parts[0]!.dtype, device }));
    return torch.cat(parts);
  }

  /** Stage 3: the unit's parameters become whole (views of one gathered flat vector). */
  private gather(i: number): void {
    if (this.stage !== 3 || this.gathered.has(i)) return;
    const u = this.units[i]!;
    torch.noGrad(() =>
      torch.scope(() => {
        const parts = this.group.allGather(this.master[i]!);
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
          this.group.allReduce(flat);
          slice = flat.narrow(0, this.group.rank * L, L);
        } else slice = this.group.reduceScatter(flat);
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
    return Math.sqrt(this.group.reduceNumbers([local])[0]!);
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
          const lo = this.group.rank * L;
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
            const flat = torch.cat(this.group.allGather(this.master[i]!));
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
    torch.saveSafetensors(join(dir, SHARD_FILE(this.group.rank)), tensors, {
      stage: String(this.stage),
      world_size: String(this.group.worldSize),
      rank: String(this.group.rank),
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
            const pad = L * this.group.worldSize - u.numel;
            const padded = pad
              ? torch.cat([whole, torch.zeros([pad], { dtype: "float32", device: whole.device })])
              : whole;
            into.copy_(padded.narrow(0, this.group.rank * L, L));
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

/**
 * Reads unit moments from a checkpoint folder: zero_rank_*.safetensors (sharded, any world size) or
 * optimizer.safetensors (stage 0, per parameter). A missing piece names the file and the tensor.
 */
export function readUnitMoments(
  dir: string,
  units: ZeroUnit[],
): { step: number; read(i: number, which: "m" | "v"): torch.Tensor } {
  const first = join(dir, SHARD_FILE(0));
  if (existsSync(first)) {
    const header = torch.readSafetensorsHeader(first);
    const world = Number(header.metadata.world_size);
    const saved = JSON.parse(header.metadata.units ?? "[]") as Array<{ name: string; numel: number; params: string[] }>;
    units.forEach((u, i) => {
      const s = saved[i];
      if (!s || s.numel !== u.numel || s.params.join() !== u.params.map(([n]) => n).join()) {
        throw new Error(
          `${first}: unit ${i} (${u.name}) holds other parameters than this model's (another model's checkpoint?)`,
        );
      }
    });
    const files = Array.from({ length: world }, (_, r) => join(dir, SHARD_FILE(r)));
    const headers = files.map((f) => {
      if (!existsSync(f)) throw new Error(`${f}: missing (the checkpoint was written by ${world} ranks)`);
      return torch.readSafetensorsHeader(f);
    });
    return {
      step: Number(header.metadata.step),
      read(i, which) {
        const name = `${which === "m" ? "exp_avg" : "exp_avg_sq"}.${i}`;
        const parts = headers.map((h) => {
          const e = h.entries.get(name);
          if (!e) throw new Error(`${h.path}: missing ${name} (the checkpoint is incomplete)`);
          return torch.loadSafetensorsEntry(h.path, e, name);
        });
        return torch.cat(parts).narrow(0, 0, units[i]!.numel);
      },
    };
  }
  const file = join(dir, "optimizer.safetensors");
  const header = torch.readSafetensorsHeader(file);
  const steps = JSON.parse(header.metadata.steps ?? "{}") as Record<string, number>;
  return {
    step: Math.max(0, ...Object.values(steps)),
    read(i, which) {
      const u = units[i]!;
      return torch.cat(
        u.params.map(([n], k) => {
          const name = `${which === "m" ? "exp_avg" : "exp_avg_sq"}.${n}`;
          const e = header.entries.get(name);
          if (!e) return torch.zeros([u.sizes[k]!], { dtype: "float32" });
          return torch.loadSafetensorsEntry(file, e, name).reshape([-1]).to("float32");
        }),
      );
    },
  };
}
