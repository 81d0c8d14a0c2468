// Overview: this replica and the leader, counts, and every data plane's last report.
import * as api from "./api.js";
import { ago, badge, fill, h, sum, table } from "./dom.js";
import { problemBox } from "./problems.js";

function planeState(plane) {
  if (plane.Stopped) return badge("stopped", "muted");
  if (plane.Draining) return badge("draining", "warn");
  if (!plane.Live) return badge("silent", "bad");
  if (plane.SnapshotError) return badge("snapshot error", "bad");
  return badge("live", "ok");
}

function count(label, value, detail) {
  return h("div", { class: "count", dataset: { count: label } }, h("span", { class: "muted" }, label), h("b", {}, value), detail ? h("span", { class: "muted small" }, detail) : null);
}

export function overviewView(state) {
  const el = h("section", { id: "view-overview" });
  const counts = h("div", { class: "counts card" });
  const cluster = h("div", { class: "card" });
  const planes = h("div", { class: "card", id: "dataplanes" });
  el.append(counts, cluster, planes);
  const seen = new Map(); // data plane id -> {total, at}: requests/s between two polls

  function rate(plane, now) {
    const before = seen.get(plane.Id);
    seen.set(plane.Id, { total: plane.RequestsTotal, at: now });
    if (!before || plane.RequestsTotal < before.total || now <= before.at) return "…";
    return ((plane.RequestsTotal - before.total) / ((now - before.at) / 1000)).toFixed(1);
  }

  function renderPlanes(list) {
    const now = Date.now();
    const publishError = list.responseHeaders && list.responseHeaders.get("X-OllamaFlow-Publish-Error");
    const rows = list.map((plane) => {
      const clientErrors = sum(plane.ClientErrors);
      const errorsTitle = [`rejected (queue full or wait expired): ${plane.RejectedTotal}`, ...Object.entries(plane.ClientErrors).map(([k, n]) => `${k}: ${n}`)].join("\n");
      const ejected = Object.entries(plane.Ejected);
      return {
        attrs: { dataset: { dataplane: plane.Id } },
        cells: [
          h("td", {}, plane.Id, h("div", { class: "muted small" }, plane.Address)),
          h("td", {}, planeState(plane), plane.SnapshotError ? h("div", { class: "error small" }, plane.SnapshotError) : null),
          plane.Version,
          h("td", { class: "num", title: `published: ${plane.PublishedRevision}` }, `${plane.AppliedRevision}`, plane.PublishedRevision && plane.PublishedRevision !== plane.AppliedRevision ? h("span", { class: "muted" }, ` / ${plane.PublishedRevision}`) : null),
          h("td", { class: "num" }, String(sum(plane.InFlight))),
          h("td", { class: "num" }, String(sum(plane.Queued))),
          h("td", { class: "num", dataset: { rate: "" } }, rate(plane, now)),
          h("td", { class: "num" }, String(plane.RequestsTotal)),
          h("td", { class: "num", title: errorsTitle }, String(plane.RejectedTotal + clientErrors)),
          h("td", { title: ejected.map(([b, why]) => `${b}: ${why}`).join("\n") }, ejected.length ? badge(`${ejected.length} ejected`, "warn") : ""),
          ago(plane.LastSeenUtc),
        ],
      };
    });
    fill(
      planes,
      h("h2", {}, "Data planes"),
      publishError ? problemBox({ status: 0, error: "Publishing fails", description: publishError }) : null,
      rows.length
        ? table(["Data plane", "State", "Version", "Revision", "In flight", "Queued", "Requests/s", "Requests", "Errors", "Ejected", "Last report"], rows)
        : h("p", { class: "muted" }, "No data plane has reported yet. Start one with `ollamaflow dataplane` (or `ollamaflow up`)."),
    );
  }

  function renderCluster(info) {
    fill(
      cluster,
      h("h2", {}, "Control plane"),
      table(
        ["This replica", "Role", "Leader", "Leader's address", "Leading since", "Lease"],
        [[info.Replica, info.IsLeader ? badge("leader", "ok") : badge("follower", "muted"), info.Leader || "nobody (takeover under way)", info.LeaderAddress, info.LeaderSince ? ago(info.LeaderSince) : "", `${info.LeaseTtl} s`]],
      ),
      info.IsLeader ? null : h("p", { class: "notice" }, "This replica does not lead: backend health, models and pulls are shown by the leader only", info.LeaderAddress ? ` (${info.LeaderAddress}/console).` : "."),
    );
  }

  return {
    el,
    async refresh() {
      const results = await Promise.allSettled([
        api.get("/cluster"),
        api.get("/dataplanes"),
        api.get("/frontends"),
        api.get("/backends"),
        api.get("/backends/health"),
        api.get("/models"),
      ]);
      const [info, dataplanes, frontends, backends, health, models] = results.map((r) => (r.status === "fulfilled" ? r.value : null));
      const failed = results.find((r) => r.status === "rejected" && !r.reason.notLeader);
      if (info) renderCluster(info);
      if (dataplanes) renderPlanes(dataplanes);
      else fill(planes, h("h2", {}, "Data planes"), problemBox(results[1].reason));
      const running = [...state.pulls.values()].filter((p) => p.State !== "done" && p.State !== "failed").length;
      fill(
        counts,
        count("Frontends", frontends ? frontends.length : "—", frontends ? `${frontends.filter((f) => f.Active).length} active` : ""),
        count("Backends", backends ? backends.length : "—", health ? `${health.filter((b) => b.Healthy).length} healthy` : "health: leader only"),
        count("Data planes", dataplanes ? dataplanes.filter((p) => p.Live).length : "—", dataplanes ? `live of ${dataplanes.length} heard from` : ""),
        count("Models", models ? models.length : "—", models ? `${models.filter((m) => m.LoadedOn.length).length} loaded somewhere` : "leader only"),
        count("Pulls running", String(running), state.pullsStatus),
      );
      if (failed) counts.append(problemBox(failed.reason));
    },
  };
}
