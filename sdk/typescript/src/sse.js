// Server-Sent Events: a decoder for the text/event-stream framing, and an async
// iterator over a fetch Response's body.

/** Feed it text as it arrives; it returns the events each chunk completes. */
export class SSEDecoder {
  constructor() {
    this.buffer = '';
    this.event = '';
    this.data = [];
    this.sawData = false;
  }

  /** @param {string} text @returns {Array<{event: string, data: string}>} */
  feed(text) {
    this.buffer += text;
    const out = [];
    let start = 0;
    for (;;) {
      let end = -1;
      let next = -1;
      for (let i = start; i < this.buffer.length; i++) {
        const c = this.buffer.charCodeAt(i);
        if (c === 10) { end = i; next = i + 1; break; }
        if (c === 13) {
          // A CR at the very end may be the first half of CRLF: wait for more.
          if (i + 1 === this.buffer.length) break;
          end = i;
          next = this.buffer.charCodeAt(i + 1) === 10 ? i + 2 : i + 1;
          break;
        }
      }
      if (end < 0) break;
      const event = this.line(this.buffer.slice(start, end));
      if (event) out.push(event);
      start = next;
    }
    this.buffer = this.buffer.slice(start);
    return out;
  }

  /** The stream ended: an event left unterminated, if any. */
  end() {
    const out = [];
    if (this.buffer) {
      const event = this.line(this.buffer.replace(/\r$/, ''));
      this.buffer = '';
      if (event) out.push(event);
    }
    if (this.sawData) out.push(this.dispatch());
    return out;
  }

  line(line) {
    if (line === '') return this.sawData || this.event ? this.dispatch() : null;
    if (line.startsWith(':')) return null; // a comment (keep-alive)
    const colon = line.indexOf(':');
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'event') this.event = value;
    else if (name === 'data') { this.data.push(value); this.sawData = true; }
    return null;
  }

  dispatch() {
    const event = { event: this.event || 'message', data: this.data.join('\n') };
    this.event = '';
    this.data = [];
    this.sawData = false;
    return event;
  }
}

/**
 * The events of an SSE response, as they come. Leaving the loop early (break,
 * return, throw) closes the connection through `onClose`.
 * @param {Response} response
 * @param {() => void} [onClose]
 * @returns {AsyncGenerator<{event: string, data: string}>}
 */
export async function* readEvents(response, onClose) {
  const decoder = new SSEDecoder();
  const text = new TextDecoder();
  const reader = response.body.getReader();
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      yield* decoder.feed(text.decode(value, { stream: true }));
    }
    yield* decoder.feed(text.decode());
    yield* decoder.end();
    finished = true;
  } finally {
    if (!finished) {
      reader.cancel().catch(() => {});
      onClose?.();
    }
  }
}
