// The web view's page: logs in, follows the agent's event stream, and
// hands the picture to the views (views.js). Every read and every action
// goes through the JSON API the README lists; nothing else is fetched.

import * as views from "./views.js";

const $ = (sel) => document.querySelector(sel);

/** What the page knows: the last `status` and `jobs` events. */
export const state = {
  access: null,
  status: null,
  efficiency: null,
  markers: [],
  jobs: [],
  view: "nodes",
  node: null,
};

/** Calls the API; resolves to the JSON body, or throws its one-line error. */
export async function api(method, path, body) {
  const init = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  let data = null;
  try { data = await r.json(); } catch { /* not JSON */ }
  if (!r.ok) {
    if (r.status === 401 && path !== "/api/login") showLogin(data?.error);
    throw new Error(data?.error ?? `${r.status} ${r.statusText}`);
  }
  return data;
}

/** A line under the tabs: what an action did, or why it failed. */
export function notice(text, isError = false) {
  const n = $("#notice");
  n.textContent = text;
  n.classList.toggle("error", isError);
}

function showLogin(message) {
  stopStream();
  state.access = null;
  $("#app").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#access").textContent = "";
  $("#login-error").textContent = message ?? "";
  $("#token").focus();
}

function showApp(access) {
  state.access = access;
  document.body.classList.toggle("read-only", access !== "steer");
  $("#access").textContent = access === "steer" ? "can steer" : "read only";
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  startStream();
  show(state.view);
}

async function login(token) {
  try {
    const r = await api("POST", "/api/login", { token });
    showApp(r.access);
  } catch (e) {
    showLogin(e.message);
  }
}

let source = null;

function startStream() {
  stopStream();
  source = new EventSource("/api/events");
  source.addEventListener("open", () => setLive(true));
  source.addEventListener("error", async () => {
    setLive(false);
    // A closed stream after the session ended: back to the login form.
    if (source && source.readyState === EventSource.CLOSED) {
      try { await api("GET", "/api/session"); startStream(); } catch { /* showLogin ran */ }
    }
  });
  source.addEventListener("status", (ev) => {
    const d = JSON.parse(ev.data);
    state.status = d.status;
    state.efficiency = d.efficiency;
    state.markers = d.markers;
    state.machines = d.machines;
    views.statusChanged(state);
  });
  // Events that arrive faster than the page draws are drawn once, the
  // latest, on the next frame (the moves animate from the oldest table).
  let before = null;
  source.addEventListener("jobs", (ev) => {
    const d = JSON.parse(ev.data);
    if (before === null) {
      before = state.jobs;
      requestAnimationFrame(() => {
        const old = before;
        before = null;
        views.jobsChanged(state, old);
      });
    }
    state.jobs = d.jobs;
  });
}

function stopStream() {
  if (source) source.close();
  source = null;
  setLive(false);
}

function setLive(on) {
  const l = $("#live");
  l.textContent = on ? "live" : "offline";
  l.classList.toggle("on", on);
}

/** Shows one view (`nodes`, `node`, `jobs`, `monitor`, `history`). */
export function show(view, node) {
  state.view = view;
  if (node !== undefined) state.node = node;
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== `view-${view}`;
  for (const t of document.querySelectorAll("nav [role=tab]")) {
    t.setAttribute("aria-selected", String(t.dataset.view === view || (view === "node" && t.dataset.view === "nodes")));
  }
  views.render(state);
}

function init() {
  $("#login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    login($("#token").value.trim());
  });
  $("#logout").addEventListener("click", async () => {
    try { await api("POST", "/api/logout", {}); } catch { /* gone already */ }
    showLogin("logged out");
  });
  for (const t of document.querySelectorAll("nav [role=tab]")) {
    t.addEventListener("click", () => show(t.dataset.view));
  }
  for (const b of document.querySelectorAll("[data-back]")) b.addEventListener("click", () => show("nodes"));
  views.init(state);
  // A link from `omctl web` carries its token after `#login=`: taken once,
  // then wiped from the address bar and the history.
  const m = location.hash.match(/^#login=(.+)$/);
  if (m) {
    history.replaceState(null, "", location.pathname);
    login(decodeURIComponent(m[1]));
    return;
  }
  api("GET", "/api/session").then((r) => showApp(r.access)).catch(() => {});
}

init();
