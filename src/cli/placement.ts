// --device and --dtype, shared by every command that loads or makes a model. Kept apart from args.ts
// so that commands without a model (data, tokenizer, --help) never load libtorch.
import {
  DeviceError,
  parseComputeDType,
  resolveDevice,
  setNumThreads,
  version as torchVersion,
  type DType,
} from "../torch/index.js";
import { UsageError } from "./args.js";

/** The flags of every command that loads or makes a model: where it runs, and (inference) in which dtype. */
export const DEVICE_FLAGS = {
  device: { type: "string" },
  dtype: { type: "string" },
  threads: { type: "string" },
} as const;
export const DEVICE_USAGE = "[--device auto|cpu|cuda|cuda:N] [--dtype fp32|bf16|fp16] [--threads N]";

/**
 * --device (default auto: CUDA when present) and --dtype (default fp32) checked before any work:
 * a missing GPU, a GPU index past the last, an unknown dtype, or fp16 on a CPU whose libtorch has no
 * fp16 kernels are usage errors naming the flag.
 */
export function placement(values: Record<string, unknown>, defaultDtype = "fp32"): { device: string; dtype: DType } {
  applyThreads(values);
  try {
    const device = resolveDevice(String(values.device ?? "auto"), "--device");
    const dtype = parseComputeDType(String(values.dtype ?? defaultDtype), "--dtype");
    if (dtype === "float16" && device === "cpu" && !cpuHasHalfKernels()) {
      throw new UsageError(
        `--dtype fp16: libtorch ${torchVersion()} has no fp16 matrix kernels on the CPU; use --dtype bf16 (or ` +
          `fp32) there`,
      );
    }
    return { device, dtype };
  } catch (err) {
    if (err instanceof DeviceError) throw new UsageError(err.message);
    throw err;
  }
}

/** --threads N: libtorch's intra-op threads (default: OMP_NUM_THREADS, else the CPUs this process may use). */
export function applyThreads(values: Record<string, unknown>): void {
  if (values.threads === undefined) return;
  const n = Number(values.threads);
  if (!Number.isInteger(n) || n < 1)
    throw new UsageError(`--threads ${String(values.threads)}: expected an integer ≥ 1`);
  setNumThreads(n);
}

/** libtorch's CPU fp16 GEMM and LayerNorm arrived in 2.1. */
function cpuHasHalfKernels(): boolean {
  const [major, minor] = torchVersion().split(".").map(Number) as [number, number];
  return major > 2 || (major === 2 && minor >= 1);
}
