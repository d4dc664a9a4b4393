// frame.js — rendering batched per animation frame.  Events only mark views
// dirty; each dirty view renders once in the next frame, however many events
// arrived since the last one.  A hidden tab gets no frames: views catch up
// when it is shown again.

const dirty = new Set();
const renderers = new Map();
let scheduled = false;

/** Registers a render function under a name (several views may share one). */
export function onFrame(name, render) {
  if (!renderers.has(name)) renderers.set(name, []);
  renderers.get(name).push(render);
}

/** Asks for names to be rendered in the next frame. */
export function invalidate(...names) {
  for (const n of names) dirty.add(n);
  if (!scheduled) {
    scheduled = true;
    requestAnimationFrame(frame);
  }
}

function frame(now) {
  scheduled = false;
  const names = [...dirty];
  dirty.clear();
  for (const n of names) {
    for (const render of renderers.get(n) || []) {
      try {
        render(now);
      } catch (e) {
        // A view's bug must not stop the others.
        console.error('render ' + n + ' failed:', e);
      }
    }
  }
}
