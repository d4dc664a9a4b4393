// proxy.mjs — a TCP relay between the SDK and a controller that a test can
// cut: drop() destroys every relayed connection at once (what a network
// failure does to a WebSocket: no close frame, code 1006), down() refuses
// new connections until up(), freeze() stops relaying without closing, and
// silenceNextWebSocket() lets one WebSocket open but not hear its first
// message.

import net from 'node:net';

export class Proxy {
  /** @param {string} target http://HOST:PORT of the controller */
  constructor(target) {
    const u = new URL(target);
    this.host = u.hostname;
    this.port = Number(u.port);
    this.sockets = new Set();
    this.refusing = false;
    /** Refuse WebSocket upgrades (pass REST), as some proxies do. */
    this.noWebSockets = false;
    this.accepted = 0;
    this.silenceNext = false;
    /** WebSockets that opened, were silenced, and were cut when the client spoke */
    this.silenced = 0;
    this.server = net.createServer((client) => this._relay(client));
  }

  /** Listens on a free port; resolves with the proxy's http://HOST:PORT. */
  listen() {
    return new Promise((resolve) => {
      this.server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${this.server.address().port}`));
    });
  }

  _relay(client) {
    if (this.refusing) {
      client.destroy();
      return;
    }
    this.accepted++;
    const upstream = net.connect(this.port, this.host);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => {});
    }
    // The first bytes tell a WebSocket upgrade from a REST request (the
    // controller says nothing before it has a request).
    client.once('data', (head) => {
      const upgrade = /^upgrade:\s*websocket/im.test(head.toString('latin1'));
      if (this.noWebSockets && upgrade) {
        client.destroy();
        return;
      }
      upstream.write(head);
      if (upgrade && this.silenceNext) {
        this.silenceNext = false;
        this._headOnly(client, upstream);
        return;
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  }

  /**
   * Passes the controller's upgrade answer (its HTTP head) and holds back
   * everything after it; the first bytes the client sends once open (a
   * frame: a ping, say) cut the connection.
   */
  _headOnly(client, upstream) {
    let got = Buffer.alloc(0);
    upstream.on('data', (chunk) => {
      if (!got) return; // held back
      got = Buffer.concat([got, chunk]);
      const end = got.indexOf('\r\n\r\n');
      if (end < 0) return;
      client.write(got.subarray(0, end + 4));
      got = null;
    });
    client.on('data', () => {
      if (got) return; // still the request, in pieces
      this.silenced++;
      client.destroy();
    });
  }

  /**
   * The next WebSocket opens (its upgrade answer passes) but hears nothing
   * after that, its snapshot included, and is cut when the client first
   * sends.
   */
  silenceNextWebSocket() {
    this.silenceNext = true;
  }

  /**
   * Stops relaying without closing anything: a half-open connection, as
   * when a network path dies silently.  New connections are refused.
   */
  freeze() {
    this.refusing = true;
    for (const s of this.sockets) {
      s.unpipe();
      s.pause();
    }
  }

  /** Cuts every relayed connection. */
  drop() {
    for (const s of this.sockets) s.destroy();
  }

  down() {
    this.refusing = true;
    this.drop();
  }

  up() {
    this.refusing = false;
  }

  close() {
    this.drop();
    return new Promise((r) => this.server.close(() => r()));
  }
}
