// Operations: health, and the figures an operator checks, read from /metrics (the same numbers
// Prometheus scrapes; the key needs the metrics scope).
import { call } from "./api.js";
import { clear, errorBox, h } from "./dom.js";

/** Prometheus text format -> [{name, labels, value}] */
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[2]) {
      for (const pair of m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
        labels[pair[1]] = pair[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
      }
    }
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

function pick(samples, name, filter = {}) {
  return samples.filter(
    (s) => s.name === name && Object.entries(filter).every(([k, v]) => s.labels[k] === v),
  );
}

function byLabel(samples, name, pool, label) {
  const out = {};
  for (const s of pick(samples, name, { pool })) out[s.labels[label]] = s.value;
  return out;
}

/** A quantile from cumulative histogram buckets (linear within a bucket), in seconds */
function quantile(buckets, q) {
  const sorted = buckets
    .map((b) => ({ le: b.labels.le === "+Inf" ? Infinity : Number(b.labels.le), count: b.value }))
    .sort((a, b) => a.le - b.le);
  const total = sorted.length ? sorted[sorted.length - 1].count : 0;
  if (!total) return null;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const b of sorted) {
    if (b.count >= rank) {
      if (b.le === Infinity) return prevLe;
      const span = b.count - prevCount;
      return prevLe + (span ? ((rank - prevCount) / span) * (b.le - prevLe) : 0);
    }
    prevLe = b.le;
    prevCount = b.count;
  }
  return prevLe;
}

function ms(seconds) {
  return seconds === null || seconds === undefined ? "–" : `${(seconds * 1000).toFixed(1)} ms`;
}

function figures(title, values) {
  const entries = Object.entries(values);
  return h(
    "div",
    { class: "figures" },
    h("h3", {}, title),
    entries.length
      ? h("dl", {}, entries.map(([k, v]) => [h("dt", {}, k), h("dd", { dataset: { figure: `${title}.${k}` } }, String(v))]))
      : h("p", { class: "empty" }, "none"),
  );
}

function poolSection(samples, pool) {
  const buckets = pick(samples, "sessionpool_execution_duration_seconds_bucket", { pool });
  const count = pick(samples, "sessionpool_execution_duration_seconds_count", { pool })[0];
  const sum = pick(samples, "sessionpool_execution_duration_seconds_sum", { pool })[0];
  const kills = byLabel(samples, "sessionpool_interpreter_kills_total", pool, "cause");
  return h(
    "section",
    { class: "card ops-pool", dataset: { pool } },
    h("h2", {}, `Pool ${pool}`),
    h(
      "div",
      { class: "figure-grid" },
      figures("Sessions", byLabel(samples, "sessionpool_sessions", pool, "state")),
      figures("Allocations", byLabel(samples, "sessionpool_allocations_total", pool, "outcome")),
      figures("Executions", byLabel(samples, "sessionpool_executions_total", pool, "status")),
      figures("Latency", {
        count: count ? count.value : 0,
        mean: count && count.value ? ms(sum.value / count.value) : "–",
        p50: ms(quantile(buckets, 0.5)),
        p95: ms(quantile(buckets, 0.95)),
        p99: ms(quantile(buckets, 0.99)),
      }),
      figures("Kills", kills),
      figures("OOMs", { oom: kills.oom || 0 }),
      figures("Timeouts", byLabel(samples, "sessionpool_execution_timeouts_total", pool, "action")),
    ),
  );
}

export function renderOperations(root) {
  const status = h("div", { class: "status" });
  const health = h("section", { class: "card", id: "health" }, h("h2", {}, "Health"));
  const pools = h("div", { id: "ops-pools" });
  const again = h("button", { type: "button", id: "refresh" }, "Refresh");
  root.appendChild(h("div", { class: "title" }, h("h1", {}, "Operations"), again));
  root.appendChild(status);
  root.appendChild(health);
  root.appendChild(pools);
  let stopped = false;

  async function refresh() {
    clear(status);
    const probes = {};
    for (const probe of ["healthz", "readyz"]) {
      try {
        const resp = await fetch(`/${probe}`, { cache: "no-store", credentials: "omit" });
        probes[probe] = `${resp.status} ${(await resp.json()).status}`;
      } catch (err) {
        probes[probe] = `unreachable: ${err.message}`;
      }
    }
    if (stopped) return;
    clear(health).append(h("h2", {}, "Health"), figures("Probes", probes));
    try {
      const text = await (await call("/metrics", { headers: { accept: "text/plain" } })).text();
      if (stopped) return;
      const samples = parseMetrics(text);
      const names = [...new Set(pick(samples, "sessionpool_ready_sessions_target").map((s) => s.labels.pool))];
      clear(pools);
      for (const pool of names.sort()) pools.appendChild(poolSection(samples, pool));
      const runs = {};
      for (const s of pick(samples, "sessionpool_agent_runs_total")) runs[s.labels.status] = s.value;
      const inProgress = pick(samples, "sessionpool_agent_runs_in_progress")[0];
      if (inProgress) runs["in progress"] = inProgress.value;
      const refusals = {};
      for (const s of pick(samples, "sessionpool_quota_refusals_total")) refusals[s.labels.quota] = s.value;
      pools.appendChild(
        h("section", { class: "card" }, h("h2", {}, "Agents and quotas"), h("div", { class: "figure-grid" }, figures("Agent runs", runs), figures("Quota refusals", refusals))),
      );
    } catch (err) {
      if (!stopped) clear(pools).appendChild(errorBox(`Metrics: ${err.message}`));
    }
  }
  again.addEventListener("click", refresh);
  refresh();
  return () => {
    stopped = true;
  };
}
