// Re-exports for the checkpoint tests (keeps their imports short).
import * as torch from "../../src/torch/index.js";
export { createCausalLM, loadCausalLM, saveCausalLM } from "../../src/models/index.js";
export const readSafetensorsHeaderOf = (path: string) => torch.readSafetensorsHeader(path).entries;
