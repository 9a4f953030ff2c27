// The models: the interface (causal-lm.ts), the architecture-independent registry and folder I/O
// (registry.ts, checkpoint.ts), and one file per architecture, each registering itself on import.
// Code above src/models imports from here and types against CausalLM and KVCache only.
import "./bloom.js";
import "./gemma2.js";
import "./gpt-neox.js";
import "./llama.js";
import "./mistral.js";
import "./qwen2.js";
import "./qwen3.js";

export {
  CausalLM,
  causalLmLoss,
  hiddenKeys,
  positionsFromMask,
  type CausalLMInput,
  type CausalLMOutput,
  type KVCache,
  type RowMove,
  type ModelConfig,
  type ModelOptions,
  type NewCacheOptions,
  type TrainStepOptions,
} from "./causal-lm.js";
export {
  checkpointNames,
  createCausalLM,
  knownModelTypes,
  loadCausalLM,
  registerArchitecture,
  resizeTokenEmbeddings,
  resolveModelDir,
  saveCausalLM,
  saveRewardModel,
  type LoadOptions,
  isRewardModelDir,
  type Architecture,
  type SaveOptions,
} from "./registry.js";
export {
  CheckpointError,
  indexWeights,
  loadWeights,
  readJsonFile,
  readModelConfig,
  saveWeights,
} from "./checkpoint.js";
export { ConfigError } from "./config-json.js";
export {
  ADAPTER_CONFIG,
  ADAPTER_WEIGHTS,
  LoraError,
  adapterConfigJson,
  applyLora,
  isAdapterParam,
  loadAdapter,
  loadRewardModel,
  loadWithAdapter,
  mergeLora,
  readAdapterConfig,
  saveAdapter,
  tokenRowModules,
  type LoraConfig,
} from "./lora.js";
