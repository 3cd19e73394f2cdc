// One session: run cells (streamed), see their output, figures and errors; its files.
import { python } from "@codemirror/lang-python";
import { Prec } from "@codemirror/state";
import { EditorView, keymap } from "@codemirror/view";
import { basicSetup } from "codemirror";
import { call, download, json, poolPath, streamEvents, upload } from "./api.js";
import { bytes, clear, errorBox, h, pngImage } from "./dom.js";
import { confirmButton } from "./pools.js";

function cspNonce() {
  const meta = document.querySelector('meta[name="csp-nonce"]');
  return meta ? meta.getAttribute("content") : "";
}

function editor(parent, run) {
  return new EditorView({
    doc: "",
    parent,
    extensions: [
      basicSetup,
      python(),
      EditorView.cspNonce.of(cspNonce()),
      Prec.highest(
        keymap.of([
          { key: "Shift-Enter", run: () => (run(), true) },
          { key: "Mod-Enter", run: () => (run(), true) },
        ]),
      ),
    ],
  });
}

function resultNode(res) {
  const value = res && res.result ? res.result.executionResult : "";
  if (value && typeof value === "object" && value.base64_data) {
    return pngImage(value.base64_data, "figure from the cell");
  }
  if (typeof value === "string" && value) return h("pre", { class: "result" }, value);
  return null;
}

function cellView(code) {
  const stdout = h("pre", { class: "stdout" });
  const stderr = h("pre", { class: "stderr" });
  const tail = h("div", { class: "tail" });
  const state = h("span", { class: "state running" }, "running…");
  const node = h(
    "article",
    { class: "cell" },
    h("div", { class: "cell-head" }, state),
    h("pre", { class: "code" }, code),
    stdout,
    stderr,
    tail,
  );
  return { node, stdout, stderr, tail, state };
}

export function renderSession(root, pool, identifier) {
  const controller = new AbortController();
  const status = h("div", { class: "status" });
  const cells = h("div", { id: "cells" });
  const editorBox = h("div", { id: "editor" });
  const runButton = h("button", { type: "button", id: "run" }, "Run (Shift+Enter)");
  let running = false;
  let view = null;

  async function run() {
    if (running) return;
    const code = view.state.doc.toString();
    if (!code.trim()) return;
    running = true;
    runButton.disabled = true;
    const cell = cellView(code);
    cells.prepend(cell.node);
    let finished = false;
    try {
      await streamEvents(
        poolPath(pool, "executions/stream", identifier),
        { code },
        (event, data) => {
          if (event === "stdout") cell.stdout.append(data.text);
          else if (event === "stderr") cell.stderr.append(data.text);
          else if (event === "result") {
            finished = true;
            // the whole output again: keep it exactly as the result says
            cell.stdout.textContent = data.result.stdout || "";
            cell.stderr.textContent = data.result.stderr || "";
            const value = resultNode(data);
            if (value) cell.tail.appendChild(value);
            const ok = data.status === "Succeeded";
            cell.state.textContent = `${ok ? "ok" : "failed"} · ${data.result.executionTimeInMilliseconds} ms`;
            cell.state.className = `state ${ok ? "ok" : "failed"}`;
            if (data.error && data.error.error) {
              cell.tail.appendChild(errorBox(`${data.error.error.code}: ${data.error.error.message}`));
            }
          } else if (event === "error") {
            finished = true;
            cell.state.textContent = "failed";
            cell.state.className = "state failed";
            cell.tail.appendChild(errorBox(`${data.error.code}: ${data.error.message}`));
          }
        },
        controller.signal,
      );
      if (!finished) throw new Error("the stream ended without a result");
    } catch (err) {
      if (controller.signal.aborted) return;
      cell.state.textContent = "failed";
      cell.state.className = "state failed";
      cell.tail.appendChild(errorBox(err.message));
    } finally {
      running = false;
      runButton.disabled = false;
    }
    refreshFiles();
  }

  // --- files -------------------------------------------------------------------------------
  const fileList = h("tbody", {});
  const progress = h("progress", { id: "upload-progress", max: "1", value: "0", hidden: true });
  const progressLabel = h("span", { id: "upload-label" });
  const fileInput = h("input", { type: "file", id: "file-input", multiple: true });
  const drop = h(
    "div",
    { id: "dropzone", class: "dropzone" },
    "Drop files here, or ",
    h("label", { for: "file-input", class: "link" }, "choose files"),
    fileInput,
    h("div", {}, progress, " ", progressLabel),
  );

  async function refreshFiles() {
    try {
      const data = await json(poolPath(pool, "files", identifier, { recursive: "true" }));
      if (controller.signal.aborted) return;
      clear(fileList);
      const files = data.value.filter((f) => f.type === "File");
      if (!files.length) fileList.appendChild(h("tr", {}, h("td", { colspan: "4", class: "empty" }, "No files in /mnt/data.")));
      for (const f of files) {
        const rel = `${f.directory.replace(/^\/mnt\/data\/?/, "")}${f.directory === "/mnt/data" ? "" : "/"}${f.name}`;
        const encoded = rel.split("/").map(encodeURIComponent).join("/");
        fileList.appendChild(
          h(
            "tr",
            { class: "file", dataset: { name: rel } },
            h("td", { class: "name" }, rel),
            h("td", { class: "nowrap" }, bytes(f.sizeInBytes)),
            h("td", {}, new Date(f.lastModifiedAt).toLocaleString()),
            h(
              "td",
              {},
              h(
                "button",
                {
                  type: "button",
                  class: "download",
                  onClick: () =>
                    download(poolPath(pool, `files/${encoded}/content`, identifier), f.name).catch((err) =>
                      clear(status).appendChild(errorBox(err.message)),
                    ),
                },
                "Download",
              ),
              " ",
              confirmButton(
                "Delete",
                async () => {
                  try {
                    await call(poolPath(pool, `files/${encoded}`, identifier), { method: "DELETE" });
                  } catch (err) {
                    clear(status).appendChild(errorBox(err.message));
                  }
                  refreshFiles();
                },
                { class: "danger delete-file" },
              ),
            ),
          ),
        );
      }
    } catch (err) {
      if (!controller.signal.aborted) clear(status).appendChild(errorBox(err.message));
    }
  }

  async function uploadAll(files) {
    for (const file of files) {
      progress.hidden = false;
      progress.value = 0;
      progressLabel.textContent = `uploading ${file.name}…`;
      try {
        await upload(poolPath(pool, "files", identifier), file, (fraction) => {
          progress.value = fraction;
        });
        progressLabel.textContent = `uploaded ${file.name}`;
      } catch (err) {
        progressLabel.textContent = "";
        clear(status).appendChild(errorBox(`Upload of ${file.name} failed: ${err.message}`));
      }
    }
    refreshFiles();
  }

  fileInput.addEventListener("change", () => {
    uploadAll([...fileInput.files]);
    fileInput.value = "";
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    uploadAll([...e.dataTransfer.files]);
  });

  const deleteSession = confirmButton(
    "Delete session",
    async () => {
      try {
        await call(poolPath(pool, "session", identifier), { method: "DELETE" });
        location.hash = "#/";
      } catch (err) {
        clear(status).appendChild(errorBox(err.message));
      }
    },
    { id: "delete-session" },
  );

  root.appendChild(
    h(
      "div",
      { class: "title" },
      h("h1", {}, "Session ", h("code", { id: "session-name" }, identifier), " in ", h("code", {}, pool)),
      deleteSession,
    ),
  );
  root.appendChild(status);
  root.appendChild(
    h(
      "div",
      { class: "session-layout" },
      h("section", { class: "card code-panel" }, h("h2", {}, "Code"), editorBox, h("div", { class: "actions" }, runButton), cells),
      h(
        "section",
        { class: "card files-panel" },
        h("h2", {}, "Files in /mnt/data"),
        drop,
        h("table", { class: "files" }, h("thead", {}, h("tr", {}, ["Name", "Size", "Modified", ""].map((t) => h("th", {}, t)))), fileList),
      ),
    ),
  );
  view = editor(editorBox, run);
  runButton.addEventListener("click", run);
  view.focus();
  refreshFiles();
  return () => {
    controller.abort();
    view.destroy();
  };
}
