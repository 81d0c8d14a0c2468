// Small DOM helpers. Every value from the API goes in as text (textContent, attributes), never as
// HTML, so a backend's name cannot inject markup into the console.

/** An element: h("td", {class: "num", title: "..."}, child, "text", ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace the children of ``el``. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A table with a header row; ``rows`` are arrays of cells (strings or nodes, or td elements). */
export function table(headers, rows, attrs = {}) {
  const cell = (c) => (c instanceof HTMLTableCellElement ? c : h("td", {}, c));
  return h(
    "table",
    attrs,
    h("thead", {}, h("tr", {}, headers.map((title) => h("th", { scope: "col" }, title)))),
    h("tbody", {}, rows.map((row) => h("tr", row.attrs || {}, row.cells ? row.cells.map(cell) : row.map(cell)))),
  );
}

/** A coloured word: "ok", "warn", "bad" or "muted". */
export function badge(text, kind) {
  return h("span", { class: `badge ${kind}` }, text);
}

export function sum(values) {
  return Object.values(values || {}).reduce((total, n) => total + n, 0);
}

export function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** "12 s ago" for an ISO time; "" for none. */
export function ago(iso) {
  if (!iso) return "";
  const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (Number.isNaN(seconds)) return iso;
  if (seconds < 60) return `${Math.max(seconds, 0)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  return new Date(iso).toLocaleString();
}

/** At most ``limit`` items, and a line saying how many were left out. */
export function capped(items, limit, what) {
  const shown = items.slice(0, limit);
  const note = items.length > limit ? h("p", { class: "muted" }, `showing ${limit} of ${items.length} ${what}; filter to narrow`) : null;
  return [shown, note];
}
