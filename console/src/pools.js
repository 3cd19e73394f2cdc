// Pools and sessions: each pool's figures, the caller's sessions in it, deleting one.
import { call, json, poolPath } from "./api.js";
import { bytes, clear, duration, errorBox, h, when } from "./dom.js";

export function sessionHref(pool, identifier) {
  return `#/session/${encodeURIComponent(pool)}/${encodeURIComponent(identifier)}`;
}

/** A button that asks once more before acting */
export function confirmButton(label, action, attrs = {}) {
  const button = h("button", { type: "button", class: "danger", ...attrs }, label);
  let armed = false;
  button.addEventListener("click", async () => {
    if (!armed) {
      armed = true;
      button.textContent = "Confirm";
      button.classList.add("armed");
      setTimeout(() => {
        armed = false;
        button.textContent = label;
        button.classList.remove("armed");
      }, 4000);
      return;
    }
    button.disabled = true;
    await action();
  });
  return button;
}

function limits(pool) {
  const l = pool.limits;
  return `${bytes(l.memory_bytes)} memory, ${l.cpus} CPU, ${l.pids} processes, ${bytes(l.disk_bytes)} disk`;
}

function sessionRow(pool, s, refresh, status) {
  return h(
    "tr",
    { class: "session", dataset: { identifier: s.identifier } },
    h("td", {}, h("a", { href: sessionHref(pool.name, s.identifier) }, s.identifier)),
    h("td", {}, duration(s.age_seconds)),
    h("td", {}, duration(s.idle_seconds), s.busy ? h("span", { class: "badge" }, "busy") : null),
    h("td", {}, bytes(s.memory_bytes)),
    h("td", {}, s.cpu_seconds === null ? "–" : `${s.cpu_seconds.toFixed(2)} s`),
    h(
      "td",
      { class: "executions" },
      s.executions.length
        ? s.executions.map((e) =>
            h("span", { class: `exec ${e.status}`, title: when(e.started_at) }, `${e.status} ${e.duration_ms.toFixed(0)} ms`),
          )
        : "–",
    ),
    h(
      "td",
      {},
      confirmButton(
        "Delete",
        async () => {
          try {
            await call(poolPath(pool.name, "session", s.identifier), { method: "DELETE" });
          } catch (err) {
            clear(status).appendChild(errorBox(`Delete failed: ${err.message}`));
          }
          await refresh();
        },
        { class: "danger delete-session" },
      ),
    ),
  );
}

function poolCard(pool, refresh, status) {
  const states = pool.states
    ? Object.entries(pool.states).map(([k, v]) => h("span", { class: "stat" }, h("b", {}, String(v)), ` ${k}`))
    : "counted on the cluster's nodes";
  const open = h("input", { class: "new-identifier", placeholder: "session identifier", "aria-label": "session identifier" });
  const form = h(
    "form",
    { class: "open-session" },
    open,
    h("button", { type: "submit" }, "Open session"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const ident = open.value.trim() || `console-${Math.random().toString(36).slice(2, 8)}`;
    location.hash = sessionHref(pool.name, ident);
  });
  return h(
    "section",
    { class: "card pool", dataset: { pool: pool.name } },
    h("h2", {}, `Pool ${pool.name}`),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Runtime"),
      h("dd", {}, `${pool.runtime.name} (${pool.runtime.kind} ${pool.runtime.version})`),
      h("dt", {}, "Sessions"),
      h("dd", { class: "states" }, states),
      h("dt", {}, "Ready depth"),
      h("dd", {}, `${pool.states ? pool.states.ready : "?"} of ${pool.ready_target} ${pool.ready ? "(ready)" : "(filling)"}`),
      h("dt", {}, "Limits"),
      h("dd", {}, `${pool.max_sessions} sessions; each ${limits(pool)}; ${pool.execution_timeout_seconds} s per cell; idle sessions end after ${pool.cooldown_seconds} s`),
      h("dt", {}, "Network"),
      h("dd", {}, pool.network),
    ),
    form,
    pool.sessions.length
      ? h(
          "table",
          { class: "sessions" },
          h(
            "thead",
            {},
            h("tr", {}, ["Identifier", "Age", "Idle", "Memory", "CPU", "Last executions", ""].map((t) => h("th", {}, t))),
          ),
          h("tbody", {}, pool.sessions.map((s) => sessionRow(pool, s, refresh, status))),
        )
      : h("p", { class: "empty" }, "No sessions of yours in this pool."),
  );
}

export function renderPools(root) {
  const status = h("div", { class: "status" });
  const list = h("div", { id: "pools" }, h("p", {}, "Loading…"));
  const again = h("button", { type: "button", id: "refresh" }, "Refresh");
  root.appendChild(h("div", { class: "title" }, h("h1", {}, "Pools and sessions"), again));
  root.appendChild(status);
  root.appendChild(list);
  let stopped = false;
  const refresh = async () => {
    try {
      const data = await json("/console/api/pools");
      if (stopped) return;
      clear(status);
      clear(list);
      if (!data.pools.length) list.appendChild(h("p", {}, "This key may use no pool."));
      for (const pool of data.pools) list.appendChild(poolCard(pool, refresh, status));
    } catch (err) {
      if (stopped) return;
      clear(list);
      clear(status).appendChild(errorBox(err.message));
    }
  };
  again.addEventListener("click", refresh);
  refresh();
  return () => {
    stopped = true;
  };
}
