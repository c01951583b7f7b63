// Reloads the job list while jobs on it move (the server sets the filters' data-refresh to the
// seconds between reloads on such a first page), unless the person is busy with the filters or
// a pool's pause reason: a reload would drop what they typed and not yet sent. Without JavaScript the list stays as
// loaded.
(function () {
  "use strict";
  const form = document.querySelector("form.filters");
  const seconds = form ? Number(form.dataset.refresh) : 0;
  if (!seconds) {
    return;
  }
  // The filters, and a pool's pause reason being typed in the queue table.
  const forms = [form, ...document.querySelectorAll("table.queues form")];
  let typed = false;
  for (const f of forms) {
    f.addEventListener("input", () => {
      typed = true;
    });
  }
  setInterval(() => {
    if (!typed && !forms.some((f) => f.contains(document.activeElement))) {
      window.location.reload();
    }
  }, seconds * 1000);
})();
