// Models across the fleet, the pulls with their live progress (from /pulls/stream), and a way to
// start one: adding the model to a frontend's RequiredModels, which the leader then pulls onto that
// frontend's Ollama backends that lack it.
import * as api from "./api.js";
import { ago, badge, bytes, capped, fill, h, table } from "./dom.js";
import { problemBox } from "./problems.js";

const ROWS = 500;

const pullKey = (p) => `${p.Backend}\u0000${p.Model}`;

function stateBadge(state) {
  if (state === "done") return badge("done", "ok");
  if (state === "failed") return badge("failed", "bad");
  if (state === "pulling") return badge("pulling", "warn");
  return badge(state, "muted");
}

export function modelsView(ctx, state) {
  const el = h("section", { id: "view-models" });
  const modelName = h("input", { id: "pull-model", name: "model", required: true, maxlength: "256", placeholder: "e.g. qwen3:0.6b" });
  const frontendSelect = h("select", { id: "pull-frontend", name: "frontend", required: true });
  const pullResult = h("div", { "aria-live": "polite" });
  const pullForm = h(
    "form",
    { class: "grid", id: "pull-form" },
    h("label", {}, "Model", modelName),
    h("label", {}, "Onto the backends of frontend", frontendSelect),
    h("div", {}, h("button", { type: "submit" }, "Pull")),
    h("p", { class: "muted small wide" }, "Adds the model to the frontend's RequiredModels (PATCH /v1.0/frontends/{id}); the leading control plane pulls it onto that frontend's Ollama backends that lack it, and onto those that join later. Remove it there to stop requiring it."),
  );
  const pullsBox = h("div", { id: "pulls" });
  const modelsBox = h("div", { id: "models" });
  el.append(
    h("div", { class: "card" }, h("h2", {}, "Pull a model"), pullForm, pullResult),
    h("div", { class: "card" }, h("h2", {}, "Pulls"), pullsBox),
    h("div", { class: "card" }, h("h2", {}, "Models across the fleet"), modelsBox),
  );
  let frontendIds = [];
  let pullsProblem = null;
  let scheduled = false;

  pullForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const model = modelName.value.trim();
    const id = frontendSelect.value;
    fill(pullResult);
    try {
      const frontend = await api.get(api.item("frontends", id));
      const known = frontend.RequiredModels.some((m) => m.toLowerCase() === model.toLowerCase());
      if (!known) await api.patch(api.item("frontends", id), { RequiredModels: [...frontend.RequiredModels, model] });
      fill(pullResult, h("p", { class: "notice" }, known ? `${model} is already required by ${id}; missing copies are being pulled.` : `${model} added to ${id}'s RequiredModels: the pull starts on each of its backends that lacks it.`));
      modelName.value = "";
    } catch (err) {
      fill(pullResult, problemBox(err));
    }
  });

  function renderPulls() {
    scheduled = false;
    const pulls = [...state.pulls.values()].sort((a, b) => pullKey(a).localeCompare(pullKey(b)));
    const [shown, note] = capped(pulls, ROWS, "pulls");
    const rows = shown.map((p) => ({
      attrs: { dataset: { pull: `${p.Backend}/${p.Model}`, state: p.State } },
      cells: [
        p.Model,
        p.Backend,
        h("td", {}, stateBadge(p.State), h("div", { class: "muted small" }, p.Status)),
        h("td", {}, h("progress", { max: p.TotalBytes || 1, value: p.TotalBytes ? p.CompletedBytes : 0 }), " ", h("span", { class: "small", dataset: { progress: "" } }, p.TotalBytes ? `${bytes(p.CompletedBytes)} of ${bytes(p.TotalBytes)} (${Math.floor((100 * p.CompletedBytes) / p.TotalBytes)}%)` : "")),
        h("td", { class: "num" }, String(p.Attempts)),
        h("td", { class: "error small" }, p.Error),
        ago(p.UpdatedUtc),
      ],
    }));
    fill(
      pullsBox,
      h("p", { class: "muted small" }, state.pullsStatus || "stream connecting"),
      pullsProblem ? problemBox(pullsProblem) : null,
      rows.length ? table(["Model", "Backend", "State", "Progress", "Attempts", "Error", "Updated"], rows, { id: "pulls-table" }) : h("p", { class: "muted" }, "No pull under way or recently finished."),
      note,
    );
  }

  function renderModels(models) {
    const [shown, note] = capped(models, ROWS, "models");
    const rows = shown.map((m) => ({
      attrs: { dataset: { model: m.Name } },
      cells: [
        h("td", {}, h("strong", {}, m.Name)),
        h("td", { class: "models small" }, m.AvailableOn.join(", ")),
        h("td", { class: "models small" }, m.LoadedOn.map((l) => `${l.Backend}${l.SizeVram ? ` (${bytes(l.SizeVram)})` : ""}`).join(", ")),
        h("td", { class: "models small" }, m.RequiredOn.join(", ")),
        h("td", { class: "models small" }, m.MissingOn.length ? badge(m.MissingOn.join(", "), "warn") : ""),
      ],
    }));
    fill(modelsBox, rows.length ? table(["Model", "Present on", "Loaded on", "Required on", "Missing on"], rows, { id: "models-table" }) : h("p", { class: "muted" }, "No model seen on any backend yet."), note);
  }

  return {
    el,
    /** A pull changed (from the stream): show it without waiting for the next poll. */
    onPull() {
      if (!scheduled && el.isConnected) {
        scheduled = true;
        requestAnimationFrame(renderPulls);
      }
    },
    async refresh() {
      const [models, pulls, frontends] = await Promise.allSettled([api.get("/models"), api.get("/pulls"), api.get("/frontends")]);
      if (models.status === "fulfilled") renderModels(models.value);
      else fill(modelsBox, problemBox(models.reason));
      if (pulls.status === "fulfilled") {
        pullsProblem = null;
        // The poll drops finished jobs the leader forgot; the stream may hold a newer state of the rest.
        const fresh = new Map();
        for (const p of pulls.value) {
          const streamed = state.pulls.get(pullKey(p));
          fresh.set(pullKey(p), streamed && streamed.UpdatedUtc > p.UpdatedUtc ? streamed : p);
        }
        state.pulls = fresh;
      } else {
        pullsProblem = pulls.reason;
      }
      renderPulls();
      if (frontends.status === "fulfilled") {
        const ids = frontends.value.map((f) => f.Identifier);
        if (ids.join("\u0000") !== frontendIds.join("\u0000")) {
          const chosen = frontendSelect.value;
          frontendIds = ids;
          fill(frontendSelect, ids.map((id) => h("option", { value: id, selected: id === chosen }, id)));
        }
      }
    },
  };
}
