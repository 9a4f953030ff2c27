export { generateGreedy, type GreedyOptions } from "./greedy.js";
export { prefill, prefillSteps, prefillYielding, PREFILL_CHUNK, type PrefillOptions } from "./prefill.js";
