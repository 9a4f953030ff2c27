// A reward model as a scorer of chats (best-of-n sampling): each candidate conversation rendered in the
// reward model's own chat template, scored on its last token, as the model was trained.
import { chatConversation } from "../data/datasets/chat.js";
import type { ChatTurn } from "../data/conversation.js";
import { loadRewardModel, type CausalLM, type LoadOptions } from "../models/index.js";
import { ChatTokenizer } from "../tokenizer/index.js";
import { encodeForScoring } from "./data.js";
import { groupBatch, scoreBatch } from "./rm.js";

export class RewardScorer {
  private constructor(
    readonly model: CausalLM,
    readonly tokenizer: ChatTokenizer,
  ) {}

  /**
   * A reward model folder (oasft train --stage rm, or any *ForSequenceClassification with one label), or
   * a reward model's LoRA adapter folder (task_type SEQ_CLS) on its base.
   */
  static load(dir: string, o: Pick<LoadOptions, "device" | "dtype">): RewardScorer {
    const model = loadRewardModel(dir, { device: o.device, dtype: o.dtype ?? "float32" }).eval();
    return new RewardScorer(model, ChatTokenizer.load(dir));
  }

  /** The reward of each reply to the chat so far (turns ending on the user's message). */
  async score(context: ChatTurn[], replies: string[]): Promise<number[]> {
    const groups = replies.map((text, i) => ({
      candidates: [chatConversation([...context, { role: "assistant", content: text }], `reply ${i}`, "reply")],
      where: `reply ${i}`,
    }));
    const units = await encodeForScoring(groups, this.model, this.tokenizer, "best-of-n");
    const place = { precision: "fp32" as const, device: this.model.device };
    return units.map((u) => scoreBatch(this.model, groupBatch([u], this.tokenizer.padId), place)[0]!);
  }

  dispose(): void {
    this.model.dispose();
  }
}
