// The code's shape, pinned: the folders import downward only (the layers below), protocols and stages
// are data and plug-ins rather than branches, components read their slice of the config, and the
// size limits a reader can hold (functions ≤ 80 lines, files ≤ 400, lines ≤ 120) hold everywhere.
import assert from "node:assert/strict";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, normalize, relative } from "node:path";
import { test } from "node:test";
import ts from "typescript";
import { REPO } from "./helpers.js";

function files(dir: string, ext = /\.(ts|mjs)$/): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path, ext) : ext.test(name) ? [path] : [];
  });
}

const SRC = join(REPO, "src");
const sources = files(SRC, /\.ts$/);
const folderOf = (file: string) => relative(SRC, file).split("/")[0]!;

/**
 * The layers, lowest first. A folder may import its own and any folder before it: the tensor API
 * knows nothing of models, models nothing of training, training nothing of the preference stages
 * (they register themselves), and only the CLI sees everything.
 */
const LAYERS = [
  "util",
  "torch",
  "nn",
  "parallel",
  "models",
  "tokenizer",
  "data",
  "sft",
  "generate",
  "export",
  "train",
  "pref",
  "eval",
  "serve",
  "cli",
];

test("every folder imports only itself and the layers below it", () => {
  assert.deepEqual(
    [...new Set(sources.map(folderOf))].filter((f) => !LAYERS.includes(f) && !f.endsWith(".ts")),
    [],
  );
  const upward: string[] = [];
  for (const file of sources) {
    const from = folderOf(file);
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(/(?:from|import)\s+"(\.\.?\/[^"]+)"/g)) {
      const target = normalize(join(dirname(file), m[1]!));
      if (!target.startsWith(SRC)) continue;
      const to = folderOf(target);
      if (LAYERS.indexOf(to) > LAYERS.indexOf(from)) upward.push(`${relative(SRC, file)} → ${to}/`);
    }
  }
  assert.deepEqual(upward, []);
});

test("protocols and stages are data: no branch on a protocol's or a stage's name outside their specs", () => {
  const offenders: string[] = [];
  for (const file of sources) {
    const text = readFileSync(file, "utf8");
    if (/\bprotocol\s*[!=]==/.test(text)) offenders.push(`${relative(SRC, file)}: protocol ===`);
    const rel = relative(SRC, file);
    if ((rel.startsWith("train/") || rel.startsWith("models/")) && /\bstage\s*[!=]==\s*"(sft|rm|dpo)"/.test(text)) {
      offenders.push(`${rel}: branches on a training stage`);
    }
  }
  assert.deepEqual(offenders, []);
});

test("nothing below the CLI and the trainer's entry types the whole config: components read their slice", () => {
  const allowed = new Set(["sft/config.ts", "train/trainer.ts", "train/loop.ts"]);
  const offenders = sources
    .map((f) => relative(SRC, f))
    .filter((rel) => !rel.startsWith("cli/") && !allowed.has(rel))
    .filter((rel) => /\bSFTConfig\b/.test(readFileSync(join(SRC, rel), "utf8")));
  assert.deepEqual(offenders, []);
});

test("tests import library modules, not CLI command files", () => {
  const offenders = [...files(join(REPO, "test"), /\.ts$/), ...files(join(REPO, "test-gpu"), /\.ts$/)].filter((f) =>
    /from\s+"[^"]*src\/cli\/commands\//.test(readFileSync(f, "utf8")),
  );
  assert.deepEqual(
    offenders.map((f) => relative(REPO, f)),
    [],
  );
});

test("functions ≤ 80 lines and files ≤ 400 lines in src/; no line over 120 characters anywhere", () => {
  const long: string[] = [];
  for (const file of sources) {
    const text = readFileSync(file, "utf8");
    const lines = text.split("\n").length;
    if (lines > 400) long.push(`${relative(REPO, file)}: ${lines} lines`);
    const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
    const visit = (node: ts.Node): void => {
      if (ts.isFunctionLike(node) && "body" in node && node.body) {
        const a = sf.getLineAndCharacterOfPosition(node.getStart(sf)).line;
        const b = sf.getLineAndCharacterOfPosition(node.end).line;
        if (b - a + 1 > 80) long.push(`${relative(REPO, file)}:${a + 1}: a function of ${b - a + 1} lines`);
      }
      ts.forEachChild(node, visit);
    };
    visit(sf);
  }
  const everywhere = ["src", "test", "test-gpu", "bench"].flatMap((d) => files(join(REPO, d)));
  for (const file of everywhere) {
    readFileSync(file, "utf8")
      .split("\n")
      .forEach((line, i) => {
        if (line.length > 120) long.push(`${relative(REPO, file)}:${i + 1}: ${line.length} characters`);
      });
  }
  assert.deepEqual(long, []);
});
