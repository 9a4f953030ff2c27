// Shared test helpers: where ../shared is, golden folders, and tensor comparisons.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import * as torch from "../src/torch/index.js";

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root (tests run from dist/test, sources live in test/). */
export const REPO = [resolve(here, "../.."), resolve(here, "..")].find((d) => existsSync(join(d, "package.json")))!;
export const SHARED = resolve(REPO, "../shared");
export const GOLDEN = join(SHARED, "golden");
export const GOLDEN_MODELS = ["tiny_v256_h64_l2_nh4", "small_v300_h96_l3_nh6_untied"] as const;
export const CLI = join(REPO, "bin/oasft.js");

/**
 * `oasft init` of a golden model's config with the shared tiny BPE tokenizer (its vocabulary, so no
 * rows grow when training starts) into `dir`; returns `dir`.
 */
export function initTinyModel(
  dir: string,
  golden: (typeof GOLDEN_MODELS)[number] = GOLDEN_MODELS[0],
  extra: string[] = [],
): string {
  const tokenizer = join(SHARED, "data/tokenizers/oasst-tiny-bpe");
  const args = [
    CLI,
    "init",
    "--config",
    join(GOLDEN, golden, "config.json"),
    "--tokenizer",
    tokenizer,
    "--out",
    dir,
    ...extra,
  ];
  const made = spawnSync(process.execPath, args, { encoding: "utf8" });
  assert.equal(made.status, 0, made.stderr);
  return dir;
}

/** max |a − b| over all elements (float64 on the host). */
export function maxAbsDiff(a: torch.Tensor, b: torch.Tensor): number {
  return torch.scope(() => a.to("float64").sub(b.to("float64")).abs().max().item());
}

/** The largest amount by which |a − b| exceeds atol + rtol·|b| (≤ 0 means within tolerance). */
export function worstExcess(a: torch.Tensor, b: torch.Tensor, atol: number, rtol = 0): number {
  return torch.scope(() => {
    const bb = b.to("float64");
    return a.to("float64").sub(bb).abs().sub(bb.abs().mul(rtol).add(atol)).max().item();
  });
}

/** A model's parameter by its checkpoint name (tests stay independent of the module tree's types). */
export function param(model: { namedParameters(): Array<[string, torch.Tensor]> }, name: string): torch.Tensor {
  const found = model.namedParameters().find(([n]) => n === name);
  if (!found) throw new Error(`no parameter ${name}`);
  return found[1];
}

export function loadGolden(model: string, file: string): Map<string, torch.Tensor> {
  const { tensors } = torch.loadSafetensors(join(GOLDEN, model, file));
  for (const t of tensors.values()) t.keep();
  return tensors;
}

/**
 * The golden READMEs' checks of one training step: every gradient within atol 2e-6 + rtol 1e-3, then
 * one AdamW step (lr 1e-3, betas 0.9/0.999, eps 1e-8, wd 0.01) within 1e-6 where the golden |grad| ≥ 1e-6
 * and within `looseAtol` elsewhere (there g/(|g|+eps) amplifies float32 noise).
 */
export function assertGradsAndAdamw(
  params: Array<[string, torch.Tensor]>,
  grads: Map<string, torch.Tensor>,
  after: Map<string, torch.Tensor>,
  step: () => void,
  looseAtol: number,
): void {
  assert.equal(params.length, grads.size, "one gradient per stored parameter");
  torch.scope(() => {
    for (const [n, p] of params) assert.ok(worstExcess(p.grad!, grads.get(n)!, 2e-6, 1e-3) <= 0, `grad ${n}`);
  });
  step();
  torch.scope(() => {
    for (const [n, p] of params) {
      const big = grads.get(n)!.abs().ge(1e-6);
      const diff = p.sub(after.get(n)!).abs();
      assert.ok(diff.maskedFill(big.logicalNot(), 0).max().item() <= 1e-6, `adamw ${n} where |g| ≥ 1e-6`);
      assert.ok(diff.max().item() <= looseAtol, `adamw ${n}`);
    }
  });
}

/** Counts the addon's tape recordings and replays while `fn` runs (captured decoding's tests). */
export async function countingTapes<T>(
  fn: () => T | Promise<T>,
): Promise<{ value: T; records: number; replays: number }> {
  const native = torch.native as { tapeBegin: (...a: never[]) => unknown; tapeReplay: (...a: never[]) => unknown };
  const { tapeBegin, tapeReplay } = native;
  const n = { records: 0, replays: 0 };
  native.tapeBegin = (...a: never[]) => (n.records++, tapeBegin(...a));
  native.tapeReplay = (...a: never[]) => (n.replays++, tapeReplay(...a));
  try {
    return { value: await fn(), ...n };
  } finally {
    Object.assign(native, { tapeBegin, tapeReplay });
  }
}
