// Small tokenizers in the styles of the three families, built in code (no downloads):
//   - GPT-NeoX: byte-level BPE (trained here on a few texts) with <|endoftext|> and <|padding|>;
//   - LLaMA: SentencePiece-style BPE as HF's LlamaTokenizerFast writes it (a "▁" prepended and spaces
//     replaced, byte fallback to <0xNN> tokens, "<s> $A" post-processing, a Replace/ByteFallback/Fuse/Strip decoder).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { saveTokenizerJson, trainByteLevelBpe } from "../../src/tokenizer/bpe-trainer.js";

const TEXTS = [
  "Hello world, the quick brown fox jumps over the lazy dog.",
  "What is the capital of Italy? The capital of Italy is Rome.",
  "Open Assistant is a chat model trained on conversations written by volunteers.",
];

export function neoxStyleTokenizer(dir: string): string {
  mkdirSync(dir, { recursive: true });
  const json = trainByteLevelBpe(TEXTS, { vocabSize: 400, specialTokens: ["<|endoftext|>", "<|padding|>"] });
  saveTokenizerJson(join(dir, "tokenizer.json"), json);
  return dir;
}

export function llamaStyleTokenizer(dir: string): string {
  mkdirSync(dir, { recursive: true });
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = 3 + b;
  const add = (t: string) => {
    if (!(t in vocab)) vocab[t] = Object.keys(vocab).length;
  };
  for (const ch of "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ?.,é") add(ch);
  const merges = [
    "▁ t",
    "h e",
    "▁t he",
    "▁ a",
    "▁ c",
    "a p",
    "▁c ap",
    "i t",
    "▁cap it",
    "a l",
    "▁capit al",
    "▁ o",
    "▁o f",
    "▁ I",
    "▁I t",
    "▁It al",
    "▁Ital y",
    "▁ R",
    "o m",
    "▁R om",
    "▁Rom e",
    "▁ W",
    "h a",
    "▁W ha",
    "▁Wha t",
    "▁ i",
    "▁i s",
  ];
  for (const m of merges) add(m.replace(" ", ""));
  const special = (id: number, content: string) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Prepend", prepend: "▁" },
        { type: "Replace", pattern: { String: " " }, content: "▁" },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: "<s>", type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "<s>", type_id: 1 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "▁" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: "<unk>",
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      vocab,
      merges,
    },
  };
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(json));
  return dir;
}
