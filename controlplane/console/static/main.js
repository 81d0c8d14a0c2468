// The console's shell: sign-in, navigation between views, the 2-second poll and the pulls stream.
import * as api from "./api.js";
import { backendsView } from "./backends.js";
import { fill } from "./dom.js";
import { explainView } from "./explain.js";
import { frontendsView } from "./frontends.js";
import { modelsView } from "./models.js";
import { overviewView } from "./overview.js";
import { problemBox } from "./problems.js";

const POLL_MS = 2000;
// A printable ASCII token without spaces, as headers carry it (fetch() refuses anything else).
const TOKEN_SHAPE = /^[\x21-\x7e]{1,4096}$/;
const $ = (id) => document.getElementById(id);

const state = { pulls: new Map(), pullsStatus: "" };
const ctx = { refreshNow: () => tick(true) };
const views = {
  overview: overviewView(state),
  backends: backendsView(ctx),
  frontends: frontendsView(ctx),
  models: modelsView(ctx, state),
  explain: explainView(ctx),
};

let current = null;
let timer = null;
let signedInNow = false;
let feed = null;
let running = null;

async function tick(force = false) {
  if (!current) return;
  if (running) {
    if (!force) return;
    await running; // a user action: refresh again once the poll under way is done
  }
  const view = current;
  running = (async () => {
    try {
      await Promise.all([view.refresh(), showReplica()]);
      fill($("banner"));
      $("banner").hidden = true;
      $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (err.status === 401) return; // signed out already, with the reason
      $("banner").hidden = false;
      fill($("banner"), problemBox(err));
    }
  })();
  try {
    await running;
  } finally {
    running = null;
  }
}

async function showReplica() {
  const cluster = await api.get("/cluster");
  $("replica").textContent = `${cluster.Replica} (${cluster.IsLeader ? "leader" : `follower; leader ${cluster.Leader || "none"}`})`;
}

/** The next poll: every 2 s, but never more than half the time a refresh takes (a big fleet's lists
 * are large), and not while the tab is hidden. */
function schedule(delay) {
  clearTimeout(timer);
  timer = setTimeout(async () => {
    const started = performance.now();
    if (!document.hidden) await tick(false);
    if (signedInNow) schedule(Math.max(POLL_MS, 2 * (performance.now() - started)));
  }, delay);
}

function show(name) {
  const view = views[name] || views.overview;
  current = view;
  fill($("views"), view.el);
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("current", link.dataset.view === (views[name] ? name : "overview"));
  tick(true);
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const id = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(id);
      resolve();
    });
  });
}

/** Keep following /pulls/stream while signed in; reconnect when it ends or fails. */
async function followPulls(signal) {
  while (!signal.aborted) {
    let wait = 1000;
    try {
      state.pullsStatus = "stream connected";
      await api.followPulls((pull) => {
        state.pulls.set(`${pull.Backend}\u0000${pull.Model}`, pull);
        views.models.onPull(pull);
      }, signal);
      state.pullsStatus = "stream reconnecting";
    } catch (err) {
      if (signal.aborted) return;
      state.pullsStatus = err.notLeader ? "the leader streams pulls; polling here" : `stream failed: ${err.description || err.message}`;
      wait = 5000;
    }
    await sleep(wait, signal);
  }
}

function signedIn() {
  $("sign-in").hidden = true;
  $("nav").hidden = false;
  $("sign-out").hidden = false;
  $("views").hidden = false;
  feed = new AbortController();
  followPulls(feed.signal);
  signedInNow = true;
  schedule(POLL_MS);
  show(location.hash.slice(1));
}

function signOut(message) {
  api.forgetToken();
  signedInNow = false;
  clearTimeout(timer);
  timer = null;
  if (feed) feed.abort();
  feed = null;
  current = null;
  state.pulls = new Map();
  $("nav").hidden = true;
  $("sign-out").hidden = true;
  $("views").hidden = true;
  $("views").replaceChildren();
  $("replica").textContent = "";
  $("updated").textContent = "";
  $("banner").hidden = true;
  const dialog = $("editor");
  if (dialog.open) dialog.close();
  $("sign-in").hidden = false;
  const error = $("sign-in-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("token").focus();
}

api.whenUnauthorized((problem) =>
  signOut(`The control plane did not accept this admin token (401 ${problem.error}). Check it: \`ollamaflow up\` keeps its token in .ollamaflow/admin-token; otherwise it is one of OLLAMAFLOW_ADMIN_TOKENS.`),
);

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  $("sign-in-error").hidden = true;
  if (!TOKEN_SHAPE.test(token)) {
    $("sign-in-error").hidden = false;
    $("sign-in-error").textContent = "An admin token is printable ASCII without spaces (at most 4096 characters).";
    return;
  }
  try {
    await api.get("/cluster", { token });
  } catch (err) {
    if (err.status !== 401) {
      $("sign-in-error").hidden = false;
      $("sign-in-error").textContent = `Could not sign in: ${err.description}`;
    }
    return;
  }
  api.storeToken(token);
  $("token").value = "";
  signedIn();
});
$("sign-out").addEventListener("click", () => signOut(""));
window.addEventListener("hashchange", () => {
  if (signedInNow) show(location.hash.slice(1));
});

if (api.storedToken()) signedIn();
else signOut("");
