// Frontends: list, create, edit (replace, keeping every field the form does not show), delete.
import * as api from "./api.js";
import { badge, capped, fill, h, table } from "./dom.js";
import { openEditor } from "./editor.js";
import { problemBox } from "./problems.js";

const ROWS = 500;

const FRONTEND_FIELDS = [
  { name: "Identifier", label: "Identifier", required: true },
  { name: "Name", label: "Name" },
  { name: "Hostname", label: "Hostname (* for every host)" },
  { name: "LoadBalancing", label: "Load balancing", type: "select", options: ["ModelAware", "RoundRobin", "Random", "LeastConnections"] },
  { name: "TimeoutMs", label: "Timeout (ms)", type: "number" },
  { name: "QueueSize", label: "Queue size", type: "number" },
  { name: "QueueTimeoutMs", label: "Queue timeout (ms)", type: "number" },
  { name: "Backends", label: "Backends", type: "list" },
  { name: "RequiredModels", label: "Required models", type: "list" },
  { name: "UseStickySessions", label: "Sticky sessions", type: "bool" },
  { name: "AllowModelManagement", label: "Allow model management", type: "bool" },
  { name: "PullAddsRequiredModels", label: "Pull adds required models", type: "bool" },
  { name: "RequireApiKeys", label: "Require API keys", type: "bool" },
  { name: "AllowRouteExplain", label: "Anyone may explain routes", type: "bool" },
  { name: "Active", label: "Active", type: "bool" },
];
const READ_ONLY = ["Identifier", "CreatedUtc", "LastUpdateUtc"];

export function frontendsView(ctx) {
  const el = h("section", { id: "view-frontends" });
  const add = h("button", { type: "button", class: "primary", id: "add-frontend" }, "Add frontend");
  const filter = h("input", { type: "search", placeholder: "filter by id, host, backend", "aria-label": "Filter frontends" });
  const problems = h("div", { "aria-live": "polite" });
  const list = h("div");
  el.append(h("div", { class: "card" }, h("div", { class: "toolbar" }, h("h2", {}, "Frontends"), add, filter), problems, list));
  let data = [];
  let last = "";

  async function guarded(run) {
    fill(problems);
    try {
      await run();
    } catch (err) {
      fill(problems, problemBox(err));
    }
  }

  const edit = (id) => () =>
    guarded(async () => {
      const current = await api.get(api.item("frontends", id));
      openEditor({
        title: `Edit frontend ${id}`,
        fields: FRONTEND_FIELDS.map((f) => (f.name === "Identifier" ? { ...f, fixed: true } : f)),
        base: current,
        readOnly: READ_ONLY,
        save: async (body) => {
          await api.put(api.item("frontends", id), body);
          await ctx.refreshNow();
        },
      });
    });

  const remove = (id) => () =>
    guarded(async () => {
      if (!window.confirm(`Delete frontend ${id}?`)) return;
      await api.del(api.item("frontends", id));
      await ctx.refreshNow();
    });

  add.addEventListener("click", () =>
    openEditor({
      title: "Add frontend",
      fields: FRONTEND_FIELDS,
      base: { Hostname: "*", LoadBalancing: "ModelAware", Active: true },
      save: async (body) => {
        await api.put("/frontends", body);
        await ctx.refreshNow();
      },
    }),
  );
  filter.addEventListener("input", () => render(true));

  function render(force) {
    const key = JSON.stringify(data) + filter.value;
    if (!force && key === last) return;
    last = key;
    const needle = filter.value.trim().toLowerCase();
    const matching = data.filter((f) => !needle || [f.Identifier, f.Name || "", f.Hostname, ...f.Backends].some((v) => v.toLowerCase().includes(needle)));
    const [shown, note] = capped(matching, ROWS, "frontends");
    const rows = shown.map((f) => ({
      attrs: { dataset: { frontend: f.Identifier } },
      cells: [
        h("td", {}, h("strong", {}, f.Identifier), f.Name ? h("div", { class: "muted small" }, f.Name) : null),
        f.Hostname,
        f.LoadBalancing + (f.UseStickySessions ? " + sticky" : ""),
        h("td", { class: "models small" }, f.Backends.length > 8 ? `${f.Backends.length}: ${f.Backends.slice(0, 8).join(", ")}, …` : f.Backends.join(", ")),
        h("td", { class: "models small", dataset: { required: "" } }, f.RequiredModels.join(", ")),
        h("td", {}, f.Active ? badge("active", "ok") : badge("inactive", "muted"), f.AllowModelManagement ? h("div", {}, badge("model management", "warn")) : null, f.RequireApiKeys ? h("div", {}, badge("API keys", "muted")) : null),
        h("td", {}, h("div", { class: "actions" }, h("button", { type: "button", onclick: edit(f.Identifier) }, "Edit"), h("button", { type: "button", class: "danger", onclick: remove(f.Identifier) }, "Delete"))),
      ],
    }));
    fill(
      list,
      rows.length ? table(["Frontend", "Hostname", "Strategy", "Backends", "Required models", "State", ""], rows, { id: "frontends-table" }) : h("p", { class: "muted" }, data.length ? "No frontend matches the filter." : "No frontend yet: add one."),
      note,
    );
  }

  return {
    el,
    async refresh() {
      try {
        data = await api.get("/frontends");
        render(false);
      } catch (err) {
        last = "";
        fill(list, problemBox(err));
      }
    },
  };
}
