// The only module that loads native/: the addon's full surface as one typed interface.
// Every entry matches one `def(...)` in native/addon.cc, in the same order, so the two can be diffed by eye.
// Tensors cross as opaque handles; dtypes as c10::ScalarType codes (dtype.ts); devices as strings ("cpu", "cuda:0").
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { defaultThreads } from "./threads.js";

declare const handleBrand: unique symbol;
/** An opaque native tensor handle (a Napi::External owning one at::Tensor). */
export type Handle = { readonly [handleBrand]: true };

declare const tapeBrand: unique symbol;
/** An opaque native tape handle (a recorded step, native/tape.h). */
export type TapeHandle = { readonly [tapeBrand]: true };

type H = Handle;
type Operand = H | number | boolean;

export interface NativeBinding {
  // runtime
  version(): string;
  buildConfig(): string;
  parallelInfo(): string;
  setNumThreads(n: number): void;
  getNumThreads(): number;
  manualSeed(seed: number): void;
  cudaIsAvailable(): boolean;
  cudaDeviceCount(): number;
  cudaSynchronize(): void;
  mallocMode(): string;
  setParentDeathSignal(signal: number): boolean;
  parentPid(): number;
  releaseFreeMemory(): void;
  liveTensors(): number;
  rngState(device: string): H;
  setRngState(device: string, state: H): void;
  // handles and metadata
  dispose(t: H): void;
  isLive(t: H): boolean;
  shape(t: H): number[];
  strides(t: H): number[];
  dtype(t: H): number;
  device(t: H): string;
  numel(t: H): number;
  item(t: H): number;
  requiresGrad(t: H): boolean;
  setRequiresGrad(t: H, flag: boolean): void;
  grad(t: H): H | undefined;
  setGrad(t: H, grad: H | null): void;
  isContiguous(t: H): boolean;
  // creation and transfer
  fromBytes(bytes: ArrayBufferView, dtype: number, shape: number[]): H;
  toBytes(t: H): Buffer;
  empty(shape: number[], dtype: number, device: string): H;
  zeros(shape: number[], dtype: number, device: string): H;
  ones(shape: number[], dtype: number, device: string): H;
  full(shape: number[], value: number | boolean, dtype: number, device: string): H;
  arange(start: number, end: number, step: number, dtype: number, device: string): H;
  randn(shape: number[], dtype: number, device: string): H;
  rand(shape: number[], dtype: number, device: string): H;
  randint(low: number, high: number, shape: number[], dtype: number, device: string): H;
  randperm(n: number, dtype: number, device: string): H;
  to(t: H, dtype: number): H;
  toDevice(t: H, device: string, nonBlocking?: boolean): H;
  pinMemory(t: H): H;
  clone(t: H): H;
  detach(t: H): H;
  contiguous(t: H): H;
  // file I/O
  writeToFd(t: H, fd: number): void;
  readFromFd(fd: number, offset: number, dtype: number, shape: number[]): H;
  readIntoFromFd(fd: number, offset: number, t: H): void;
  // in-place
  copy_(dst: H, src: H): void;
  zero_(t: H): void;
  fill_(t: H, value: number | boolean): void;
  normal_(t: H, mean: number, std: number): void;
  uniform_(t: H, low: number, high: number): void;
  add_(t: H, other: Operand, alpha?: number): void;
  mul_(t: H, other: Operand): void;
  div_(t: H, other: Operand): void;
  addcmul_(t: H, a: H, b: H, value: number): void;
  addcdiv_(t: H, a: H, b: H, value: number): void;
  lerp_(t: H, end: H, weight: number): void;
  clampMax_(t: H, max: number): void;
  maskedFill_(t: H, mask: H, value: number | boolean): void;
  indexCopy_(t: H, dim: number, index: H, source: H): void;
  indexFill_(t: H, dim: number, index: H, value: number | boolean): void;
  scatter_(t: H, dim: number, index: H, source: H | number): void;
  // elementwise
  add(a: H, b: Operand, alpha?: number): H;
  sub(a: H, b: Operand, alpha?: number): H;
  mul(a: H, b: Operand): H;
  div(a: H, b: Operand): H;
  pow(a: H, b: Operand): H;
  eq(a: H, b: Operand): H;
  ne(a: H, b: Operand): H;
  lt(a: H, b: Operand): H;
  le(a: H, b: Operand): H;
  gt(a: H, b: Operand): H;
  ge(a: H, b: Operand): H;
  remainder(a: H, b: Operand): H;
  maximum(a: H, b: H): H;
  minimum(a: H, b: H): H;
  logicalAnd(a: H, b: H): H;
  logicalOr(a: H, b: H): H;
  where(cond: H, a: H, b: H): H;
  maskedFill(t: H, mask: H, value: number | boolean): H;
  clamp(t: H, min: number | null, max: number | null): H;
  neg(t: H): H;
  exp(t: H): H;
  log(t: H): H;
  tanh(t: H): H;
  sqrt(t: H): H;
  rsqrt(t: H): H;
  abs(t: H): H;
  sigmoid(t: H): H;
  relu(t: H): H;
  silu(t: H): H;
  sin(t: H): H;
  cos(t: H): H;
  logicalNot(t: H): H;
  isfinite(t: H): H;
  isnan(t: H): H;
  gelu(t: H, approximate?: "none" | "tanh"): H;
  // reductions
  sum(t: H, dims: number[] | null, keepdim: boolean, dtype?: number): H;
  mean(t: H, dims: number[] | null, keepdim: boolean, dtype?: number): H;
  amax(t: H, dims: number[], keepdim: boolean): H;
  amin(t: H, dims: number[], keepdim: boolean): H;
  max(t: H): H;
  min(t: H): H;
  argmax(t: H, dim: number, keepdim: boolean): H;
  any(t: H): H;
  all(t: H): H;
  norm(t: H, p: number): H;
  cumsum(t: H, dim: number, dtype?: number): H;
  softmax(t: H, dim: number, dtype?: number): H;
  logSoftmax(t: H, dim: number, dtype?: number): H;
  topk(t: H, k: number, dim: number): [H, H];
  sort(t: H, dim: number, descending: boolean): [H, H];
  multinomial(probs: H, n: number, replacement: boolean): H;
  // shapes and indexing
  reshape(t: H, shape: number[]): H;
  view(t: H, shape: number[]): H;
  transpose(t: H, d0: number, d1: number): H;
  permute(t: H, dims: number[]): H;
  unsqueeze(t: H, dim: number): H;
  squeeze(t: H, dim: number): H;
  expand(t: H, shape: number[]): H;
  narrow(t: H, dim: number, start: number, length: number): H;
  select(t: H, dim: number, index: number): H;
  indexSelect(t: H, dim: number, index: H): H;
  gather(t: H, dim: number, index: H): H;
  cat(ts: H[], dim: number): H;
  stack(ts: H[], dim: number): H;
  triu(t: H, k: number): H;
  tril(t: H, k: number): H;
  flatten(t: H, start: number, end: number): H;
  repeat(t: H, repeats: number[]): H;
  unbind(t: H, dim: number): H[];
  // linear algebra and layers
  matmul(a: H, b: H): H;
  bmm(a: H, b: H): H;
  baddbmm(input: H, b1: H, b2: H, beta: number, alpha: number): H;
  linear(x: H, weight: H, bias?: H): H;
  embedding(weight: H, indices: H): H;
  layerNorm(x: H, normalizedShape: number[], weight: H | undefined, bias: H | undefined, eps: number): H;
  dropout(x: H, p: number, train: boolean): H;
  crossEntropy(
    logits: H,
    target: H,
    ignoreIndex: number,
    reduction: "mean" | "sum" | "none",
    labelSmoothing?: number,
  ): H;
  // fused optimizer step
  adamwStep_(
    param: H,
    grad: H,
    expAvg: H,
    expAvgSq: H,
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    weightDecay: number,
    step: number,
  ): void;
  // fast paths (native/fast.h): present only where the linked libtorch has them (features()); smallGemm
  // names the few-row linear kernel in use (native/small-gemm.h: "avx512", "avx2", or "" for BLAS only);
  // cudaGraph: GPU tapes replay as CUDA graphs (native/graph.h)
  features(): {
    sdpa: boolean;
    fusedAdamw: boolean;
    cudaAllocatorStats: boolean;
    cudaGraph: boolean;
    smallGemm: string;
  };
  sdpa?(q: H, k: H, v: H, mask: H | undefined, dropout: number, isCausal: boolean, scale: number): H;
  fusedAdamw_?(
    params: H[],
    grads: H[],
    expAvgs: H[],
    expAvgSqs: H[],
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    weightDecay: number,
    step: number,
  ): void;
  cudaMemory?(device: number): [number, number, number];
  cudaResetPeakMemory?(device: number): void;
  cudaEmptyCache?(): void;
  // captured steps (native/tape.h; src/torch/tape.ts)
  tapeBegin(): void;
  tapeEnd(outputs: H[]): TapeHandle | string;
  tapeAbort(): void;
  tapeReplay(tape: TapeHandle): H[];
  tapeInfo(tape: TapeHandle): [number, number, number, string];
  tapeProfile(tape: TapeHandle, enable: boolean): Array<[string, number]>;
  tapeDispose(tape: TapeHandle): void;
  // collectives (native/dist.h): present only when the addon was built with them (distAvailable)
  distAvailable(): boolean;
  distInit?(
    rank: number,
    world: number,
    masterAddr: string,
    masterPort: number,
    backend: "gloo" | "nccl",
    timeoutMs: number,
  ): void;
  distDestroy?(): void;
  distAllReduce?(t: H, op: "sum" | "max" | "min"): void;
  distAllGather?(outputs: H[], input: H): void;
  distReduceScatter?(output: H, inputs: H[]): void;
  distBroadcast?(t: H, root: number): void;
  distBarrier?(): void;
  setData(param: H, value: H): void;
  // autograd and modes
  backward(outputs: H[], grads: H[] | undefined, retainGraph?: boolean): void;
  setGradEnabled(enabled: boolean): boolean;
  isGradEnabled(): boolean;
  setAutocast(deviceType: "cpu" | "cuda", enabled: boolean, dtype: number): [boolean, number];
  setAutocastCacheEnabled(enabled: boolean): boolean;
}

const here = dirname(fileURLToPath(import.meta.url));

function findAddon(): string {
  // dist/src/torch/binding.js and src/torch/binding.ts both sit a fixed depth below the package root.
  for (const up of ["../../..", "../.."]) {
    const candidate = join(here, up, "build/Release/oasft_torch.node");
    if (existsSync(candidate)) return candidate;
  }
  throw new Error(
    "oasft's native addon is not built (build/Release/oasft_torch.node is missing).\n" +
      "  ---> HINT: run `npm install` (or `npm rebuild`) in the oasft folder; it installs libtorch if needed and " +
      "builds the addon.",
  );
}

/** Which BLAS library the process mapped when libtorch loaded (Linux only; "unknown" elsewhere). */
export function loadedBlas(): { kind: "openblas" | "mkl" | "reference" | "unknown"; path: string } {
  let maps: string;
  try {
    maps = readFileSync("/proc/self/maps", "utf8");
  } catch {
    return { kind: "unknown", path: "" };
  }
  const paths = [
    ...new Set(
      maps
        .split("\n")
        .map((l) => l.split(/\s+/)[5] ?? "")
        .filter((p) => /blas|mkl/i.test(p)),
    ),
  ];
  const openblas = paths.find((p) => /openblas/i.test(p));
  if (openblas) return { kind: "openblas", path: openblas };
  const mkl = paths.find((p) => /mkl/i.test(p));
  if (mkl) return { kind: "mkl", path: mkl };
  const reference = paths.find((p) => /libblas\.so/.test(p));
  if (reference) return { kind: "reference", path: reference };
  return { kind: "unknown", path: "" };
}

const require = createRequire(import.meta.url);
export const native: NativeBinding = require(findAddon()) as NativeBinding;
native.setNumThreads(defaultThreads().threads);
/** The fast paths this build of the addon has (native/fast.h). */
export const features = native.features();

const blasAtLoad = loadedBlas();
if (blasAtLoad.kind === "reference") {
  process.emitWarning(
    `libtorch is running on the reference BLAS (${blasAtLoad.path}): matrix products are ~30x slower. ` +
      "Install OpenBLAS: apt-get install -y libopenblas0-openmp",
    { code: "OASFT_REFERENCE_BLAS" },
  );
}
