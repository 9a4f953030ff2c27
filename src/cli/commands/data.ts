// `oasft data preview|stats|export --configs ...`: look at what training will see.
import { Rng } from "../../data/rng.js";
import { composeConfig, configKeysHelp, splitConfigArgs, type SFTConfig } from "../../sft/config.js";
import { usefulTokenFraction } from "../../sft/collate.js";
import { lintMessage, prepareSftData, splitSample, type SftData } from "../../sft/data.js";
import type { EncodedSample } from "../../sft/encode.js";
import { writeFileAtomic } from "../../util/atomic-file.js";
import { UsageError } from "../args.js";
import type { Command } from "../main.js";

const USAGE = `usage:
  oasft data preview --configs NAME... [--n 5] [--ids] [--split train|val] [--key value ...]
  oasft data stats   --configs NAME... [--json] [--key value ...]
  oasft data export  --configs NAME... --split train|val --out FILE.jsonl [--key value ...]

  preview: samples as text, the trained tokens marked (green on a terminal, ⟦…⟧ otherwise).
  stats:   per dataset: samples, tokens, trained-token fraction, lengths, records dropped by each rule,
           and the useful-token fraction with OA's padding and with packing. Fails on lint problems.
  export:  one JSON object per sample: {"dataset", "input_ids", "label_mask"} (formatted and truncated,
           not padded).
  Config blocks come from configs/*.yaml; any config key can be overridden (--max_length 1024).
  Example: oasft data stats --configs defaults shared-sample tiny-tokenizer --cache_dir ../shared/data

Config keys (the data pipeline reads the data and formatting ones; all are accepted):
${configKeysHelp()}`;

/** Pulls this command's own flags out of argv; the rest are config overrides. */
function takeFlags(
  argv: string[],
  own: Record<string, "string" | "boolean">,
): { own: Record<string, string | boolean>; rest: string[] } {
  const out: Record<string, string | boolean> = {};
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i]!.startsWith("--") ? argv[i]!.slice(2) : "";
    const kind = own[name];
    if (!kind) {
      rest.push(argv[i]!);
      continue;
    }
    if (kind === "boolean") out[name] = true;
    else {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`--${name}: missing value\n\n${USAGE}`);
      out[name] = v;
    }
  }
  return { own: out, rest };
}

function samplesOf(
  data: SftData,
  cfg: SFTConfig,
  split: "train" | "val",
): Array<{ dataset: string; sample: EncodedSample }> {
  const out: Array<{ dataset: string; sample: EncodedSample }> = [];
  for (const d of data.datasets) {
    // Each sample as the trainer cuts it in epoch 0 (the same window), validation as evaluation cuts it.
    const n = split === "train" ? d.train.length : d.val.length;
    for (let i = 0; i < n; i++) out.push({ dataset: d.name, sample: splitSample(data, cfg, d, i, split) });
  }
  return out;
}

async function preview(data: SftData, cfg: SFTConfig, n: number, ids: boolean, split: "train" | "val"): Promise<void> {
  const tty = process.stdout.isTTY;
  const [on, off] = tty ? ["\x1b[32m", "\x1b[0m"] : ["⟦", "⟧"];
  for (const d of data.datasets) {
    const pool = split === "train" ? d.train : d.val;
    const format = `chat template ${data.tokenizer.template.name}`;
    console.log(
      `=== ${d.name} (${split}: ${pool.length} samples; ${format}; ${tty ? "green" : "⟦…⟧"} = trained targets)`,
    );
    for (let i = 0; i < Math.min(n, pool.length); i++) {
      const s = splitSample(data, cfg, d, i, split);
      if (ids) {
        console.log(s.inputIds.map((id, t) => `${id}${s.labelMask[t] ? "*" : ""}`).join(" "));
        continue;
      }
      // A token is marked when it is a trained *target*: it follows a position whose mask is on.
      const target = s.inputIds.map((_, t) => t > 0 && s.labelMask[t - 1]!);
      let text = "";
      for (let t = 0; t < s.inputIds.length;) {
        let u = t;
        while (u < s.inputIds.length && target[u] === target[t]) u++;
        const piece = await data.tokenizer.decode(s.inputIds.slice(t, u), false);
        text += target[t] ? `${on}${piece}${off}` : piece;
        t = u;
      }
      console.log(`${text}\n---`);
    }
  }
}

function histogram(lengths: number[], maxLength: number): Record<string, number> {
  const edges = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192].filter((e) => e < maxLength).concat([maxLength]);
  const hist: Record<string, number> = {};
  let lo = 0;
  for (const e of edges) {
    hist[`${lo + 1}-${e}`] = lengths.filter((l) => l > lo && l <= e).length;
    lo = e;
  }
  hist[`>${maxLength}`] = lengths.filter((l) => l > maxLength).length;
  return hist;
}

function stats(data: SftData, cfg: SFTConfig) {
  const train = samplesOf(data, cfg, "train");
  const perDataset = data.datasets.map((d) => {
    const full = d.train.map((s) => s.ids.length);
    const cut = train.filter((x) => x.dataset === d.name).map((x) => x.sample);
    const tokens = cut.reduce((n, s) => n + s.inputIds.length, 0);
    const trained = cut.reduce((n, s) => n + s.labelMask.filter(Boolean).length, 0);
    return {
      dataset: d.name,
      files: d.files,
      train_samples: d.train.length,
      val_samples: d.val.length,
      tokens_before_truncation: full.reduce((a, b) => a + b, 0),
      tokens: tokens,
      trained_token_fraction: tokens ? trained / tokens : 0,
      truncated_samples: full.filter((l) => l > cfg.max_length - data.prefixIds.length).length,
      samples_without_trained_token: cut.filter((s) => !s.labelMask.some(Boolean)).length,
      length_histogram: histogram(full, cfg.max_length),
      dropped: d.dropped,
    };
  });
  // Batches draw samples in a shuffled order across datasets (as training does), not dataset by dataset.
  const lengths = new Rng(cfg.rng_seed, "stats/order").shuffle(train.map((x) => x.sample.inputIds.length));
  const useful = usefulTokenFraction(lengths, cfg.per_device_train_batch_size, cfg.max_length);
  return {
    datasets: perDataset,
    total: {
      train_samples: lengths.length,
      val_samples: data.datasets.reduce((n, d) => n + d.val.length, 0),
      tokens: lengths.reduce((a, b) => a + b, 0),
    },
    useful_token_fraction: {
      padded: useful.padded,
      packed: useful.packed,
      rows_padded: useful.rowsPadded,
      rows_packed: useful.rowsPacked,
      batch_size: cfg.per_device_train_batch_size,
      max_length: cfg.max_length,
    },
    lint_problems: data.lint.length,
  };
}

function printStats(s: ReturnType<typeof stats>): void {
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  console.log(["dataset", "train", "val", "tokens", "trained", "truncated", "dropped"].join("\t"));
  for (const d of s.datasets) {
    const dropped =
      Object.entries(d.dropped)
        .map(([k, v]) => `${k}=${v}`)
        .join(",") || "-";
    console.log(
      [
        d.dataset,
        d.train_samples,
        d.val_samples,
        d.tokens,
        pct(d.trained_token_fraction),
        d.truncated_samples,
        dropped,
      ].join("\t"),
    );
  }
  console.log(`total: ${s.total.train_samples} train / ${s.total.val_samples} val samples, ${s.total.tokens} tokens`);
  for (const d of s.datasets)
    console.log(
      `lengths ${d.dataset}: ${Object.entries(d.length_histogram)
        .map(([k, v]) => `${k}:${v}`)
        .join(" ")}`,
    );
  const u = s.useful_token_fraction;
  console.log(
    `useful tokens per batch slot (batch ${u.batch_size}, max_length ${u.max_length}): padded ${pct(u.padded)} in ` +
      `${u.rows_padded} rows, packed ${pct(u.packed)} in ${u.rows_packed} rows`,
  );
}

export const command: Command = {
  async run(argv) {
    const [sub, ...rest] = argv;
    if (!sub || sub === "--help" || sub === "-h") {
      console.log(USAGE);
      return sub ? 0 : 2;
    }
    if (!["preview", "stats", "export"].includes(sub)) throw new UsageError(`unknown subcommand '${sub}'\n\n${USAGE}`);
    const { own, rest: configArgs } = takeFlags(rest, {
      n: "string",
      ids: "boolean",
      split: "string",
      out: "string",
      json: "boolean",
      help: "boolean",
    });
    if (own.help) {
      console.log(USAGE);
      return 0;
    }
    const { names, rest: overrides } = splitConfigArgs(configArgs);
    if (!names.length) throw new UsageError(`--configs is required\n\n${USAGE}`);
    const { config, notes } = composeConfig(names, overrides);
    for (const n of notes) console.error(`note: ${n}`);
    const split = (own.split ?? "train") as string;
    if (split !== "train" && split !== "val") throw new UsageError(`--split: expected train or val, got '${split}'`);
    const data = await prepareSftData(config);

    if (sub === "preview") {
      const n = Number(own.n ?? 5);
      if (!Number.isInteger(n) || n < 1) throw new UsageError(`--n: expected a positive integer, got '${own.n}'`);
      await preview(data, config, n, own.ids === true, split);
      return 0;
    }
    if (sub === "stats") {
      const s = stats(data, config);
      if (own.json) console.log(JSON.stringify(s, null, 2));
      else printStats(s);
      if (data.lint.length) {
        console.error(lintMessage(data.lint));
        return 1;
      }
      return 0;
    }
    if (typeof own.out !== "string") throw new UsageError(`export needs --out FILE.jsonl\n\n${USAGE}`);
    if (own.split === undefined) throw new UsageError(`export needs --split train|val\n\n${USAGE}`);
    if (data.lint.length) throw new Error(lintMessage(data.lint));
    const lines = samplesOf(data, config, split).map(
      ({ dataset, sample }) =>
        JSON.stringify({ dataset, input_ids: sample.inputIds, label_mask: sample.labelMask.map((m) => (m ? 1 : 0)) }) +
        "\n",
    );
    writeFileAtomic(own.out, lines);
    console.error(`wrote ${lines.length} ${split} samples to ${own.out}`);
    return 0;
  },
};
