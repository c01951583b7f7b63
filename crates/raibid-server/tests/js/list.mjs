// Runs the job list's script (assets/list.js) under node in five situations: nobody touches
// the filters, the person typed in one, the person's cursor is in one, and the same two for a
// pool's pause reason in the queue table. Prints, as JSON, whether a tick of its timer reloaded
// the page in each, and the timer's period.
//
//   node list.mjs <list.js>
import { readFileSync } from "node:fs";
import vm from "node:vm";

const [script] = process.argv.slice(2);
const source = readFileSync(script, "utf8");

const run = (situation) => {
  const seen = { reloaded: false, period: null };
  const input = { name: "repo" };
  const reason = { name: "reason" };
  const listeners = {};
  const reasonListeners = {};
  const form = {
    dataset: { refresh: "10" },
    addEventListener: (name, listener) => (listeners[name] = listener),
    contains: (node) => node === input,
  };
  const pause = {
    dataset: {},
    addEventListener: (name, listener) => (reasonListeners[name] = listener),
    contains: (node) => node === reason,
  };
  const document = {
    querySelector: (selector) => (selector === "form.filters" ? form : null),
    querySelectorAll: (selector) => (selector === "table.queues form" ? [pause] : []),
    activeElement: null,
  };
  let tick = null;
  const context = vm.createContext({
    document,
    window: { location: { reload: () => (seen.reloaded = true) } },
    setInterval: (f, ms) => {
      tick = f;
      seen.period = ms;
    },
  });
  vm.runInContext(source, context, { filename: script });
  if (situation === "typed") {
    listeners.input?.({ target: input });
  } else if (situation === "focused") {
    document.activeElement = input;
  } else if (situation === "reasonTyped") {
    reasonListeners.input?.({ target: reason });
  } else if (situation === "reasonFocused") {
    document.activeElement = reason;
  }
  tick?.();
  return seen;
};

console.log(
  JSON.stringify({
    idle: run("idle"),
    typed: run("typed"),
    focused: run("focused"),
    reasonTyped: run("reasonTyped"),
    reasonFocused: run("reasonFocused"),
  }),
);
