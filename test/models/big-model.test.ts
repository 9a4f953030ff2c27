// Models of any size: the card's 250880 × 2560 float32 embedding (2.57 GB, past both the 2 GiB and
// the int32 limits of Node's file and Buffer APIs) saves with `oasft init`, reads correctly with an
// independent safetensors reader (Python's struct module on the raw file), loads back with the same
// values, and saving it adds next to nothing to host memory.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { loadCausalLM } from "../../src/models/index.js";
import { REPO } from "../helpers.js";

const work = mkdtempSync(join(tmpdir(), "oasft-big-"));
after(() => rmSync(work, { recursive: true, force: true }));

const config = { model_type: "bloom", vocab_size: 250880, hidden_size: 2560, n_layer: 1, n_head: 32 };
const EMBED = "transformer.word_embeddings.weight";

// Reads float32 elements of one tensor straight from the file: the 8-byte little-endian header
// length, the JSON header, then data_offsets relative to the end of the header (the format's spec).
const PY_READER = `
import json, struct, sys
path, name = sys.argv[1], sys.argv[2]
flat = [int(x) for x in sys.argv[3].split(",")]
with open(path, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
    entry = header[name]
    assert entry["dtype"] == "F32", entry["dtype"]
    begin, end = entry["data_offsets"]
    out = []
    for i in flat:
        f.seek(8 + n + begin + 4 * i)
        out.append(struct.unpack("<f", f.read(4))[0])
print(json.dumps({"shape": entry["shape"], "end": end, "values": out}))
`;

test(
  "oasft init saves a 2.57 GB embedding; an independent reader and a reload see the same values; saving keeps " +
    "host memory flat",
  () => {
    const cfgFile = join(work, "config.json");
    writeFileSync(cfgFile, JSON.stringify(config));
    const out = join(work, "model");
    // In a child process, so that its peak RSS is the save's alone: the baseline before the model,
    // the resident size right after it was made, and the peak over the whole command.
    const script = `
    import { main } from ${JSON.stringify(join(REPO, "dist/src/cli/main.js"))};
    const base = process.memoryUsage().rss;
    const code = await main(["init", "--config", ${JSON.stringify(cfgFile)}, "--out", ${JSON.stringify(out)},
      "--seed", "7", "--device", "cpu"]);
    console.log(JSON.stringify({ code, base, peak: process.resourceUsage().maxRSS * 1024 }));`;
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
      encoding: "utf8",
      timeout: 600_000,
    });
    assert.equal(r.status, 0, r.stderr);
    const { code, base, peak } = JSON.parse(r.stdout.trim().split("\n").at(-1)!) as {
      code: number;
      base: number;
      peak: number;
    };
    assert.equal(code, 0, r.stderr);

    const file = join(out, "model.safetensors");
    const h = 2560;
    const params = 250880 * h + 12 * h * h + 13 * h + 4 * h; // embedding, its norm, one block, ln_f
    assert.equal(statSync(file).size > params * 4, true, "the file holds every float32 weight");
    const modelBytes = params * 4;
    assert.ok(
      peak - base < 1.2 * modelBytes,
      `peak host memory ${((peak - base) / 1e9).toFixed(2)} GB over baseline for a ${(modelBytes / 1e9).toFixed(2)} ` +
        `GB model`,
    );

    // Elements at the start, in the middle, past 2^31 bytes and at the very end of the embedding.
    const rows = [0, 1, 125_000, 209_716, 250_879];
    const flat = rows.flatMap((row) => [row * h, row * h + 1, row * h + h - 1]);
    const py = spawnSync("python3", ["-c", PY_READER, file, EMBED, flat.join(",")], { encoding: "utf8" });
    assert.equal(py.status, 0, py.stderr);
    const read = JSON.parse(py.stdout) as { shape: number[]; end: number; values: number[] };
    assert.deepEqual(read.shape, [250880, h]);
    assert.equal(read.end - 250880 * h * 4 >= 0, true);

    const model = loadCausalLM(out);
    try {
      const weight = model.namedParameters().find(([n]) => n === EMBED)![1];
      const mine = torch.scope(() => flat.map((i) => weight.view([-1]).narrow(0, i, 1).item()));
      assert.deepEqual(
        mine,
        read.values.map((v) => Math.fround(v)),
      );
      // HF's init (N(0, 0.02)) reached the last rows too: the values are not a zero-filled tail.
      const tail = torch.scope(() => weight.narrow(0, 250_000, 880).to("float64").pow(2).mean().sqrt().item());
      assert.ok(Math.abs(tail - 0.02) < 0.002, `std of the last rows ${tail}`);
    } finally {
      model.dispose();
    }
  },
);
