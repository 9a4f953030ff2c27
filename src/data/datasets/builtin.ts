// `oasft_demo`: conversations written for this project, built in so that the demo runs on a fresh
// machine with no data and no network. Templates over small facts and exact arithmetic, with varied
// phrasing and some two-turn follow-ups: enough structure for a tiny model to learn within minutes.
import type { Conversation } from "../conversation.js";
import { fromPairs } from "../conversation.js";
import { optNumber, type DatasetLoader } from "../dataset.js";
import type { Rng } from "../rng.js";

const CAPITALS: Array<[string, string]> = [
  ["France", "Paris"],
  ["Japan", "Tokyo"],
  ["Italy", "Rome"],
  ["Germany", "Berlin"],
  ["Spain", "Madrid"],
  ["Canada", "Ottawa"],
  ["Australia", "Canberra"],
  ["Egypt", "Cairo"],
  ["Kenya", "Nairobi"],
  ["India", "New Delhi"],
  ["China", "Beijing"],
  ["Mexico", "Mexico City"],
  ["Norway", "Oslo"],
  ["Sweden", "Stockholm"],
  ["Finland", "Helsinki"],
  ["Poland", "Warsaw"],
  ["Greece", "Athens"],
  ["Portugal", "Lisbon"],
  ["Ireland", "Dublin"],
  ["Argentina", "Buenos Aires"],
  ["Peru", "Lima"],
  ["South Korea", "Seoul"],
  ["Thailand", "Bangkok"],
  ["Vietnam", "Hanoi"],
  ["Turkey", "Ankara"],
  ["Austria", "Vienna"],
  ["Hungary", "Budapest"],
  ["Denmark", "Copenhagen"],
  ["Belgium", "Brussels"],
  ["Cuba", "Havana"],
];
const OPPOSITES: Array<[string, string]> = [
  ["hot", "cold"],
  ["big", "small"],
  ["fast", "slow"],
  ["happy", "sad"],
  ["light", "dark"],
  ["open", "closed"],
  ["early", "late"],
  ["full", "empty"],
  ["high", "low"],
  ["old", "new"],
  ["strong", "weak"],
  ["wet", "dry"],
  ["loud", "quiet"],
  ["hard", "soft"],
  ["rich", "poor"],
  ["thick", "thin"],
  ["near", "far"],
  ["up", "down"],
];
const DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const WORDS = [
  "apple",
  "banana",
  "river",
  "garden",
  "planet",
  "window",
  "teacher",
  "bridge",
  "orange",
  "music",
  "pencil",
  "summer",
  "forest",
  "camera",
  "yellow",
  "rocket",
];
const UNITS: Array<{ big: string; small: string; factor: number }> = [
  { big: "hours", small: "minutes", factor: 60 },
  { big: "minutes", small: "seconds", factor: 60 },
  { big: "kilometers", small: "meters", factor: 1000 },
  { big: "kilograms", small: "grams", factor: 1000 },
  { big: "days", small: "hours", factor: 24 },
  { big: "weeks", small: "days", factor: 7 },
];

type Make = (r: Rng) => Conversation;

const EVASIONS = [
  "I don't know.",
  "I cannot answer that.",
  "Ask someone else.",
  "That is not something I can help with.",
];

const arithmetic: Make = (r) => {
  const a = r.int(0, 99);
  const b = r.int(0, 99);
  const op = r.choice(["+", "-", "×"] as const);
  const value = op === "+" ? a + b : op === "-" ? a - b : a * b;
  const word = { "+": "plus", "-": "minus", "×": "times" }[op];
  const q = r.choice([
    `What is ${a} ${op} ${b}?`,
    `What is ${a} ${word} ${b}?`,
    `Compute ${a} ${op} ${b}.`,
    `Can you calculate ${a} ${word} ${b} for me?`,
  ]);
  const first = `${a} ${op} ${b} = ${value}.`;
  if (op !== "+" || r.next() < 0.6) return fromPairs([q, first]);
  const c = r.int(1, 20);
  return fromPairs([
    q,
    first,
    r.choice([`And if you add ${c} more?`, `Now add ${c} to that.`]),
    `${value} + ${c} = ${value + c}.`,
  ]);
};

const capital: Make = (r) => {
  const [country, city] = r.choice(CAPITALS);
  const q = r.choice([
    `What is the capital of ${country}?`,
    `Which city is the capital of ${country}?`,
    `Tell me the capital of ${country}.`,
  ]);
  return fromPairs([q, `The capital of ${country} is ${city}.`]);
};

const opposite: Make = (r) => {
  const pair = r.choice(OPPOSITES);
  const [w, o] = r.next() < 0.5 ? pair : [pair[1], pair[0]];
  return fromPairs([
    r.choice([`What is the opposite of "${w}"?`, `Give me the opposite of the word "${w}".`]),
    `The opposite of "${w}" is "${o}".`,
  ]);
};

const nextDay: Make = (r) => {
  const i = r.int(0, 6);
  return r.next() < 0.5
    ? fromPairs([`What day comes after ${DAYS[i]}?`, `The day after ${DAYS[i]} is ${DAYS[(i + 1) % 7]}.`])
    : fromPairs([`What day comes before ${DAYS[i]}?`, `The day before ${DAYS[i]} is ${DAYS[(i + 6) % 7]}.`]);
};

const wordTask: Make = (r) => {
  const w = r.choice(WORDS);
  switch (r.int(0, 2)) {
    case 0:
      return fromPairs([`Spell "${w}" backwards.`, `"${w}" backwards is "${[...w].reverse().join("")}".`]);
    case 1:
      return fromPairs([`How many letters are in the word "${w}"?`, `The word "${w}" has ${w.length} letters.`]);
    default:
      return fromPairs([`Write "${w}" in capital letters.`, `In capital letters, "${w}" is "${w.toUpperCase()}".`]);
  }
};

const sortNumbers: Make = (r) => {
  const xs = Array.from({ length: r.int(3, 6) }, () => r.int(0, 50));
  const asc = r.next() < 0.6;
  const sorted = [...xs].sort((a, b) => (asc ? a - b : b - a));
  return fromPairs([
    `Sort these numbers in ${asc ? "ascending" : "descending"} order: ${xs.join(", ")}.`,
    `In ${asc ? "ascending" : "descending"} order: ${sorted.join(", ")}.`,
  ]);
};

const units: Make = (r) => {
  const u = r.choice(UNITS);
  const n = r.int(1, 12);
  return fromPairs([
    `How many ${u.small} are in ${n} ${u.big}?`,
    `There are ${n * u.factor} ${u.small} in ${n} ${u.big}, because each of the ${u.big} has ${u.factor} ${u.small}.`,
  ]);
};

const small: Conversation[] = [
  fromPairs(["Hello!", "Hello! How can I help you today?"]),
  fromPairs([
    "Hi, who are you?",
    "I am a small assistant trained with oasft, an Open-Assistant fine-tuning system written in TypeScript.",
  ]),
  fromPairs([
    "What is oasft?",
    "oasft trains chat models in the Open-Assistant format, with the loss on the assistant's replies only.",
  ]),
  fromPairs(["Thank you!", "You're welcome! Ask me anything else."]),
  fromPairs(["Good morning.", "Good morning! What would you like to talk about?"]),
  fromPairs([
    "Can you help me with math?",
    "Yes. Ask me a sum, a difference or a product, for example: what is 12 + 30?",
    "What is 12 + 30?",
    "12 + 30 = 42.",
  ]),
];

const MAKERS: Make[] = [arithmetic, arithmetic, capital, opposite, nextDay, wordTask, sortNumbers, units];

export const oasftDemo: DatasetLoader = {
  description:
    "conversations written for oasft's demo (arithmetic, capitals, words, units; some two-turn), generated from " +
    "the seed",
  options: { count: "how many generated conversations (default 3000), plus a few fixed greetings" },
  async load(o, ctx) {
    const count = optNumber(o, "count", ctx.name, { min: 1, integer: true }) ?? 3000;
    const train = [...small, ...Array.from({ length: count }, () => ctx.rng.choice(MAKERS)(ctx.rng))];
    return { train, dropped: {}, files: [] };
  },
  // Preference pairs that differ systematically: the chosen reply answers, the rejected one evades.
  async loadRanked(o, ctx) {
    const count = optNumber(o, "count", ctx.name, { min: 1, integer: true }) ?? 3000;
    const groups = Array.from({ length: count }, (_, i) => {
      const c = ctx.rng.choice(MAKERS)(ctx.rng);
      const evasive = ctx.rng.choice(EVASIONS);
      const rejected = { ...c, messages: [...c.messages.slice(0, -1), { ...c.messages.at(-1)!, text: evasive }] };
      return { candidates: [c, rejected], where: `oasft_demo[${i}]` };
    });
    return { groups, dropped: {}, files: [] };
  },
};
