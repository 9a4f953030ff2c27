// The Hugging Face hub's cache layout, shared with Python's huggingface_hub:
//   $HF_HUB_CACHE/{models,datasets}--ORG--NAME/{refs/<branch>, snapshots/<commit>/<files>}
// Reading it needs no network; a folder another tool downloaded is used as is.
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

/** The hub cache folder, as huggingface_hub resolves it. */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HF_HOME) return join(env.HF_HOME, "hub");
  return join(env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "huggingface", "hub");
}

export type RepoKind = "model" | "dataset";

/** "models--ORG--NAME" / "datasets--ORG--NAME". */
export function repoFolder(repo: string, kind: RepoKind): string {
  return `${kind}s--${repo.split("/").join("--")}`;
}

/** The cached snapshot folder of a repo at a branch, tag or commit; undefined when not cached. */
export function cachedSnapshot(
  repo: string,
  kind: RepoKind,
  revision = "main",
  cacheDir = hubCacheDir(),
): string | undefined {
  const root = join(cacheDir, repoFolder(repo, kind));
  const refFile = join(root, "refs", revision);
  const commit = existsSync(refFile) ? readFileSync(refFile, "utf8").trim() : revision;
  const snapshot = join(root, "snapshots", commit);
  return existsSync(snapshot) ? snapshot : undefined;
}
