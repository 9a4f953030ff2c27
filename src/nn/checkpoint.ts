// Gradient checkpointing over a sequence of blocks (HF's gradient_checkpointing, torch.utils.checkpoint
// with use_reentrant=False semantics): forward runs every block without a graph and keeps only each
// block's input; backward re-runs block i from its input with the graph on and back-propagates the
// gradient of its output, last block first. Activation memory is one block's instead of all of them,
// for one extra forward.
//
// Dropout must draw the same numbers when a block is recomputed, so the device's RNG state is saved
// before each block and restored before its recomputation; after backward the RNG is put back where
// the forward left it, so the next step draws exactly what it would have without checkpointing.
import * as torch from "../torch/index.js";

/**
 * Called around block i's forward, and around its recomputation and backward: ZeRO-3 gathers the
 * block's sharded parameters in `before` and frees them (reducing their gradients) in `after`.
 */
export interface BlockHooks {
  before(i: number, phase: "forward" | "backward"): void;
  after(i: number, phase: "forward" | "backward"): void;
}

export class CheckpointedBlocks {
  private inputs: torch.Tensor[] = [];
  private rngStates: torch.Tensor[] = [];
  private rngAfter: torch.Tensor | undefined;
  private blocks: Array<(x: torch.Tensor) => torch.Tensor> = [];

  /**
   * @param device the device whose generator the blocks draw from
   * @param saveRng keep RNG states (needed when a block is random, i.e. dropout in training mode)
   */
  constructor(
    private readonly device: string,
    private readonly saveRng: boolean,
    private readonly hooks?: BlockHooks,
  ) {}

  /** Runs the blocks in order without a graph and returns the last output (owned by the caller's scope). */
  forward(x: torch.Tensor, blocks: Array<(x: torch.Tensor) => torch.Tensor>): torch.Tensor {
    this.blocks = blocks;
    return torch.noGrad(() => {
      blocks.forEach((block, i) => {
        this.inputs.push(x.keep());
        if (this.saveRng) this.rngStates.push(torch.rngState(this.device).keep());
        this.hooks?.before(i, "forward");
        x = torch.scope(() => block(x));
        this.hooks?.after(i, "forward");
      });
      if (this.saveRng) this.rngAfter = torch.rngState(this.device).keep();
      return x;
    });
  }

  /** Given d(loss)/d(last output), recomputes each block and returns d(loss)/d(first input); frees the saved inputs. */
  backward(gradOut: torch.Tensor): torch.Tensor {
    let grad = gradOut;
    try {
      for (let i = this.blocks.length - 1; i >= 0; i--) {
        this.hooks?.before(i, "backward");
        grad = torch.scope(() => {
          const xi = this.inputs[i]!.detach();
          xi.requiresGrad = true;
          if (this.saveRng) torch.setRngState(this.device, this.rngStates[i]!);
          const out = this.blocks[i]!(xi);
          torch.backward([out], [grad]);
          return xi.grad!;
        });
        this.hooks?.after(i, "backward");
      }
      if (this.rngAfter) torch.setRngState(this.device, this.rngAfter);
      return grad;
    } finally {
      this.dispose();
    }
  }

  dispose(): void {
    // inputs[0] is the caller's embedding output; the rest were made here. All were kept, so free all.
    for (const t of [...this.inputs, ...this.rngStates]) t.dispose();
    this.rngAfter?.dispose();
    this.inputs = [];
    this.rngStates = [];
    this.rngAfter = undefined;
  }
}
