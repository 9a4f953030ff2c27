export { AdamW, type AdamWOptions, type ParamGroup } from "./adamw.js";
