// Learning-rate schedules, as functions of the optimizer step (0-based: the lr used by step 1 is
// lrAt(0)): HF's linear and cosine (warmup from 0, as get_*_schedule_with_warmup), constant with
// warmup, and DeepSpeed's WarmupDecayLR (log or linear warmup, then linear decay to warmup_min_lr).

export type ScheduleKind = "linear" | "cosine" | "constant" | "warmup_decay_lr";

export interface ScheduleOptions {
  kind: ScheduleKind;
  peakLr: number;
  warmupSteps: number;
  totalSteps: number;
  /** WarmupDecayLR: "log" (DeepSpeed's default) or "linear" (the card's zero3_config_sft.json). */
  warmupType?: "log" | "linear";
  /** WarmupDecayLR: warmup_min_lr (default 0). */
  minLr?: number;
}

export function lrAt(step: number, o: ScheduleOptions): number {
  const { peakLr, warmupSteps: w, totalSteps: total } = o;
  if (o.kind === "warmup_decay_lr") {
    const min = o.minLr ?? 0;
    let gamma: number;
    if (step < w) {
      // DeepSpeed: log warmup γ = ln(step + 1) / ln(w); linear γ = step / w.
      gamma = (o.warmupType ?? "log") === "log" ? Math.log(step + 1) / Math.log(w) : step / w;
    } else gamma = Math.max(0, (total - step) / Math.max(1, total - w));
    return min + (peakLr - min) * gamma;
  }
  if (step < w) return (peakLr * step) / Math.max(1, w);
  if (o.kind === "constant") return peakLr;
  const progress = (step - w) / Math.max(1, total - w);
  if (o.kind === "cosine") return peakLr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
  return peakLr * Math.max(0, (total - step) / Math.max(1, total - w));
}
