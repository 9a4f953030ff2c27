export { generateGreedy, type GreedyOptions } from "./greedy.js";
