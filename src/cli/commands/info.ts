// `oasft info`: what libtorch this process runs on, and how fast its matrix products are.
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import * as torch from "../../torch/index.js";
import { parseFlags } from "../args.js";
import type { Command } from "../main.js";
import { applyThreads } from "../placement.js";

const USAGE = "usage: oasft info [--json] [--threads N]";

function libtorchPath(): string {
  try {
    const line = readFileSync("/proc/self/maps", "utf8")
      .split("\n")
      .find((l) => /libtorch_cpu\.so/.test(l));
    return line?.split(/\s+/)[5] ?? "unknown";
  } catch {
    return "unknown";
  }
}

/** fp32 (and bf16) GEMM rate in GFLOP/s: n×n×n products, best of several runs. */
export function measureGemm(n: number, dtype: torch.DType, device = "cpu"): number {
  return torch.scope(() => {
    const a = torch.randn([n, n], { dtype, device });
    const b = torch.randn([n, n], { dtype, device });
    const product = () =>
      torch.scope(() => {
        a.matmul(b);
        if (device !== "cpu") torch.cudaSynchronize();
      });
    product(); // warm-up: thread pool, BLAS init
    let best = Infinity;
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      product();
      best = Math.min(best, (performance.now() - t0) / 1000);
    }
    return (2 * n ** 3) / best / 1e9;
  });
}

/** The GPU fast paths the addon was built with (native/fast.h, native/graph.h), or "none". */
function gpuFastPaths(): string {
  const f = torch.features;
  const on: Array<[string, boolean]> = [
    ["sdpa", f.sdpa],
    ["fused_adamw", f.fusedAdamw],
    ["cuda_graphs", f.cudaGraph],
  ];
  return on.flatMap(([name, built]) => (built ? [name] : [])).join(",") || "none";
}

export const command: Command = {
  async run(argv) {
    const { values } = parseFlags(argv, { json: { type: "boolean" }, threads: { type: "string" } }, USAGE);
    applyThreads(values);
    const blas = torch.loadedBlas();
    const info = {
      oasft: "0.1.0",
      node: process.version,
      libtorch: torch.version(),
      libtorch_path: libtorchPath(),
      blas: blas.kind,
      blas_path: blas.path,
      few_row_kernels: torch.features.smallGemm || "none (BLAS only)",
      threads: torch.getNumThreads(),
      threads_from: values.threads !== undefined ? "--threads" : torch.defaultThreads().source,
      malloc: torch.native.mallocMode(),
      cpu_cores: cpus().length,
      cuda_available: torch.cudaIsAvailable(),
      cuda_devices: torch.cudaDeviceCount(),
      gpu_fast_paths: gpuFastPaths(),
      gemm_fp32_gflops: Math.round(measureGemm(1024, "float32")),
      gemm_bf16_gflops: Math.round(measureGemm(1024, "bfloat16")),
    };
    if (values.json) {
      console.log(JSON.stringify(info));
    } else {
      for (const [k, v] of Object.entries(info)) console.log(`${k.padEnd(18)} ${v}`);
    }
    if (blas.kind === "reference") {
      console.error(
        "\n!!! WARNING: libtorch is using the REFERENCE BLAS (" +
          blas.path +
          ").\n" +
          "!!! Matrix products run ~30-60x slower than with OpenBLAS. Fix: apt-get install -y libopenblas0-openmp\n",
      );
    }
    return 0;
  },
};
