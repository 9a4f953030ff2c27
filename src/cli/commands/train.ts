// `oasft train --configs defaults bloom-zh-3b datasets [--key value ...]`: the card's SFT run.
import { composeConfig, splitConfigArgs, CONFIG_KEYS } from "../../sft/config.js";
import { train } from "../../train/trainer.js";
import { UsageError } from "../args.js";
import type { Command } from "../main.js";

const USAGE = `usage: oasft train --configs NAME... [--key value ...] [--print-config]

  Supervised fine-tuning with OA's recipe. Blocks come from configs/*.yaml (and ./configs), merged in
  order; any key can be overridden: --num_train_epochs 2, --model_name DIR, --no-eval_size.
  --print-config  print the effective config (with where each value came from) and exit.
  --resume_from_checkpoint latest|DIR  continue a run exactly where its checkpoint left it.
  --device auto|cpu|cuda|cuda:N  where to train (default auto: CUDA when present); --dtype fp16|bf16|fp32.
  Ctrl-C saves a checkpoint and stops (exit 130). Output: output_dir/{checkpoint-N, log.jsonl,
  training.svg, summary.json} and the final model in the Hugging Face layout.

  The card's run: oasft train --configs defaults bloom-zh-3b datasets --num_train_epochs 2 --deepspeed \\
                    --model_name /path/to/bloom-3b-zh
  Keys: ${Object.keys(CONFIG_KEYS).join(", ")}`;

export const command: Command = {
  async run(argv) {
    if (argv.includes("--help") || argv.includes("-h")) {
      console.log(USAGE);
      return 0;
    }
    const printConfig = argv.includes("--print-config");
    const { names, rest } = splitConfigArgs(argv.filter((a) => a !== "--print-config"));
    if (!names.length) throw new UsageError(`--configs is required\n\n${USAGE}`);
    const { config, origin, notes } = composeConfig(names, rest);
    for (const n of notes) console.error(`note: ${n}`);
    if (printConfig) {
      for (const [k, v] of Object.entries(config)) console.log(`${k}: ${JSON.stringify(v)}${origin[k] !== "default" ? `    # ${origin[k]}` : ""}`);
      return 0;
    }
    let stop = false;
    const onSigint = () => {
      if (stop) process.exit(130); // a second Ctrl-C stops at once
      stop = true;
      process.stderr.write("\nCtrl-C: finishing this step, then saving a checkpoint (Ctrl-C again to quit now)\n");
    };
    process.on("SIGINT", onSigint);
    try {
      const fault = Number(process.env.OASFT_FAULT_SAVE_DELAY_MS ?? 0);
      const summary = await train(config, { stopRequested: () => stop, ...(fault > 0 ? { faultDelayMs: fault } : {}) });
      console.log(JSON.stringify(summary));
      return summary.interrupted ? 130 : 0;
    } finally {
      process.off("SIGINT", onSigint);
    }
  },
};
