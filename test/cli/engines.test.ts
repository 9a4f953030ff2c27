// package.json's engines.node is a promise to users: every production dependency must run on the
// oldest Node it admits (a dependency that needs a newer Node fails at a user's install or at run time).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { REPO } from "../helpers.js";

type Version = [number, number, number];
const parse = (v: string): Version => {
  const [a = 0, b = 0, c = 0] = v
    .replace(/^v/, "")
    .split(".")
    .map((x) => Number.parseInt(x, 10) || 0);
  return [a, b, c];
};
const cmp = (a: Version, b: Version) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2];

/** Whether `v` satisfies an npm range of the forms engines fields use (||, >=, >, <=, <, ^, ~, x, *). */
export function satisfies(v: Version, range: string): boolean {
  return range.split("||").some((alt) => {
    const parts = alt
      .trim()
      .replace(/(>=|<=|>|<|\^|~|=)\s+/g, "$1")
      .split(/\s+/)
      .filter(Boolean);
    return parts.every((p) => {
      if (p === "*" || p === "x") return true;
      const m = /^(>=|<=|>|<|\^|~|=)?v?([\d.x*]+)$/.exec(p);
      if (!m) throw new Error(`unsupported range part '${p}' in '${range}'`);
      const bound = parse(m[2]!.replace(/[x*]/g, "0"));
      const c = cmp(v, bound);
      switch (m[1]) {
        case ">=":
          return c >= 0;
        case ">":
          return c > 0;
        case "<=":
          return c <= 0;
        case "<":
          return c < 0;
        case "^":
          return c >= 0 && v[0] === bound[0];
        case "~":
          return c >= 0 && v[0] === bound[0] && v[1] === bound[1];
        default:
          return m[2]!.includes("x") || m[2]!.split(".").length < 3 ? v[0] === bound[0] : c === 0;
      }
    });
  });
}

test("every production dependency runs on the oldest Node that package.json admits", () => {
  const own = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as { engines: { node: string } };
  const oldest = parse(/\d+(\.\d+){0,2}/.exec(own.engines.node)![0]);
  const paths = execFileSync("npm", ["ls", "--omit=dev", "--parseable", "--all"], { cwd: REPO, encoding: "utf8" })
    .split("\n")
    .filter((p) => p.includes("node_modules"));
  assert.ok(paths.length > 10, "the production tree is listed");
  const refused: string[] = [];
  for (const dir of new Set(paths)) {
    const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as {
      name: string;
      version: string;
      engines?: { node?: string };
    };
    const range = pkg.engines?.node;
    if (range && !satisfies(oldest, range)) refused.push(`${pkg.name}@${pkg.version} (node ${range})`);
  }
  assert.deepEqual(refused, [], `Node ${oldest.join(".")} is refused by`);
  assert.ok(
    satisfies([20, 0, 0], ">=20") && !satisfies([20, 0, 0], ">=22") && satisfies([20, 19, 0], "^18 || ^20 || >= 21"),
  );
});
