// Finds the libtorch that the addon builds against, and the BLAS that libtorch will run with.
//
// Search order (first hit wins):
//   1. $LIBTORCH: a libtorch distribution folder (lib/ + include/), e.g. unzipped from pytorch.org;
//   2. a pip-installed torch: `python3 -c "import torch"` → torch/lib + torch/include (CUDA builds included);
//   3. the system's: /usr/lib/<triplet>/libtorch.so + /usr/include/torch (Debian's libtorch-dev).
//
// Used three ways: imported by native/build.mjs; run by binding.gyp as
// `node native/libtorch.mjs include|libdir|libs|cxxabi` (one answer per line for gyp's <!@(...));
// and run by hand as `node native/libtorch.mjs` to print what was found.
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, realpathSync } from "node:fs";
import { join } from "node:path";

/** @typedef {{source: string, root: string, libDir: string, includeDirs: string[], hasCuda: boolean}} Libtorch */

function layoutAt(root, source) {
  const libDir = join(root, "lib");
  const inc = join(root, "include");
  if (!existsSync(join(libDir, "libtorch.so")) || !existsSync(join(inc, "torch/csrc/api/include/torch/torch.h")))
    return null;
  const hasCuda = existsSync(join(libDir, "libtorch_cuda.so"));
  const includeDirs = [inc, join(inc, "torch/csrc/api/include")];
  // A pip torch's NCCL headers live in the nvidia-nccl package beside it (site-packages/nvidia/nccl).
  const nccl = join(root, "../nvidia/nccl/include");
  if (hasCuda && existsSync(join(nccl, "nccl.h"))) includeDirs.push(nccl);
  const cuda = hasCuda ? cudaIncludeDir(root) : null;
  if (cuda) includeDirs.push(cuda);
  return { source, root, libDir, includeDirs, hasCuda, cudaHeaders: cuda !== null };
}

/**
 * CUDA's runtime headers, which libtorch's c10/cuda headers include (for the allocator's statistics):
 * the toolkit's, or the nvidia-cuda-runtime wheel beside a pip torch.
 */
function cudaIncludeDir(root) {
  const candidates = [
    process.env.CUDA_HOME && join(process.env.CUDA_HOME, "include"),
    "/usr/local/cuda/include",
    join(root, "../nvidia/cuda_runtime/include"),
    join(root, "../nvidia/cu13/include"),
    join(root, "../nvidia/cu12/include"),
  ];
  return candidates.find((d) => d && existsSync(join(d, "cuda_runtime_api.h"))) ?? null;
}

/** libtorch's major.minor from its version header; [0, 0] when unreadable. */
export function torchVersion(lib) {
  for (const dir of lib.includeDirs) {
    const file = join(dir, "torch/version.h");
    if (!existsSync(file)) continue;
    const text = readFileSync(file, "utf8");
    const num = (key) => Number(new RegExp(`#define ${key} (\\d+)`).exec(text)?.[1] ?? 0);
    return [num("TORCH_VERSION_MAJOR"), num("TORCH_VERSION_MINOR")];
  }
  return [0, 0];
}

function pipTorch() {
  for (const py of ["python3", "python"]) {
    try {
      const dir = execFileSync(py, ["-c", "import os, torch; print(os.path.dirname(torch.__file__))"], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
        timeout: 60_000,
      }).trim();
      // Debian's python3-torch has no headers in its package folder; it is the system case below.
      const found = dir && layoutAt(dir, `pip torch (${py})`);
      if (found) return found;
    } catch {
      /* no python or no torch: try the next */
    }
  }
  return null;
}

function systemTorch() {
  if (!existsSync("/usr/include/torch/csrc/api/include/torch/torch.h")) return null;
  for (const base of ["/usr/lib", "/usr/lib64"]) {
    if (!existsSync(base)) continue;
    const dirs = [
      base,
      ...readdirSync(base)
        .filter((d) => d.endsWith("-linux-gnu"))
        .map((d) => join(base, d)),
    ];
    for (const libDir of dirs) {
      if (existsSync(join(libDir, "libtorch.so"))) {
        return {
          source: "system",
          root: "/usr",
          libDir,
          includeDirs: ["/usr/include", "/usr/include/torch/csrc/api/include"],
          hasCuda: existsSync(join(libDir, "libtorch_cuda.so")),
        };
      }
    }
  }
  return null;
}

/** @returns {Libtorch | null} */
export function findLibtorch() {
  const env = process.env.LIBTORCH;
  if (env) {
    const found = layoutAt(env, "$LIBTORCH");
    if (!found)
      throw new Error(
        `LIBTORCH=${env} is not a libtorch folder: expected ${env}/lib/libtorch.so and ` +
          `${env}/include/torch/csrc/api/include/torch/torch.h`,
      );
    return found;
  }
  return pipTorch() ?? systemTorch();
}

/**
 * The BLAS a system libtorch links (Debian's torch links the generic libblas.so.3, which the
 * alternatives system points at the reference BLAS or at OpenBLAS). Pip and LIBTORCH builds carry
 * their own MKL/OpenBLAS, so for them this answers "bundled".
 * @returns {{kind: "openblas" | "reference" | "bundled" | "unknown", path: string}}
 */
export function blasFor(lib) {
  if (lib.source !== "system") return { kind: "bundled", path: lib.libDir };
  const link = join(lib.libDir, "libblas.so.3");
  if (!existsSync(link)) return { kind: "unknown", path: link };
  const path = realpathSync(link);
  if (/openblas/i.test(path)) return { kind: "openblas", path };
  if (/mkl|blis|atlas/i.test(path)) return { kind: "unknown", path };
  return { kind: "reference", path };
}

/** Whether libc10 was built with the C++11 std::string ABI (pip wheels before 2.7 were not). */
export function usesCxx11Abi(lib) {
  try {
    const syms = execFileSync("nm", ["-D", "--defined-only", join(lib.libDir, "libc10.so")], {
      encoding: "utf8",
      maxBuffer: 256 << 20,
    });
    return syms.includes("__cxx11");
  } catch {
    return true;
  }
}

/**
 * Compiler flags for at::parallel_for in our own kernels. ATen's OpenMP backend is a header template,
 * so it runs threaded only when the addon is compiled with -fopenmp; that is safe only when libtorch
 * itself uses the system's libgomp (Debian). Pip wheels bundle a renamed libgomp: a second OpenMP
 * runtime in one process is worse than a serial loop, so there the kernels stay serial.
 */
export function openmpFlags(lib) {
  try {
    const dyn = execFileSync("readelf", ["-d", join(lib.libDir, "libtorch_cpu.so")], { encoding: "utf8" });
    return /\[libgomp\.so\.1\]/.test(dyn) ? ["-fopenmp"] : [];
  } catch {
    return [];
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const lib = findLibtorch();
  const what = process.argv[2];
  if (!lib) {
    if (what) {
      console.error("libtorch not found: run `npm install` (it installs or explains)");
      process.exit(1);
    }
    console.log("libtorch: not found");
    process.exit(1);
  }
  const libs = ["-ltorch", "-ltorch_cpu", "-lc10"];
  if (lib.hasCuda) libs.push("-Wl,--no-as-needed", "-ltorch_cuda", "-Wl,--as-needed");
  // Debian's libtorch links the system's libgloo (libgloo-dev has its headers); pip wheels carry it inside.
  const gloo = [lib.libDir, "/usr/lib"].some((d) => existsSync(join(d, "libgloo.so")));
  if (lib.source === "system" && gloo) libs.push("-lgloo");
  switch (what) {
    case "include":
      console.log(lib.includeDirs.join("\n"));
      break;
    case "libdir":
      console.log(lib.libDir);
      break;
    case "libs":
      console.log([`-L${lib.libDir}`, `-Wl,-rpath,${lib.libDir}`, ...libs, ...openmpFlags(lib)].join("\n"));
      break;
    case "openmp":
      console.log(openmpFlags(lib).join("\n"));
      break;
    // OASFT_WITH_NCCL: a CUDA libtorch with NCCL's header found (native/dist.h then builds ProcessGroupNCCL).
    // OASFT_WITH_CUDA_HEADERS: CUDA's runtime headers found (native/fast.h then reads the allocator's statistics).
    // OASFT_NO_FAST: native/build.mjs retried without native/fast.h's paths (and NCCL) after they failed to build.
    // OASFT_NO_GRAPH: its first retry, without native/graph.h's CUDA graphs only.
    case "defines": {
      // The retry builds the core only: no fast paths and no NCCL (the other code that follows 2.x's C++ APIs).
      const retry = process.env.OASFT_NO_FAST === "1";
      const nccl = !retry && lib.hasCuda && lib.includeDirs.some((d) => existsSync(join(d, "nccl.h")));
      const defines = [nccl ? "OASFT_WITH_NCCL" : "OASFT_WITHOUT_NCCL"];
      if (lib.cudaHeaders && !retry) defines.push("OASFT_WITH_CUDA_HEADERS");
      if (retry) defines.push("OASFT_NO_FAST");
      if (process.env.OASFT_NO_GRAPH === "1") defines.push("OASFT_NO_GRAPH");
      console.log(defines.join("\n"));
      break;
    }
    // libtorch 2.12 and later require C++20 of code that includes ATen; 1.13 builds as C++17.
    case "std":
      console.log(torchVersion(lib)[0] >= 2 ? "-std=c++20" : "-std=c++17");
      break;
    case "cxxabi":
      console.log(usesCxx11Abi(lib) ? 1 : 0);
      break;
    default:
      console.log(JSON.stringify({ ...lib, blas: blasFor(lib), cxx11Abi: usesCxx11Abi(lib) }, null, 2));
  }
}
