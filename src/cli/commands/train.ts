// `oasft train --configs defaults bloom-zh-3b datasets [--key value ...]`: the card's SFT run.
import { composeConfig, configKeysHelp, splitConfigArgs } from "../../sft/config.js";
import { distEnv } from "../../parallel/env.js";
import { bindToLauncher, launch, launchOptions, splitLaunchArgs } from "../../parallel/launch.js";
import { train } from "../../train/trainer.js";
import "../../pref/index.js"; // registers the rm and dpo stages
import { UsageError } from "../args.js";
import type { Command } from "../main.js";

const USAGE = `usage: oasft train --configs NAME... [--key value ...] [--print-config]

  Supervised fine-tuning with OA's recipe. Blocks come from configs/*.yaml (and ./configs), merged in
  order; any key can be overridden: --num_train_epochs 2, --model_name DIR, --no-eval_size.
  --print-config  print the effective config (with where each value came from) and exit.
  --resume_from_checkpoint latest|DIR  continue a run exactly where its checkpoint left it.
  --device auto|cpu|cuda|cuda:N  where to train (default auto: CUDA when present); --dtype fp16|bf16|fp32.
  --overwrite_output_dir  start over in an output_dir that holds another run (refused otherwise).

  Many processes (data parallel; ZeRO sharding with --zero_stage 1|2|3 or the DeepSpeed JSON's stage):
  --nproc_per_node N  start N ranks on this machine and supervise them (as torchrun)
  --nnodes M --node_rank R --master_addr A --master_port P  one launcher per machine, M machines
  Under torchrun --no-python, deepspeed or srun, \`oasft train\` joins the job from RANK, WORLD_SIZE,
  LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT (or Slurm's SLURM_PROCID/SLURM_NTASKS).
  Ctrl-C or SIGTERM saves a checkpoint and stops (exit 130). Output: output_dir/{checkpoint-N, log.jsonl,
  training.svg, summary.json} and the final model in the Hugging Face layout.

  The card's run: oasft train --configs defaults bloom-zh-3b datasets --num_train_epochs 2 --deepspeed \\
                    --model_name /path/to/bloom-3b-zh
Config keys (any of them as --key value, or in a YAML block):
${configKeysHelp()}`;

export const command: Command = {
  async run(argv) {
    if (argv.includes("--help") || argv.includes("-h")) {
      console.log(USAGE);
      return 0;
    }
    let launchArgs: ReturnType<typeof splitLaunchArgs>;
    try {
      launchArgs = splitLaunchArgs(argv);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const printConfig = launchArgs.rest.includes("--print-config");
    const { names, rest } = splitConfigArgs(launchArgs.rest.filter((a) => a !== "--print-config"));
    if (!names.length) throw new UsageError(`--configs is required\n\n${USAGE}`);
    const { config, origin, notes } = composeConfig(names, rest);
    if (Object.keys(launchArgs.launch).length && !printConfig) {
      // Each rank runs this same command without the launcher flags.
      let options;
      try {
        options = launchOptions(launchArgs.launch, [process.argv[1]!, "train", ...launchArgs.rest]);
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      return launch(options);
    }
    // Of a job's ranks, only rank 0 speaks (the rank as the trainer reads it: torchrun's, or Slurm's).
    const lead = (distEnv()?.rank ?? 0) === 0;
    if (lead) for (const n of notes) console.error(`note: ${n}`);
    if (printConfig) {
      for (const [k, v] of Object.entries(config))
        console.log(`${k}: ${JSON.stringify(v)}${origin[k] !== "default" ? `    # ${origin[k]}` : ""}`);
      return 0;
    }
    // Ctrl-C, and SIGTERM (what Slurm, torchrun and Kubernetes send on preemption): finish the
    // step, save a checkpoint, exit. A second signal exits at once.
    let stop = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stop) process.exit(signal === "SIGTERM" ? 143 : 130);
      stop = true;
      const what = signal === "SIGINT" ? "Ctrl-C" : signal;
      process.stderr.write(`\n${what}: finishing this step, then saving a checkpoint (again to quit now)\n`);
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    bindToLauncher(); // a rank of `--nproc_per_node`: SIGTERM (handled above) when the launcher dies
    try {
      const summary = await train(config, { stopRequested: () => stop });
      if (lead) console.log(JSON.stringify(summary));
      return summary.interrupted ? 130 : 0;
    } finally {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    }
  },
};
