export { generateGreedy, type GreedyOptions } from "./greedy.js";
export { captureByDefault } from "./captured.js";
export { prefill, prefillSteps, prefillYielding, PREFILL_CHUNK, type PrefillOptions } from "./prefill.js";
