// The model a run trains and its optimizer: where the weights start (a folder, a config.json, a
// checkpoint), LoRA adapters on a frozen base, AdamW's decay groups, and the data-parallel or ZeRO
// optimizer over the process group.
import { existsSync, readFileSync, statSync } from "node:fs";
import { extname, join } from "node:path";
import * as torch from "../torch/index.js";
import {
  applyLora,
  createCausalLM,
  loadAdapter,
  loadCausalLM,
  resizeTokenEmbeddings,
  resolveModelDir,
  tokenRowModules,
  type CausalLM,
  type LoraConfig,
} from "../models/index.js";
import { indexWeights } from "../models/checkpoint.js";
import { ConfigError, type Settings } from "../sft/config.js";
import { roundUp } from "../sft/collate.js";
import type { ChatTokenizer } from "../tokenizer/index.js";
import type { ProcessGroup } from "../parallel/group.js";
import { loraSettings } from "./lora-settings.js";
import type { TrainSettings } from "./settings.js";
import { ReplicatedOptimizer, ShardedOptimizer, type TrainOptimizer } from "./zero.js";

/**
 * The model a run trains: model_name's (or, on resume, the checkpoint's), with LoRA adapters on a
 * frozen base when peft_model is set. A LoRA checkpoint holds only the adapters: the base comes from
 * model_name again, and the adapters from the checkpoint.
 */
export function startingModel(
  cfg: Settings<"model" | "lora">,
  tok: ChatTokenizer,
  o: { device: string; scoreHead: boolean },
  resumeDir: string | undefined,
  print: (l: string) => void,
): { model: CausalLM; lora?: LoraConfig } {
  const { device, scoreHead } = o;
  if (resumeDir && !cfg.peft_model) return { model: loadCausalLM(resumeDir, { dtype: "float32", device, scoreHead }) };
  const base = baseModel(cfg, tok, device, scoreHead);
  const model = base.model;
  // A reward model starts from the model's trunk (an RM folder's own head, or a new one).
  if (scoreHead) model.scoreHead();
  if (!cfg.peft_model) return { model };
  try {
    if (resumeDir) return { model, lora: loadAdapter(model, resumeDir) };
    const lora = loraSettings(cfg, model, scoreHead);
    if (base.grew) {
      // New token rows (OA's chat tokens) would stay random and unsaved under LoRA alone.
      const rows = tokenRowModules(model).filter((m) => !(lora.modules_to_save ?? []).includes(m));
      if (rows.length) {
        lora.modules_to_save = [...(lora.modules_to_save ?? []), ...rows];
        print(
          `note: LoRA: the vocabulary grew to ${model.config.vocabSize} tokens, so ${rows.join(" and ")} train in ` +
            `full and are saved with the adapter (modules_to_save)`,
        );
      }
    }
    const adapted = applyLora(model, lora);
    const trainable = model
      .namedParameters()
      .filter(([, t]) => t.requiresGrad)
      .reduce((n, [, t]) => n + t.numel, 0);
    print(
      `LoRA r=${lora.r} α=${lora.lora_alpha} on ${adapted.length} layers (${lora.target_modules.join(", ")}): ` +
        `${(trainable / 1e6).toFixed(2)}M trainable of ${(model.numParameters() / 1e6).toFixed(2)}M parameters`,
    );
    return { model, lora };
  } catch (err) {
    model.dispose();
    throw err;
  }
}

/**
 * model_name: an HF folder with weights (fine-tune it), or a config.json file (a new model, random
 * init as HF). The embedding grows to the tokenizer's length rounded up to 16 (OA) — never shrinks.
 */
function baseModel(
  cfg: Settings<"model">,
  tok: ChatTokenizer,
  device: string,
  scoreHead: boolean,
): { model: CausalLM; grew: boolean } {
  const vocab = roundUp(tok.vocabSize, 16);
  let name = cfg.model_name;
  if (!name)
    throw new ConfigError("model_name is not set: give a model folder (HF layout) or a config.json for a new model");
  let model: CausalLM;
  name = resolveModelDir(name, "model_name");
  if (!existsSync(name))
    throw new ConfigError(
      `model_name ${name}: not found (expected a model folder, a config.json, or a hub name in the Hugging Face cache)`,
    );
  if (statSync(name).isFile()) {
    if (extname(name) !== ".json")
      throw new ConfigError(`model_name ${name}: expected a model folder or a config.json`);
    const json = JSON.parse(readFileSync(name, "utf8")) as Record<string, unknown>;
    const ids = { bos_token_id: tok.eosId, eos_token_id: tok.eosId, pad_token_id: tok.padId };
    model = createCausalLM(
      { ...json, ...ids, vocab_size: Math.max(Number(json.vocab_size ?? 0), vocab) },
      { dtype: "float32", device },
      name,
    );
  } else {
    if (!existsSync(join(name, "config.json")))
      throw new ConfigError(`model_name ${name}: no config.json in the folder`);
    try {
      indexWeights(name);
    } catch (err) {
      throw new ConfigError(
        `model_name ${name}: no weights (${(err as Error).message}); to start from scratch, give the config.json ` +
          `file itself`,
      );
    }
    model = loadCausalLM(name, { dtype: "float32", device, scoreHead });
  }
  const grew = vocab > model.config.vocabSize;
  return { model: grew ? resizeTokenEmbeddings(model, vocab) : model, grew };
}

/** HF Trainer's groups: weight decay on everything but biases and norm weights (the model decides which). */
export function paramGroups(model: CausalLM, weightDecay: number) {
  const { decay, noDecay } = model.decayGroups();
  return {
    names: [...decay, ...noDecay].map(([n]) => n),
    groups: [
      { params: decay.map(([, p]) => p), weightDecay },
      { params: noDecay.map(([, p]) => p), weightDecay: 0 },
    ],
  };
}

/** Every rank starts from rank 0's weights (a fresh init is seeded alike, but a file system may differ). */
export function broadcastParameters(model: CausalLM, processGroup: ProcessGroup): void {
  if (processGroup.worldSize === 1) return;
  torch.noGrad(() => {
    for (const [, p] of model.namedParameters()) processGroup.broadcast(p, 0);
  });
}

export function makeOptimizer(
  model: CausalLM,
  names: string[],
  groups: ReturnType<typeof paramGroups>["groups"],
  settings: TrainSettings,
  processGroup: ProcessGroup,
  stage: TrainSettings["zeroStage"],
  checkpointing: boolean,
): TrainOptimizer {
  const o = { lr: settings.lr, betas: settings.betas, eps: settings.eps, weightDecay: settings.weightDecay };
  return stage === 0
    ? new ReplicatedOptimizer(model, names, groups, o, processGroup)
    : new ShardedOptimizer(model, names, groups, o, processGroup, stage, checkpointing);
}
