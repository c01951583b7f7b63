// Follows a running job on its page: appends what the agent writes to the log as it comes
// (colours stripped: the server renders them once the job ends) and reloads the page when the
// job ends, so the final status, steps and coloured log come from the server. Without
// JavaScript the page is complete as of when it was loaded.
(function () {
  "use strict";
  const log = document.getElementById("log");
  if (!log || log.dataset.live !== "true") {
    return;
  }
  const root = document.body.dataset.root || "";
  const job = encodeURIComponent(log.dataset.job);
  const cursor = encodeURIComponent(log.dataset.cursor);
  // CSI sequences (colours, cursor movement) and OSC ones (titles, links).
  const escapes = /\u001b\[[0-?]*[ -\/]*[@-~]|\u001b\][^\u0007\u001b]*(\u0007|\u001b\\)?/g;
  const atBottom = () =>
    window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 40;

  // Reconnects by itself with Last-Event-ID, which the server resumes from.
  const source = new EventSource(`${root}/api/v1/jobs/${job}/logs?follow=true&cursor=${cursor}`);
  source.addEventListener("log", (event) => {
    const follow = atBottom();
    const empty = document.getElementById("log-empty");
    if (empty) {
      empty.remove();
    }
    log.append(JSON.parse(event.data).text.replace(escapes, ""));
    if (follow) {
      window.scrollTo(0, document.documentElement.scrollHeight);
    }
  });
  const ended = () => {
    source.close();
    window.location.reload();
  };
  source.addEventListener("end", ended);
  source.addEventListener("gone", ended);

  // The badge until the job ends: a queued job becomes running when an agent starts it.
  const badge = document.getElementById("status");
  setInterval(async () => {
    try {
      const response = await fetch(`${root}/api/v1/jobs/${job}`);
      if (response.ok) {
        const status = (await response.json()).status;
        badge.textContent = status;
        badge.className = `status status-${status}`;
      }
    } catch (_) {
      // The server is restarting; the next tick tries again.
    }
  }, 5000);
})();
