#!/usr/bin/env node
// The `oasft` command: runs the compiled CLI (npm install / npm run build produce dist/).
import { main } from "../dist/src/cli/main.js";

process.exitCode = await main(process.argv.slice(2));
