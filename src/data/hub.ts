// Dataset files from the Hugging Face hub, in the hub's own cache layout, shared with Python's
// `huggingface_hub`:  $HF_HUB_CACHE/datasets--ORG--NAME/{refs/main, snapshots/<commit>/<files>}.
// A file already in the cache is used as is (no network); otherwise it is downloaded with
// @huggingface/hub, unless HF_HUB_OFFLINE=1.
import { DataError } from "./io.js";
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import {
  cachedSnapshot as cachedRepoSnapshot,
  hubCacheDir,
  repoFolder as datasetRepoFolder,
} from "../util/hub-cache.js";

export interface HubDataset {
  /** "ORG/NAME" on the hub. */
  repo: string;
  /** Branch, tag or commit; default "main". */
  revision?: string;
  /** Which files of the snapshot to read (matched against the path inside the repo). */
  files: RegExp;
}

export { hubCacheDir };
export const repoFolder = (repo: string) => datasetRepoFolder(repo, "dataset");

function listFilesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    // Snapshot entries are symlinks to blobs; statSync follows them.
    if (statSync(p).isDirectory()) out.push(...listFilesUnder(p));
    else out.push(p);
  }
  return out;
}

/** The cached snapshot folder for a revision, or undefined when it is not in the cache. */
export function cachedSnapshot(ds: HubDataset, cacheDir = hubCacheDir()): string | undefined {
  return cachedRepoSnapshot(ds.repo, "dataset", ds.revision ?? "main", cacheDir);
}

/** Files of a hub dataset matching `ds.files`, from the cache, else downloaded into it. Sorted by path. */
export async function hubDatasetFiles(ds: HubDataset, cacheDir = hubCacheDir()): Promise<string[]> {
  const snapshot = cachedSnapshot(ds, cacheDir);
  if (snapshot) {
    const files = listFilesUnder(snapshot)
      .filter((f) => ds.files.test(relative(snapshot, f)))
      .sort();
    if (files.length) return files;
  }
  const where = join(cacheDir, repoFolder(ds.repo), "snapshots");
  if (process.env.HF_HUB_OFFLINE === "1" || process.env.HF_DATASETS_OFFLINE === "1") {
    throw new Error(
      `dataset ${ds.repo} (files ${ds.files}) is not in the hub cache (${where}) and HF_HUB_OFFLINE=1; download ` +
        `it, or set input_file_path`,
    );
  }
  const hub = await import("@huggingface/hub");
  const repo = { type: "dataset" as const, name: ds.repo };
  const paths: string[] = [];
  try {
    for await (const f of hub.listFiles({ repo, revision: ds.revision, recursive: true })) {
      if (f.type === "file" && ds.files.test(f.path)) paths.push(f.path);
    }
  } catch (err) {
    throw new DataError(
      `dataset ${ds.repo}`,
      `not in the hub cache (${where}) and listing it on the hub failed (${(err as Error).message}); set ` +
        `input_file_path to a local copy`,
    );
  }
  if (!paths.length) throw new DataError(`dataset ${ds.repo}`, `no file on the hub matches ${ds.files}`);
  const out: string[] = [];
  for (const path of paths.sort()) {
    process.stderr.write(`downloading ${ds.repo}/${path}\n`);
    out.push(await hub.downloadFileToCacheDir({ repo, path, revision: ds.revision, cacheDir }));
  }
  return out;
}
