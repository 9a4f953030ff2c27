// Tokenizers of the three families: OA's special tokens on each, a LLaMA tokenizer's BOS kept out of
// continuations, streaming decode that never splits a character (byte-level BPE and <0xNN> byte
// fallback alike), and the chat template saved with every tokenizer, rendered by @huggingface/jinja
// exactly as oasft renders prompts.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Template } from "@huggingface/jinja";
import { ChatTokenizer, renderChat, type ChatMessage } from "../../src/tokenizer/index.js";
import { TextStream } from "../../src/generate/engine.js";
import { chatMessages, formatPrompt } from "../../src/sft/format.js";
import { SHARED } from "../helpers.js";
import { llamaStyleTokenizer, neoxStyleTokenizer } from "./fixtures.js";

const tmp = () => mkdtempSync(join(tmpdir(), "oasft-tokfam-"));
const FAMILIES = [
  {
    family: "bloom",
    load: () => ChatTokenizer.load(join(SHARED, "data/tokenizers/oasst-tiny-bpe"), { family: "bloom" }),
  },
  { family: "pythia", load: () => ChatTokenizer.load(neoxStyleTokenizer(tmp()), { family: "pythia" }) },
  { family: "llama", load: () => ChatTokenizer.load(llamaStyleTokenizer(tmp()), { family: "llama" }) },
] as const;

const CHATS: Array<{ messages: ChatMessage[]; gen: boolean }> = [
  { messages: [{ role: "user", content: "What is the capital of Italy?" }], gen: true },
  {
    messages: [
      { role: "system", content: "Answer briefly." },
      { role: "user", content: "Hi" },
      { role: "assistant", content: "Hello! How can I help?" },
      { role: "user", content: "Rome?" },
    ],
    gen: true,
  },
  {
    messages: [
      { role: "user", content: "Q" },
      { role: "assistant", content: "A, with 'quotes' and {{ braces }}" },
    ],
    gen: false,
  },
];

test(
  "each family gets OA's pad/eos and chat tokens; LLaMA's <s> is added to documents, not to " + "continuations",
  async () => {
    const expect = {
      bloom: ["<pad>", "</s>"],
      pythia: ["<|padding|>", "<|endoftext|>"],
      llama: ["</s>", "</s>"],
    } as const;
    for (const f of FAMILIES) {
      const tok = f.load();
      assert.deepEqual([tok.special.pad, tok.eos], expect[f.family], f.family);
      const ids = await tok.encode("<|prompter|>Hi</s><|assistant|>");
      assert.ok(ids.includes(tok.prompterId) && ids.includes(tok.assistantId), f.family);
    }
    const llama = FAMILIES[2].load();
    assert.equal(llama.bos, "<s>");
    assert.equal(FAMILIES[0].load().bos, undefined);
    const withBos = await llama.encode("What is the capital of Italy?");
    assert.equal(llama.idToToken(withBos[0]!), "<s>");
    const cont = await llama.encodePlain(" Rome");
    assert.ok(!cont.includes(withBos[0]!), "no <s> in a continuation");
    assert.deepEqual(await llama.encodePlain("What is the capital of Italy?"), withBos.slice(1));
  },
);

test(
  "streaming decode emits whole characters only and ends with the library's own decoding (byte-level and byte " +
    "fallback)",
  async () => {
    const text = "What is 你好 😀 in Italy? é";
    for (const f of FAMILIES) {
      const tok = f.load();
      const ids = await tok.encodePlain(text);
      const stream = new TextStream(tok, []);
      let out = "";
      for (const id of ids) {
        const { delta } = await stream.push(id);
        assert.ok(!delta.includes("\uFFFD"), `${f.family}: a partial character was emitted`);
        out += delta;
      }
      out += stream.flush();
      assert.equal(out, await tok.decode(ids, true), f.family);
      assert.equal(out.trim(), text, f.family);
    }
    // The LLaMA-style tokenizer really spells CJK and emoji in <0xNN> tokens.
    const llama = FAMILIES[2].load();
    const tokens = (await llama.encodePlain("你")).map((i) => llama.idToToken(i));
    assert.deepEqual(
      tokens.filter((t) => t.startsWith("<0x")),
      ["<0xE4>", "<0xBD>", "<0xA0>"],
    );
  },
);

test("every saved tokenizer carries a chat_template that renders byte for byte as oasft's prompts", async () => {
  for (const f of FAMILIES) {
    const tok = f.load();
    const dir = tmp();
    tok.save(dir);
    const config = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
    const template = new Template(config.chat_template as string);
    for (const chat of CHATS) {
      const rendered = template.render({
        messages: chat.messages,
        add_generation_prompt: chat.gen,
        bos_token: config.bos_token ?? "",
        eos_token: config.eos_token,
      });
      assert.equal(
        rendered,
        renderChat(chat.messages, {
          eos: tok.eos,
          addGenerationPrompt: chat.gen,
          ...(tok.bos ? { bos: tok.bos } : {}),
        }),
        f.family,
      );
      // What a chat-template user tokenizes (the rendered text, no special tokens added) is what oasft feeds the model.
      if (chat.gen) {
        const turns = chat.messages
          .filter((m) => m.role !== "system")
          .map((m) => ({ role: m.role === "user" ? ("prompter" as const) : ("assistant" as const), text: m.content }));
        const system = chat.messages.find((m) => m.role === "system")?.content;
        assert.deepEqual(chatMessages(turns, system), chat.messages);
        assert.deepEqual(
          await tok.encodePlain(rendered),
          await tok.encode(formatPrompt(turns, tok.eos, system)),
          `${f.family} token ids`,
        );
      }
    }
    assert.throws(
      () => template.render({ messages: [{ role: "tool", content: "x" }], eos_token: "</s>", bos_token: "" }),
      /Unknown role: tool/,
    );
  }
});
