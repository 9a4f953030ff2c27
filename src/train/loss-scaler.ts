// fp16's dynamic loss scaling, as DeepSpeed's DynamicLossScaler (the card's fp16 block): the loss is
// multiplied by `scale` before backward; a step whose gradients overflow is skipped and the scale
// halves (after `hysteresis` consecutive overflows); after `window` clean steps it doubles.

export interface LossScalerOptions {
  /** Initial scale = 2^initialScalePower (DeepSpeed default 16). */
  initialScalePower?: number;
  /** Clean steps before the scale doubles (loss_scale_window, default 1000). */
  window?: number;
  /** Overflows tolerated before halving (default 2). */
  hysteresis?: number;
  minScale?: number;
}

export interface LossScalerState {
  scale: number;
  cleanSteps: number;
  hysteresisLeft: number;
  skippedSteps: number;
}

export class DynamicLossScaler {
  scale: number;
  cleanSteps = 0;
  hysteresisLeft: number;
  skippedSteps = 0;
  private readonly window: number;
  private readonly hysteresis: number;
  private readonly minScale: number;

  constructor(o: LossScalerOptions = {}) {
    this.scale = 2 ** (o.initialScalePower ?? 16);
    this.window = o.window ?? 1000;
    this.hysteresis = o.hysteresis ?? 2;
    this.hysteresisLeft = this.hysteresis;
    this.minScale = o.minScale ?? 1;
  }

  /** Records a step's outcome; returns true when the step must be skipped (overflow). */
  update(overflow: boolean): boolean {
    if (overflow && this.scale <= this.minScale && this.hysteresisLeft <= 1) {
      // DeepSpeed stops here too: at the minimum scale an overflow means the model itself is broken.
      throw new LossScaleError(this.scale);
    }
    if (overflow) {
      this.skippedSteps++;
      this.cleanSteps = 0;
      if (this.hysteresisLeft <= 1) this.scale = Math.max(this.minScale, this.scale / 2);
      else this.hysteresisLeft--;
      return true;
    }
    this.cleanSteps++;
    if (this.cleanSteps % this.window === 0) {
      this.scale *= 2;
      this.hysteresisLeft = this.hysteresis;
    }
    return false;
  }

  state(): LossScalerState {
    return {
      scale: this.scale,
      cleanSteps: this.cleanSteps,
      hysteresisLeft: this.hysteresisLeft,
      skippedSteps: this.skippedSteps,
    };
  }

  load(s: LossScalerState): void {
    Object.assign(this, s);
  }
}

export class LossScaleError extends Error {
  constructor(scale: number) {
    super(
      `the gradients overflow even at the minimum loss scale (${scale}): the loss or the weights are no longer finite`,
    );
    this.name = "LossScaleError";
  }
}
