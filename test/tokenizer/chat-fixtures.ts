// Tokenizer folders in the chat formats of three families, built in code: a small byte-level BPE with
// the family's special tokens, and a tokenizer_config.json whose chat_template is written here in the
// family's public format (ChatML as Qwen uses it, Llama 3's header tokens, Gemma's turns). They are
// small stand-ins, not copies of the families' own templates.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { saveTokenizerJson, trainByteLevelBpe } from "../../src/tokenizer/bpe-trainer.js";

export type TemplateStyle = "chatml" | "llama3" | "gemma";

interface Style {
  special: string[];
  bos?: string;
  eos: string;
  pad: string;
  /** The token that ends every turn (what the trained span of a reply ends with). */
  endOfTurn: string;
  /** Whether the template trims message contents. */
  trims: boolean;
  template: string;
}

export const STYLES: Record<TemplateStyle, Style> = {
  chatml: {
    special: ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    eos: "<|im_end|>",
    pad: "<|endoftext|>",
    endOfTurn: "<|im_end|>",
    trims: false,
    template:
      "{%- for message in messages %}" +
      "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
      "{%- endfor %}" +
      "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
  },
  llama3: {
    special: ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    bos: "<|begin_of_text|>",
    eos: "<|eot_id|>",
    pad: "<|end_of_text|>",
    endOfTurn: "<|eot_id|>",
    trims: true,
    template:
      "{{- bos_token }}" +
      "{%- for message in messages %}" +
      "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + " +
      "'<|eot_id|>' }}" +
      "{%- endfor %}" +
      "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}",
  },
  gemma: {
    special: ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
    bos: "<bos>",
    eos: "<eos>",
    pad: "<pad>",
    endOfTurn: "<end_of_turn>",
    trims: true,
    template:
      "{{ bos_token }}" +
      "{% for message in messages %}" +
      "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}" +
      "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] " +
      "%}{% endif %}" +
      "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}" +
      "{% endfor %}" +
      "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}",
  },
};

const TEXTS = [
  "Hello world, the quick brown fox jumps over the lazy dog.",
  "What is the capital of Italy? The capital of Italy is Rome.",
  "user assistant model system: a chat between a person and a helpful assistant.",
  "Grüße aus Zürich! 東京は日本の首都です。",
];

/** A tokenizer folder in `style`: tokenizer.json and tokenizer_config.json with the chat template. */
export function templateTokenizer(dir: string, style: TemplateStyle): string {
  const s = STYLES[style];
  mkdirSync(dir, { recursive: true });
  saveTokenizerJson(
    join(dir, "tokenizer.json"),
    trainByteLevelBpe(TEXTS, { vocabSize: 400, specialTokens: s.special }),
  );
  const config = {
    tokenizer_class: "PreTrainedTokenizerFast",
    ...(s.bos ? { bos_token: s.bos } : {}),
    eos_token: s.eos,
    pad_token: s.pad,
    chat_template: s.template,
    model_max_length: 4096,
  };
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(config, null, 2));
  return dir;
}
