export { Module, ModuleList, type ModuleOptions } from "./module.js";
export {
  Linear,
  LayerNorm,
  RMSNorm,
  OffsetRMSNorm,
  Norm,
  Embedding,
  type InitMode,
  type LayerInit,
  type LayerOptions,
  type LoraOptions,
} from "./layers.js";
export { CheckpointedBlocks } from "./checkpoint.js";
export { RotaryEmbedding, applyRotary, type RopeScaling, type RotaryTables } from "./rotary.js";
export {
  additiveMask,
  attention,
  hiddenBias,
  setAttentionImpl,
  useSdpa,
  windowedMasks,
  windowsCover,
  withSlidingWindow,
  type LayerMask,
  type AttentionImpl,
  type AttentionOptions,
} from "./attention.js";
