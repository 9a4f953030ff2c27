// Streaming text from generated tokens (TGI's incremental detokenisation): only text that is final is
// emitted, never a broken UTF-8 character, and stop strings are held back until they can no longer match.
import type { ChatTokenizer } from "../tokenizer/index.js";

/** Incremental detokenisation: emits only text that is final (no broken UTF-8, no partial stop). */
export class TextStream {
  private ids: number[] = [];
  /** TGI's offsets: ids[prefixOffset, readOffset) are the last settled tokens, decoded as context. */
  private prefixOffset = 0;
  private readOffset = 0;
  /** Text of ids[0, readOffset): complete characters only. */
  private settled = "";
  private emitted = 0;
  /** The text's length at the last stop-string search. */
  private searched = 0;
  text = "";
  constructor(
    private readonly tok: ChatTokenizer,
    private readonly stops: string[],
  ) {}

  private readonly utf8 = new TextDecoder("utf-8");

  async push(id: number): Promise<{ delta: string; stopAt?: number }> {
    this.ids.push(id);
    if (this.tok.tokenBytes) {
      // Byte-level BPE: the token's bytes through a streaming UTF-8 decoder, which holds an
      // incomplete character until its last byte arrives. Synchronous and exact.
      this.settled += this.utf8.decode(this.tok.tokenBytes(id), { stream: true });
      this.text = this.settled;
      return this.emit();
    }
    // Other decoders: decode a short window rather than the whole reply at every token.
    const prefix = await this.tok.decode(this.ids.slice(this.prefixOffset, this.readOffset), true);
    const window = await this.tok.decode(this.ids.slice(this.prefixOffset), true);
    const fresh = window.slice(prefix.length);
    // A window ending in U+FFFD holds an incomplete character (byte-fallback tokens decode each
    // stray byte to one U+FFFD): nothing of it is final until its last byte arrives.
    if (fresh && !window.endsWith("\uFFFD")) {
      this.settled += fresh;
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
    }
    this.text = this.settled;
    return this.emit();
  }

  private emit(): { delta: string; stopAt?: number } {
    const text = this.text;
    // The earliest stop string in the text wins (lm-eval's and OpenAI's rule), not the first listed. The
    // text only grows and held no stop string before, so a match ends in what is new: the search starts
    // there (less the stop's length), not at 0 for every token of a long reply.
    let at = -1;
    for (const s of this.stops) {
      const i = s ? text.indexOf(s, Math.max(0, this.searched - s.length + 1)) : -1;
      if (i >= 0 && (at < 0 || i < at)) at = i;
    }
    this.searched = text.length;
    if (at >= 0) {
      const delta = text.slice(this.emitted, at);
      this.emitted = at;
      return { delta, stopAt: at };
    }
    // Hold back a trailing replacement character (an incomplete UTF-8 sequence) and any suffix that
    // could still grow into a stop string.
    let safe = text.length;
    if (text.endsWith("\uFFFD")) safe = text.length - 1;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, safe); k > 0; k--) {
        if (text.slice(safe - k, safe) === s.slice(0, k)) {
          safe -= k;
          break;
        }
      }
    }
    safe = Math.max(safe, this.emitted);
    const delta = text.slice(this.emitted, safe);
    this.emitted = safe;
    return { delta };
  }

  /** Whatever was held back, at the end of generation. */
  flush(): string {
    const rest = this.text.slice(this.emitted).replace(/\uFFFD$/, "");
    this.emitted = this.text.length;
    return rest;
  }
}
