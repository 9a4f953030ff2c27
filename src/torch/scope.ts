// Lifetime and mode helpers: scope (tfjs's tidy), noGrad, autocast.
//
// scope(fn) rules:
//   - fn must be synchronous (like tf.tidy): an async fn would let other work join the scope;
//   - every tensor created while fn runs is freed when it returns, except:
//       the tensors in fn's result (a Tensor, or Tensors inside arrays / plain objects, one level
//       deep per container, recursively), which move to the enclosing scope, and tensors `keep()`-ed;
//   - on a throw, everything the scope created is freed and the error propagates.
import { native } from "./binding.js";
import { DTYPE_CODE, type DType } from "./dtype.js";
import { Tensor, currentScope, popScope, pushScope } from "./tensor.js";

function collectTensors(value: unknown, out: Set<Tensor>, depth = 0): void {
  if (depth > 8 || value === null || typeof value !== "object") return;
  if (value instanceof Tensor) {
    out.add(value);
  } else if (Array.isArray(value)) {
    for (const v of value) collectTensors(v, out, depth + 1);
  } else if (value instanceof Map) {
    for (const v of value.values()) collectTensors(v, out, depth + 1);
  } else if (Object.getPrototypeOf(value) === Object.prototype || Object.getPrototypeOf(value) === null) {
    for (const v of Object.values(value as Record<string, unknown>)) collectTensors(v, out, depth + 1);
  }
}

export function scope<T>(fn: () => T): T {
  const s = pushScope();
  let result: T;
  try {
    result = fn();
  } catch (err) {
    popScope(s);
    for (const t of [...s]) t.dispose();
    throw err;
  }
  popScope(s);
  if (result instanceof Promise) throw new Error("scope(fn): fn must be synchronous (use dispose() in async code)");
  const kept = new Set<Tensor>();
  collectTensors(result, kept);
  const parent = currentScope();
  for (const t of [...s]) {
    if (kept.has(t)) t.adoptInto(parent);
    else t.dispose();
  }
  return result;
}

/** Runs fn with autograd recording off (torch.no_grad). */
export function noGrad<T>(fn: () => T): T {
  const previous = native.setGradEnabled(false);
  try {
    return fn();
  } finally {
    native.setGradEnabled(previous);
  }
}

export function isGradEnabled(): boolean {
  return native.isGradEnabled();
}

/**
 * Runs fn under torch.autocast(deviceType, dtype): matmuls and linear layers run in `dtype`,
 * precision-sensitive ops (softmax, layer norm, losses) stay in float32, as libtorch's autocast lists say.
 * With enabled=false it just runs fn.
 */
/**
 * Whether autocast keeps one cast copy of each fp32 weight for the rest of its region (libtorch's
 * default). Returns the previous setting.
 */
export function setAutocastCacheEnabled(enabled: boolean): boolean {
  return native.setAutocastCacheEnabled(enabled);
}

export function autocast<T>(deviceType: "cpu" | "cuda", dtype: DType, fn: () => T, enabled = true): T {
  if (!enabled) return fn();
  const [wasEnabled, wasDtype] = native.setAutocast(deviceType, true, DTYPE_CODE[dtype]);
  const outer = activeAutocast[deviceType];
  activeAutocast[deviceType] = dtype;
  try {
    return fn();
  } finally {
    activeAutocast[deviceType] = outer;
    native.setAutocast(deviceType, wasEnabled, wasDtype);
  }
}

const activeAutocast: { cpu?: DType; cuda?: DType } = {};

/**
 * The dtype that autocast casts matrix products to on `device` right now, or undefined outside an
 * autocast region: tensors built once per forward for those products (an attention bias) are made in it.
 */
export function autocastDtype(device: string): DType | undefined {
  return activeAutocast[device.startsWith("cuda") ? "cuda" : "cpu"];
}

/** Disposes every tensor in a (nested) structure: arrays, maps, plain objects. */
export function disposeAll(value: unknown): void {
  const found = new Set<Tensor>();
  collectTensors(value, found);
  for (const t of found) t.dispose();
}
