// Devices and compute dtypes as users name them: one resolver for every command's --device and
// --dtype, so "cuda" without CUDA, "cuda:7" on a one-GPU machine or "fp8" fail the same way everywhere.
import { native } from "./binding.js";
import { parseDType, type DType } from "./dtype.js";

export class DeviceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DeviceError";
  }
}

/**
 * "auto" → "cuda" when libtorch sees a GPU, else "cpu"; "cpu"; "cuda" / "cuda:N" checked against the
 * GPUs present. `flag` names the option in errors (e.g. "--device", "device").
 */
export function resolveDevice(spec: string, flag = "--device"): string {
  const s = spec.trim().toLowerCase();
  if (s === "auto") return native.cudaIsAvailable() ? "cuda" : "cpu";
  if (s === "cpu") return "cpu";
  const m = /^cuda(?::(\d+))?$/.exec(s);
  if (!m) throw new DeviceError(`${flag} ${spec}: expected auto, cpu, cuda or cuda:N`);
  const count = native.cudaIsAvailable() ? native.cudaDeviceCount() : 0;
  if (count === 0) {
    throw new DeviceError(
      `${flag} ${spec}: no CUDA device (this libtorch ${native.version()} sees none); use --device cpu`,
    );
  }
  if (m[1] !== undefined && Number(m[1]) >= count) {
    const have = Array.from({ length: count }, (_, i) => `cuda:${i}`).join(", ");
    throw new DeviceError(
      `${flag} ${spec}: there ${count === 1 ? "is 1 CUDA device" : `are ${count} CUDA devices`} (${have})`,
    );
  }
  return s;
}

/** "cpu" or "cuda": the device type autocast and the RNG take. */
export function deviceType(device: string): "cpu" | "cuda" {
  return device.startsWith("cuda") ? "cuda" : "cpu";
}

/** The compute dtypes a model runs in (fp32, bf16, fp16 and their long names), named by `flag` in errors. */
export function parseComputeDType(name: string, flag = "--dtype"): DType {
  let dtype: DType;
  try {
    dtype = parseDType(name);
  } catch {
    throw new DeviceError(`${flag} ${name}: expected fp32, bf16 or fp16 (or float32, bfloat16, float16)`);
  }
  if (dtype === "float64") throw new DeviceError(`${flag} ${name}: expected fp32, bf16 or fp16`);
  return dtype;
}
