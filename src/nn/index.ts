export { Module, ModuleList, type ModuleOptions } from "./module.js";
export { Linear, LayerNorm, Norm, Embedding, type InitMode, type LayerOptions } from "./layers.js";
export { CheckpointedBlocks } from "./checkpoint.js";
