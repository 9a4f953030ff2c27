// The OA chat format, rendered in one place: every message is its role's tag, its text and eos,
// joined with nothing; a prompt for a reply ends with the assistant tag.
//   [<bos>][<|system|>{system}{eos}]<|prompter|>{q}{eos}<|assistant|>{a}{eos}...[<|assistant|>]
// The same rules are written out as a Jinja chat_template (HF's tokenizer_config.json convention),
// so that transformers, vLLM, TGI and llama.cpp users get the same prompt from a saved folder alone.
// A test renders the template with @huggingface/jinja and compares it byte for byte with renderChat.

export const PROMPTER = "<|prompter|>";
export const ASSISTANT = "<|assistant|>";
export const SYSTEM = "<|system|>";

/** OA's format has the first three; a model's own template may also have tool results. */
export type ChatRole = "system" | "user" | "assistant" | "tool";

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

/** Each role's tag: OA calls the user "prompter". */
export const ROLE_TAGS: Partial<Record<ChatRole, string>> = { system: SYSTEM, user: PROMPTER, assistant: ASSISTANT };

export interface RenderOptions {
  eos: string;
  /** Put the BOS token first (for tokenizers whose post-processor adds one, the template must say so). */
  bos?: string;
  /** End with the assistant tag: a prompt for the next reply. */
  addGenerationPrompt?: boolean;
}

export function renderChat(messages: readonly ChatMessage[], o: RenderOptions): string {
  let out = o.bos ?? "";
  for (const m of messages) {
    const tag = ROLE_TAGS[m.role];
    if (tag === undefined) {
      throw new Error(
        `chat: role '${String(m.role)}' has no place in OA's format (system, user, assistant); use the model's ` +
          `own template`,
      );
    }
    out += tag + m.content + o.eos;
  }
  return o.addGenerationPrompt ? out + ASSISTANT : out;
}

/**
 * The Jinja chat_template of renderChat. `withBos`: start with {{ bos_token }} (LLaMA-style tokenizers,
 * whose own encoding adds BOS, since chat-template users tokenize the rendered text without special tokens).
 */
export function chatTemplateJinja(withBos: boolean): string {
  const branches = (Object.entries(ROLE_TAGS) as Array<[ChatRole, string]>)
    .map(
      ([role, tag], i) =>
        `{% ${i === 0 ? "if" : "elif"} message['role'] == '${role}' %}{{ '${tag}' + message['content'] + eos_token }}`,
    )
    .join("");
  return (
    (withBos ? "{{ bos_token }}" : "") +
    "{% for message in messages %}" +
    branches +
    "{% else %}{{ raise_exception('Unknown role: ' + message['role'] + ' (expected system, user or assistant)') " +
    "}}{% endif %}" +
    "{% endfor %}" +
    `{% if add_generation_prompt %}{{ '${ASSISTANT}' }}{% endif %}`
  );
}
