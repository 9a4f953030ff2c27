export { Module, ModuleList, type ModuleOptions } from "./module.js";
export { Linear, LayerNorm, Embedding, type InitMode, type LayerOptions } from "./layers.js";
