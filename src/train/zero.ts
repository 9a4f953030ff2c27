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
import * as torch from "../torch/index.js";
import type { CausalLM } from "../models/index.js";
import type { BlockHooks } from "../nn/checkpoint.js";
import type { ProcessGroup } from "../parallel/group.js";
import { AdamW, type AdamWSettings, type ParamGroup } from "./adamw.js";
import { clipGradNorm, globalGradNorm, scaleGrads } from "./grad.js";
import { hasWholeOptimizerState, loadWholeOptimizer, type SaveCheckpointArgs } from "./state.js";
import { readUnitMoments, zeroUnits } from "./zero-units.js";

export type ZeroStage = 0 | 1 | 2 | 3;

/** AdamW's hyperparameters (the same for every stage). */
export type OptimizerSettings = AdamWSettings;

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

export const tensorBytes = (t: torch.Tensor) => t.numel * torch.BYTES_PER_ELEMENT[t.dtype];

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
    private readonly processGroup: ProcessGroup,
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
    if (this.processGroup.worldSize === 1) return;
    torch.noGrad(() => {
      // A rank without data this step has no .grad yet: its share of the sum is zero.
      for (const p of this.params) if (!p.grad) p.grad = torch.zeros(p.shape, { dtype: p.dtype, device: p.device });
      let bucket: torch.Tensor[] = [];
      let size = 0;
      const flush = () =>
        torch.scope(() => {
          if (!bucket.length) return;
          const flat = torch.cat(bucket.map((p) => p.grad!.reshape([-1])));
          this.processGroup.allReduce(flat);
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

export { ShardedOptimizer } from "./zero-sharded.js";
