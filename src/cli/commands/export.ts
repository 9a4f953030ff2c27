// `oasft export gguf --model DIR --out FILE.gguf [--type f32|f16|q8_0] [--adapter DIR]`: one GGUF
// file that llama.cpp, ollama and LM Studio run, with the tokenizer and the OA chat template inside.
import { statSync } from "node:fs";
import { resolve } from "node:path";
import { checkOutputFolder } from "../../export/gguf-file.js";
import { exportGguf, GGUF_TYPES, type GgufFileType } from "../../export/gguf.js";
import { parseFlags, required, UsageError } from "../args.js";
import { ADAPTER_USAGE, loadForInference } from "../model-flags.js";
import type { Command } from "../main.js";
import { DEVICE_FLAGS, placement } from "../placement.js";

const USAGE = `usage: oasft export gguf --model DIR --out FILE.gguf [--type f32|f16|q8_0] ${ADAPTER_USAGE} [--name NAME]
                        [--device auto|cpu|cuda|cuda:N] [--threads N]

  Writes the model as GGUF v3 for llama.cpp (and ollama, LM Studio): llama.cpp's architecture names,
  hyperparameters and tensor layouts (BLOOM, GPT-NeoX, LLaMA), the tokenizer and the chat template.
  --type   f32 (default), f16, or q8_0 (llama.cpp's reference 8-bit quantiser; norms and biases stay f32)
  --adapter DIR  a PEFT LoRA adapter, merged into the base first (on --device; weights are read in fp32).
  The file is written under a temporary name and renamed when complete.`;

export const command: Command = {
  async run(argv) {
    const [what, ...rest] = argv;
    if (what === "--help" || what === "-h" || what === undefined) {
      console.log(USAGE);
      return what === undefined ? 2 : 0;
    }
    if (what !== "gguf") throw new UsageError(`unknown export format '${what}' (expected: gguf)\n\n${USAGE}`);
    const { values } = parseFlags(
      rest,
      {
        model: { type: "string" },
        out: { type: "string" },
        type: { type: "string" },
        adapter: { type: "string" },
        name: { type: "string" },
        device: DEVICE_FLAGS.device,
        threads: DEVICE_FLAGS.threads,
      },
      USAGE,
    );
    const dir = required(values, "model", USAGE);
    const out = resolve(required(values, "out", USAGE));
    const type = (values.type ?? "f32") as GgufFileType;
    if (!GGUF_TYPES.includes(type))
      throw new UsageError(`--type ${String(values.type)}: expected one of ${GGUF_TYPES.join(", ")}`);
    try {
      checkOutputFolder(out);
    } catch (err) {
      throw new UsageError(`--out ${(err as Error).message}`);
    }
    // Weights are read in fp32: the export rounds once, to the file's type.
    const { device } = placement(values);
    const { model, tokenizerDir } = loadForInference(values, dir, { device, dtype: "float32" });
    try {
      const t0 = performance.now();
      const tty = process.stderr.isTTY;
      const report = exportGguf(model, tokenizerDir, out, {
        type,
        ...(typeof values.name === "string" ? { name: values.name } : {}),
        onTensor: (done, total) => {
          if (!tty) return;
          const s = (performance.now() - t0) / 1000;
          process.stderr.write(
            `\r[${done}/${total} tensors]  ${(done / s).toFixed(1)}/s  ETA ` +
              `${Math.ceil((s / done) * (total - done))}s\x1b[K`,
          );
        },
      });
      if (tty) process.stderr.write("\n");
      if (report.fallbacks.length) {
        const some = report.fallbacks.slice(0, 4).join(", ");
        console.error(
          `note: ${report.fallbacks.length} tensor(s) have rows that are not whole q8_0 blocks and were written ` +
            `in f16: ${some}`,
        );
      }
      console.log(
        `${out}: ${report.arch}, ${report.tensors} tensors, ${type}, ${(statSync(out).size / 2 ** 20).toFixed(1)} MiB`,
      );
    } finally {
      model.dispose();
    }
    return 0;
  },
};
