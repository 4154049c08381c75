// The upload page: check a CSV, create its hospitals (a file over the batch limit as an import),
// follow the batch or import live, fix failed rows, cancel, resume or roll back, and download the results.
"use strict";

const FINAL = ["completed", "partially_failed", "failed", "interrupted", "rolled_back"];
const RESUMABLE = ["partially_failed", "failed", "interrupted"];
const IMPORT_FINAL = FINAL.concat(["cancelled"]);
const IMPORT_RESUMABLE = RESUMABLE.concat(["cancelled"]);
// Rows that do not exist upstream: what failed.csv lists.
const NOT_CREATED = ["failed", "pending", "cancelled"];
const FIELDS = ["name", "address", "phone"];
// The contract's status names, as people say them; any other name reads with spaces for underscores.
const WORDS = {
  in_progress: "in progress",
  created: "created, not active yet",
  created_and_activated: "created and activated",
  partially_failed: "partially failed",
  rolled_back: "rolled back",
};
const TOKEN_KEY = "bulkproc.token";

const page = document.getElementById("app");
const urls = {
  validate: page.dataset.validateUrl,
  batches: page.dataset.batchesUrl,
  imports: page.dataset.importsUrl,
};
const MAX_ROWS = Number(page.dataset.maxRows);

let currentDoc = null;
let currentImport = null;
let events = null;

// A failure to show the user: one sentence plus optional {row, column, message} details.
class PageError extends Error {
  constructor(message, details) {
    super(message);
    this.details = details || [];
  }
}

function $(id) {
  return document.getElementById(id);
}

function words(status) {
  return WORDS[status] || String(status).replaceAll("_", " ");
}

// --- talking to the service -------------------------------------------------

function authHeaders() {
  const token = $("token") ? $("token").value.trim() : "";
  return token ? { Authorization: "Bearer " + token } : {};
}

function chosenFile() {
  const file = $("file").files[0];
  if (!file) {
    throw new PageError("Choose a CSV file first.");
  }
  return file;
}

async function send(method, url, file, json) {
  let body;
  const headers = authHeaders();
  if (file) {
    body = new FormData();
    body.append("file", file);
    appendReadingFields(body);
  } else if (json) {
    body = JSON.stringify(json);
    headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(url, { method: method, headers: headers, body: body });
  } catch (err) {
    throw new PageError("Could not reach the service. Check your connection and try again.");
  }
  const data = await readJson(response);
  if (!response.ok) {
    throw errorFrom(response.status, data);
  }
  return { status: response.status, data: data };
}

async function readJson(response) {
  try {
    return await response.json();
  } catch (err) {
    return null;
  }
}

function errorFrom(status, data) {
  const fallback = {
    400: "The request was not understood.",
    401: "The API token is missing or wrong.",
    404: "That batch does not exist.",
    409: "The batch is busy or already rolled back; try again in a moment.",
    413: "The file is too large.",
    422: "The file was refused.",
  };
  let message = (data && data.error) || fallback[status] || "The service answered with an error (" + status + ").";
  if (status === 401 && $("token")) {
    message = "The API token is missing or wrong: enter it in the API token field.";
  }
  const err = new PageError(message, data && data.details);
  err.status = status;
  return err;
}

function batchUrl(id, suffix) {
  return urls.batches + "/" + encodeURIComponent(id) + (suffix || "");
}

function importUrl(id, suffix) {
  return urls.imports + "/" + encodeURIComponent(id) + (suffix || "");
}

// --- drawing ------------------------------------------------------------------

// A cell; `label` names its column where narrow screens show each row as a card.
function cell(text, label) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (label) td.dataset.label = label;
  return td;
}

function fillTable(table, rows, toCells) {
  const tbody = table.querySelector("tbody");
  tbody.replaceChildren();
  for (const row of rows) {
    const tr = document.createElement("tr");
    tr.append(...toCells(row));
    tbody.append(tr);
  }
}

function showError(err) {
  const box = $("error");
  const title = document.createElement("p");
  title.textContent = err.message;
  box.replaceChildren(title);
  if (err.details && err.details.length) {
    const list = document.createElement("ul");
    for (const d of err.details) {
      const item = document.createElement("li");
      item.textContent = describeProblem(d);
      list.append(item);
    }
    box.append(list);
  }
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").replaceChildren();
}

function describeProblem(problem) {
  const where = [];
  if (problem.row !== null && problem.row !== undefined) where.push("Row " + problem.row);
  if (problem.column) where.push("column " + problem.column);
  return (where.length ? where.join(", ") + ": " : "") + problem.message;
}

function showValidation(result) {
  showReading(result.file, result.errors);
  const count = result.total_hospitals + (result.total_hospitals === 1 ? " hospital" : " hospitals");
  if (result.valid) {
    const batches = Math.ceil(result.total_hospitals / MAX_ROWS);
    const split = batches > 1 ? " It will be imported in " + batches + " batches of at most " + MAX_ROWS + " rows." : "";
    showCheck("Valid, " + count + "." + split, [], result.hospitals);
  } else {
    const n = result.errors.length;
    showCheck("Not valid: " + n + (n === 1 ? " problem" : " problems") + " to fix.", result.errors, []);
  }
}

// The check section, with either the problems or the rows; a refused upload's problems go here
// too, so that they are listed once, in one table, whichever button found them.
function showCheck(title, problems, hospitals) {
  $("validation").hidden = false;
  $("batch").hidden = true;
  $("import").hidden = true;
  $("validation-result").textContent = title;
  $("validation-result").className = problems.length ? "bad" : "ok";
  fillTable($("problems"), problems, (p) => [cell(p.row), cell(p.column), cell(p.message), cell(p.line)]);
  fillTable($("preview"), hospitals, (h) => [cell(h.row, "Row"), cell(h.name, "Name"), cell(h.address, "Address"),
                                             cell(h.phone, "Phone")]);
  $("problems-wrap").hidden = !problems.length;
  $("preview-wrap").hidden = !!problems.length;
}

function statusCell(row) {
  const td = cell("", "Status");
  const word = document.createElement("span");
  word.className = "status status-" + row.status;
  word.dataset.status = row.status;
  word.textContent = words(row.status);
  td.append(word);
  return td;
}

function showBatch(doc) {
  currentDoc = doc;
  $("validation").hidden = true;
  $("import").hidden = true;
  $("batch").hidden = false;
  $("batch-id").textContent = doc.batch_id;
  const done = doc.processed_hospitals + doc.failed_hospitals;
  $("progress").max = Math.max(doc.total_hospitals, 1);
  $("progress").value = done;
  $("progress").hidden = doc.status === "rolled_back";
  $("counter").textContent = counterText(doc);
  const editable = RESUMABLE.includes(doc.status);
  fillTable($("rows"), doc.hospitals, (r) => [
    cell(r.row, "Row"), cell(r.name, "Name"), statusCell(r), cell(r.hospital_id, "Hospital id"),
    cell(r.error, "Error"), actionCell(r, editable),
  ]);
  $("summary").textContent = summaryText(doc);
  $("summary").className = "summary summary-" + doc.status;
  showDownloads(doc);
  showBatchActions(doc.status);
}

function actionCell(row, editable) {
  const td = cell("");
  td.className = "row-actions";
  if (editable && row.status === "failed") {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "edit";
    button.textContent = "Edit";
    button.setAttribute("aria-label", "Edit row " + row.row);
    button.addEventListener("click", () => run(() => openEditor(row.row)));
    td.append(button);
  }
  return td;
}

function counterText(doc) {
  if (doc.status === "rolled_back") return "";  // the summary says it all
  const done = doc.processed_hospitals + doc.failed_hospitals;
  let text = done + " of " + doc.total_hospitals + " rows done: " + doc.processed_hospitals + " created";
  if (doc.failed_hospitals) text += ", " + doc.failed_hospitals + " failed";
  return text + ".";
}

function summaryText(doc) {
  if (!FINAL.includes(doc.status)) {
    return "Status: " + words(doc.status) + "…";
  }
  // A rollback undoes the creation, so its time and activation no longer describe anything.
  if (doc.status === "rolled_back") {
    return "Batch rolled back: its hospitals were deleted from the directory.";
  }
  const seconds = Number(doc.processing_time_seconds || 0).toFixed(2);
  const activated = doc.batch_activated ? "batch activated" : "batch not activated";
  let text = "Batch " + words(doc.status) + " in " + seconds + " s, " + activated + ".";
  if (doc.error) text += " " + doc.error;
  if (RESUMABLE.includes(doc.status)) {
    text += doc.failed_hospitals
      ? " Fix the failed rows here or in the downloaded file, then resume to create the missing rows."
      : " You can resume it to create the missing rows.";
  }
  return text;
}

function showDownloads(doc) {
  const final = FINAL.includes(doc.status);
  $("downloads").hidden = !final;
  $("download-results").href = batchUrl(doc.batch_id, "/results.csv");
  $("download-failed").href = batchUrl(doc.batch_id, "/failed.csv");
  $("download-failed").hidden = !(final && doc.hospitals.some((r) => NOT_CREATED.includes(r.status)));
}

function showBatchActions(status) {
  $("resume").hidden = !RESUMABLE.includes(status);
  $("rollback").hidden = !FINAL.includes(status) || status === "rolled_back";
}

function showNotice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

// --- fixing a failed row -----------------------------------------------------

// The row's stored values, read from results.csv (the batch document carries only the name).
async function storedValues(number) {
  let response;
  try {
    response = await fetch(batchUrl(currentDoc.batch_id, "/results.csv"), { headers: authHeaders() });
  } catch (err) {
    throw new PageError("Could not reach the service. Check your connection and try again.");
  }
  if (!response.ok) {
    throw errorFrom(response.status, await readJson(response));
  }
  const [header, ...lines] = parseCsv(await response.text());
  const line = lines.find((cells) => cells[header.indexOf("row")] === String(number));
  const values = {};
  for (const field of FIELDS) {
    values[field] = line ? unneutralise(line[header.indexOf(field)] || "") : "";
  }
  return values;
}

// RFC 4180, as results.csv is written: quoted fields may hold commas, quotes and line breaks.
function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted && c === '"' && text[i + 1] === '"') {
      field += '"';
      i++;
    } else if (c === '"') {
      quoted = !quoted;
    } else if (!quoted && c === ",") {
      row.push(field);
      field = "";
    } else if (!quoted && c === "\n") {
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
    } else if (quoted || c !== "\r") {
      field += c;
    }
  }
  if (field || row.length) rows.push([...row, field]);
  return rows;
}

// The result files put a quote before a cell a spreadsheet would run as a formula; take it off.
function unneutralise(value) {
  return value.startsWith("'") && "=+-@\t\r".includes(value.charAt(1)) ? value.slice(1) : value;
}

async function openEditor(number) {
  closeEditor();
  showNotice("");
  const values = await storedValues(number);
  const tr = [...$("rows").querySelectorAll("tbody tr")].find((r) => r.firstChild.textContent === String(number));
  if (!tr) {
    setBusy(false);
    return;
  }
  const editor = document.createElement("tr");
  editor.className = "editor";
  const td = document.createElement("td");
  td.colSpan = 6;
  td.append(editorForm(number, values));
  editor.append(td);
  tr.after(editor);
  setBusy(false);
  editor.querySelector("input").focus();
}

function editorForm(number, values) {
  const form = document.createElement("form");
  form.noValidate = true;
  const fieldset = document.createElement("fieldset");
  const legend = document.createElement("legend");
  legend.textContent = "Fix row " + number;
  fieldset.append(legend);
  for (const field of FIELDS) {
    fieldset.append(editorField(number, field, values[field]));
  }
  const formError = document.createElement("p");
  formError.className = "field-error";
  formError.id = "edit-error";
  formError.setAttribute("role", "alert");
  formError.hidden = true;
  const actions = document.createElement("div");
  actions.className = "actions";
  actions.append(button("Save", "save primary", "submit"), button("Cancel", "cancel", "button", closeEditor));
  fieldset.append(formError, actions);
  form.append(fieldset);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    saveRow(form, number);
  });
  return form;
}

function editorField(number, field, value) {
  const id = "edit-" + field;
  const wrap = document.createElement("div");
  wrap.className = "field";
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = field.charAt(0).toUpperCase() + field.slice(1) + (field === "phone" ? " (optional)" : "");
  const input = document.createElement("input");
  Object.assign(input, { id: id, name: field, type: field === "phone" ? "tel" : "text", value: value });
  input.autocomplete = "off";
  const error = document.createElement("p");
  error.className = "field-error";
  error.id = id + "-error";
  error.hidden = true;
  input.setAttribute("aria-describedby", error.id);
  wrap.append(label, input, error);
  return wrap;
}

function button(text, className, type, onClick) {
  const b = document.createElement("button");
  b.type = type;
  b.className = className;
  b.textContent = text;
  if (onClick) b.addEventListener("click", onClick);
  return b;
}

function closeEditor() {
  const editor = $("rows").querySelector("tr.editor");
  if (editor) editor.remove();
}

async function saveRow(form, number) {
  const changes = {};
  for (const field of FIELDS) changes[field] = form.elements[field].value;
  showFieldErrors(form, []);
  form.querySelector("button.save").disabled = true;
  try {
    const result = await send("PATCH", batchUrl(currentDoc.batch_id, "/rows/" + number), null, changes);
    showBatch(result.data);
    showNotice("Row " + number + " saved. Resume the batch to create it with the new values.");
    $("resume").focus();
  } catch (err) {
    form.querySelector("button.save").disabled = false;
    showFieldErrors(form, err.details && err.details.length ? err.details : [{ column: null, message: err.message }]);
  }
}

// Each problem next to its field; one that names no field of the form, under the fields.
function showFieldErrors(form, details) {
  const general = [];
  for (const p of form.querySelectorAll(".field-error")) {
    p.hidden = true;
    p.textContent = "";
  }
  for (const field of FIELDS) form.elements[field].removeAttribute("aria-invalid");
  for (const d of details) {
    if (FIELDS.includes(d.column)) {
      const p = form.querySelector("#edit-" + d.column + "-error");
      p.textContent = [p.textContent, d.message].filter(Boolean).join(" ");
      p.hidden = false;
      form.elements[d.column].setAttribute("aria-invalid", "true");
    } else {
      general.push(d.message);
    }
  }
  const p = form.querySelector("#edit-error");
  p.textContent = general.join(" ");
  p.hidden = !general.length;
  const first = form.querySelector("[aria-invalid=true]");
  if (first) first.focus();
}

function setBusy(busy) {
  // The import's Cancel button stays usable while the import runs: that is when it is needed.
  for (const id of ["check", "create", "resume", "rollback", "import-resume", "import-rollback"]) {
    $(id).disabled = busy;
  }
  for (const edit of $("rows").querySelectorAll("button.edit")) {
    edit.disabled = busy;
  }
}

// --- following a batch -------------------------------------------------------

// Live progress comes from the event stream. EventSource cannot send the API token, and a
// server at its stream limit refuses the stream (503): in both cases the page asks for the
// batch's document every POLL_MS instead, with the token, until the batch is final.
const POLL_MS = 1000;
let polling = null;

// A followed thing: a batch or an import, with where its document lives and how to show it.
const BATCH = { url: (id) => batchUrl(id), show: (doc) => showBatch(doc), final: FINAL };
const IMPORT = {
  url: (id) => importUrl(id),
  show: (doc) => {
    doc.cancelling = currentImport && currentImport.import_id === doc.import_id && currentImport.cancelling;
    showImport(doc);
  },
  final: IMPORT_FINAL,
};

function follow(id, kind = BATCH) {
  stopFollowing();
  setBusy(true);
  if (authHeaders().Authorization) {
    poll(id, kind);
    return;
  }
  events = new EventSource(kind.url(id) + "/events");
  events.onmessage = (message) => {
    const doc = JSON.parse(message.data);
    kind.show(doc);
    if (kind.final.includes(doc.status)) {
      stopFollowing();
      setBusy(false);
    }
  };
  // While open, EventSource reconnects by itself; CLOSED means the stream was refused or lost.
  events.onerror = () => {
    if (events && events.readyState === EventSource.CLOSED) {
      poll(id, kind);
    }
  };
}

function poll(id, kind) {
  stopFollowing();
  const mine = { stopped: false };
  polling = mine;
  const tick = async () => {
    try {
      const doc = (await send("GET", kind.url(id))).data;
      if (mine.stopped) return;
      kind.show(doc);
      if (kind.final.includes(doc.status)) {
        stopFollowing();
        setBusy(false);
        return;
      }
    } catch (err) {
      if (mine.stopped) return;
      if (err.status !== 503) {  // 503: the server is busy or its store is back soon; keep asking
        stopFollowing();
        setBusy(false);
        showError(err);
        return;
      }
    }
    mine.timer = setTimeout(tick, POLL_MS);
  };
  tick();
}

function stopFollowing() {
  if (events) {
    events.close();
    events = null;
  }
  if (polling) {
    polling.stopped = true;
    clearTimeout(polling.timer);
    polling = null;
  }
}

// --- imports: a file over the batch limit -----------------------------------

function showImport(doc) {
  currentImport = doc;
  $("validation").hidden = true;
  $("batch").hidden = true;
  $("import").hidden = false;
  $("import-id").textContent = doc.import_id;
  $("import-progress").max = Math.max(doc.total_hospitals, 1);
  $("import-progress").value = doc.processed_hospitals + doc.failed_hospitals;
  $("import-progress").hidden = doc.status === "rolled_back";
  $("import-counter").textContent = counterText(doc);
  $("import-remaining").textContent = remainingText(doc.estimated_seconds_remaining);
  fillTable($("import-batches"), doc.batches, (b) => [
    cell(b.first_row + "–" + b.last_row, "Rows"), statusCell(b),
    cell(b.processed_hospitals + " of " + b.total_hospitals, "Created"), cell(b.failed_hospitals, "Failed"),
    cell(b.batch_id, "Batch"),
  ]);
  $("import-summary").textContent = importSummaryText(doc);
  $("import-summary").className = "summary summary-" + doc.status;
  const final = IMPORT_FINAL.includes(doc.status);
  $("import-downloads").hidden = !final;
  $("import-download-results").href = importUrl(doc.import_id, "/results.csv");
  $("import-download-failed").href = importUrl(doc.import_id, "/failed.csv");
  $("import-download-failed").hidden = !(final && doc.processed_hospitals < doc.total_hospitals);
  $("import-cancel").hidden = final || doc.cancelling === true;
  $("import-resume").hidden = !IMPORT_RESUMABLE.includes(doc.status);
  $("import-rollback").hidden = !final || doc.status === "rolled_back";
}

// The estimate counts the rate limit and the rows left; other uploads may take part of the budget.
function remainingText(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.max(1, Math.round(seconds));
  const minutes = Math.floor(s / 60);
  const text = minutes ? minutes + " min" + (s % 60 ? " " + (s % 60) + " s" : "") : s + " s";
  return "About " + text + " left at the directory's rate limit.";
}

function importSummaryText(doc) {
  if (!IMPORT_FINAL.includes(doc.status)) {
    return "Status: " + words(doc.status) + "…";
  }
  const seconds = Number(doc.processing_time_seconds || 0).toFixed(1);
  const created = doc.processed_hospitals + " of " + doc.total_hospitals + " hospitals created";
  const texts = {
    completed: "Import completed in " + seconds + " s: " + created + ", every batch activated.",
    partially_failed: "Import partially failed: " + created + ", " + doc.failed_hospitals + " failed. " +
      "Fix the failed rows in the downloaded file and upload it, or resume the import to try them again.",
    failed: "Import failed: no hospital was created. Resume it to try again.",
    cancelled: "Import cancelled: " + created + "; the rows not started were not sent. Resume it to create them.",
    interrupted: "Import interrupted: the service stopped while it ran; " + created + ". Resume it to go on.",
    rolled_back: "Import rolled back: its hospitals were deleted from the directory.",
  };
  return texts[doc.status];
}

async function createImport(file) {
  let result;
  try {
    result = await send("POST", urls.imports, file);
  } catch (err) {
    if (err.status !== 422 || !err.details.length) throw err;
    showCheck(err.message, err.details, []);
    setBusy(false);
    return;
  }
  showImport(result.data);
  follow(result.data.import_id, IMPORT);
}

async function cancelImport() {
  const result = await send("POST", importUrl(currentImport.import_id, "/cancel"));
  result.data.cancelling = true;
  showImport(result.data);
  $("import-summary").textContent = "Cancelling: no more rows start; the ones already sent finish first.";
  if (!events) setBusy(false);  // the stream, if any, ends at the final state and frees the buttons
}

async function resumeImport() {
  await resumeAndFollow(currentImport.import_id, IMPORT, "/resume");
}

async function rollBackImport() {
  if (!window.confirm("Delete every hospital of this import from the directory?")) {
    setBusy(false);
    return;
  }
  $("import-summary").textContent = "Rolling back…";
  const before = currentImport;
  try {
    showImport((await send("DELETE", importUrl(before.import_id))).data);
  } catch (err) {
    showImport(before);
    throw err;
  }
  setBusy(false);
}

// --- actions -----------------------------------------------------------------

async function run(action) {
  clearError();
  setBusy(true);
  try {
    await action();
  } catch (err) {
    setBusy(false);
    showError(err instanceof PageError ? err : new PageError("Something went wrong: " + err.message));
  }
}

async function check() {
  const result = await send("POST", urls.validate, chosenFile());
  showValidation(result.data);
  setBusy(false);
}

async function create() {
  const file = chosenFile();
  if ((await rowsInFile(file)) > MAX_ROWS) {
    await createImport(file);
    return;
  }
  let result;
  try {
    result = await send("POST", urls.batches + "?async=1", chosenFile());
  } catch (err) {
    if (err.status !== 422 || !err.details.length) throw err;
    showCheck(err.message, err.details, []);
    setBusy(false);
    return;
  }
  showBatch(result.data);
  follow(result.data.batch_id);
}

async function resume() {
  closeEditor();
  showNotice("");
  await resumeAndFollow(currentDoc.batch_id, BATCH, "/resume?async=1");
}

// A resume answers 202 while it runs (follow it), or 200 when there was nothing left to do.
async function resumeAndFollow(id, kind, path) {
  const result = await send("POST", kind.url(id) + path);
  kind.show(result.data);
  if (result.status === 202) {
    follow(id, kind);
  } else {
    setBusy(false);
  }
}

async function rollBack() {
  if (!window.confirm("Delete every hospital of this batch from the directory?")) {
    setBusy(false);
    return;
  }
  const before = currentDoc;
  closeEditor();
  showNotice("");
  $("summary").textContent = "Rolling back…";
  try {
    const result = await send("DELETE", batchUrl(before.batch_id));
    showBatch(result.data);
  } catch (err) {
    showBatch(before);
    throw err;
  }
  setBusy(false);
}

// A link cannot send the API token: with one, a download is fetched with it and saved from memory.
async function download(link) {
  const response = await fetch(link.href, { headers: authHeaders() });
  if (!response.ok) {
    throw errorFrom(response.status, await readJson(response));
  }
  const saved = document.createElement("a");
  saved.href = URL.createObjectURL(await response.blob());
  saved.download = (response.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/)?.[1] || "results.csv";
  saved.click();
  setTimeout(() => URL.revokeObjectURL(saved.href), 1000);
}

// --- how the file was read: columns, encoding, sheet (issue 14) --------------
// A check's answer says how the service read the file (`file`). When it could not read it as
// meant (another encoding, another sheet, a header in words it does not know), the person picks
// here and the file is checked again; the choices go with the upload too.

const ENCODINGS = ["windows-1252", "iso-8859-1", "windows-1250", "mac-roman", "windows-1251", "utf-16le",
  "utf-16be", "shift_jis"];
const FIELD_WORDS = { name: "name", address: "address", address2: "address line 2", city: "city", state: "state",
  postal_code: "postal code", phone: "phone" };
const DELIMITER_WORDS = { ",": "commas", ";": "semicolons", "\t": "tabs", "|": "| signs" };
const FORMAT_WORDS = { csv: "a CSV file", xlsx: "an Excel workbook", xlsb: "an Excel binary workbook",
  xls: "an Excel 97-2003 workbook", ods: "an OpenDocument spreadsheet" };
let reading = { encoding: "", sheet: "", columns: {} };

function appendReadingFields(form) {
  if (reading.encoding) form.append("encoding", reading.encoding);
  if (reading.sheet) form.append("sheet", reading.sheet);
  if (Object.keys(reading.columns).length) form.append("columns", JSON.stringify(reading.columns));
}

// Rows in the file as the service counts them, whatever its format (a workbook is no text to count).
async function rowsInFile(file) {
  return (await send("POST", urls.validate, file)).data.total_hospitals;
}

function showReading(file, errors) {
  $("file-reading").hidden = !file;
  if (!file) return;
  $("file-read-as").textContent = readAsText(file);
  const matched = Object.entries(file.columns || {});
  $("file-columns").textContent = matched.length
    ? "Columns: " + matched.map(([header, field]) => header + " → " + (FIELD_WORDS[field] || field)).join(", ") + "."
    : file.format && !file.header ? "No header row: each row is read as name, address and phone, in that order." : "";
  const ignored = file.ignored_columns || [];
  $("file-ignored").textContent = ignored.length ? "Not read: " + ignored.join(", ") + "." : "";
  showEncodingChoice(file);
  showSheetChoice(file, errors || []);
  showColumnChoices(file);
}

function readAsText(file) {
  if (!file.format) return "";
  let text = "Read as " + (FORMAT_WORDS[file.format] || file.format);
  if (file.encoding) text += " in " + file.encoding.toUpperCase();
  if (file.delimiter) text += ", fields separated by " + (DELIMITER_WORDS[file.delimiter] || file.delimiter);
  if (file.sheet) text += ", sheet “" + file.sheet + "”";
  return text + ".";
}

function options(select, values, chosen, first) {
  select.replaceChildren();
  for (const [value, label] of (first ? [first] : []).concat(values.map((v) => [v, v]))) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = label;
    option.selected = value === chosen;
    select.append(option);
  }
}

// Shown when the text is not UTF-8 (the service names the likely encoding) or one was chosen.
function showEncodingChoice(file) {
  const suggested = file.suggested_encoding;
  $("encoding-field").hidden = !suggested && !reading.encoding;
  if ($("encoding-field").hidden) return;
  const names = ENCODINGS.includes(suggested) || !suggested ? ENCODINGS : [suggested].concat(ENCODINGS);
  options($("encoding"), names, reading.encoding, ["", "Choose the encoding" + (suggested ? " (likely " + suggested + ")" : "")]);
}

// Shown for a workbook of several sheets, or when the sheet asked for is not there.
function showSheetChoice(file, errors) {
  const sheets = file.sheets || [];
  const missing = errors.some((e) => e.row === null && /has no sheet/.test(e.message));
  $("sheet-field").hidden = sheets.length < 2 && !missing;
  if (!$("sheet-field").hidden) options($("sheet"), sheets, file.sheet || sheets[0]);
}

// A header without a name or an address column: which of its other columns holds it?
function showColumnChoices(file) {
  const box = $("column-fields");
  box.replaceChildren();
  if (!file.header) return;
  const found = Object.values(file.columns || {});
  const candidates = (file.ignored_columns || []).concat(Object.keys(file.columns || {}));
  for (const field of ["name", "address"].filter((f) => !found.includes(f))) {
    const wrap = document.createElement("div");
    wrap.className = "field";
    const label = document.createElement("label");
    label.htmlFor = "column-" + field;
    label.textContent = "Which column holds the " + FIELD_WORDS[field] + "?";
    const select = document.createElement("select");
    select.id = "column-" + field;
    options(select, candidates, "", ["", "Choose a column"]);
    select.addEventListener("change", () => {
      if (!select.value) return;
      reading.columns[select.value] = field;
      run(check);
    });
    wrap.append(label, select);
    box.append(wrap);
  }
}

$("encoding").addEventListener("change", () => {
  reading.encoding = $("encoding").value;
  run(check);
});
$("sheet").addEventListener("change", () => {
  reading.sheet = $("sheet").value;
  run(check);
});
// Another file is read afresh: the choices made for the last one do not apply to it.
$("file").addEventListener("change", () => {
  reading = { encoding: "", sheet: "", columns: {} };
  $("file-reading").hidden = true;
});

function keepToken() {
  const input = $("token");
  if (!input) return;
  input.value = sessionStorage.getItem(TOKEN_KEY) || "";
  input.addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, input.value.trim()));
}

// A new file makes the results shown for the previous one stale.
function forgetResults() {
  stopFollowing();
  clearError();
  setBusy(false);
  $("validation").hidden = true;
  $("batch").hidden = true;
  $("import").hidden = true;
}

keepToken();
$("file").addEventListener("change", forgetResults);
$("check").addEventListener("click", () => run(check));
$("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run(create);
});
$("resume").addEventListener("click", () => run(resume));
$("rollback").addEventListener("click", () => run(rollBack));
$("import-cancel").addEventListener("click", () => run(cancelImport));
$("import-resume").addEventListener("click", () => run(resumeImport));
$("import-rollback").addEventListener("click", () => run(rollBackImport));
for (const id of ["download-results", "download-failed", "import-download-results", "import-download-failed"]) {
  $(id).addEventListener("click", (event) => {
    if (!authHeaders().Authorization) return;  // no token: the link downloads by itself
    event.preventDefault();
    const link = event.currentTarget;
    run(async () => {
      await download(link);
      setBusy(false);
    });
  });
}
