// oasst_export: Open-Assistant message-tree exports (oasst-data's ExportMessageTree, one per line,
// .jsonl or .jsonl.gz), or the hub's flat oasst1 rows rebuilt into trees. Thread extraction follows
// OA's oasst_dataset.py: tree filters on the root, every leaf thread, a trailing prompter leaf popped.
import type { Conversation, Utterance } from "../conversation.js";
import {
  DropCounter,
  inputFiles,
  optNumber,
  optString,
  type DatasetLoader,
  type DatasetOptions,
  type LoadedRanked,
  type LoaderContext,
  type RankedGroup,
} from "../dataset.js";
import { asObject, DataError, readRecords, type Json, type SourcedRecord } from "../io.js";

interface MessageNode {
  messageId: string;
  text: string;
  role: "prompter" | "assistant";
  lang?: string;
  reviewResult?: boolean | null;
  deleted: boolean;
  synthetic: boolean;
  rank?: number | null;
  labels: Record<string, number>;
  replies: MessageNode[];
}

interface MessageTree {
  treeState?: string;
  root: MessageNode;
  where: string;
}

function parseNode(raw: unknown, where: string, path: string): MessageNode {
  if (!raw || typeof raw !== "object") throw new DataError(where, `${path}: expected a message object`);
  const m = raw as Json;
  const field = `${path}.`;
  if (typeof m.text !== "string") throw new DataError(where, `${field}text: expected a string`);
  if (m.role !== "prompter" && m.role !== "assistant")
    throw new DataError(where, `${field}role: expected "prompter" or "assistant", got ${JSON.stringify(m.role)}`);
  if (m.replies !== undefined && m.replies !== null && !Array.isArray(m.replies))
    throw new DataError(where, `${field}replies: expected a list`);
  const labels: Record<string, number> = {};
  if (m.labels && typeof m.labels === "object") {
    for (const [k, v] of Object.entries(m.labels as Json)) {
      const value = v && typeof v === "object" ? (v as Json).value : undefined;
      if (typeof value === "number") labels[k] = value;
    }
  }
  return {
    messageId: String(m.message_id ?? ""),
    text: m.text,
    role: m.role,
    lang: typeof m.lang === "string" ? m.lang : undefined,
    reviewResult: typeof m.review_result === "boolean" ? m.review_result : null,
    deleted: m.deleted === true,
    synthetic: m.synthetic === true,
    rank: typeof m.rank === "number" ? m.rank : null,
    labels,
    replies: ((m.replies as unknown[] | undefined) ?? []).map((r, i) => parseNode(r, where, `${path}.replies[${i}]`)),
  };
}

/** A tree line ({message_tree_id, tree_state, prompt}), or a root message line (en_100_message.jsonl). */
function parseTreeLine(r: SourcedRecord): MessageTree {
  const obj = asObject(r);
  if ("message_tree_id" in obj || "prompt" in obj) {
    return {
      treeState: typeof obj.tree_state === "string" ? obj.tree_state : undefined,
      root: parseNode(obj.prompt, r.where, "prompt"),
      where: r.where,
    };
  }
  if ("message_id" in obj) return { root: parseNode(obj, r.where, "message"), where: r.where };
  throw new DataError(
    r.where,
    "expected a message tree ({message_tree_id, tree_state, prompt}) or a message ({message_id, text, role, replies})",
  );
}

/**
 * Hub oasst1 rows: one message per row with parent_id and message_tree_id; labels as parallel lists
 * {name: [...], value: [...]}. Children are attached by parent_id (row order is kept among siblings).
 */
function treesFromRows(rows: SourcedRecord[]): MessageTree[] {
  const nodes = new Map<string, { node: MessageNode; parent: string | null; treeState?: string; where: string }>();
  for (const r of rows) {
    const obj = { ...asObject(r) };
    const labels = obj.labels as { name?: string[]; value?: number[] } | null | undefined;
    if (labels && Array.isArray(labels.name)) {
      obj.labels = Object.fromEntries(labels.name.map((n, i) => [n, { value: labels.value?.[i] }]));
    }
    obj.replies = [];
    const node = parseNode(obj, r.where, "message");
    nodes.set(node.messageId, {
      node,
      parent: typeof obj.parent_id === "string" ? obj.parent_id : null,
      treeState: typeof obj.tree_state === "string" ? obj.tree_state : undefined,
      where: r.where,
    });
  }
  const trees: MessageTree[] = [];
  for (const { node, parent, treeState, where } of nodes.values()) {
    if (parent === null) trees.push({ root: node, treeState, where });
    else {
      const p = nodes.get(parent);
      if (!p) throw new DataError(where, `parent_id ${parent} is not in the data`);
      p.node.replies.push(node);
    }
  }
  return trees;
}

/** Every root-to-node path, depth-first (oasst-data's visit_threads_depth_first). */
function* threads(node: MessageNode, prefix: MessageNode[] = []): Generator<MessageNode[]> {
  const path = [...prefix, node];
  yield path;
  for (const r of node.replies) yield* threads(r, path);
}

function toUtterance(m: MessageNode): Utterance {
  const u: Utterance = { text: m.text, role: m.role };
  if (m.lang) u.lang = m.lang;
  for (const k of ["quality", "humor", "creativity"] as const) if (m.labels[k] !== undefined) u[k] = m.labels[k];
  return u;
}

/** The export's trees, from tree lines, root-message lines or the hub's flat rows. */
async function readTrees(files: string[]): Promise<MessageTree[]> {
  const trees: MessageTree[] = [];
  for (const f of files) {
    const records = await readRecords(f);
    const head = records.length > 0 ? asObject(records[0]!) : undefined;
    const flat = head !== undefined && head.parent_id !== undefined && !("replies" in head);
    trees.push(...(flat ? treesFromRows(records) : records.map(parseTreeLine)));
  }
  return trees;
}

/** OA's tree filters: exported, its root reviewed, in one of the languages; else the rule that drops it. */
function treeDropRule(tree: MessageTree, langs: string[]): string | undefined {
  // A root-message file carries no tree_state: its trees are taken as exported.
  if (tree.treeState !== undefined && tree.treeState !== "ready_for_export") return "tree_not_ready_for_export";
  if (!tree.root.reviewResult) return "tree_root_review_failed";
  if (!tree.root.lang || !langs.includes(tree.root.lang)) return "tree_lang";
  return undefined;
}

/** OA's thread_filter: no deleted or synthetic message, and (top_k) only replies ranked above k. */
function threadDropRule(thread: MessageNode[], topK: number | undefined): string | undefined {
  if (thread.some((m) => m.deleted || m.synthetic)) return "thread_deleted_or_synthetic";
  const unranked = (m: MessageNode, i: number) =>
    m.rank === null || m.rank === undefined ? thread[i - 1]!.replies.length > 1 : m.rank >= topK!;
  if (topK !== undefined && thread.some((m, i) => m.role === "assistant" && unranked(m, i))) return "thread_top_k";
  return undefined;
}

function checkAlternation(messages: MessageNode[], tree: MessageTree): void {
  messages.forEach((m, i) => {
    if (m.role !== (i % 2 === 0 ? "prompter" : "assistant")) {
      throw new DataError(tree.where, `message ${m.messageId}: roles do not alternate prompter/assistant`);
    }
  });
}

/**
 * OA's reward-model threads (oasst_dataset.py, mode "rm"): every thread that ends on a prompter message
 * with two or more ranked assistant replies, passing the thread filter, gives one group: its replies of
 * non-null rank, best (rank 0) first.
 */
async function loadRankedOasst(o: DatasetOptions, ctx: LoaderContext): Promise<LoadedRanked> {
  const langs = (optString(o, "lang", ctx.name) ?? "en").split(",").map((s) => s.trim());
  const topK = optNumber(o, "top_k", ctx.name, { min: 1, integer: true });
  const hubName = optString(o, "hf_dataset_name", ctx.name) ?? "OpenAssistant/oasst1";
  const files = await inputFiles(o, ctx, { repo: hubName, files: /\.(parquet|jsonl(\.gz)?)$/ });
  const drop = new DropCounter();
  const groups: RankedGroup[] = [];
  for (const tree of await readTrees(files)) {
    const treeRule = treeDropRule(tree, langs);
    if (treeRule) {
      drop.drop(treeRule);
      continue;
    }
    for (const thread of threads(tree.root)) {
      const last = thread.at(-1)!;
      const ranked = last.replies.filter((r) => r.role === "assistant" && r.rank !== null && r.rank !== undefined);
      if (last.role !== "prompter" || ranked.length < 2) continue;
      const rule = threadDropRule(thread, topK);
      if (rule) {
        drop.drop(rule);
        continue;
      }
      checkAlternation(thread, tree);
      const context = thread.map(toUtterance);
      // A stable sort: equal ranks keep the export's order, as Python's sorted does.
      const replies = [...ranked].sort((a, b) => a.rank! - b.rank!);
      groups.push({
        candidates: replies.map((r) => ({
          messages: [...context, toUtterance(r)],
          where: `${tree.where} › ${r.messageId}`,
        })),
        where: `${tree.where} › ${last.messageId}`,
      });
    }
  }
  return { groups, dropped: drop.counts, files };
}

export const oasstExport: DatasetLoader = {
  description: "Open-Assistant message-tree export (.jsonl/.jsonl.gz), or the hub's OpenAssistant/oasst1",
  options: {
    input_file_path: "export file(s); relative paths are tried in the working folder, then in cache_dir",
    hf_dataset_name: "hub dataset when no input_file_path is given (default OpenAssistant/oasst1)",
    lang: 'comma-separated language codes of the tree roots to keep (default "en")',
    top_k: "keep only threads whose assistant replies have rank < top_k",
  },
  async load(o, ctx) {
    const langs = (optString(o, "lang", ctx.name) ?? "en").split(",").map((s) => s.trim());
    const topK = optNumber(o, "top_k", ctx.name, { min: 1, integer: true });
    const hubName = optString(o, "hf_dataset_name", ctx.name) ?? "OpenAssistant/oasst1";
    const files = await inputFiles(o, ctx, { repo: hubName, files: /\.(parquet|jsonl(\.gz)?)$/ });
    const drop = new DropCounter();
    const groups: Conversation[][] = [];
    for (const tree of await readTrees(files)) {
      const treeRule = treeDropRule(tree, langs);
      if (treeRule) {
        drop.drop(treeRule);
        continue;
      }
      const kept: Conversation[] = [];
      for (const thread of threads(tree.root)) {
        const leaf = thread.at(-1)!;
        if (thread.length < 2 || leaf.replies.length > 0) continue;
        const parent = thread.at(-2)!;
        if (leaf.role !== "assistant" && parent.replies[0] !== leaf) continue;
        const rule = threadDropRule(thread, topK);
        if (rule) {
          drop.drop(rule);
          continue;
        }
        const messages = leaf.role === "prompter" ? thread.slice(0, -1) : thread;
        if (messages.length < 2) {
          drop.drop("thread_too_short");
          continue;
        }
        checkAlternation(messages, tree);
        kept.push({ messages: messages.map(toUtterance) });
      }
      groups.push(kept);
    }
    return { train: groups.flat(), groups, dropped: drop.counts, files };
  },
  loadRanked: loadRankedOasst,
};
