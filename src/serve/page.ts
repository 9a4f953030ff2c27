// The chat page served at "/": one self-contained HTML file (no build step, no external assets).
// It streams from /v1/chat/completions, keeps the conversation in memory, can stop a reply, and
// exports the conversation as one OA-format JSONL line.
const TEMPLATE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>oasft chat</title>
<style>
  :root { font-family: system-ui, sans-serif; color: #1d1d1f; }
  body { margin: 0; display: grid; grid-template-columns: 1fr 260px; height: 100vh; }
  main { display: flex; flex-direction: column; min-width: 0; }
  #log { flex: 1; overflow-y: auto; padding: 16px; }
  .msg { max-width: 80ch; margin: 0 0 12px; padding: 10px 12px; border-radius: 10px;
         white-space: pre-wrap; overflow-wrap: anywhere; }
  .msg.error { background: #fde8e8; color: #8a1c1c; border: 1px solid #f5b5b5; }
  .user { background: #e8f0fe; margin-left: auto; }
  .assistant { background: #f3f3f3; }
  form { display: flex; gap: 8px; padding: 12px; border-top: 1px solid #ddd; }
  form textarea { flex: 1; min-width: 0; min-height: 3em; font: inherit; }
  aside { border-left: 1px solid #ddd; padding: 12px; font-size: 14px; overflow-y: auto; }
  aside label { display: block; margin: 10px 0 2px; }
  aside input, aside textarea { width: 100%; box-sizing: border-box; }
  button { font: inherit; padding: 6px 12px; }
  #status { color: #666; font-size: 12px; margin-top: 10px; }
  /* Phones: the settings go below the chat, and the input keeps the width of the screen. */
  @media (max-width: 640px) {
    body { grid-template-columns: 1fr; grid-template-rows: 1fr auto; }
    aside { border-left: none; border-top: 1px solid #ddd; max-height: 35vh; }
    form { flex-wrap: wrap; }
    form textarea { flex-basis: 100%; }
  }
</style>
</head>
<body>
<main>
  <div id="log" aria-live="polite"></div>
  <form id="form">
    <textarea id="input" placeholder="Ask something (Enter sends, Shift+Enter for a new line)"></textarea>
    <button id="send" type="submit">Send</button>
    <button id="stop" type="button" disabled>Stop</button>
  </form>
</main>
<aside>
  <strong>oasft chat</strong>
  <label for="system">System prompt</label><textarea id="system" rows="3"></textarea>
  <label for="temperature">Temperature</label>
  <input id="temperature" type="number" min="0" max="2" step="0.1" value="0">
  <label for="top_p">Top-p</label><input id="top_p" type="number" min="0" max="1" step="0.05" value="1">
  <label for="max_tokens">Max tokens</label><input id="max_tokens" type="number" min="1" max="2048" value="128">
  <label for="apikey">API key (if the server needs one)</label><input id="apikey" type="password">
  <p><button id="reset" type="button">New chat</button> <button id="export" type="button">Export JSONL</button></p>
  <div id="status"></div>
</aside>
<script>
const $ = (id) => document.getElementById(id);
const EOS = __EOS__;
let messages = [];
let controller = null;

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
  return div;
}

async function send(text) {
  messages.push({ role: "user", content: text });
  bubble("user", text);
  const out = bubble("assistant", "");
  const system = $("system").value.trim() ? [{ role: "system", content: $("system").value }] : [];
  const body = {
    messages: system.concat(messages), stream: true, temperature: Number($("temperature").value),
    top_p: Number($("top_p").value), max_tokens: Number($("max_tokens").value),
  };
  const headers = { "content-type": "application/json" };
  if ($("apikey").value) headers.authorization = "Bearer " + $("apikey").value;
  controller = new AbortController();
  $("stop").disabled = false; $("send").disabled = true; $("status").textContent = "generating…";
  let reply = "";
  try {
    const request = { method: "POST", headers, body: JSON.stringify(body), signal: controller.signal };
    const res = await fetch("/v1/chat/completions", request);
    if (!res.ok) throw new Error((await res.json()).error?.message || res.statusText);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\\n\\n")) >= 0) {
        const line = buffer.slice(0, cut).replace(/^data: /, "");
        buffer = buffer.slice(cut + 2);
        if (line === "[DONE]") continue;
        const event = JSON.parse(line);
        if (event.error) throw new Error(event.error.message || String(event.error)); // a failure mid-stream
        const delta = event.choices?.[0]?.delta?.content;
        if (delta) { reply += delta; out.textContent = reply; $("log").scrollTop = $("log").scrollHeight; }
      }
    }
    $("status").textContent = "done";
  } catch (err) {
    $("status").textContent = err.name === "AbortError" ? "stopped" : "error: " + err.message;
    // An error is shown where the reply would be, not only in the small status line.
    if (err.name !== "AbortError") {
      if (!out.textContent) out.remove();
      const b = bubble("assistant error", "Error: " + err.message);
      b.setAttribute("role", "alert");
    }
  }
  messages.push({ role: "assistant", content: reply });
  controller = null;
  $("stop").disabled = true; $("send").disabled = false;
}

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const t = $("input").value.trim();
  if (t && !controller) { $("input").value = ""; send(t); }
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("reset").addEventListener("click", () => { messages = []; $("log").innerHTML = ""; $("status").textContent = ""; });
$("export").addEventListener("click", () => {
  const system = $("system").value.trim();
  const tag = (m) => (m.role === "user" ? "<|prompter|>" : "<|assistant|>");
  const oa = (system ? "<|system|>" + system + EOS : "") + messages.map((m) => tag(m) + m.content + EOS).join("");
  const all = (system ? [{ role: "system", content: system }] : []).concat(messages);
  const line = JSON.stringify({ messages: all, text: oa }) + "\\n";
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([line], { type: "application/jsonl" }));
  a.download = "conversation.jsonl";
  a.click();
});
</script>
</body>
</html>
`;

/** The page, with the model's eos token for the OA-format export. */
export const chatPage = (eos: string) => TEMPLATE.replace("__EOS__", JSON.stringify(eos).replace(/</g, "\\u003c"));
