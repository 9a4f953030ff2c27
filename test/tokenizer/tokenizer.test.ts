// The chat tokenizer (special tokens, save/reload) and the byte-level BPE trainer (round trips).
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Tokenizer } from "tokenizers";
import { ChatTokenizer, QA_SPECIAL_TOKENS } from "../../src/tokenizer/index.js";
import { trainByteLevelBpe, trainingTexts, saveTokenizerJson } from "../../src/tokenizer/bpe-trainer.js";
import { createCausalLM, resizeTokenEmbeddings } from "../../src/models/index.js";
import * as torch from "../../src/torch/index.js";
import { SHARED, param } from "../helpers.js";

const TOK = join(SHARED, "data/tokenizers");
const WMT = join(SHARED, "data/wmt22");

test(
  "GPT-2 + the bloom family: pad/eos/sep then OA's five tokens get the next ids, in a fixed order; save and " +
    "reload keep them",
  async () => {
    const tok = ChatTokenizer.load(join(TOK, "gpt2-hf"), { modelName: "my-bloom-560m" });
    assert.equal(tok.family, "bloom");
    assert.deepEqual(tok.added, ["<pad>", "</s>", "<s>", ...QA_SPECIAL_TOKENS]);
    assert.deepEqual(
      tok.added.map((t) => tok.tok.tokenToId(t)),
      [50257, 50258, 50259, 50260, 50261, 50262, 50263, 50264],
    );
    assert.deepEqual(await tok.encode("Hello world"), [15496, 995]);
    // The file's leftover truncation (max_length 50) is not applied.
    assert.ok((await tok.encode("word ".repeat(80))).length > 50);
    const ids = await tok.encode("<|prompter|>Hi</s><|assistant|>Hello</s>");
    assert.deepEqual([ids[0], ids.at(-1)], [tok.prompterId, tok.eosId]);
    const dir = mkdtempSync(join(tmpdir(), "oasft-tok-"));
    tok.save(dir);
    const again = ChatTokenizer.load(dir);
    assert.deepEqual(again.added, [], "nothing to add the second time");
    assert.equal(again.eos, "</s>");
    assert.deepEqual(await again.encode("<|prompter|>Hi</s><|assistant|>Hello</s>"), ids);
    assert.equal(
      ChatTokenizer.load(join(TOK, "gpt2-hf")).eos,
      "<|endoftext|>",
      "no family: tokenizer_config.json's eos",
    );
    const bare = mkdtempSync(join(tmpdir(), "oasft-tok-"));
    copyFileSync(join(TOK, "gpt2-hf/tokenizer.json"), join(bare, "tokenizer.json"));
    assert.throws(() => ChatTokenizer.load(bare), /cannot tell the model family.*tokenizer_family/s);
  },
);

test("the embedding (and an untied head) grows to the new vocabulary, keeping every trained row", () => {
  const model = createCausalLM({
    model_type: "bloom",
    vocab_size: 40,
    hidden_size: 16,
    n_layer: 1,
    n_head: 2,
    tie_word_embeddings: false,
  });
  const before = torch.scope(() => param(model, "transformer.word_embeddings.weight").toNumbers());
  const head = torch.scope(() => param(model, "lm_head.weight").toNumbers());
  const grown = resizeTokenEmbeddings(model, 48);
  assert.deepEqual(param(grown, "transformer.word_embeddings.weight").shape, [48, 16]);
  assert.deepEqual(param(grown, "lm_head.weight").shape, [48, 16]);
  assert.deepEqual(
    torch.scope(() => param(grown, "transformer.word_embeddings.weight").narrow(0, 0, 40).toNumbers()),
    before,
  );
  assert.deepEqual(
    torch.scope(() => param(grown, "lm_head.weight").narrow(0, 0, 40).toNumbers()),
    head,
  );
  const rows = torch.scope(() => param(grown, "transformer.word_embeddings.weight").narrow(0, 40, 8).toNumbers());
  const fresh = Math.sqrt(rows.reduce((a, x) => a + x * x, 0) / rows.length);
  assert.ok(fresh > 0.005 && fresh < 0.05, `new rows use the normal init (std ${fresh})`);
  grown.dispose();
});

test(
  "BPE trainer: a tokenizer.json the tokenizers package loads; exact round trips on CJK, emoji and " + "control bytes",
  async () => {
    const texts = [
      join(WMT, "sources/generaltest2022.zh-en.src.zh"),
      join(WMT, "references/generaltest2022.en-ja.ref.A.ja"),
      join(WMT, "sources/generaltest2022.en-ja.src.en"),
    ].flatMap(trainingTexts);
    const json = trainByteLevelBpe(texts, { vocabSize: 3000, specialTokens: ["<unk>", "<s>", "</s>", "<pad>"] });
    const dir = mkdtempSync(join(tmpdir(), "oasft-bpe-"));
    saveTokenizerJson(join(dir, "tokenizer.json"), json);
    const tok = Tokenizer.fromFile(join(dir, "tokenizer.json"));
    assert.equal(tok.getVocabSize(true), 3000);
    const samples = [
      readFileSync(join(WMT, "references/generaltest2022.zh-en.ref.A.en"), "utf8").split("\n").slice(0, 50).join("\n"),
      readFileSync(join(WMT, "sources/generaltest2022.ja-en.src.ja"), "utf8").split("\n").slice(0, 50).join("\n"),
      "Emoji 🤖👩🏽‍💻🇯🇵, tabs\tand\r\nCRLF, NUL\u0000, accents café naïve, 한국어, العربية, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢  " +
        "double  " +
        "spaces ",
    ];
    let zhIds = 0;
    for (const s of samples) {
      const ids = (await tok.encode(s, null, { addSpecialTokens: false })).getIds();
      assert.equal(await tok.decode(ids, false), s);
      zhIds += ids.length;
    }
    // Merges learned from the CJK data compress it (fewer ids than UTF-8 bytes).
    const zh = readFileSync(join(WMT, "sources/generaltest2022.zh-en.src.zh"), "utf8").slice(0, 2000);
    const n = (await tok.encode(zh, null, { addSpecialTokens: false })).getIds().length;
    assert.ok(n < Buffer.byteLength(zh) / 2, `${n} ids for ${Buffer.byteLength(zh)} bytes`);
    assert.ok(zhIds > 0);
  },
);

test(
  "saving a user's Hugging Face tokenizer keeps its settings (bos, unk, model_max_length, cleanup); oasft's " +
    "own keys win",
  () => {
    const src = join(SHARED, "data/tokenizers/gpt2-hf");
    const theirs = JSON.parse(readFileSync(join(src, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
    const dir = mkdtempSync(join(tmpdir(), "oasft-tok-keep-"));
    const tok = ChatTokenizer.load(src, { family: "pythia" });
    tok.save(dir);
    const config = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
    for (const key of [
      "bos_token",
      "unk_token",
      "model_max_length",
      "clean_up_tokenization_spaces",
      "add_prefix_space",
    ]) {
      assert.deepEqual(config[key], theirs[key], key);
    }
    assert.equal(config.eos_token, tok.eos, "eos is oasft's (the family's)");
    assert.match(String(config.chat_template), /<\|prompter\|>/);
    const map = JSON.parse(readFileSync(join(dir, "special_tokens_map.json"), "utf8")) as Record<string, unknown>;
    const theirMap = JSON.parse(readFileSync(join(src, "special_tokens_map.json"), "utf8")) as Record<string, unknown>;
    assert.deepEqual(map.unk_token, theirMap.unk_token, "unk_token kept as the user's file spells it");
    assert.ok((map.additional_special_tokens as string[]).includes("<|prompter|>"));
    // Saved again from the saved folder: nothing changes (a resumed run re-saves its checkpoint's tokenizer).
    const again = mkdtempSync(join(tmpdir(), "oasft-tok-keep-"));
    ChatTokenizer.load(dir, { family: "pythia" }).save(again);
    assert.deepEqual(JSON.parse(readFileSync(join(again, "tokenizer_config.json"), "utf8")), config);
  },
);

test("model_max_length as lm-eval reads it: the tokenizer's own, none for transformers' 'no limit' value", () => {
  const gpt2 = ChatTokenizer.load(join(SHARED, "data/tokenizers/gpt2-hf"), { family: "pythia" });
  assert.equal(gpt2.modelMaxLength, 1024);
  // 1e30: no limit
  const tiny = ChatTokenizer.load(join(SHARED, "data/tokenizers/oasst-tiny-bpe"), { family: "pythia" });
  assert.equal(tiny.modelMaxLength, undefined);
});
