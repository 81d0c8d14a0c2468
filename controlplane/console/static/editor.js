// The dialog that creates and edits frontends and backends: a form for the common fields and, for
// everything else, the whole object as JSON. The API validates; its message is shown as it is.
import { h, fill } from "./dom.js";
import { problemBox } from "./problems.js";

const dialog = () => document.getElementById("editor");

function input(field, value) {
  const id = `field-${field.name}`;
  const common = { id, name: field.name, "data-field": field.name };
  if (field.type === "bool") {
    return h("label", { class: "check", for: id }, h("input", { ...common, type: "checkbox", checked: Boolean(value) }), field.label);
  }
  let control;
  if (field.type === "select") {
    control = h("select", common, field.options.map((option) => h("option", { value: option, selected: option === value }, option)));
  } else if (field.type === "list") {
    control = h("input", { ...common, type: "text", value: (value || []).join(", "), placeholder: "comma separated" });
  } else {
    control = h("input", {
      ...common,
      type: field.type === "number" ? "number" : "text",
      value: value ?? "",
      required: field.required,
      disabled: field.fixed,
    });
  }
  return h("label", { for: id, class: field.type === "list" ? "wide" : null }, field.label, control);
}

function readField(form, field) {
  const control = form.querySelector(`[data-field="${field.name}"]`);
  if (field.type === "bool") return control.checked;
  const raw = control.value.trim();
  if (field.type === "list") return raw ? raw.split(/[,\n]/).map((s) => s.trim()).filter(Boolean) : [];
  if (raw === "") return undefined;
  if (field.type === "number") return Number(raw);
  return raw;
}

/**
 * Open the editor. ``base``: the object as read (edit) or {} (create); ``fields``: the form's fields;
 * ``save(body)``: resolves when stored, throws an ApiProblem to show. Fields left empty are left out
 * of the body (the API's default applies).
 */
export function openEditor({ title, fields, base, save, readOnly = [] }) {
  // novalidate: the API checks the body (and says what is wrong); the JSON text may replace the form.
  const form = h("form", { class: "grid", method: "dialog", novalidate: true }, fields.map((f) => input(f, base[f.name])));
  const json = h("textarea", { "aria-label": "All fields as JSON", spellcheck: "false" });
  const summary = h("summary", {}, "All fields (JSON)");
  const advanced = h("details", { class: "wide" }, summary, json);
  const errors = h("div", { class: "errors", "aria-live": "polite" });
  const cancel = h("button", { type: "button" }, "Cancel");
  const submit = h("button", { type: "submit", class: "primary" }, "Save");

  const fromForm = () => {
    const body = { ...base };
    for (const name of readOnly) delete body[name];
    for (const field of fields) {
      if (field.fixed) continue;
      const value = readField(form, field);
      if (value === undefined) delete body[field.name];
      else body[field.name] = value;
    }
    return body;
  };
  // On the click that opens it, not on "toggle": that event comes a task later, and would overwrite
  // text typed (or pasted) into the box in between.
  summary.addEventListener("click", () => {
    if (!advanced.open) json.value = JSON.stringify(fromForm(), null, 2);
  });

  form.append(advanced, h("div", { class: "wide" }, errors), h("div", { class: "buttons wide" }, cancel, submit));
  const el = dialog();
  fill(el, h("h2", {}, title), form);
  cancel.addEventListener("click", () => el.close());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let body;
    if (advanced.open) {
      try {
        body = JSON.parse(json.value);
      } catch (err) {
        fill(errors, problemBox({ status: 0, error: "Not JSON", description: err.message }));
        return;
      }
    } else {
      body = fromForm();
    }
    submit.disabled = true;
    try {
      await save(body);
      el.close();
    } catch (err) {
      fill(errors, problemBox(err));
    } finally {
      submit.disabled = false;
    }
  });
  el.showModal();
}
