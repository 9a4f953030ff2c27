// The dataset registry: config names → loaders. Translation sets are a family (wmt2019_<a>-<b>,
// ted_trans_<a>-<b>); everything else is one name.
import { Registry } from "../util/registry.js";
import type { DatasetLoader } from "./dataset.js";
import { oasstExport } from "./datasets/oasst.js";
import { dolly15k, gsm8k, joke, webgpt } from "./datasets/qa.js";
import { alpaca, messages, vicuna } from "./datasets/chat.js";
import { translation } from "./datasets/translation.js";
import { oasftDemo } from "./datasets/builtin.js";
import { preferencePairs } from "./datasets/preference.js";

export const datasets = new Registry<DatasetLoader>("dataset");
datasets.register("oasst_export", oasstExport);
datasets.register("dolly15k", dolly15k);
datasets.register("gsm8k", gsm8k);
datasets.register("webgpt", webgpt);
datasets.register("joke", joke);
datasets.register("vicuna", vicuna);
datasets.register("sharegpt", vicuna);
datasets.register("messages", messages);
datasets.register("alpaca", alpaca);
datasets.register("oasft_demo", oasftDemo);
datasets.register("preference_pairs", preferencePairs);
// The card's three translation sets by name; any other pair with templates works too.
for (const name of ["wmt2019_zh-en", "ted_trans_en-ja", "ted_trans_zh-ja"]) datasets.register(name, translation);

/** The loader for a config name (lower-cased, as OA matches them). */
export function datasetLoader(name: string): DatasetLoader {
  const key = name.toLowerCase();
  if (!datasets.has(key) && /^(wmt2019|ted_trans)_/.test(key)) return translation;
  return datasets.get(key);
}
