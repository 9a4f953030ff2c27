// Text cleaning rules shared by OA's loaders (custom_datasets/utils.py and qa_datasets.py).

/** OA's FILTER_BY_WORDS: a record whose text contains one of these (any case) is dropped. Kept verbatim. */
export const FILTER_BY_WORDS = [
  "as a language model",
  "as an AI language model",
  "As a large language model",
  "As an AI ",
  "an AI language model you don't have",
  "As an AI language model, I cannot",
  "As an AI language model, I do not",
  "As an AI language model, I am not able",
  "As an AI language model, I don't have personal",
  "I am an AI language model and do not",
  "As an AI language model, I don't have",
  "As an AI language model, I am only able",
  "AI language model and I do not",
  "As an AI language model, I cannot modify",
  "As an AI language model, I do not",
  "I know as an AI language model you don't have",
  "as an AI language model, you cannot",
  "I'm sorry, but as an AI language model",
  "As an AI language model, I don't have",
  "I'm an AI ",
  "I am an AI ",
  "my name is OpenAI",
  "trained by OpenAI",
  "as an OpenAI language model",
  "As your dedicated AI language model",
  "As a hypothetical AI",
  "As a neutral AI",
  "my knowledge cutoff",
  "my knowledge cut off",
  "As a machine",
  "I cannot assist",
  "I do not have personal preferences",
  "I don't have personal preferences",
  "Unfortunately, I cannot provide",
  "I'm sorry, I cannot",
  "I'm sorry, I cannot generate",
  "AI cannot create or program",
  "I'm afraid I cannot create",
];
const LOWERED = FILTER_BY_WORDS.map((w) => w.toLowerCase());

/** True when OA's word filter would drop this text. */
export const failsWordFilter = (text: string) => {
  const t = text.toLowerCase();
  return LOWERED.some((w) => t.includes(w));
};

/** Wikipedia-style citation markers: "[3]", "[1, 2]" (OA's re_reference_remove). */
export const removeReferences = (text: string) => text.replace(/\[\d+(?:,\s*\d+)*?\]/g, "");
