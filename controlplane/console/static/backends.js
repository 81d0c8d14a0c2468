// Backends: configuration joined with what the leader observes (health, models, requests in flight);
// add, edit (replace), activate/deactivate (PATCH Active) and delete.
import * as api from "./api.js";
import { ago, badge, capped, fill, h, table } from "./dom.js";
import { openEditor } from "./editor.js";
import { problemBox } from "./problems.js";

const ROWS = 500;

export const BACKEND_FIELDS = [
  { name: "Identifier", label: "Identifier", required: true },
  { name: "Name", label: "Name" },
  { name: "Hostname", label: "Hostname", required: true },
  { name: "Port", label: "Port", type: "number" },
  { name: "Ssl", label: "HTTPS (Ssl)", type: "bool" },
  { name: "ApiFormat", label: "API format", type: "select", options: ["Ollama", "OpenAI"] },
  { name: "MaxParallelRequests", label: "Max parallel requests (0: unlimited)", type: "number" },
  { name: "RateLimitRequestsThreshold", label: "Requests per second (0: unlimited)", type: "number" },
  { name: "HealthCheckUrl", label: "Health check URL" },
  { name: "Labels", label: "Labels", type: "list" },
  { name: "Active", label: "Active", type: "bool" },
];
// What a read shows but a write does not take (the Identifier comes from the URL when replacing).
const READ_ONLY = ["Identifier", "CreatedUtc", "LastUpdateUtc", "HasBearerToken", "UrlPrefix"];

function healthBadge(b) {
  if (!b) return badge("unknown", "muted");
  if (!b.Active) return badge("inactive", "muted");
  if (b.Healthy) return badge("healthy", "ok");
  if (!b.HealthChecked) return badge("not probed yet", "muted");
  return badge("unhealthy", "bad");
}

export function backendsView(ctx) {
  const el = h("section", { id: "view-backends" });
  const filter = h("input", { type: "search", placeholder: "filter by id, host, model", "aria-label": "Filter backends" });
  const add = h("button", { type: "button", class: "primary", id: "add-backend" }, "Add backend");
  const notice = h("div");
  const list = h("div");
  const problems = h("div", { "aria-live": "polite" });
  el.append(h("div", { class: "card" }, h("div", { class: "toolbar" }, h("h2", {}, "Backends"), add, filter), problems, notice, list));
  let last = "";
  let data = { backends: [], health: null };

  function edit(id) {
    return async () => {
      fill(problems);
      try {
        const current = await api.get(api.item("backends", id));
        openEditor({
          title: `Edit backend ${id}`,
          fields: BACKEND_FIELDS.map((f) => (f.name === "Identifier" ? { ...f, fixed: true } : f)),
          base: current,
          readOnly: READ_ONLY,
          save: async (body) => {
            await api.put(api.item("backends", id), body);
            await ctx.refreshNow();
          },
        });
      } catch (err) {
        fill(problems, problemBox(err));
      }
    };
  }

  function act(run) {
    return async () => {
      fill(problems);
      try {
        await run();
        await ctx.refreshNow();
      } catch (err) {
        fill(problems, problemBox(err));
      }
    };
  }

  add.addEventListener("click", () =>
    openEditor({
      title: "Add backend",
      fields: BACKEND_FIELDS,
      base: { Hostname: "", Port: 11434, ApiFormat: "Ollama", Active: true },
      save: async (body) => {
        await api.put("/backends", body);
        await ctx.refreshNow();
      },
    }),
  );
  filter.addEventListener("input", () => render(true));

  function render(force) {
    const key = JSON.stringify(data) + filter.value;
    if (!force && key === last) return;
    last = key;
    const health = new Map((data.health || []).map((b) => [b.Identifier, b]));
    const needle = filter.value.trim().toLowerCase();
    const matching = data.backends.filter((b) => {
      if (!needle) return true;
      const seen = health.get(b.Identifier);
      return [b.Identifier, b.Name || "", b.Hostname, ...(seen ? seen.Models : [])].some((v) => v.toLowerCase().includes(needle));
    });
    const [shown, note] = capped(matching, ROWS, "backends");
    const rows = shown.map((b) => {
      const seen = health.get(b.Identifier);
      const loaded = seen ? seen.ModelsLoaded.map((m) => m.Name) : [];
      return {
        attrs: { dataset: { backend: b.Identifier } },
        cells: [
          h("td", {}, h("strong", {}, b.Identifier), b.Name ? h("div", { class: "muted small" }, b.Name) : null),
          h("td", {}, `${b.Ssl ? "https" : "http"}://${b.Hostname}:${b.Port}`, h("div", { class: "muted small" }, b.ApiFormat)),
          h("td", { dataset: { health: "" }, title: seen && seen.LastError ? seen.LastError : "" }, healthBadge(seen), seen && seen.LastError ? h("div", { class: "error small" }, seen.LastError) : null),
          h("td", { class: "small", dataset: { probe: "" } }, seen ? ago(seen.LastCheckUtc) : "—", seen && seen.ProbeLatencyMs != null ? h("div", {}, `${seen.ProbeLatencyMs} ms`) : null, seen && seen.Uptime ? h("div", { class: "muted" }, `up ${seen.Uptime}`) : null),
          h("td", { class: "num", dataset: { inflight: "" } }, `${seen ? seen.ActiveRequests : "—"} / ${b.MaxParallelRequests || "unlimited"}`),
          h("td", { class: "models small", dataset: { models: "" } }, seen ? `${seen.Models.length}: ${seen.Models.slice(0, 6).join(", ")}${seen.Models.length > 6 ? ", …" : ""}` : "—", seen && seen.ModelsError ? h("div", { class: "error" }, seen.ModelsError) : null),
          h("td", { class: "models small" }, loaded.join(", ")),
          h(
            "td",
            {},
            h(
              "div",
              { class: "actions" },
              h("button", { type: "button", onclick: edit(b.Identifier) }, "Edit"),
              h("button", { type: "button", onclick: act(() => api.patch(api.item("backends", b.Identifier), { Active: !b.Active })) }, b.Active ? "Deactivate" : "Activate"),
              h(
                "button",
                {
                  type: "button",
                  class: "danger",
                  onclick: act(async () => {
                    if (window.confirm(`Delete backend ${b.Identifier}?`)) await api.del(api.item("backends", b.Identifier));
                  }),
                },
                "Delete",
              ),
            ),
          ),
        ],
      };
    });
    fill(
      list,
      rows.length
        ? table(["Backend", "Address", "Health", "Last probe, latency", "In flight / limit", "Models present", "Loaded", ""], rows, { id: "backends-table" })
        : h("p", { class: "muted" }, data.backends.length ? "No backend matches the filter." : "No backend yet: add one."),
      note,
    );
  }

  return {
    el,
    async refresh() {
      const [backends, health] = await Promise.allSettled([api.get("/backends"), api.get("/backends/health")]);
      if (backends.status === "rejected") {
        fill(list, problemBox(backends.reason));
        last = "";
        return;
      }
      fill(notice, health.status === "rejected" ? problemBox(health.reason) : null);
      data = { backends: backends.value, health: health.status === "fulfilled" ? health.value : null };
      render(false);
    },
  };
}
