// npm's `prepare` step: compile the TypeScript into dist/.
//
// `npx oasft` inside the repository makes npm link the repository into its npx cache, which runs
// `prepare` again: ~45 s of tsc on a 2-core machine, silent, before the user's first command, though
// `npm install` has built dist/ already. That run (npm_command "exec") builds only where dist/ is missing.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
if (process.env.npm_command !== "exec" || !existsSync(join(root, "dist/src/cli/main.js"))) {
  execFileSync("npm", ["run", "build"], { cwd: root, stdio: "inherit" });
}
