// The upload page: check a CSV, create its hospitals, follow the batch live, resume or roll back.
"use strict";

const FINAL = ["completed", "partially_failed", "failed", "interrupted", "rolled_back"];
const RESUMABLE = ["partially_failed", "failed", "interrupted"];
const TOKEN_KEY = "bulkproc.token";

const page = document.getElementById("app");
const urls = {
  validate: page.dataset.validateUrl,
  batches: page.dataset.batchesUrl,
};

let currentDoc = null;
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

async function send(method, url, file) {
  let body;
  if (file) {
    body = new FormData();
    body.append("file", file);
  }
  let response;
  try {
    response = await fetch(url, { method: method, headers: authHeaders(), body: body });
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
  const error = new PageError(message, data && data.details);
  error.status = status;
  return error;
}

function batchUrl(id, suffix) {
  return urls.batches + "/" + encodeURIComponent(id) + (suffix || "");
}

// --- drawing ------------------------------------------------------------------

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
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
  $("validation").hidden = false;
  $("batch").hidden = true;
  const count = result.total_hospitals + (result.total_hospitals === 1 ? " hospital" : " hospitals");
  if (result.valid) {
    $("validation-result").textContent = "Valid, " + count + ".";
  } else {
    const n = result.errors.length;
    $("validation-result").textContent = "Not valid: " + n + (n === 1 ? " problem" : " problems") + " to fix.";
  }
  $("validation-result").className = result.valid ? "ok" : "bad";
  fillTable($("problems"), result.errors, (p) => [cell(p.row), cell(p.column), cell(p.message)]);
  fillTable($("preview"), result.hospitals, (h) => [cell(h.row), cell(h.name), cell(h.address), cell(h.phone)]);
  $("problems-wrap").hidden = result.valid;
  $("preview-wrap").hidden = !result.valid;
}

// Status names like created_and_activated may break after an underscore on narrow screens.
function statusCell(row) {
  const td = document.createElement("td");
  td.className = "status status-" + row.status;
  row.status.split("_").forEach((part, i) => {
    if (i > 0) td.append("_", document.createElement("wbr"));
    td.append(part);
  });
  return td;
}

function showBatch(doc) {
  currentDoc = doc;
  $("validation").hidden = true;
  $("batch").hidden = false;
  $("batch-id").textContent = doc.batch_id;
  const done = doc.processed_hospitals + doc.failed_hospitals;
  $("progress").max = Math.max(doc.total_hospitals, 1);
  $("progress").value = done;
  $("counter").textContent = counterText(doc);
  fillTable($("rows"), doc.hospitals, (r) => [cell(r.row), cell(r.name), statusCell(r), cell(r.hospital_id), cell(r.error)]);
  $("summary").textContent = summaryText(doc);
  $("summary").className = "summary summary-" + doc.status;
  showBatchActions(doc.status);
}

function counterText(doc) {
  const done = doc.processed_hospitals + doc.failed_hospitals;
  let text = done + " of " + doc.total_hospitals + " rows done: " + doc.processed_hospitals + " created";
  if (doc.failed_hospitals) text += ", " + doc.failed_hospitals + " failed";
  return text + ".";
}

function summaryText(doc) {
  if (!FINAL.includes(doc.status)) {
    return "Status: " + doc.status + "…";
  }
  const seconds = Number(doc.processing_time_seconds || 0).toFixed(2);
  const activated = doc.batch_activated ? "batch activated" : "batch not activated";
  let text = "Batch " + doc.status + " in " + seconds + " s, " + activated + ".";
  if (doc.error) text += " " + doc.error;
  if (RESUMABLE.includes(doc.status)) text += " You can resume it to create the missing rows.";
  return text;
}

function showBatchActions(status) {
  $("resume").hidden = !RESUMABLE.includes(status);
  $("rollback").hidden = !FINAL.includes(status) || status === "rolled_back";
}

function setBusy(busy) {
  for (const id of ["check", "create", "resume", "rollback"]) {
    $(id).disabled = busy;
  }
}

// --- following a batch -------------------------------------------------------

// Live progress comes from the event stream. EventSource cannot send the API token, and a
// server at its stream limit refuses the stream (503): in both cases the page asks for the
// batch's document every POLL_MS instead, with the token, until the batch is final.
const POLL_MS = 1000;
let polling = null;

function follow(id) {
  stopFollowing();
  setBusy(true);
  if (authHeaders().Authorization) {
    poll(id);
    return;
  }
  events = new EventSource(batchUrl(id, "/events"));
  events.onmessage = (message) => {
    const doc = JSON.parse(message.data);
    showBatch(doc);
    if (FINAL.includes(doc.status)) {
      stopFollowing();
      setBusy(false);
    }
  };
  // While open, EventSource reconnects by itself; CLOSED means the stream was refused or lost.
  events.onerror = () => {
    if (events && events.readyState === EventSource.CLOSED) {
      poll(id);
    }
  };
}

function poll(id) {
  stopFollowing();
  const mine = { stopped: false };
  polling = mine;
  const tick = async () => {
    try {
      const doc = (await send("GET", batchUrl(id))).data;
      if (mine.stopped) return;
      showBatch(doc);
      if (FINAL.includes(doc.status)) {
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
  const result = await send("POST", urls.batches + "?async=1", chosenFile());
  showBatch(result.data);
  follow(result.data.batch_id);
}

async function resume() {
  const result = await send("POST", batchUrl(currentDoc.batch_id, "/resume?async=1"));
  showBatch(result.data);
  if (result.status === 202) {
    follow(currentDoc.batch_id);
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
