// Runs the job page's script (assets/job.js) under node against a real server: a stand-in for
// the few elements of the page it touches, and an EventSource over node's fetch. Prints what
// the script did as one line of JSON once it has reloaded the page (or failed).
//
//   node follow.mjs <job.js> <server base URL> <job id> <cursor> <root> <line> <open>
//        [<step> <inside> <partial>]
//
// With <step>, the page shows that step's lines (`data-step`, `data-inside`, `data-partial`).
import { readFileSync } from "node:fs";
import vm from "node:vm";

const [script, base, job, cursor, root, line, open, step, inside, partial] = process.argv.slice(2);
const seen = { url: null, appended: [], placeholderRemoved: false, closed: false, reloaded: false };

let ended;
const finished = new Promise((resolve) => (ended = resolve));

// Text nodes as strings, styled spans as their text and colour.
const part = (node) =>
  typeof node === "string" ? node : { text: node.textContent, color: node.style.color };
// The page's last line, which the script continues when the server left it unfinished.
const pageLine = { children: [], append: (...nodes) => pageLine.children.push(...nodes) };
const lines = [];
const log = {
  dataset: {
    live: "true",
    job,
    cursor,
    line,
    open,
    ...(step === undefined ? {} : { step, inside, partial }),
  },
  get lastElementChild() {
    return lines.length > 0 ? lines[lines.length - 1] : pageLine;
  },
  append: (node) => lines.push(node),
};
let placeholder = {
  remove() {
    seen.placeholderRemoved = true;
    placeholder = null;
  },
};
const badge = { textContent: "queued", className: "status status-queued" };
// An element: its text, class, style and children (text or elements).
const element = () => ({
  textContent: "",
  className: "",
  style: {},
  dataset: {},
  children: [],
  append(...nodes) {
    this.children.push(...nodes);
  },
});
// The steps' table: its rows as [name, status badge's class and text, exit code, time].
const cellText = (td) =>
  td.children
    .map((c) => {
      if (typeof c === "string") {
        return c;
      }
      return c.href === undefined ? `${c.className}:${c.textContent}` : `${c.href}:${c.textContent}`;
    })
    .join("");
const steps = {
  hidden: true,
  querySelector: (selector) =>
    selector === "tbody"
      ? {
          replaceChildren: (...rows) => {
            seen.steps = rows.map((row) => row.children.map(cellText));
          },
        }
      : null,
};
const document = {
  createElement: element,
  body: { dataset: { root } },
  documentElement: { scrollHeight: 1000 },
  getElementById: (id) => ({ log, status: badge, steps, "log-empty": placeholder })[id] ?? null,
};
const window = {
  innerHeight: 1000,
  scrollY: 0,
  scrollTo() {},
  location: {
    reload() {
      seen.reloaded = true;
      ended();
    },
  },
};

/** The part of the browser's EventSource the script uses: named events, `close`. */
class EventSource {
  constructor(url) {
    seen.url = url;
    this.listeners = {};
    this.abort = new AbortController();
    this.read(new URL(url, base)).catch((e) => {
      if (!this.abort.signal.aborted) {
        seen.error = String(e);
        ended();
      }
    });
  }
  addEventListener(name, listener) {
    this.listeners[name] = listener;
  }
  close() {
    seen.closed = true;
    this.abort.abort();
  }
  async read(url) {
    const response = await fetch(url, { signal: this.abort.signal });
    if (!response.ok) {
      throw new Error(`${url}: ${response.status}`);
    }
    const decoder = new TextDecoder();
    let buffer = "";
    for await (const bytes of response.body) {
      buffer += decoder.decode(bytes, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) {
            name = line.slice(6).trim();
          } else if (line.startsWith("data:")) {
            data.push(line.slice(5).replace(/^ /, ""));
          }
        }
        if (data.length > 0 && this.listeners[name]) {
          this.listeners[name]({ data: data.join("\n") });
        }
      }
    }
  }
}

const ticks = [];
const context = vm.createContext({
  document,
  window,
  EventSource,
  JSON,
  encodeURIComponent,
  setInterval: (tick) => ticks.push(tick),
  fetch: (url, options) => fetch(new URL(url, base), options),
});
vm.runInContext(readFileSync(script, "utf8"), context, { filename: script });
await finished;
// The badge's poll, once, now that the job has ended.
for (const tick of ticks) {
  await tick();
}
// Each line the script made: its id, its number's link and what it holds.
seen.appended = lines.map((l) => ({
  id: l.id,
  className: l.className,
  link: [l.children[0].className, l.children[0].href, l.children[0].dataset.n],
  parts: l.children.slice(1).map(part),
}));
seen.continued = pageLine.children.map(part);
seen.badge = badge;
seen.stepsHidden = steps.hidden;
console.log(JSON.stringify(seen));
