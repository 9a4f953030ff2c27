export { generateGreedy, type GreedyOptions } from "./greedy.js";
export { prefill, PREFILL_CHUNK, type PrefillOptions } from "./prefill.js";
