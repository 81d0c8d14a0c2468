// How the console shows a failed call: the API's own words, the field it names first.
import { h } from "./dom.js";

/** A box with an ApiProblem (or any error): "400 BadRequest", then the Description naming the field. */
export function problemBox(err) {
  if (err && err.notLeader) {
    return h(
      "div",
      { class: "notice", role: "status" },
      h("strong", {}, "Shown by the leading control plane only. "),
      err.description,
    );
  }
  const title = err && err.status ? `${err.status} ${err.error}` : (err && err.error) || "Error";
  return h(
    "div",
    { class: "problem", role: "alert" },
    h("strong", {}, title),
    h("span", { class: "description" }, err ? err.description || String(err.message || err) : ""),
    err && err.apiMessage ? h("div", { class: "muted small" }, err.apiMessage) : null,
  );
}
