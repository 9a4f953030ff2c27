// Functions that create tensors or take several: the functional half of the tensor API.
import { native } from "./binding.js";
import { DTYPE_CODE, type DType } from "./dtype.js";
import { Tensor, type CreateOptions } from "./tensor.js";

const dt = (o?: CreateOptions, fallback: DType = "float32") => DTYPE_CODE[o?.dtype ?? fallback];
const dev = (o?: CreateOptions) => o?.device ?? "cpu";

export type NumericData = number[] | number[][] | number[][][] | ArrayLike<number>;

/** A tensor from JS numbers (nested arrays or a flat array plus `shape`). Float32 unless `dtype` says otherwise. */
export function tensor(data: NumericData | BigInt64Array, options: CreateOptions & { shape?: number[] } = {}): Tensor {
  const dtype = options.dtype ?? (data instanceof BigInt64Array ? "int64" : "float32");
  let shape = options.shape;
  let flat: ArrayLike<number> | BigInt64Array;
  if (Array.isArray(data) && Array.isArray(data[0])) {
    const inferred: number[] = [];
    let level: unknown = data;
    while (Array.isArray(level)) {
      inferred.push(level.length);
      level = level[0];
    }
    shape ??= inferred;
    flat = (data as unknown[]).flat(inferred.length) as number[];
  } else {
    flat = data as ArrayLike<number>;
    shape ??= [flat.length];
  }
  const bytes = toTypedArray(flat, dtype);
  let t = new Tensor(native.fromBytes(bytes, DTYPE_CODE[bytes.dtype], shape));
  if (bytes.dtype !== dtype) {
    const cast = t.to(dtype);
    t.dispose();
    t = cast;
  }
  if (options.device && options.device !== "cpu") {
    const moved = t.toDevice(options.device);
    t.dispose();
    t = moved;
  }
  return t;
}

function toTypedArray(flat: ArrayLike<number> | BigInt64Array, dtype: DType): ArrayBufferView & { dtype: DType } {
  const tag = <T extends ArrayBufferView>(a: T, d: DType) => Object.assign(a, { dtype: d });
  if (flat instanceof BigInt64Array) return tag(flat, "int64");
  switch (dtype) {
    case "int64":
      return tag(BigInt64Array.from(Array.from(flat, (v) => BigInt(Math.trunc(v)))), "int64");
    case "int32":
      return tag(Int32Array.from(flat), "int32");
    case "float64":
      return tag(Float64Array.from(flat), "float64");
    case "bool":
    case "uint8":
      return tag(Uint8Array.from(flat), dtype);
    default:
      return tag(Float32Array.from(flat), "float32"); // float16/bfloat16 are cast from float32
  }
}

/** A tensor over raw little-endian bytes (copied), e.g. a safetensors entry. */
export function fromBytes(bytes: ArrayBufferView, dtype: DType, shape: number[]): Tensor {
  return new Tensor(native.fromBytes(bytes, DTYPE_CODE[dtype], shape));
}

export const empty = (shape: number[], o?: CreateOptions) => new Tensor(native.empty(shape, dt(o), dev(o)));
export const zeros = (shape: number[], o?: CreateOptions) => new Tensor(native.zeros(shape, dt(o), dev(o)));
export const ones = (shape: number[], o?: CreateOptions) => new Tensor(native.ones(shape, dt(o), dev(o)));
export const full = (shape: number[], value: number | boolean, o?: CreateOptions) =>
  new Tensor(native.full(shape, value, dt(o), dev(o)));
/** [start, end) by step; int64 unless a dtype is given. */
export const arange = (start: number, end: number, step = 1, o?: CreateOptions) =>
  new Tensor(native.arange(start, end, step, dt(o, "int64"), dev(o)));
export const randn = (shape: number[], o?: CreateOptions) => new Tensor(native.randn(shape, dt(o), dev(o)));
export const rand = (shape: number[], o?: CreateOptions) => new Tensor(native.rand(shape, dt(o), dev(o)));
/** Integers in [low, high); int64 unless a dtype is given. */
export const randint = (low: number, high: number, shape: number[], o?: CreateOptions) =>
  new Tensor(native.randint(low, high, shape, dt(o, "int64"), dev(o)));
export const randperm = (n: number, o?: CreateOptions) => new Tensor(native.randperm(n, dt(o, "int64"), dev(o)));

export const cat = (ts: Tensor[], dim = 0) =>
  new Tensor(
    native.cat(
      ts.map((t) => t.handle),
      dim,
    ),
  );
export const stack = (ts: Tensor[], dim = 0) =>
  new Tensor(
    native.stack(
      ts.map((t) => t.handle),
      dim,
    ),
  );
export const where = (cond: Tensor, a: Tensor, b: Tensor) => new Tensor(native.where(cond.handle, a.handle, b.handle));

/** Backpropagates several outputs at once (each with its seed gradient), as torch.autograd.backward. */
export function backward(outputs: Tensor[], grads?: Tensor[], retainGraph?: boolean): void {
  native.backward(
    outputs.map((t) => t.handle),
    grads?.map((g) => g.handle),
    retainGraph,
  );
}

// ----- functional layers (the nn.functional of oasft) --------------------------------------------
export const linear = (x: Tensor, weight: Tensor, bias?: Tensor) =>
  new Tensor(native.linear(x.handle, weight.handle, bias?.handle));
export const embedding = (weight: Tensor, ids: Tensor) => new Tensor(native.embedding(weight.handle, ids.handle));
export const layerNorm = (
  x: Tensor,
  shape: number[],
  weight: Tensor | undefined,
  bias: Tensor | undefined,
  eps: number,
) => new Tensor(native.layerNorm(x.handle, shape, weight?.handle, bias?.handle, eps));
export const dropout = (x: Tensor, p: number, train: boolean) => new Tensor(native.dropout(x.handle, p, train));
/** Cross entropy over logits [N, V] and class ids [N]; ids equal to ignoreIndex are left out of the mean. */
export function crossEntropy(
  logits: Tensor,
  target: Tensor,
  {
    ignoreIndex = -100,
    reduction = "mean",
    labelSmoothing = 0,
  }: { ignoreIndex?: number; reduction?: "mean" | "sum" | "none"; labelSmoothing?: number } = {},
): Tensor {
  return new Tensor(native.crossEntropy(logits.handle, target.handle, ignoreIndex, reduction, labelSmoothing));
}

/**
 * libtorch's scaled_dot_product_attention (flash / memory-efficient kernels on CUDA) where the addon has
 * it (features.sdpa): softmax(q·kᵀ·scale + mask)·v, mask additive or absent. src/nn/attention.ts holds
 * the composite reference and decides when this runs.
 */
export function sdpa(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: { mask?: Tensor; dropout?: number; causal?: boolean; scale: number },
): Tensor {
  if (!native.sdpa) throw new Error(`sdpa: this libtorch (${native.version()}) has no scaled_dot_product_attention`);
  return new Tensor(
    native.sdpa(q.handle, k.handle, v.handle, o.mask?.handle, o.dropout ?? 0, o.causal ?? false, o.scale),
  );
}

// ----- optimizer kernels (the composite reference is src/train/adamw.ts) ----------------------------
export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1 for the first step (bias corrections). */
  step: number;
}

/** One AdamW step in one pass over contiguous float32 CPU tensors (the addon's own kernel). */
export function adamwStep_(p: Tensor, g: Tensor, m: Tensor, v: Tensor, h: AdamWHyper): void {
  native.adamwStep_(p.handle, g.handle, m.handle, v.handle, h.lr, h.beta1, h.beta2, h.eps, h.weightDecay, h.step);
}

/** One AdamW step over lists of float32 CUDA tensors at one step count (libtorch's _fused_adamw_). */
export function fusedAdamw_(p: Tensor[], g: Tensor[], m: Tensor[], v: Tensor[], h: AdamWHyper): void {
  if (!native.fusedAdamw_) throw new Error(`fusedAdamw_: this libtorch (${native.version()}) has no fused AdamW`);
  const handles = (ts: Tensor[]) => ts.map((t) => t.handle);
  native.fusedAdamw_(
    handles(p),
    handles(g),
    handles(m),
    handles(v),
    h.lr,
    h.beta1,
    h.beta2,
    h.eps,
    h.weightDecay,
    h.step,
  );
}

/** param.data = value: the parameter takes value's storage and shape, keeping its autograd identity. */
export const setData = (param: Tensor, value: Tensor) => native.setData(param.handle, value.handle);
/** Waits for queued GPU work (a no-op without CUDA). */
export const cudaSynchronize = () => native.cudaSynchronize();

// ----- runtime ----------------------------------------------------------------------------------
export const manualSeed = (seed: number) => native.manualSeed(seed);
export const setNumThreads = (n: number) => native.setNumThreads(n);
export const getNumThreads = () => native.getNumThreads();
export const cudaIsAvailable = () => native.cudaIsAvailable();
export const cudaDeviceCount = () => native.cudaDeviceCount();
export const liveTensors = () => native.liveTensors();
/** Returns the allocator's free memory to the system (between work items of varying size). */
export const releaseFreeMemory = () => native.releaseFreeMemory();
export const version = () => native.version();

/** The CUDA caching allocator's bytes (torch.cuda.memory_allocated etc.), or undefined where unknown. */
export function cudaMemory(device = "cuda"): { allocated: number; peak: number; reserved: number } | undefined {
  if (!native.cudaMemory || !device.startsWith("cuda")) return undefined;
  const [allocated, peak, reserved] = native.cudaMemory(cudaIndex(device));
  return { allocated, peak, reserved };
}
export const cudaResetPeakMemory = (device = "cuda") => native.cudaResetPeakMemory?.(cudaIndex(device));
/** Hands the caching allocator's unused blocks back to the driver (torch.cuda.empty_cache). */
export const cudaEmptyCache = () => native.cudaEmptyCache?.();
const cudaIndex = (device: string) => Number(/^cuda:(\d+)$/.exec(device)?.[1] ?? 0);
/** The default generator's state of a device ("cpu", "cuda", "cuda:N") as a CPU byte tensor. */
export const rngState = (device = "cpu") => new Tensor(native.rngState(device));
export const setRngState = (device: string, state: Tensor) => native.setRngState(device, state.handle);
