// Streamed text and stop strings (TextStream): what streams equals the text up to the earliest stop string
// of the whole reply, whichever token completes it and however many tokens it spans.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { TextStream } from "../../src/generate/text-stream.js";
import { ChatTokenizer } from "../../src/tokenizer/index.js";
import { SHARED } from "../helpers.js";

test("stop strings spanning tokens stop at their first occurrence in the whole text; the rest streams", async () => {
  const tok = ChatTokenizer.load(join(SHARED, "data/tokenizers/oasst-tiny-bpe"), { family: "pythia" });
  const reply = "Sure. Here is a long answer with several parts.\n\nUser: and then the next turn\n\nUser: again";
  const ids = await tok.encodePlain(reply);
  for (const stops of [["\n\nUser:"], ["zzz", "next turn"], ["answer with several"], ["nothing here"]]) {
    const stream = new TextStream(tok, stops);
    let text = "";
    let stopAt: number | undefined;
    for (const id of ids) {
      const r = await stream.push(id);
      text += r.delta;
      if ((stopAt = r.stopAt) !== undefined) break;
    }
    const first = Math.min(...stops.map((s) => reply.indexOf(s)).filter((i) => i >= 0));
    if (Number.isFinite(first)) {
      assert.equal(stopAt, first, `${stops}`);
      assert.equal(text, reply.slice(0, first));
    } else {
      assert.equal(stopAt, undefined);
      assert.equal(text + stream.flush(), reply);
    }
  }
});
