// Follows a running job on its page: appends what the agent writes to the log as it comes,
// in numbered lines with their colours as the server renders a finished log (ansi-to-html's
// SGR styles and CSS variables), keeps the status and the steps' table as the agent reports them, and reloads the
// page when the job ends, so the final status, steps and log come from the server. Without
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

  const names = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"];
  const named = (i, bright) => `var(--${bright ? "bright-" : ""}${names[i]})`;
  const byte = (n) => Math.max(0, Math.min(255, n | 0));
  // xterm's 256 colours: the 16 named ones, a 6x6x6 cube, 24 greys.
  const xterm = (n) => {
    if (n < 16) {
      return named(n % 8, n >= 8);
    }
    if (n < 232) {
      const level = [0, 95, 135, 175, 215, 255];
      const i = n - 16;
      return `rgb(${level[Math.floor(i / 36)]},${level[Math.floor(i / 6) % 6]},${level[i % 6]})`;
    }
    const grey = 8 + (Math.min(n, 255) - 232) * 10;
    return `rgb(${grey},${grey},${grey})`;
  };
  // An extended colour (`38;5;n`, `38;2;r;g;b`) starting at codes[i]: [colour, codes used].
  const extended = (codes, i) => {
    if (codes[i + 1] === 5 && i + 2 < codes.length) {
      return [xterm(codes[i + 2]), 3];
    }
    if (codes[i + 1] === 2 && i + 4 < codes.length) {
      return [`rgb(${byte(codes[i + 2])},${byte(codes[i + 3])},${byte(codes[i + 4])})`, 5];
    }
    return [null, codes.length - i];
  };

  let style = {};
  const sgr = (parameters) => {
    const codes = parameters === "" ? [0] : parameters.split(";").map((c) => Number(c) || 0);
    for (let i = 0; i < codes.length; i += 1) {
      const c = codes[i];
      if (c === 0) {
        style = {};
      } else if (c === 1) {
        style.bold = true;
      } else if (c === 2) {
        style.faint = true;
      } else if (c === 3) {
        style.italic = true;
      } else if (c === 4) {
        style.underline = true;
      } else if (c === 22) {
        delete style.bold;
        delete style.faint;
      } else if (c === 23) {
        delete style.italic;
      } else if (c === 24) {
        delete style.underline;
      } else if (c >= 30 && c <= 37) {
        style.fg = named(c - 30, false);
      } else if (c >= 90 && c <= 97) {
        style.fg = named(c - 90, true);
      } else if (c === 39) {
        delete style.fg;
      } else if (c >= 40 && c <= 47) {
        style.bg = named(c - 40, false);
      } else if (c >= 100 && c <= 107) {
        style.bg = named(c - 100, true);
      } else if (c === 49) {
        delete style.bg;
      } else if (c === 38 || c === 48) {
        const [colour, used] = extended(codes, i);
        if (colour) {
          style[c === 38 ? "fg" : "bg"] = colour;
        }
        i += used - 1;
      }
    }
  };
  // Lines as the server numbers them: a span per line, led by a link to itself. The page's
  // last line is continued when the server left it unfinished.
  let line = Number(log.dataset.line) || 1;
  let current = log.dataset.open === "true" ? log.lastElementChild : null;
  const newLine = () => {
    const span = document.createElement("span");
    span.className = "line";
    span.id = `L${line}`;
    const link = document.createElement("a");
    link.className = "ln";
    link.href = `#L${line}`;
    link.dataset.n = String(line);
    span.append(link);
    log.append(span);
    return span;
  };
  // Text of one line (up to and with its line break) as a node of its own style; only ever
  // text, never markup.
  const writeLine = (text) => {
    current = current || newLine();
    if (Object.keys(style).length === 0) {
      current.append(text);
    } else {
      const span = document.createElement("span");
      span.textContent = text;
      span.style.color = style.fg || "";
      span.style.background = style.bg || "";
      span.style.fontWeight = style.bold ? "bold" : "";
      span.style.opacity = style.faint ? "0.67" : "";
      span.style.fontStyle = style.italic ? "italic" : "";
      span.style.textDecoration = style.underline ? "underline" : "";
      current.append(span);
    }
    if (text.endsWith("\n")) {
      current = null;
      line += 1;
    }
  };
  const write = (text) => {
    for (const piece of text.split(/(?<=\n)/)) {
      if (piece !== "") {
        writeLine(piece);
      }
    }
  };

  // SGR sequences (colours), which are kept, then the others (cursor movement, titles, links),
  // which are dropped.
  const escape = /\u001b\[([0-9;]*)m|\u001b\[[0-?]*[ -\/]*[@-~]|\u001b\][^\u0007\u001b]*(?:\u0007|\u001b\\)/g;
  // A sequence cut by the end of a chunk: held back until the next one completes it.
  const unfinished = /\u001b(?:\[[0-?]*[ -\/]*|\][^\u0007\u001b]*\u001b?)?$/;
  let held = "";
  const render = (chunk) => {
    let text = held + chunk;
    const cut = text.match(unfinished);
    held = cut ? cut[0] : "";
    text = text.slice(0, text.length - held.length);
    let at = 0;
    for (const match of text.matchAll(escape)) {
      write(text.slice(at, match.index));
      if (match[1] !== undefined) {
        sgr(match[1]);
      }
      at = match.index + match[0].length;
    }
    write(text.slice(at));
  };

  const atBottom = () =>
    window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 40;

  // A page of one step's lines (`?step=NAME`) keeps those of the log's lines that are the
  // step's, as the server chose them (raibid_model::step_log): a side-by-side step's lines
  // (`[NAME] `, taken off), or the lines of its section from its header to its result. Lines
  // are judged whole; the server hands over the log's unfinished last line.
  const step = log.dataset.step;
  const prefix = `[${step}] `;
  let inside = log.dataset.inside === "true";
  let pending = log.dataset.partial || "";
  let number = line;
  const keep = (text) => {
    if (text.startsWith(prefix)) {
      return text.slice(prefix.length);
    }
    const plain = text.replace(escape, "");
    if (plain.startsWith("\u25b6 step ")) {
      const header = plain.slice("\u25b6 step ".length);
      const space = header.lastIndexOf(" ");
      inside = (space < 0 ? header : header.slice(0, space)) === step;
      return inside ? text : null;
    }
    if (!inside) {
      return null;
    }
    const result = plain.startsWith("\u2714 ") || plain.startsWith("\u2718 ") ? plain.slice(2) : null;
    if (result !== null && (result.startsWith(`${step} (`) || result.startsWith(`${step}: `))) {
      inside = false;
    }
    return text;
  };
  const followStep = (text) => {
    pending += text;
    let end;
    while ((end = pending.indexOf("\n")) >= 0) {
      const kept = keep(pending.slice(0, end));
      pending = pending.slice(end + 1);
      if (kept !== null) {
        // Each line on its own, as the server renders them, under its number in the log.
        style = {};
        current = null;
        line = number;
        render(`${kept}\n`);
      }
      number += 1;
    }
  };

  // Reconnects by itself with Last-Event-ID, which the server resumes from.
  const source = new EventSource(`${root}/api/v1/jobs/${job}/logs?follow=true&cursor=${cursor}`);
  source.addEventListener("log", (event) => {
    const follow = atBottom();
    const text = JSON.parse(event.data).text;
    const before = log.lastElementChild;
    if (step === undefined) {
      render(text);
    } else {
      followStep(text);
    }
    // A step's page says it has no output until one of its lines comes.
    const empty = document.getElementById("log-empty");
    if (empty && (step === undefined || log.lastElementChild !== before)) {
      empty.remove();
    }
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

  // A step's time as the server shows it (raibid_model::human::precise_millis): tenths below
  // ten seconds, then two units at most.
  const pad = (n) => String(n).padStart(2, "0");
  const time = (ms) => {
    if (typeof ms !== "number") {
      return "";
    }
    if (ms < 10000) {
      return `${(Math.max(0, ms) / 1000).toFixed(1)}s`;
    }
    const secs = Math.floor(ms / 1000);
    const [m, s] = [Math.floor(secs / 60), secs % 60];
    const [h, mm] = [Math.floor(m / 60), m % 60];
    const [d, hh] = [Math.floor(h / 24), h % 24];
    if (d > 0) {
      return `${d}d${pad(hh)}h`;
    }
    if (h > 0) {
      return `${h}h${pad(mm)}m`;
    }
    return m > 0 ? `${m}m${pad(s)}s` : `${s}s`;
  };
  const cell = (content) => {
    const td = document.createElement("td");
    td.append(content);
    return td;
  };
  const statusBadge = (status) => {
    const span = document.createElement("span");
    span.className = `status status-${status}`;
    span.textContent = status;
    return span;
  };
  // The steps' table, rebuilt from the agent's report when it changes; text only.
  const steps = document.getElementById("steps");
  let shownSteps = null;
  const showSteps = (list) => {
    const key = JSON.stringify(list);
    if (!steps || key === shownSteps) {
      return;
    }
    shownSteps = key;
    steps.querySelector("tbody").replaceChildren(
      ...list.map((step) => {
        const row = document.createElement("tr");
        const name = document.createElement("a");
        name.href = `${root}/jobs/${job}?step=${encodeURIComponent(step.name)}#log`;
        name.title = "this step's lines of the log";
        name.textContent = step.name;
        row.append(
          cell(name),
          cell(statusBadge(step.status)),
          cell(step.exit_code === undefined ? "" : String(step.exit_code)),
          cell(time(step.duration_ms)),
        );
        return row;
      }),
    );
    steps.hidden = list.length === 0;
  };

  // The badge and the steps until the job ends: a queued job becomes running when an agent
  // starts it, and its steps run one after another.
  const badge = document.getElementById("status");
  setInterval(async () => {
    try {
      const response = await fetch(`${root}/api/v1/jobs/${job}`);
      if (response.ok) {
        const current = await response.json();
        badge.textContent = current.status;
        badge.className = `status status-${current.status}`;
        showSteps(current.steps || []);
      }
    } catch (_) {
      // The server is restarting; the next tick tries again.
    }
  }, 5000);
})();
