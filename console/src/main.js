// The console's entry: log in, then route by the URL's fragment to a view. The fragment names
// pools, sessions and threads (never the key).
import { ApiError, forgetKey, getKey, json, setKey, whenUnauthorized } from "./api.js";
import { clear, errorBox, h } from "./dom.js";
import { renderAgents, renderThread } from "./agents.js";
import { renderOperations } from "./operations.js";
import { renderPools } from "./pools.js";
import { renderSession } from "./session.js";

const main = () => document.getElementById("main");
let stopView = () => {};

function showLogin(message) {
  stopView();
  stopView = () => {};
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  const input = h("input", {
    id: "api-key",
    type: "password",
    autocomplete: "off",
    placeholder: "sp-…",
    required: true,
  });
  const status = h("div", { id: "login-status" }, message ? errorBox(message) : null);
  const form = h(
    "form",
    { id: "login", class: "card" },
    h("h1", {}, "Log in"),
    h(
      "p",
      {},
      "The console calls this server's API with your key and its scopes. The key stays in " +
        "this tab (session storage) and is sent as a header only.",
    ),
    h("label", { for: "api-key" }, "API key"),
    input,
    h("button", { type: "submit", id: "login-button" }, "Log in"),
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    setKey(key);
    try {
      // any authenticated route tells a valid key from a wrong one; a key without the
      // sessions scope is still valid (403)
      await json("/console/api/pools");
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        forgetKey();
        clear(status).appendChild(errorBox(`Not logged in: ${err.message}`));
        return;
      }
    }
    route();
  });
  clear(main()).appendChild(form);
  input.focus();
}

function route() {
  stopView();
  stopView = () => {};
  if (!getKey()) {
    showLogin();
    return;
  }
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  const parts = (location.hash.replace(/^#\/?/, "") || "").split("/").map(decodeURIComponent);
  const view = parts[0] || "pools";
  // a session belongs to the pools view, a thread to the agents view
  const section = { session: "pools", thread: "agents" }[view] || view;
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.view === section);
  }
  const root = clear(main());
  try {
    if (view === "session" && parts.length >= 3) {
      stopView = renderSession(root, parts[1], parts.slice(2).join("/"));
    } else if (view === "agents") {
      stopView = renderAgents(root);
    } else if (view === "thread" && parts[1]) {
      stopView = renderThread(root, parts[1]);
    } else if (view === "operations") {
      stopView = renderOperations(root);
    } else {
      stopView = renderPools(root);
    }
  } catch (err) {
    root.appendChild(errorBox(String(err)));
  }
}

function start() {
  whenUnauthorized((message) => {
    forgetKey();
    showLogin(`Logged out: ${message}`);
  });
  document.getElementById("logout").addEventListener("click", () => {
    forgetKey();
    location.hash = "#/";
    showLogin();
  });
  window.addEventListener("hashchange", route);
  route();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
