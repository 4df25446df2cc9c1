// The label review of check.html and report.html (reporting/label_review.py draws the cards and the data).
// Choices live in localStorage under the check's key, so they survive the class filter, the pages, a reload and
// reopening the file; the download joins them with the rows into the relabel file data/relabel.py reads.
(function () {
  "use strict";
  const section = document.getElementById("review");
  const data = JSON.parse(document.getElementById("review-data").textContent);
  const storageKey = "imgcls-label-review:" + data.key;
  const cards = Array.from(section.querySelectorAll(".suspect"));
  const byId = (id) => document.getElementById(id);
  const filter = byId("review-filter");
  let choices = load();
  let shown = cards;     // the suspects the class filter lets through
  let current = 0;       // index into shown of the selected suspect
  let page = 0;

  function storageFailed() {
    byId("review-storage").hidden = false;
  }

  function valid(choice) {
    return !!choice && (choice.action === "keep" || choice.action === "drop" ||
                        (choice.action === "relabel" && data.classes.includes(choice.to)));
  }

  function load() {
    let stored = {};
    try {
      stored = JSON.parse(localStorage.getItem(storageKey) || "{}") || {};
    } catch (error) {
      storageFailed();
    }
    const kept = {};
    for (const card of cards) {  // only this check's suspects, only choices this page can write
      if (valid(stored[card.dataset.path])) kept[card.dataset.path] = stored[card.dataset.path];
    }
    return kept;
  }

  function save() {
    try {
      if (Object.keys(choices).length) localStorage.setItem(storageKey, JSON.stringify(choices));
      else localStorage.removeItem(storageKey);
    } catch (error) {
      storageFailed();
    }
  }

  function describe(action, to) {
    return action === "relabel" ? "relabel as " + to : action;
  }

  function button(action, label) {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.action = action;
    b.textContent = label;
    return b;
  }

  function controls(card) {  // built when a card is first shown: thousands of selects would slow the page
    const box = card.querySelector(".choice");
    if (box.childElementCount) return;
    const select = document.createElement("select");
    select.setAttribute("aria-label", "relabel as");
    data.classes.forEach((name, i) => {
      select.add(new Option((i < data.keys ? (i + 1) + ": " : "") + name, name));
    });
    const status = document.createElement("span");
    status.className = "status";
    box.append(button("keep", "Keep (k)"), button("relabel", "Relabel as"), select, button("drop", "Drop (d)"),
               status);
    box.addEventListener("click", (event) => {
      const action = event.target.dataset && event.target.dataset.action;
      if (action) decide(card, action, select.value);
    });
    select.addEventListener("change", () => decide(card, "relabel", select.value));
  }

  function paint(card) {
    controls(card);
    const choice = choices[card.dataset.path];
    const row = data.rows[Number(card.dataset.row)];
    card.classList.toggle("decided", !!choice);
    for (const b of card.querySelectorAll("button[data-action]")) {
      b.setAttribute("aria-pressed", String(!!choice && choice.action === b.dataset.action));
    }
    const select = card.querySelector("select");
    const proposed = data.classes.includes(card.dataset.suggested) ? card.dataset.suggested : data.classes[0];
    select.value = choice && choice.action === "relabel" ? choice.to : proposed;
    card.querySelector(".status").textContent = choice
      ? "Your choice: " + describe(choice.action, choice.to)
      : "Undecided: the file says " + describe(row[4], card.dataset.suggested);
  }

  function decide(card, action, to) {
    choices[card.dataset.path] = action === "relabel" ? { action: action, to: to } : { action: action };
    save();
    paint(card);
    count();
  }

  function count() {
    const decided = cards.filter((c) => choices[c.dataset.path]).length;
    let text = decided + " of " + cards.length + " decided, " + (cards.length - decided) + " undecided";
    if (shown.length !== cards.length) {
      text += " (shown: " + shown.filter((c) => choices[c.dataset.path]).length + " of " + shown.length + ")";
    }
    byId("review-count").textContent = text;
  }

  function render() {
    const pages = Math.max(1, Math.ceil(shown.length / data.page_size));
    page = Math.min(Math.max(page, 0), pages - 1);
    const visible = new Set(shown.slice(page * data.page_size, (page + 1) * data.page_size));
    for (const card of cards) {
      card.hidden = !visible.has(card);
      card.classList.toggle("current", card === shown[current]);
      card.tabIndex = card === shown[current] ? 0 : -1;
      if (!card.hidden) paint(card);
    }
    byId("review-page").textContent = shown.length ? "page " + (page + 1) + " of " + pages : "no suspect";
    byId("review-prev").disabled = page === 0;
    byId("review-next").disabled = page >= pages - 1;
    count();
  }

  function select(index, focus) {
    if (!shown.length) return;
    current = Math.min(Math.max(index, 0), shown.length - 1);
    page = Math.floor(current / data.page_size);
    render();
    if (focus) {
      shown[current].focus({ preventScroll: true });
      shown[current].scrollIntoView({ block: "nearest" });
    }
  }

  function onKey(event) {
    const card = event.target.closest(".suspect");
    if (!card || event.ctrlKey || event.metaKey || event.altKey || event.target.tagName === "SELECT") return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    const n = Number(key);
    if (key === "k") decide(card, "keep");
    else if (key === "d") decide(card, "drop");
    else if (n >= 1 && n <= Math.min(data.keys, data.classes.length)) decide(card, "relabel", data.classes[n - 1]);
    else if (key === "ArrowRight" || key === "ArrowDown") select(shown.indexOf(card) + 1, true);
    else if (key === "ArrowLeft" || key === "ArrowUp") select(shown.indexOf(card) - 1, true);
    else return;
    event.preventDefault();
  }

  function csv() {  // the relabel file: every row as check wrote it, with the user's choices
    const chosen = new Map(cards.filter((c) => choices[c.dataset.path])
      .map((c) => [Number(c.dataset.row), choices[c.dataset.path]]));
    const lines = [data.header];
    data.rows.forEach((row, i) => {
      const choice = chosen.get(i);
      const to = choice && choice.action === "relabel" ? data.classes.indexOf(choice.to) : row[2];
      lines.push([row[0], data.names[row[1]], data.names[to], row[3], choice ? choice.action : row[4]].join(","));
    });
    return lines.join("\n") + "\n";
  }

  function download() {
    const url = URL.createObjectURL(new Blob([csv()], { type: "text/csv" }));
    const link = document.createElement("a");
    link.href = url;
    link.download = "relabel.csv";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function clear() {
    const n = Object.keys(choices).length;
    if (!n || !window.confirm("Forget your " + n + " choice(s) for this check? A relabel.csv you downloaded " +
                              "stays as it is.")) return;
    choices = {};
    save();
    render();
  }

  function applyFilter() {
    const value = filter.value;
    const side = value.slice(0, value.indexOf(":"));
    const name = value.slice(value.indexOf(":") + 1);
    shown = value ? cards.filter((c) => c.dataset[side] === name) : cards;
    current = 0;
    page = 0;
    render();
  }

  section.addEventListener("keydown", onKey);
  section.addEventListener("focusin", (event) => {
    const card = event.target.closest(".suspect");
    if (card && shown.indexOf(card) !== current) select(shown.indexOf(card), false);
  });
  filter.addEventListener("change", applyFilter);
  byId("review-prev").addEventListener("click", () => select((page - 1) * data.page_size, true));
  byId("review-next").addEventListener("click", () => select((page + 1) * data.page_size, true));
  byId("review-download").addEventListener("click", download);
  byId("review-clear").addEventListener("click", clear);
  byId("review-bar").hidden = false;
  window.imgclsLabelReview = { csv: csv };  // for scripts and tests: the file the download would write
  render();
})();
