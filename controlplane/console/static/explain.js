// Routing dry-run: POST /v1.0/frontends/{id}/explain, answered by one live data plane.
import * as api from "./api.js";
import { badge, fill, h, table } from "./dom.js";
import { problemBox } from "./problems.js";

function parseHeaders(text) {
  const headers = {};
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const colon = line.indexOf(":");
    if (colon <= 0) throw new Error(`"${line.trim()}" is not "Name: value"`);
    headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
  }
  return headers;
}

export function explainView() {
  const el = h("section", { id: "view-explain" });
  const frontend = h("select", { id: "explain-frontend", required: true });
  const model = h("input", { id: "explain-model", maxlength: "512", placeholder: "e.g. llama3.2" });
  const kind = h("select", { id: "explain-kind" }, h("option", {}, "completions"), h("option", {}, "embeddings"));
  const format = h("select", { id: "explain-format" }, h("option", {}, "Ollama"), h("option", {}, "OpenAI"));
  const headers = h("textarea", { id: "explain-headers", rows: "3", placeholder: "X-Conversation-Id: c1", class: "short" });
  const result = h("div", { id: "explain-result", "aria-live": "polite" });
  const form = h(
    "form",
    { class: "grid" },
    h("label", {}, "Frontend", frontend),
    h("label", {}, "Model", model),
    h("label", {}, "Kind", kind),
    h("label", {}, "Client API format", format),
    h("label", { class: "wide" }, "Request headers (one per line)", headers),
    h("div", {}, h("button", { type: "submit" }, "Explain")),
  );
  el.append(h("div", { class: "card" }, h("h2", {}, "Why would it go there?"), h("p", { class: "muted" }, "One live data plane answers from its current snapshot and load; nothing is sent to a backend."), form), result);
  let known = "";

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let body;
    try {
      body = { Model: model.value.trim(), Kind: kind.value, ApiFormat: format.value, Headers: parseHeaders(headers.value) };
    } catch (err) {
      fill(result, problemBox({ status: 0, error: "Headers", description: err.message }));
      return;
    }
    try {
      const answer = await api.post(`${api.item("frontends", frontend.value)}/explain`, body);
      const rows = answer.Candidates.map((c) => ({
        attrs: { dataset: { candidate: c.Backend } },
        cells: [c.Backend, c.Eligible ? badge("eligible", "ok") : badge("skipped", "muted"), c.Reason, h("td", { class: "num" }, `${c.InFlight} / ${c.Limit}`), c.Loaded ? "yes" : ""],
      }));
      fill(
        result,
        h(
          "div",
          { class: "card" },
          h("h2", {}, answer.Order.length ? `→ ${answer.Order[0]}` : `→ no backend: ${answer.Status} ${answer.Error}`),
          h("p", { class: "muted" }, `data plane ${answer.Dataplane} at revision ${answer.Revision}; frontend ${answer.Frontend}; strategy ${answer.Strategy}${answer.StickyKey ? `; sticky key ${answer.StickyKey}` : ""}`),
          h("p", {}, `Failover order: ${answer.Order.join(" → ") || "none"}`),
          table(["Backend", "", "Why", "In flight / limit", "Model loaded"], rows),
        ),
      );
    } catch (err) {
      fill(result, problemBox(err));
    }
  });

  return {
    el,
    async refresh() {
      const frontends = await api.get("/frontends");
      const ids = frontends.map((f) => f.Identifier);
      if (ids.join("\u0000") === known) return;
      known = ids.join("\u0000");
      const chosen = frontend.value;
      fill(frontend, ids.map((id) => h("option", { value: id, selected: id === chosen }, id)));
    },
  };
}
