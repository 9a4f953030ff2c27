// Learning from rankings: reward models and DPO. Importing this module registers the `rm` and `dpo`
// training stages with the trainer (as src/models/index.ts registers the model families).
import "./stages.js";

export { preparePrefData, type PrefData } from "./data.js";
export { dpoLoss, dpoObjective, REFERENCE_FILE } from "./dpo.js";
export { rankingLoss, rmObjective } from "./rm.js";
export { RewardScorer } from "./score.js";
