// Which tokens a model family pads, ends and separates with (OA's table), found from the family name,
// the tokenizer file's path, or the folder's tokenizer_config.json; and the folder's generation eos ids.
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";

export interface FamilyTokens {
  pad: string;
  eos: string;
  sep: string;
}

/** OA's TOKENIZER_CONFIGS for the causal-LM families: pad/eos/sep per model family (utils.py). */
export const FAMILY_TOKENS: Record<string, FamilyTokens> = {
  bloom: { pad: "<pad>", eos: "</s>", sep: "<s>" },
  pythia: { pad: "<|padding|>", eos: "<|endoftext|>", sep: "<|endoftext|>" },
  "gpt-neox": { pad: "<|padding|>", eos: "<|endoftext|>", sep: "<|endoftext|>" },
  llama: { pad: "</s>", eos: "</s>", sep: "<s>" },
  falcon: { pad: "<|endoftext|>", eos: "<|endoftext|>", sep: "<|endoftext|>" },
  cerebras: { pad: "<|endoftext|>", eos: "<|endoftext|>", sep: "<|endoftext|>" },
  galactica: { pad: "<pad>", eos: "</s>", sep: "" },
};

export interface LoadTokenizerOptions {
  /** A key of FAMILY_TOKENS. Default: matched in modelName as OA does, else the folder's tokenizer_config.json. */
  family?: string;
  modelName?: string;
  /**
   * Add OA's five chat tokens (default: unless the folder's tokenizer_config.json has a chat template
   * of its own). In a model's own template the tokenizer stays as it is, and the family tokens come
   * from its tokenizer_config.json first.
   */
  oaTokens?: boolean;
}

/** tokenizer.json inside a folder, or the file itself. */
export function tokenizerFile(path: string): string {
  if (!existsSync(path)) throw new Error(`tokenizer: ${path} not found`);
  const file = statSync(path).isDirectory() ? join(path, "tokenizer.json") : path;
  if (!existsSync(file)) throw new Error(`tokenizer: no tokenizer.json in ${path}`);
  return file;
}

/** The family's tokens: explicit, by model-name substring (exactly one match, as OA), or from tokenizer_config.json. */
export function familyTokens(file: string, o: LoadTokenizerOptions): { family: string; tokens: FamilyTokens } {
  if (o.family) {
    const tokens = FAMILY_TOKENS[o.family];
    if (!tokens)
      throw new Error(`tokenizer family '${o.family}' is unknown; known: ${Object.keys(FAMILY_TOKENS).join(", ")}`);
    return { family: o.family, tokens };
  }
  const fromConfig = () => tokenizerConfigTokens(file);
  if (o.oaTokens === false) {
    const own = fromConfig();
    if (own) return own;
  }
  if (o.modelName) {
    const matches = Object.keys(FAMILY_TOKENS).filter((k) => o.modelName!.toLowerCase().includes(k.toLowerCase()));
    if (matches.length === 1) return { family: matches[0]!, tokens: FAMILY_TOKENS[matches[0]!]! };
  }
  const own = fromConfig();
  if (own) return own;
  throw new Error(
    `tokenizer ${file}: cannot tell the model family for pad/eos tokens; set tokenizer_family (one of ` +
      `${Object.keys(FAMILY_TOKENS).join(", ")})`,
  );
}

/** A special-token entry of tokenizer_config.json: a string or an {content, ...} object. */
export function tokenString(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  const content = v && typeof v === "object" ? (v as { content?: unknown }).content : undefined;
  return typeof content === "string" ? content : undefined;
}

function tokenizerConfigTokens(file: string): { family: string; tokens: FamilyTokens } | undefined {
  const configFile = join(dirname(file), "tokenizer_config.json");
  if (!existsSync(configFile)) return undefined;
  const cfg = JSON.parse(readFileSync(configFile, "utf8")) as Record<string, unknown>;
  const eos = tokenString(cfg.eos_token);
  if (!eos) return undefined;
  const tokens = { eos, pad: tokenString(cfg.pad_token) ?? eos, sep: tokenString(cfg.sep_token) ?? eos };
  return { family: "tokenizer_config", tokens };
}

/** generation_config.json's eos_token_id (a number or a list) beside the tokenizer, if any. */
export function generationEosIds(dir: string): number[] {
  const path = join(dir, "generation_config.json");
  if (!existsSync(path)) return [];
  try {
    const v = (JSON.parse(readFileSync(path, "utf8")) as { eos_token_id?: unknown }).eos_token_id;
    const ids = Array.isArray(v) ? v : [v];
    return ids.filter((x): x is number => Number.isInteger(x));
  } catch {
    return [];
  }
}
