// Agents: threads (conversations), their messages, runs and steps; generated files to download;
// a run's progress while it runs (polled).
import { call, download, json, streamEvents } from "./api.js";
import { clear, errorBox, h, when } from "./dom.js";

const LIVE = new Set(["queued", "in_progress", "requires_action", "cancelling"]);

export function threadHref(id) {
  return `#/thread/${encodeURIComponent(id)}`;
}

export function renderAgents(root) {
  const status = h("div", { class: "status" });
  const list = h("tbody", {});
  const openInput = h("input", { id: "thread-id", placeholder: "thread_…", "aria-label": "thread id" });
  const open = h("form", { class: "open-thread" }, openInput, h("button", { type: "submit" }, "Open thread"));
  open.addEventListener("submit", (e) => {
    e.preventDefault();
    if (openInput.value.trim()) location.hash = threadHref(openInput.value.trim());
  });
  root.appendChild(h("h1", {}, "Agents"));
  root.appendChild(status);
  root.appendChild(
    h(
      "section",
      { class: "card" },
      h("h2", {}, "Threads"),
      open,
      h("table", { class: "threads" }, h("thead", {}, h("tr", {}, h("th", {}, "Thread"), h("th", {}, "Created"), h("th", {}, "Metadata"))), list),
    ),
  );
  let stopped = false;
  json("/console/api/threads?limit=50")
    .then((data) => {
      if (stopped) return;
      if (!data.data.length) list.appendChild(h("tr", {}, h("td", { colspan: "3", class: "empty" }, "No threads yet.")));
      for (const t of data.data) {
        list.appendChild(
          h(
            "tr",
            { class: "thread", dataset: { id: t.id } },
            h("td", {}, h("a", { href: threadHref(t.id) }, t.id)),
            h("td", {}, when(t.created_at)),
            h("td", {}, Object.entries(t.metadata || {}).map(([k, v]) => `${k}=${v}`).join(", ")),
          ),
        );
      }
    })
    .catch((err) => {
      if (!stopped) status.appendChild(errorBox(err.message));
    });
  return () => {
    stopped = true;
  };
}

/** An image the API holds as a file (fetched with the key, shown from a blob: URL) */
function fileImage(fileId, urls) {
  const img = h("img", { class: "figure", alt: `image ${fileId}`, dataset: { fileId } });
  call(`/v1/files/${encodeURIComponent(fileId)}/content`)
    .then((r) => r.blob())
    .then((blob) => {
      const url = URL.createObjectURL(new Blob([blob], { type: "image/png" }));
      urls.push(url);
      img.src = url;
    })
    .catch(() => img.replaceWith(errorBox(`could not load image ${fileId}`)));
  return img;
}

function fileButton(fileId, label) {
  return h(
    "button",
    {
      type: "button",
      class: "download",
      dataset: { fileId },
      onClick: async () => {
        let name = label || fileId;
        try {
          const meta = await json(`/v1/files/${encodeURIComponent(fileId)}`);
          name = (meta.filename || name).split("/").pop();
        } catch {
          // keep the label
        }
        await download(`/v1/files/${encodeURIComponent(fileId)}/content`, name);
      },
    },
    `Download ${label || fileId}`,
  );
}

function messageNode(m, urls) {
  const parts = [];
  for (const part of m.content || []) {
    if (part.type === "text") {
      parts.push(h("pre", { class: "text" }, part.text.value));
      for (const a of part.text.annotations || []) {
        if (a.type === "file_path" && a.file_path) parts.push(fileButton(a.file_path.file_id, a.text.split("/").pop()));
      }
    } else if (part.type === "image_file") {
      parts.push(fileImage(part.image_file.file_id, urls));
    }
  }
  for (const att of m.attachments || []) if (att.file_id) parts.push(fileButton(att.file_id));
  return h("article", { class: `message ${m.role}`, dataset: { id: m.id } }, h("div", { class: "role" }, m.role), parts);
}

function stepNode(step, urls) {
  const d = step.step_details || {};
  const body = [];
  if (d.type === "tool_calls") {
    for (const call of d.tool_calls || []) {
      if (call.type === "code_interpreter") {
        body.push(h("pre", { class: "code" }, call.code_interpreter.input));
        for (const out of call.code_interpreter.outputs || []) {
          if (out.type === "logs") body.push(h("pre", { class: "logs" }, out.logs));
          else if (out.type === "image") body.push(fileImage(out.image.file_id, urls));
        }
      } else {
        body.push(h("pre", { class: "code" }, `${call.type}: ${JSON.stringify(call[call.type] || {})}`));
      }
    }
  } else if (d.type === "message_creation") {
    body.push(h("p", {}, `wrote message ${d.message_creation.message_id}`));
  }
  return h(
    "li",
    { class: `step ${d.type || ""} ${step.status}`, dataset: { id: step.id } },
    h("div", { class: "step-head" }, `${d.type === "tool_calls" ? "code interpreter" : "message"} · ${step.status}`),
    body,
    step.last_error ? errorBox(`${step.last_error.code}: ${step.last_error.message}`) : null,
  );
}

/** A same-origin API URL (the Responses items give absolute ones) as a path; null otherwise */
function apiPath(url) {
  try {
    const u = new URL(url, location.href);
    return u.origin === location.origin ? u.pathname + u.search : null;
  } catch {
    return null;
  }
}

function urlImage(url, urls) {
  if (url.startsWith("data:image/")) return h("img", { class: "figure", src: url, alt: "image" });
  const path = apiPath(url);
  if (!path) return errorBox("an image from elsewhere, not shown");
  const img = h("img", { class: "figure", alt: "image" });
  call(path)
    .then((r) => r.blob())
    .then((blob) => {
      const blobUrl = URL.createObjectURL(new Blob([blob], { type: "image/png" }));
      urls.push(blobUrl);
      img.src = blobUrl;
    })
    .catch(() => img.replaceWith(errorBox("could not load an image")));
  return img;
}

/** One item of a Responses conversation: a message, or a code interpreter call */
function itemNode(item, urls) {
  if (item.type === "code_interpreter_call") {
    const outputs = (item.outputs || []).map((out) =>
      out.type === "logs" ? h("pre", { class: "logs" }, out.logs) : out.type === "image" ? urlImage(out.url, urls) : null,
    );
    return h(
      "li",
      { class: `item code_interpreter_call ${item.status}`, dataset: { id: item.id } },
      h("div", { class: "step-head" }, `code interpreter · ${item.status}`),
      h("pre", { class: "code" }, item.code || ""),
      outputs,
    );
  }
  if (item.type === "message") {
    const parts = [];
    for (const part of item.content || []) {
      if (typeof part.text === "string") parts.push(h("pre", { class: "text" }, part.text));
      for (const a of part.annotations || []) {
        if (a.type === "container_file_citation") {
          const path = `/v1/containers/${encodeURIComponent(a.container_id)}/files/${encodeURIComponent(a.file_id)}/content`;
          const name = (a.filename || a.file_id).split("/").pop();
          parts.push(
            h(
              "button",
              { type: "button", class: "download", dataset: { fileId: a.file_id }, onClick: () => download(path, name) },
              `Download ${name}`,
            ),
          );
        }
      }
    }
    return h("li", { class: `item message ${item.role}`, dataset: { id: item.id } }, h("div", { class: "role" }, item.role), parts);
  }
  return h("li", { class: `item ${item.type}` }, h("div", { class: "step-head" }, item.type));
}

export function renderThread(root, threadId) {
  const status = h("div", { class: "status" });
  const messages = h("div", { id: "messages" });
  const runs = h("div", { id: "runs" });
  const assistantSelect = h("select", { id: "assistant", "aria-label": "assistant" });
  const prompt = h("textarea", { id: "prompt", rows: "3", placeholder: "Ask something…" });
  const ask = h(
    "form",
    { class: "ask" },
    prompt,
    h("div", { class: "actions" }, assistantSelect, h("button", { type: "submit", id: "send" }, "Send and run")),
  );
  const live = h("div", { id: "live", class: "live", hidden: true });
  const controller = new AbortController();
  let urls = [];
  let timer = null;
  let stopped = false;

  root.appendChild(h("h1", {}, "Thread ", h("code", {}, threadId)));
  root.appendChild(status);
  root.appendChild(
    h(
      "div",
      { class: "thread-layout" },
      h("section", { class: "card" }, h("h2", {}, "Messages"), messages, ask),
      h("section", { class: "card" }, h("h2", {}, "Runs"), live, runs),
    ),
  );

  const base = `/v1/threads/${encodeURIComponent(threadId)}`;

  async function refresh() {
    try {
      const [msgs, runList] = await Promise.all([
        json(`${base}/messages?order=asc&limit=100`),
        json(`${base}/runs?order=desc&limit=20`),
      ]);
      // a Responses conversation: its items (messages and code calls) say what its responses did
      const items = runList.data.length
        ? null
        : await json(`/v1/conversations/${encodeURIComponent(threadId)}/items?order=asc&limit=100`).catch(() => null);
      const steps = await Promise.all(
        runList.data.map((r) => json(`${base}/runs/${encodeURIComponent(r.id)}/steps?order=asc&limit=100`)),
      );
      if (stopped) return;
      for (const url of urls) URL.revokeObjectURL(url);
      urls = [];
      clear(messages);
      if (!msgs.data.length) messages.appendChild(h("p", { class: "empty" }, "No messages."));
      for (const m of msgs.data) messages.appendChild(messageNode(m, urls));
      clear(runs);
      const responseItems = items ? items.data.filter((i) => !(i.type === "message" && i.role === "user")) : [];
      if (responseItems.length) {
        runs.appendChild(
          h(
            "article",
            { class: "responses" },
            h("div", { class: "run-head" }, "Responses in this conversation"),
            h("ol", { class: "steps" }, responseItems.map((i) => itemNode(i, urls))),
          ),
        );
      } else if (!runList.data.length) runs.appendChild(h("p", { class: "empty" }, "No runs."));
      runList.data.forEach((r, i) => {
        runs.appendChild(
          h(
            "article",
            { class: `run ${r.status}`, dataset: { id: r.id, status: r.status } },
            h("div", { class: "run-head" }, h("code", {}, r.id), " ", h("span", { class: `badge ${r.status}` }, r.status), ` · ${when(r.created_at)}`),
            r.last_error ? errorBox(`${r.last_error.code}: ${r.last_error.message}`) : null,
            h("ol", { class: "steps" }, steps[i].data.map((s) => stepNode(s, urls))),
          ),
        );
      });
      const live = runList.data.some((r) => LIVE.has(r.status));
      clearTimeout(timer);
      if (live) timer = setTimeout(refresh, 1000);
    } catch (err) {
      if (!stopped) clear(status).appendChild(errorBox(err.message));
    }
  }

  json("/v1/assistants?limit=100")
    .then((data) => {
      for (const a of data.data) assistantSelect.appendChild(h("option", { value: a.id }, a.name || a.id));
      if (!data.data.length) assistantSelect.appendChild(h("option", { value: "" }, "no assistants"));
    })
    .catch(() => {});

  ask.addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = prompt.value.trim();
    if (!text || !assistantSelect.value) return;
    try {
      await json(`${base}/messages`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ role: "user", content: text }),
      });
      prompt.value = "";
      await streamRun(assistantSelect.value);
    } catch (err) {
      if (!stopped) clear(status).appendChild(errorBox(err.message));
    }
    refresh();
  });

  /** Start a run and show it as it streams: its status, the code as the model writes it, the
   * code's output, the answer's text; the stored view is refreshed at each finished step. */
  async function streamRun(assistantId) {
    const state = h("div", { class: "live-state" }, "starting…");
    const code = h("pre", { class: "code" });
    const logs = h("pre", { class: "logs" });
    const text = h("pre", { class: "text" });
    clear(live).append(h("h3", {}, "Live"), state, code, logs, text);
    live.hidden = false;
    await streamEvents(
      `${base}/runs`,
      { assistant_id: assistantId, stream: true },
      (event, data) => {
        if (event.startsWith("thread.run.") && !event.startsWith("thread.run.step.")) {
          state.textContent = `${data.id}: ${data.status}`;
          live.dataset.status = data.status;
        } else if (event === "thread.run.step.delta") {
          for (const tool of data.delta.step_details.tool_calls || []) {
            const ci = tool.code_interpreter || {};
            if (ci.input) code.append(ci.input);
            for (const out of ci.outputs || []) if (out.type === "logs") logs.append(out.logs);
          }
        } else if (event === "thread.message.delta") {
          for (const part of data.delta.content || []) {
            if (part.type === "text" && part.text && part.text.value) text.append(part.text.value);
          }
        }
        if (event === "thread.run.step.completed" || event === "thread.message.completed") refresh();
      },
      controller.signal,
    );
  }

  refresh();
  return () => {
    stopped = true;
    controller.abort();
    clearTimeout(timer);
    for (const url of urls) URL.revokeObjectURL(url);
  };
}
