// `oasft parity`: the numbers ../shared/golden holds, computed by oasft for any BLOOM-layout model,
// so that a model can be checked against Hugging Face's outputs tensor by tensor.
import { existsSync } from "node:fs";
import * as torch from "../../torch/index.js";
import { computeParity } from "../../eval/parity.js";
import { parseFlags, required, UsageError } from "../args.js";
import type { Command } from "../main.js";
import { DEVICE_FLAGS, DEVICE_USAGE, placement } from "../placement.js";

const USAGE = `usage: oasft parity --model DIR --inputs DIR/tensors.safetensors --out OUT.safetensors ${DEVICE_USAGE}

  Reads the golden input names (inputs.right.*, inputs.left.*, inputs.nomask.input_ids,
  gen.single.prompt_ids, gen.batch_left_padded.prompt_ids/.attention_mask) and writes F32/I64:
  logits.{right,left,nomask}, loss.right, grad.<name>, adamw.<name> (one step: lr 1e-3, betas 0.9/0.999,
  eps 1e-8, weight decay 0.01 on every tensor), gen.{single,batch_left_padded}.tokens (+20 greedy, cached).`;

export const command: Command = {
  async run(argv) {
    const { values } = parseFlags(
      argv,
      { model: { type: "string" }, inputs: { type: "string" }, out: { type: "string" }, ...DEVICE_FLAGS },
      USAGE,
    );
    const { device, dtype } = placement(values);
    const modelDir = required(values, "model", USAGE);
    const inputsPath = required(values, "inputs", USAGE);
    const outPath = required(values, "out", USAGE);
    if (!existsSync(inputsPath)) throw new UsageError(`--inputs: ${inputsPath} does not exist`);
    const { tensors: inputs } = torch.loadSafetensors(
      inputsPath,
      (name) =>
        name.startsWith("inputs.") ||
        (name.startsWith("gen.") && !name.endsWith(".tokens") && !name.endsWith(".step_logits")),
    );
    const known = [
      "inputs.right.input_ids",
      "inputs.left.input_ids",
      "inputs.nomask.input_ids",
      "gen.single.prompt_ids",
      "gen.batch_left_padded.prompt_ids",
    ];
    if (!known.some((n) => inputs.has(n)))
      throw new UsageError(`--inputs: ${inputsPath} holds none of ${known.join(", ")}`);
    const out = computeParity(modelDir, inputs, { device, dtype });
    const entries = [...out].map(([name, t]): [string, torch.Tensor] => [
      name,
      t.dtype === "int64" || t.dtype === "float32" ? t : t.to("float32"),
    ]);
    torch.saveSafetensors(outPath, entries);
    console.log(
      `${outPath}: ${out.size} tensors (${[...new Set([...out.keys()].map((k) => k.split(".")[0]))].join(", ")})`,
    );
    return 0;
  },
};
