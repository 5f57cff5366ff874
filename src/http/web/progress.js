// Live progress of a spawn: Server-Sent Events from the API, a bar, the messages, then a redirect.
(function () {
  const root = document.getElementById("progress");
  if (!root || root.dataset.done) return;
  const bar = root.querySelector(".bar");
  const percent = root.querySelector(".percent");
  const log = root.querySelector(".log");
  const status = root.querySelector(".status");
  const ready = root.querySelector(".ready");
  const events = new EventSource(root.dataset.events);
  function show(d) {
    const value = Math.max(0, Math.min(100, Number(d.progress) || 0));
    bar.value = value;
    bar.textContent = value + "%";
    if (percent) percent.textContent = value + "%";
    const li = document.createElement("li");
    li.textContent = d.message;
    log.appendChild(li);
    log.scrollTop = log.scrollHeight;
  }
  // The history is replayed on every (re)connection: start the list afresh.
  events.addEventListener("open", () => { log.replaceChildren(); });
  events.addEventListener("progress", (e) => show(JSON.parse(e.data)));
  events.addEventListener("ready", (e) => {
    const d = JSON.parse(e.data);
    events.close();
    show(d);
    root.classList.add("done");
    const title = root.querySelector("h1");
    if (title) title.textContent = "Your server is ready";
    status.textContent = "Opening your server…";
    if (d.url) {
      const link = ready && ready.querySelector("a");
      if (link) { link.href = d.url; ready.hidden = false; }
      // A moment at 100% so the finished bar is seen; the link stays if the redirect is blocked.
      setTimeout(() => window.location.assign(d.url), 600);
    }
  });
  events.addEventListener("failed", () => {
    events.close();
    window.location.reload(); // the page renders the cause in words
  });
})();
