// What a user sees during and after training: a live progress line (step, loss, lr, tokens/s, ETA),
// a JSONL log of every logged step and evaluation, and an SVG chart of loss and learning rate.
import { appendFileSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { writeFileAtomic } from "../util/atomic-file.js";

export interface StepRecord {
  type: "train";
  step: number;
  epoch: number;
  loss: number;
  lr: number;
  grad_norm: number;
  tokens_per_s: number;
  trained_tokens: number;
  elapsed_s: number;
  skipped?: boolean;
  loss_scale?: number;
  /** The objective's own metrics, means over the logged steps (DPO: rewards/chosen, rewards/accuracy, ...). */
  metrics?: Record<string, number>;
}

export interface EvalRecord {
  type: "eval";
  step: number;
  /**
   * Per dataset: loss and accuracy (SFT: masked next-token accuracy over `tokens` trained tokens;
   * preference stages: the chosen reply scored above the rejected, over `tokens` pairs), and the
   * objective's own metrics.
   */
  datasets: Record<string, { loss: number; accuracy: number; tokens: number; metrics?: Record<string, number> }>;
  loss: number;
}

export type LogRecord = StepRecord | EvalRecord;

export class JsonlLog {
  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
  }
  write(r: LogRecord): void {
    appendFileSync(this.path, JSON.stringify(r) + "\n");
  }
}

const fmtTime = (s: number) => {
  if (!Number.isFinite(s)) return "?";
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(sec).padStart(2, "0")}s` : `${sec}s`;
};

/** A one-line bar on a terminal (redrawn in place), a plain line per update otherwise (CI logs). */
export class ProgressBar {
  private readonly tty: boolean;
  constructor(
    readonly total: number,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = Boolean(stream.isTTY);
  }

  update(step: number, fields: { loss: number; lr: number; tokensPerS: number; etaS: number }): void {
    const width = 24;
    const filled = Math.round((width * step) / Math.max(1, this.total));
    const bar = `[${"█".repeat(filled)}${"·".repeat(width - filled)}]`;
    const line =
      `${bar} ${step}/${this.total}  loss ${fields.loss.toFixed(4)}  lr ${fields.lr.toExponential(2)}  ` +
      `${fields.tokensPerS.toFixed(0)} tok/s  ETA ${fmtTime(fields.etaS)}`;
    this.stream.write(this.tty ? `\r${line}\x1b[K` : `${line}\n`);
  }

  message(text: string): void {
    this.stream.write(this.tty ? `\r\x1b[K${text}\n` : `${text}\n`);
  }

  done(): void {
    if (this.tty) this.stream.write("\n");
  }
}

/** An SVG with two panels: training (and evaluation) loss, and the learning rate, against the step. */
export function trainingChartSvg(records: LogRecord[], title: string): string {
  const train = records.filter((r): r is StepRecord => r.type === "train" && Number.isFinite(r.loss));
  const evals = records.filter((r): r is EvalRecord => r.type === "eval");
  const W = 720;
  const H = 250;
  const pad = { l: 64, r: 16, t: 28, b: 34 };
  const maxStep = Math.max(1, ...train.map((r) => r.step), ...evals.map((r) => r.step));
  const panel = (
    y0: number,
    label: string,
    series: Array<{ pts: Array<[number, number]>; color: string; name: string }>,
    fromZero = false,
  ) => {
    const all = series.flatMap((s) => s.pts.map((p) => p[1]));
    if (!all.length) return "";
    let lo = fromZero ? 0 : Math.min(...all);
    let hi = Math.max(...all);
    if (hi === lo) {
      hi += Math.abs(hi) * 0.05 + 1e-12;
      lo -= Math.abs(lo) * 0.05 + 1e-12;
    }
    const x = (s: number) => pad.l + ((W - pad.l - pad.r) * s) / maxStep;
    const y = (v: number) => y0 + pad.t + (H - pad.t - pad.b) * (1 - (v - lo) / (hi - lo));
    const ticks = [0, 0.5, 1].map((f) => lo + (hi - lo) * f);
    const out = [
      `<text x="${pad.l}" y="${y0 + 18}" font-size="13" font-weight="bold">${label}</text>`,
      `<line x1="${pad.l}" y1="${y0 + H - pad.b}" x2="${W - pad.r}" y2="${y0 + H - pad.b}" stroke="#888"/>`,
      `<line x1="${pad.l}" y1="${y0 + pad.t}" x2="${pad.l}" y2="${y0 + H - pad.b}" stroke="#888"/>`,
      ...ticks.map(
        (v) =>
          `<text x="${pad.l - 6}" y="${y(v) + 4}" font-size="10" ` +
          `text-anchor="end">${Math.abs(v) < 1e-2 && v !== 0 ? v.toExponential(1) : v.toFixed(3)}</text>`,
      ),
      ...[0, 0.5, 1].map(
        (f) =>
          `<text x="${x(maxStep * f)}" y="${y0 + H - pad.b + 14}" font-size="10" ` +
          `text-anchor="middle">${Math.round(maxStep * f)}</text>`,
      ),
      `<text x="${W / 2}" y="${y0 + H - 4}" font-size="10" text-anchor="middle">optimizer step</text>`,
    ];
    series.forEach((s, i) => {
      if (!s.pts.length) return;
      const d = s.pts.map(([a, b], k) => `${k ? "L" : "M"}${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(" ");
      out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.6"/>`);
      if (s.pts.length < 40)
        for (const [a, b] of s.pts)
          out.push(`<circle cx="${x(a).toFixed(1)}" cy="${y(b).toFixed(1)}" r="2.5" fill="${s.color}"/>`);
      out.push(
        `<text x="${W - pad.r - 4}" y="${y0 + 18 + 14 * i}" font-size="11" text-anchor="end" ` +
          `fill="${s.color}">${s.name}</text>`,
      );
    });
    return out.join("\n");
  };
  const body = [
    panel(0, `${title}: loss`, [
      { pts: train.map((r) => [r.step, r.loss]), color: "#1f77b4", name: "train loss" },
      { pts: evals.map((r) => [r.step, r.loss]), color: "#d62728", name: "eval loss" },
    ]),
    panel(H, "learning rate", [{ pts: train.map((r) => [r.step, r.lr]), color: "#2ca02c", name: "lr" }], true),
  ].join("\n");
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${2 * H}" font-family="sans-serif">\n<rect ` +
    `width="100%" height="100%" fill="white"/>\n${body}\n</svg>\n`
  );
}

export function writeChart(path: string, records: LogRecord[], title: string): void {
  writeFileAtomic(path, [trainingChartSvg(records, title)]);
}
