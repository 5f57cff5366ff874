// Live progress of a spawn: Server-Sent Events from the API, a bar, the messages, then a redirect.
(function () {
  const root = document.getElementById("progress");
  if (!root || root.dataset.done) return;
  const bar = root.querySelector(".bar");
  const log = root.querySelector(".log");
  const status = root.querySelector(".status");
  const events = new EventSource(root.dataset.events);
  function show(d) {
    bar.value = d.progress;
    const li = document.createElement("li");
    li.textContent = d.message;
    log.appendChild(li);
  }
  // The history is replayed on every (re)connection: start the list afresh.
  events.addEventListener("open", () => { log.replaceChildren(); });
  events.addEventListener("progress", (e) => show(JSON.parse(e.data)));
  events.addEventListener("ready", (e) => {
    const d = JSON.parse(e.data);
    events.close();
    show(d);
    status.textContent = "Ready. Opening your server…";
    if (d.url) window.location.assign(d.url);
  });
  events.addEventListener("failed", (e) => {
    events.close();
    window.location.reload(); // the page renders the cause in words
  });
})();
