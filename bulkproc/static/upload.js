// The upload page: check a CSV, create its hospitals (a file over the batch limit as an import),
// follow the batch or import live, fix failed rows, cancel, resume, finish without the failed rows
// or roll back, and download the results. The address names what is shown (#batch=… or #import=…).
"use strict";

const FINAL = ["completed", "partially_failed", "partially_activated", "failed", "interrupted", "rolled_back"];
const RESUMABLE = ["partially_failed", "failed", "interrupted"];
// What "finish without the failed rows" (/activate) takes, when some rows were created.
const ACTIVATABLE = ["partially_failed", "interrupted", "cancelled"];
const IMPORT_FINAL = FINAL.concat(["cancelled"]);
const IMPORT_RESUMABLE = RESUMABLE.concat(["cancelled"]);
// Rows that do not exist upstream: what failed.csv lists.
const NOT_CREATED = ["failed", "pending", "cancelled"];
const FIELDS = ["name", "address", "phone"];
// The contract's status names, as people say them; any other name reads with spaces for underscores.
const WORDS = {
  in_progress: "in progress",
  created: "created, not live yet",
  created_and_activated: "live in the directory",
  already_in_directory: "already in the directory",
  partially_failed: "partially failed",
  partially_activated: "finished without the failed rows",
  rolled_back: "rolled back",
};
const RECENT_LIMIT = 10;
const TOKEN_KEY = "bulkproc.token";
const LINES_KEY = "bulkproc.lines";
const LINES_KEPT = 20;

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
// The chosen file's upload: its Idempotency-Key (a second click answers the same batch), the id it
// started, and whether that finished (then sending the file again is asked first).
let upload = { key: null, sentId: null, finished: false };
// The spreadsheet line of each data row of the chosen file (row 1 is lines[0]), when it is text.
let fileLines = null;

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

async function send(method, url, file, json, extraHeaders) {
  let body;
  const headers = Object.assign(authHeaders(), extraHeaders || {});
  if (file) {
    body = new FormData();
    body.append("file", file);
    appendReadingFields(body);
    if (skipExisting()) body.append("existing", "skip");
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

function skipExisting() {
  return $("skip-existing").checked;
}

function batchUrl(id, suffix) {
  return urls.batches + "/" + encodeURIComponent(id) + (suffix || "");
}

function importUrl(id, suffix) {
  return urls.imports + "/" + encodeURIComponent(id) + (suffix || "");
}

// --- the clerk's words: the directory's refusals explained, rows by spreadsheet line ----

// "The directory refused it (422): name: Value error, …" reads "The directory refused this name: …".
function explain(error) {
  if (!error) return error;
  const refused = /^The directory refused it \((\d+)\): (?:(name|address|phone): )?(.*)$/s.exec(error);
  if (!refused) return error;
  // The directory's validator starts its messages with "Value error, ", which says nothing to a clerk.
  return "The directory refused this " + (refused[2] || "row") + ": " + refused[3].replace(/^Value error, /, "");
}

// A row's number as the clerk's spreadsheet shows it: its line in the chosen file when known,
// otherwise the line it has below a header row.
function lineOf(row) {
  if (row === null || row === undefined) return row;
  return (fileLines && fileLines[row - 1]) || row + 1;
}

// The lines of the files this browser sent, by batch or import id (the newest LINES_KEPT), so that
// a reload, or an upload opened from the recent list, numbers its rows as its own file did.
function rememberLines(id) {
  if (!fileLines) return;
  const kept = keptLines();
  kept[id] = fileLines;
  const ids = Object.keys(kept);
  ids.slice(0, Math.max(0, ids.length - LINES_KEPT)).forEach((old) => delete kept[old]);
  try {
    localStorage.setItem(LINES_KEY, JSON.stringify(kept));
  } catch (err) {
    // storage full or refused: after a reload the lines are counted below a header row
  }
}

function keptLines() {
  try {
    const kept = JSON.parse(localStorage.getItem(LINES_KEY));
    return kept && typeof kept === "object" ? kept : {};
  } catch (err) {
    return {};
  }
}

// The line each data record of a text file starts on: blank lines skipped, a header row not counted.
function dataLines(text) {
  const starts = [];
  let line = 1;
  let start = 1;
  let quoted = false;
  let filled = false;
  let first = true;
  let firstCells = "";
  const end = () => {
    if (filled) {
      if (first && isHeader(firstCells)) {
        first = false;  // a header row
      } else {
        starts.push(start);
        first = false;
      }
    }
    filled = false;
    firstCells = "";
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') quoted = !quoted;
    if (!quoted && (c === "\n" || c === "\r")) {
      end();
      if (c === "\r" && text[i + 1] === "\n") i++;
      line++;
      start = line;
      continue;
    }
    if (c === "\n") line++;
    if (c.trim() && c !== ",") filled = true;
    if (first) firstCells += c;
  }
  end();
  return starts;
}

// The header cells the service knows (the contract's "Reading files"), compared as it compares them.
const HEADER_CELLS = new Set(["name", "hospital", "hospital name", "facility", "facility name", "institution",
  "institution name", "organization name", "organisation name", "provider name", "address", "street",
  "street address", "address 1", "address line 1", "location", "full address", "address 2", "address line 2",
  "suite", "unit", "city", "town", "state", "province", "region", "zip", "zip code", "postal code", "postcode",
  "phone", "telephone", "tel", "phone number", "telephone number", "contact number", "contact phone",
  "main phone"]);

function isHeader(record) {
  return record.split(/[,;\t|]/).some((c) =>
    HEADER_CELLS.has(c.replaceAll('"', "").toLowerCase().replace(/[_\-.#:]/g, " ").trim().replace(/\s+/g, " ")));
}

async function readLines(file) {
  fileLines = null;
  if (!/\.(csv|txt|tsv)$/i.test(file.name) && !file.type.startsWith("text/")) return;
  fileLines = dataLines((await file.text()).replace(/^\uFEFF/, ""));
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
    if (row.row !== undefined) tr.dataset.row = row.row;  // the editor finds its row by it
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
  if (problem.row !== null && problem.row !== undefined) where.push("Line " + lineOf(problem.row));
  if (problem.column) where.push("column " + problem.column);
  return (where.length ? where.join(", ") + ": " : "") + problem.message;
}

function showValidation(result) {
  showReading(result.file, result.errors);
  const count = result.total_hospitals + (result.total_hospitals === 1 ? " hospital" : " hospitals");
  if (result.valid) {
    const batches = Math.ceil(result.total_hospitals / MAX_ROWS);
    const split = batches > 1 ? " It will be imported in " + batches + " batches of at most " + MAX_ROWS + " rows." : "";
    showCheck("Valid, " + count + "." + split + existingText(result.hospitals), [], result.hospitals);
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
  fillTable($("problems"), problems, (p) => [cell(p.line || lineOf(p.row)), cell(p.column), cell(p.message)]);
  const asked = hospitals.some((h) => "already_in_directory" in h);
  $("preview").classList.toggle("no-existing", !asked);
  fillTable($("preview"), hospitals, (h) => [cell(lineOf(h.row), "Line"), cell(h.name, "Name"),
                                             cell(h.address, "Address"), cell(h.phone, "Phone"),
                                             existingCell(h, asked)]);
  $("problems-wrap").hidden = !problems.length;
  $("preview-wrap").hidden = !!problems.length;
}

// --- skipping hospitals already in the directory ------------------------------

function existingText(hospitals) {
  if (!hospitals.some((h) => "already_in_directory" in h)) return "";
  const there = hospitals.filter((h) => h.already_in_directory !== null).length;
  if (!there) return " None of them is in the directory yet.";
  return " " + there + (there === 1 ? " is" : " are") + " already live in the directory and will be skipped.";
}

function existingCell(hospital, asked) {
  const td = cell(asked && hospital.already_in_directory !== null
    ? "already there (hospital " + hospital.already_in_directory + ")" : "", "In the directory");
  td.className = "existing";
  return td;
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
    cell(lineOf(r.row), "Line"), cell(r.name, "Name"), statusCell(r), cell(r.hospital_id, "Hospital id"),
    cell(explain(r.error), "Problem"), actionCell(r, editable),
  ]);
  $("summary").textContent = summaryText(doc);
  $("summary").className = "summary summary-" + doc.status;
  showDownloads(doc);
  showBatchActions(doc);
  showAddress(BATCH, doc.batch_id);
}

function actionCell(row, editable) {
  const td = cell("");
  td.className = "row-actions";
  if (editable && row.status === "failed") {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "edit";
    button.textContent = "Edit";
    button.setAttribute("aria-label", "Edit line " + lineOf(row.row));
    button.addEventListener("click", () => run(() => openEditor(row.row, batchEditing())));
    td.append(button);
  }
  return td;
}

function counterText(doc) {
  if (doc.status === "rolled_back") return "";  // the summary says it all
  const done = doc.processed_hospitals + doc.failed_hospitals;
  const there = alreadyThere(doc);  // counted as processed, but not created by this batch
  let text = done + " of " + doc.total_hospitals + " rows done: " + (doc.processed_hospitals - there) + " created";
  if (there) text += ", " + there + " already in the directory";
  if (doc.failed_hospitals) text += ", " + doc.failed_hospitals + " failed";
  return text + ".";
}

function alreadyThere(doc) {
  return (doc.hospitals || []).filter((r) => r.status === "already_in_directory").length;  // imports list none
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
  const count = (status) => doc.hospitals.filter((r) => r.status === status).length;
  const live = count("created_and_activated");
  const there = count("already_in_directory");
  const waiting = count("created");
  let text = "Batch " + words(doc.status) + " in " + seconds + " s: ";
  text += live ? live + " live in the directory" : "none made live";
  if (there) text += ", " + there + " already in the directory";
  if (waiting) text += ", " + waiting + " created but not live yet";
  if (doc.failed_hospitals) text += ", " + doc.failed_hospitals + " failed";
  text += ".";
  if (doc.status === "partially_activated") {
    text += " The failed rows were left out: download them to fix and upload as a new file.";
  } else if (doc.error && doc.status !== "completed") {
    text += " " + explain(doc.error);
  }
  if (ACTIVATABLE.includes(doc.status) && waiting) {
    text += " The hospitals created are not live until you choose below.";
  } else if (RESUMABLE.includes(doc.status)) {
    text += " Resume it to create the missing rows.";
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

// The endings a batch at rest offers, each explained beside its button.
function showBatchActions(doc) {
  const status = doc.status;
  const created = doc.hospitals.some((r) => r.status === "created");
  $("resume-choice").hidden = !RESUMABLE.includes(status);
  $("activate-choice").hidden = !(ACTIVATABLE.includes(status) && created);
  $("rollback-choice").hidden = !FINAL.includes(status) || status === "rolled_back";
  const there = alreadyThere(doc);
  $("rollback-hint").textContent = there
    ? "Delete the hospitals this batch created from the directory; " +
      (there === 1 ? "the one that was already there stays." : "the " + there + " that were already there stay.")
    : "Delete this batch's hospitals from the directory: nothing of this file stays.";
  $("choices-title").hidden = $("activate-choice").hidden;
}

function showNotice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

// --- fixing a failed row -----------------------------------------------------

// Where a row is edited: its table, its batch, and what to do with the batch document once saved.
function batchEditing() {
  return {
    table: $("rows"),
    batchId: currentDoc.batch_id,
    resultsUrl: batchUrl(currentDoc.batch_id, "/results.csv"),
    saved: (doc, number) => {
      showBatch(doc);
      showNotice("Line " + lineOf(number) + " saved. Resume the batch to create it with the new values.");
      $("resume").focus();
    },
  };
}

// A result file's lines as objects by its header, the spreadsheet-safe quote taken off.
async function resultRows(url) {
  let response;
  try {
    response = await fetch(url, { headers: authHeaders() });
  } catch (err) {
    throw new PageError("Could not reach the service. Check your connection and try again.");
  }
  if (!response.ok) {
    throw errorFrom(response.status, await readJson(response));
  }
  const [header, ...lines] = parseCsv(await response.text());
  return lines.map((cells) => Object.fromEntries(header.map((name, i) => [name, unneutralise(cells[i] || "")])));
}

// The row's stored values, read from results.csv (the batch document carries only the name).
async function storedValues(number, editing) {
  const found = (await resultRows(editing.resultsUrl)).find((r) => r.row === String(number) &&
                                                                   r.batch_id === editing.batchId);
  const values = {};
  for (const field of FIELDS) {
    values[field] = found ? found[field] : "";
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

async function openEditor(number, editing) {
  closeEditor();
  showNotice("");
  const values = await storedValues(number, editing);
  const tr = [...editing.table.querySelectorAll("tbody tr")].find((r) => r.dataset.row === String(number) &&
    (!r.dataset.batch || r.dataset.batch === editing.batchId));
  if (!tr) {
    setBusy(false);
    return;
  }
  const editor = document.createElement("tr");
  editor.className = "editor";
  const td = document.createElement("td");
  td.colSpan = 6;
  td.append(editorForm(number, values, editing));
  editor.append(td);
  tr.after(editor);
  setBusy(false);
  editor.querySelector("input").focus();
}

function editorForm(number, values, editing) {
  const form = document.createElement("form");
  form.noValidate = true;
  const fieldset = document.createElement("fieldset");
  const legend = document.createElement("legend");
  legend.textContent = "Fix line " + lineOf(number);
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
    saveRow(form, number, editing);
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
  for (const editor of document.querySelectorAll("tr.editor")) editor.remove();
}

async function saveRow(form, number, editing) {
  const changes = {};
  for (const field of FIELDS) changes[field] = form.elements[field].value;
  showFieldErrors(form, []);
  form.querySelector("button.save").disabled = true;
  try {
    const result = await send("PATCH", batchUrl(editing.batchId, "/rows/" + number), null, changes);
    await editing.saved(result.data, number);
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
  for (const id of ["check", "create", "resume", "activate", "rollback", "import-resume", "import-activate",
                    "import-rollback"]) {
    $(id).disabled = busy;
  }
  for (const edit of document.querySelectorAll("#rows button.edit, #import-rows button.edit")) {
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
const BATCH = { name: "batch", url: (id) => batchUrl(id), show: (doc) => showBatch(doc), final: FINAL };
const IMPORT = {
  name: "import",
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
      reachedFinal(id);
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
        reachedFinal(id);
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

// The followed batch or import is final: free the buttons, remember that the chosen file's upload
// finished (sending it again is then asked first), and list it among the recent uploads.
function reachedFinal(id) {
  stopFollowing();
  setBusy(false);
  if (upload.sentId === id) upload.finished = true;
  refreshRecent();
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
    cell(lineOf(b.first_row) + "–" + lineOf(b.last_row), "Lines"), statusCell(b),
    cell(b.processed_hospitals + " of " + b.total_hospitals, "Created"), cell(b.failed_hospitals, "Failed"),
    batchLinkCell(b.batch_id),
  ]);
  $("import-summary").textContent = importSummaryText(doc);
  $("import-summary").className = "summary summary-" + doc.status;
  const final = IMPORT_FINAL.includes(doc.status);
  $("import-downloads").hidden = !final;
  $("import-download-results").href = importUrl(doc.import_id, "/results.csv");
  $("import-download-failed").href = importUrl(doc.import_id, "/failed.csv");
  $("import-download-failed").hidden = !(final && doc.processed_hospitals < doc.total_hospitals);
  $("import-cancel").hidden = final || doc.cancelling === true;
  showImportActions(doc, final);
  showAddress(IMPORT, doc.import_id);
  if (final) {
    showImportRows(doc);
  } else {
    $("import-rows-wrap").hidden = true;
  }
}

// The endings an import at rest offers, each explained beside its button.
function showImportActions(doc, final) {
  const created = doc.batches.some((b) => ACTIVATABLE.includes(b.status) && b.processed_hospitals > 0);
  $("import-resume-choice").hidden = !IMPORT_RESUMABLE.includes(doc.status);
  $("import-activate-choice").hidden = !(ACTIVATABLE.includes(doc.status) && created);
  $("import-rollback-choice").hidden = !final || doc.status === "rolled_back";
  $("import-choices-title").hidden = $("import-activate-choice").hidden;
}

function batchLinkCell(batchId) {
  const td = cell("", "Batch");
  const link = document.createElement("a");
  link.href = "#batch=" + batchId;
  link.textContent = "Open batch";
  link.title = batchId;
  td.append(link);
  return td;
}

// --- an import's rows not created: listed, and fixed in place ---------------------

let importRowsShown = null;

async function showImportRows(doc) {
  const shown = doc.import_id + "@" + doc.updated_at;
  if (!doc.failed_hospitals && doc.processed_hospitals === doc.total_hospitals) {
    $("import-rows-wrap").hidden = true;
    return;
  }
  if (importRowsShown === shown) return;  // the same document again: keep an open editor
  importRowsShown = shown;
  const resting = new Set(doc.batches.filter((b) => RESUMABLE.includes(b.status) || b.status === "cancelled")
    .map((b) => b.batch_id));
  const rows = (await resultRows(importUrl(doc.import_id, "/results.csv")))
    .filter((r) => NOT_CREATED.includes(r.status));
  fillTable($("import-rows"), rows.map((r) => ({ ...r, row: Number(r.row) })), (r) => [
    cell(lineOf(r.row), "Line"), cell(r.name, "Name"), cell(r.address, "Address"), cell(r.phone, "Phone"),
    cell(explain(r.error) || words(r.status), "Problem"), importRowAction(r, resting.has(r.batch_id)),
  ]);
  for (const tr of $("import-rows").querySelectorAll("tbody tr")) {
    tr.dataset.batch = rows.find((r) => String(r.row) === tr.dataset.row).batch_id;
  }
  $("import-rows-wrap").hidden = !rows.length;
}

function importRowAction(row, editable) {
  const td = cell("");
  td.className = "row-actions";
  if (editable && row.status === "failed") {
    const edit = button("Edit", "edit", "button", () => run(() => openEditor(row.row, importEditing(row.batch_id))));
    edit.setAttribute("aria-label", "Edit line " + lineOf(row.row));
    td.append(edit);
  }
  return td;
}

function importEditing(batchId) {
  return {
    table: $("import-rows"),
    batchId: batchId,
    resultsUrl: batchUrl(batchId, "/results.csv"),
    saved: async (_batchDoc, number) => {
      importRowsShown = null;
      showImport((await send("GET", importUrl(currentImport.import_id))).data);
      $("import-notice").textContent = "Line " + lineOf(number) + " saved. Resume the import to create it " +
        "with the new values.";
      $("import-notice").hidden = false;
      setBusy(false);
      $("import-resume").focus();
    },
  };
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
  const waiting = doc.batches.filter((b) => !b.batch_activated && b.processed_hospitals > 0).length;
  const texts = {
    completed: "Import completed in " + seconds + " s: " + created + ", all live in the directory.",
    partially_failed: "Import partially failed: " + created + ", " + doc.failed_hospitals + " failed. " +
      (waiting ? waiting + (waiting === 1 ? " batch is" : " batches are") + " not live in the directory yet: " +
        "choose below how to finish." : "Resume the import to try the failed rows again."),
    partially_activated: "Import finished without the failed rows: " + created + " and live in the directory; " +
      doc.failed_hospitals + " left out (download them to fix and upload as a new file).",
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
    result = await send("POST", urls.imports, file, null, keyHeader());
  } catch (err) {
    if (err.status !== 422 || !err.details.length) throw err;
    showCheck(err.message, err.details, []);
    setBusy(false);
    return;
  }
  upload.sentId = result.data.import_id;
  rememberLines(result.data.import_id);
  showImport(result.data);
  follow(result.data.import_id, IMPORT);
  refreshRecent();
}

async function cancelImport() {
  const result = await send("POST", importUrl(currentImport.import_id, "/cancel"));
  result.data.cancelling = true;
  showImport(result.data);
  $("import-summary").textContent = "Cancelling: no more rows start; the ones already sent finish first.";
  if (!events) setBusy(false);  // the stream, if any, ends at the final state and frees the buttons
}

async function resumeImport() {
  closeEditor();
  $("import-notice").hidden = true;
  await resumeAndFollow(currentImport.import_id, IMPORT, "/resume");
}

async function activateImport() {
  if (!window.confirm("Make every hospital created live in the directory now, and leave the " +
                      currentImport.failed_hospitals + " failed rows out for good?")) {
    setBusy(false);
    return;
  }
  closeEditor();
  await resumeAndFollow(currentImport.import_id, IMPORT, "/activate");
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
  const file = chosenFile();
  await readLines(file);
  const result = await send("POST", urls.validate, file);
  showValidation(result.data);
  setBusy(false);
}

// --- one upload per chosen file -------------------------------------------------

function randomKey() {
  if (window.crypto.randomUUID) return window.crypto.randomUUID();
  return [...window.crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// An upload is one chosen file: the same name, size and time of change (a browser may fire no
// change event when the same path is chosen again, so the file itself is compared).
function fileIdentity(file) {
  return file ? [file.name, file.size, file.lastModified].join("/") : null;
}

function newUpload(file) {
  upload = { key: randomKey(), file: fileIdentity(file), sentId: null, finished: false };
}

// The key names the file and the skip choice together: the service binds a key to both.
function keyHeader() {
  return { "Idempotency-Key": upload.key + (skipExisting() ? ":skip" : ":create") };
}

// False when the clerk would rather not send again a file whose upload has already finished.
function mayUploadAgain(file) {
  if (upload.file !== fileIdentity(file)) newUpload(file);
  if (!upload.finished) return true;
  if (!window.confirm("This file was already sent and its upload has finished. Send it again as a new " +
                      "upload? Its hospitals would be created in the directory a second time" +
                      (skipExisting() ? ", except those already live there." : "."))) {
    return false;
  }
  newUpload(file);
  return true;
}

async function create() {
  const file = chosenFile();
  if (!mayUploadAgain(file)) {
    setBusy(false);
    return;
  }
  await readLines(file);
  if ((await rowsInFile(file)) > MAX_ROWS) {
    await createImport(file);
    return;
  }
  let result;
  try {
    result = await send("POST", urls.batches + "?async=1", file, null, keyHeader());
  } catch (err) {
    if (err.status !== 422 || !err.details.length) throw err;
    showCheck(err.message, err.details, []);
    setBusy(false);
    return;
  }
  upload.sentId = result.data.batch_id;
  rememberLines(result.data.batch_id);
  showBatch(result.data);
  follow(result.data.batch_id);
  refreshRecent();
}

async function resume() {
  closeEditor();
  showNotice("");
  await resumeAndFollow(currentDoc.batch_id, BATCH, "/resume?async=1");
}

async function activate() {
  if (!window.confirm("Make the hospitals created live in the directory now, and leave the " +
                      currentDoc.failed_hospitals + " failed rows out for good?")) {
    setBusy(false);
    return;
  }
  closeEditor();
  showNotice("");
  await resumeAndFollow(currentDoc.batch_id, BATCH, "/activate?async=1");
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

// A new file makes the results shown for the previous one stale, and is an upload of its own.
function forgetResults() {
  stopFollowing();
  clearError();
  setBusy(false);
  newUpload($("file").files[0]);
  fileLines = null;
  $("validation").hidden = true;
  $("batch").hidden = true;
  $("import").hidden = true;
  if (location.hash) history.pushState(null, "", location.pathname + location.search);
}

// --- the address names what is shown; recent uploads ---------------------------

function showAddress(kind, id) {
  const hash = "#" + kind.name + "=" + id;
  if (location.hash !== hash) history.pushState(null, "", hash);
}

// Show (and follow, until final) the batch or import the address names; nothing when it names none.
async function openFromAddress() {
  const found = /^#(batch|import)=([0-9a-fA-F-]{36})$/.exec(location.hash);
  if (!found) {
    stopFollowing();
    $("batch").hidden = true;
    $("import").hidden = true;
    setBusy(false);
    return;
  }
  const kind = found[1] === "batch" ? BATCH : IMPORT;
  fileLines = keptLines()[found[2]] || null;
  const doc = (await send("GET", kind.url(found[2]))).data;
  kind.show(doc);
  if (kind.final.includes(doc.status)) {
    stopFollowing();
    setBusy(false);
  } else {
    follow(found[2], kind);
  }
}

async function refreshRecent() {
  let batches, imports;
  try {
    [batches, imports] = await Promise.all([
      send("GET", urls.batches + "?standalone=true&limit=" + RECENT_LIMIT), send("GET", urls.imports + "?limit=" + RECENT_LIMIT)]);
  } catch (err) {
    return;  // e.g. no token yet: the list is a convenience, its absence says enough
  }
  const uploads = batches.data.batches.map((b) => ({ kind: BATCH, id: b.batch_id, doc: b }))
    .concat(imports.data.imports.map((i) => ({ kind: IMPORT, id: i.import_id, doc: i })))
    .sort((a, b) => b.doc.created_at.localeCompare(a.doc.created_at)).slice(0, RECENT_LIMIT);
  fillTable($("recent-list"), uploads, (u) => [recentLink(u), cell(whenText(u.doc.created_at), "When"),
    statusCell(u.doc), cell(u.doc.processed_hospitals + " of " + u.doc.total_hospitals + " done", "Hospitals")]);
  $("recent").hidden = !uploads.length;
}

function recentLink(upload) {
  const td = cell("", "Upload");
  const link = document.createElement("a");
  link.href = "#" + upload.kind.name + "=" + upload.id;
  link.textContent = (upload.kind === BATCH ? "Batch" : "Import") + " of " + upload.doc.total_hospitals +
    (upload.doc.total_hospitals === 1 ? " hospital" : " hospitals");
  link.title = upload.id;
  td.append(link);
  return td;
}

function whenText(iso) {
  return new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

keepToken();
newUpload();
window.addEventListener("hashchange", () => run(openFromAddress));
$("file").addEventListener("change", forgetResults);
$("check").addEventListener("click", () => run(check));
$("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run(create);
});
$("resume").addEventListener("click", () => run(resume));
$("activate").addEventListener("click", () => run(activate));
$("import-activate").addEventListener("click", () => run(activateImport));
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
if (location.hash) run(openFromAddress);
refreshRecent();
