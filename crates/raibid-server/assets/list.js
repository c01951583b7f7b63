// Reloads the job list while jobs on it move (the server sets the filters' data-refresh to the
// seconds between reloads on such a first page), unless the person is busy with the filters:
// a reload would drop what they typed and not yet sent. Without JavaScript the list stays as
// loaded.
(function () {
  "use strict";
  const form = document.querySelector("form.filters");
  const seconds = form ? Number(form.dataset.refresh) : 0;
  if (!seconds) {
    return;
  }
  let typed = false;
  form.addEventListener("input", () => {
    typed = true;
  });
  setInterval(() => {
    if (!typed && !form.contains(document.activeElement)) {
      window.location.reload();
    }
  }, seconds * 1000);
})();
