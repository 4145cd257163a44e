// A real TCP proxy between the client and a server that loses answers on request, as
// tests/dropping_proxy.py does for the Python tests: armed, it forwards everything until
// the server's answer to a call starts arriving (the first HTTP/2 HEADERS frame on a stream,
// sent only after the server's handler returned, so after what the call committed), then
// drops both connections without passing that frame on.

import net from "node:net";

const FRAME_HEADER = 9;
const HEADERS = 0x1;

export class DroppingProxy {
  readonly #upstreamPort: number;
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();
  #toDrop = 0;
  /** Answers lost so far. */
  dropped = 0;

  private constructor(upstreamPort: number) {
    this.#upstreamPort = upstreamPort;
    this.#server = net.createServer((client) => this.#accept(client));
  }

  /** A proxy listening on a free port of 127.0.0.1, forwarding to `upstreamPort` there. */
  static async start(upstreamPort: number): Promise<DroppingProxy> {
    const proxy = new DroppingProxy(upstreamPort);
    await new Promise<void>((resolve) => proxy.#server.listen(0, "127.0.0.1", resolve));
    return proxy;
  }

  get baseUrl(): string {
    const address = this.#server.address() as net.AddressInfo;
    return `http://127.0.0.1:${address.port}`;
  }

  /** Lose the next `count` answers, each with the connection that carried it. */
  dropNextAnswers(count = 1): void {
    this.#toDrop = count;
  }

  close(): void {
    this.#server.close();
    for (const socket of this.#sockets) {
      socket.destroy();
    }
  }

  #accept(client: net.Socket): void {
    const upstream = net.connect(this.#upstreamPort, "127.0.0.1");
    for (const socket of [client, upstream]) {
      this.#sockets.add(socket);
      socket.on("close", () => this.#sockets.delete(socket));
      socket.on("error", () => undefined);
    }
    const dropBoth = () => {
      client.resetAndDestroy();
      upstream.resetAndDestroy();
    };
    client.on("data", (chunk: Buffer) => upstream.write(chunk));
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
    // Server to client, frame by frame (the server sends no preface but SETTINGS).
    let buffered = Buffer.alloc(0);
    upstream.on("data", (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= FRAME_HEADER) {
        const length = buffered.readUIntBE(0, 3);
        if (buffered.length < FRAME_HEADER + length) {
          break;
        }
        const kind = buffered[3];
        const stream = buffered.readUInt32BE(5) & 0x7fffffff;
        if (this.#toDrop > 0 && kind === HEADERS && stream !== 0) {
          this.#toDrop -= 1;
          this.dropped += 1;
          dropBoth();
          return;
        }
        client.write(buffered.subarray(0, FRAME_HEADER + length));
        buffered = buffered.subarray(FRAME_HEADER + length);
      }
    });
  }
}
