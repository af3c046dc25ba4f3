// boltzgen web pages: live progress of a job page from the API's server-sent events.
// No framework, no build step. Everything shown is set as text (textContent), never as HTML,
// except the panel fragment, which the server renders (and escapes) itself.
"use strict";

(function () {
  const TERMINAL = ["succeeded", "failed", "cancelled"];

  function text(id, value) {
    const el = document.getElementById(id);
    if (el) el.textContent = value;
  }

  function clock(ts) {
    return typeof ts === "number" ? new Date(ts * 1000).toISOString().slice(11, 19) : "";
  }

  function logLine(kind, message, when) {
    const log = document.getElementById("log");
    if (!log) return;
    const li = document.createElement("li");
    const ts = document.createElement("span");
    ts.className = "ts";
    ts.textContent = clock(when);
    const ev = document.createElement("span");
    ev.className = "ev";
    ev.textContent = kind;
    li.append(ts, " ", ev, " " + message);
    log.append(li);
    while (log.children.length > 200) log.firstElementChild.remove();
    log.scrollTop = log.scrollHeight;  // the list scrolls, not the page
  }

  function setState(status) {
    const el = document.getElementById("state");
    if (!el) return;
    el.textContent = status;
    el.className = "state " + status;
  }

  function setProgress(fraction) {
    const bar = document.getElementById("progress");
    if (bar) bar.value = fraction;
    text("percent", Math.round(100 * fraction) + " %");
  }

  async function refreshPanel(live) {
    const response = await fetch(live.dataset.panel, { credentials: "same-origin" });
    if (response.ok) {
      document.getElementById("panel").innerHTML = await response.text();
    }
  }

  function follow(live) {
    const source = new EventSource(live.dataset.events);
    source.addEventListener("progress", (e) => {
      const d = JSON.parse(e.data);
      setProgress(d.progress);
      text("message", d.message || "");
      logLine("progress", (d.message || "") + " (" + Math.round(100 * d.progress) + " %)", d.ts);
    });
    source.addEventListener("cancel_requested", (e) => {
      logLine("cancel_requested", "", JSON.parse(e.data).ts);
      const button = document.getElementById("cancel");
      if (button) {
        button.disabled = true;
        button.textContent = "Cancelling…";
      }
    });
    source.addEventListener("status", (e) => {
      const d = JSON.parse(e.data);
      setState(d.status);
      logLine("status", d.status, d.ts);
      if (d.status === "succeeded") setProgress(1);
      if (TERMINAL.includes(d.status)) {
        source.close();  // else EventSource reconnects to a finished stream
        live.dataset.terminal = "true";
        refreshPanel(live);
      }
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) logLine("stream", "disconnected; reload to resume", Date.now() / 1000);
    };
  }

  // The job list: while some job on it is queued or running, refresh its rows (server-rendered)
  function activeRows(table) {
    return table.querySelector(".state.queued, .state.running") !== null;
  }

  function refreshRows(table) {
    setTimeout(async () => {
      if (!activeRows(table)) return;
      const response = await fetch(table.dataset.rows, { credentials: "same-origin" });
      if (response.ok) table.tBodies[0].innerHTML = await response.text();
      refreshRows(table);
    }, 3000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const live = document.getElementById("live");
    if (live && live.dataset.terminal !== "true" && "EventSource" in window) follow(live);
    const jobs = document.getElementById("jobs");
    if (jobs && jobs.dataset.rows) refreshRows(jobs);
  });
})();
