// `npm install` step: make sure libtorch and a fast BLAS are present, then build the addon.
//
// On Debian/Ubuntu as root, missing packages are installed with apt. Anywhere else the build stops
// with the exact commands to run. A build that would silently use the reference BLAS (8 GFLOP/s
// instead of ~250+) is refused, not left behind.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { blasFor, findLibtorch, torchVersion } from "./libtorch.mjs";

// libgloo-dev: the headers of the Gloo library that Debian's libtorch links, for c10d's ProcessGroupGloo.
const APT_PACKAGES = ["libtorch-dev", "libopenblas0-openmp", "libgloo-dev"];

// `npx oasft` inside the repository makes npm link the repository into its npx cache, which runs this
// step again (npm_command "exec"): a full node-gyp rebuild, ~40 s on 2 cores, silent, before the first
// command, of the addon `npm install` built. That run builds only where the addon is missing.
if (process.env.npm_command === "exec" && existsSync(new URL("../build/Release/oasft_torch.node", import.meta.url))) {
  process.exit(0);
}

function fail(lines) {
  console.error(["", "oasft: cannot build the libtorch addon.", ...lines.map((l) => "  " + l), ""].join("\n"));
  process.exit(1);
}

function isDebianLike() {
  return (
    existsSync("/etc/debian_version") ||
    /ID(_LIKE)?=.*(debian|ubuntu)/.test(existsSync("/etc/os-release") ? readFileSync("/etc/os-release", "utf8") : "")
  );
}

function aptInstall(packages) {
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (!isDebianLike() || !isRoot) {
    fail([
      `missing: ${packages.join(", ")}`,
      isDebianLike()
        ? "run as root:"
        : "on Debian/Ubuntu run as root (elsewhere: point LIBTORCH at a libtorch folder, or pip install torch):",
      "  apt-get update && apt-get install -y " + packages.join(" "),
      "then run `npm install` again.",
    ]);
  }
  console.error(`oasft: installing ${packages.join(" ")} with apt-get (one-time, ~200 MB)`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  execFileSync("apt-get", ["update", "-qq"], { stdio: "inherit", env });
  execFileSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...packages], { stdio: "inherit", env });
}

let lib = findLibtorch();
if (!lib) {
  aptInstall(APT_PACKAGES);
  lib = findLibtorch();
  if (!lib)
    fail(["apt-get finished but libtorch is still not found under /usr/lib/*/libtorch.so and /usr/include/torch"]);
}

let blas = blasFor(lib);
if (blas.kind === "reference" || (blas.kind === "unknown" && lib.source === "system")) {
  aptInstall(["libopenblas0-openmp"]);
  blas = blasFor(lib);
  if (blas.kind !== "openblas") {
    fail([
      `libtorch would use the BLAS at ${blas.path} (${blas.kind}), about 30-60x slower than OpenBLAS.`,
      "select OpenBLAS: update-alternatives --config libblas.so.3-$(gcc -dumpmachine)",
    ]);
  }
}
// Multi-process training needs Gloo's headers next to Debian's libtorch; without them the addon builds
// without collectives, and `oasft train --nproc_per_node` says what to install.
if (lib.source === "system" && !existsSync("/usr/include/gloo/config.h")) {
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (isDebianLike() && isRoot) aptInstall(["libgloo-dev"]);
  else
    console.error(
      "oasft: libgloo-dev is not installed: building without multi-process training " +
        "(apt-get install libgloo-dev, then npm rebuild)",
    );
}
console.error(`oasft: libtorch from ${lib.source} (${lib.libDir}), BLAS: ${blas.kind}${lib.hasCuda ? ", CUDA" : ""}`);

// npm passes its configuration (nodedir, which makes the build work offline) to node-gyp through
// npm_config_* variables; npm also puts its bundled node-gyp on PATH for lifecycle scripts.
let gyp = spawnSync("node-gyp", ["rebuild", "--jobs", "max"], { stdio: "inherit", shell: false });
// The fast paths of native/fast.h and native/graph.h follow libtorch's newer C++ APIs, which move between
// releases. If a libtorch 2.x rejects them, the addon is built again without CUDA graphs (the newest of
// them), then without any (the composite paths then run), and says so, rather than leaving the user with
// no addon.
const retryable = () => !gyp.error && gyp.status !== 0 && torchVersion(lib)[0] >= 2;
if (retryable() && lib.hasCuda && !process.env.OASFT_NO_GRAPH && process.env.OASFT_NO_FAST !== "1") {
  console.error("oasft: CUDA graphs (native/graph.h) did not build against this libtorch; building without them");
  gyp = spawnSync("node-gyp", ["rebuild", "--jobs", "max"], {
    stdio: "inherit",
    shell: false,
    env: { ...process.env, OASFT_NO_GRAPH: "1" },
  });
}
if (retryable() && process.env.OASFT_NO_FAST !== "1") {
  console.error(
    "oasft: the fast paths (native/fast.h) or NCCL did not build against this libtorch; building without them",
  );
  gyp = spawnSync("node-gyp", ["rebuild", "--jobs", "max"], {
    stdio: "inherit",
    shell: false,
    env: { ...process.env, OASFT_NO_FAST: "1" },
  });
}
if (gyp.error || gyp.status !== 0) {
  fail([
    gyp.error ? `node-gyp could not start: ${gyp.error.message}` : `node-gyp exited with ${gyp.status}`,
    "build through npm (`npm install` or `npm rebuild`), which configures node-gyp with local Node headers.",
  ]);
}
