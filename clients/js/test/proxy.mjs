// proxy.mjs — a TCP relay between the SDK and a controller that a test can
// cut: drop() destroys every relayed connection at once (what a network
// failure does to a WebSocket: no close frame, code 1006), down() refuses
// new connections until up().

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
    // The first bytes tell a WebSocket upgrade from a REST request.
    client.once('data', (head) => {
      if (this.noWebSockets && /^upgrade:\s*websocket/im.test(head.toString('latin1'))) {
        client.destroy();
        return;
      }
      upstream.write(head);
      client.pipe(upstream);
    });
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
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
