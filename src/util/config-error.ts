// The one error for settings that cannot be used, wherever they come from: a config key (OA's YAML, a
// --key flag), a field of a model's config.json, a DeepSpeed JSON. The message names where: the key,
// or "file › key: what".

export class ConfigError extends Error {
  constructor(message: string);
  constructor(file: string, key: string, what: string);
  constructor(fileOrMessage: string, key?: string, what?: string) {
    super(key === undefined ? fileOrMessage : `${fileOrMessage} › ${key}: ${what}`);
    this.name = "ConfigError";
  }
}

/** A parsed JSON object (a config file, a request body, a data record). */
export type Json = Record<string, unknown>;
