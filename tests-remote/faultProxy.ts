/**
 * A fault-injection TCP proxy for tests: listens on loopback (an ephemeral port) and forwards
 * every connection to a target (the throwaway sshd), with faults that can be changed at any
 * time, for every open connection and every later one:
 *
 *   const proxy = await FaultProxy.start({ port: server.port })
 *   proxy.setLatency(200)                 // ms, each direction (or { up, down })
 *   proxy.setBandwidth(1 << 20)           // bytes per second, each direction (token bucket)
 *   proxy.stall()                         // stop forwarding, keep the sockets open; resume() again
 *   proxy.strand()                        // the open connections' link dies: the target never hears
 *   proxy.cutAfter(2 << 20, "up")         // cut each connection once 2 MiB went to the server
 *   proxy.cutNow()                        // cut every open connection now
 *   proxy.refuse(true)                    // close new connections as soon as they are accepted
 *   proxy.openConnections                 // connections not fully closed yet
 *   await proxy.close()                   // closes the listener and every socket
 *
 * `Blackhole` (below) is a port that never answers at all: connecting to it hangs.
 *
 * "up" is client -> target, "down" is target -> client. A cut destroys both sockets of the
 * connection (the client sees its socket close, as if a router dropped the flow or the peer
 * reset it). Plain TypeScript on purpose: test infrastructure should not depend on the library
 * it tests.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as net from "node:net"

/** Which way bytes travel: `up` from the client to the target, `down` back. */
export type Direction = "up" | "down"

/** Which bytes a cut counts: one direction, or both added up. */
export type CutDirection = Direction | "total"

export interface FaultProxyOptions {
  /** Where to forward to; default host 127.0.0.1. */
  readonly host?: string
  readonly port: number
}

export interface FaultProxyStats {
  /** Connections accepted (refused ones included). */
  readonly accepted: number
  /** Connections closed on accept because `refuse` was on. */
  readonly refused: number
  /** Connections cut by `cutAfter` or `cutNow`. */
  readonly cut: number
  /** Connections whose sockets have all closed (however they ended). */
  readonly closed: number
  /** Bytes forwarded to the target, over all connections. */
  readonly bytesUp: number
  /** Bytes forwarded to the client, over all connections. */
  readonly bytesDown: number
}

interface Cut {
  readonly bytes: number
  readonly direction: CutDirection
}

/** A block of bytes waiting to be forwarded, or the end of the stream. */
interface Pending {
  readonly at: number
  data: Buffer | undefined
}

// Reading from a source pauses while this many bytes wait to be forwarded from it.
const HIGH_WATER = 1 << 20

/** One direction of one connection: reads `from`, writes `to`, applying the proxy's faults. */
class Pipe {
  readonly queue: Array<Pending> = []
  queued = 0
  /** Bytes forwarded so far. */
  forwarded = 0
  /** Tokens of the bandwidth bucket, and when it was last filled. */
  tokens = 0
  filled = Date.now()
  timer: NodeJS.Timeout | undefined
  waitingDrain = false

  readonly connection: Connection
  readonly direction: Direction
  readonly from: net.Socket
  readonly to: net.Socket

  constructor(connection: Connection, direction: Direction, from: net.Socket, to: net.Socket) {
    this.connection = connection
    this.direction = direction
    this.from = from
    this.to = to
    from.on("data", (data: Buffer) => {
      this.queue.push({ at: Date.now(), data })
      this.queued += data.length
      if (this.queued >= HIGH_WATER) from.pause()
      this.pump()
    })
    from.on("end", () => {
      this.queue.push({ at: Date.now(), data: undefined })
      this.pump()
    })
    to.on("drain", () => {
      this.waitingDrain = false
      this.pump()
    })
  }

  get proxy(): FaultProxy {
    return this.connection.proxy
  }

  /** Forwards what may go now; schedules itself again for what must wait. */
  pump(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer)
      this.timer = undefined
    }
    const proxy = this.proxy
    while (
      !this.connection.closed && !this.connection.stranded && !this.waitingDrain && !proxy.stalled &&
      this.queue.length > 0
    ) {
      const head = this.queue[0]!
      const now = Date.now()
      const due = head.at + proxy.latencyOf(this.direction)
      if (due > now) return this.wakeAt(due - now)
      if (head.data === undefined) {
        this.queue.shift()
        this.to.end()
        return
      }
      let chunk = head.data
      const rate = proxy.bandwidthOf(this.direction)
      if (rate !== undefined) {
        const burst = Math.max(16 * 1024, Math.floor(rate / 20))
        this.tokens = Math.min(burst, this.tokens + ((now - this.filled) / 1000) * rate)
        this.filled = now
        if (this.tokens < 1) return this.wakeAt(Math.max(1, Math.ceil(((1 - this.tokens) / rate) * 1000)))
        if (chunk.length > this.tokens) chunk = chunk.subarray(0, Math.floor(this.tokens))
        this.tokens -= chunk.length
      }
      const limit = this.connection.cutLimit(this.direction)
      if (limit !== undefined && chunk.length >= limit) {
        if (limit > 0) this.send(chunk.subarray(0, limit))
        return this.connection.cut()
      }
      this.send(chunk)
      if (chunk.length === head.data.length) this.queue.shift()
      else head.data = head.data.subarray(chunk.length)
    }
  }

  private send(chunk: Buffer): void {
    this.queued -= chunk.length
    this.forwarded += chunk.length
    this.proxy.count(this.direction, chunk.length)
    if (this.queued < HIGH_WATER && this.from.isPaused()) this.from.resume()
    if (!this.to.write(chunk)) this.waitingDrain = true
  }

  private wakeAt(millis: number): void {
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.pump()
    }, millis)
  }

  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    this.queue.length = 0
  }
}

/** A client connection and its connection to the target. */
class Connection {
  readonly up: Pipe
  readonly down: Pipe
  closed = false
  /** Its link is dead (`FaultProxy.strand`): nothing is forwarded, the target is not told. */
  stranded = false
  private socketsOpen = 2
  /** Bytes forwarded each way when the current cut rule was set (it counts from then). */
  private baseUp = 0
  private baseDown = 0

  readonly proxy: FaultProxy
  readonly client: net.Socket
  readonly upstream: net.Socket

  constructor(proxy: FaultProxy, client: net.Socket, upstream: net.Socket) {
    this.proxy = proxy
    this.client = client
    this.upstream = upstream
    this.up = new Pipe(this, "up", client, upstream)
    this.down = new Pipe(this, "down", upstream, client)
    for (const socket of [client, upstream]) {
      let ended = false
      socket.setNoDelay(true)
      socket.once("end", () => void (ended = true))
      socket.on("error", () => this.destroy())
      socket.once("close", () => {
        this.socketsOpen--
        // A socket that went without ending its stream (reset, destroyed) takes its partner
        // with it; one that ended cleanly lets the other direction finish forwarding first.
        // A stranded connection's target hears nothing of the client going.
        if (!ended && !(this.stranded && socket === client)) this.destroy()
        if (this.socketsOpen === 0) proxy.forget(this)
      })
    }
  }

  /** Counts a new cut rule from the bytes forwarded so far. */
  rebase(): void {
    this.baseUp = this.up.forwarded
    this.baseDown = this.down.forwarded
  }

  /** How many more bytes may go `direction` before the cut, if a cut is set. */
  cutLimit(direction: Direction): number | undefined {
    const cut = this.proxy.cutRule
    if (cut === undefined) return undefined
    const up = this.up.forwarded - this.baseUp
    const down = this.down.forwarded - this.baseDown
    if (cut.direction === "total") return Math.max(0, cut.bytes - up - down)
    if (cut.direction !== direction) return undefined
    return Math.max(0, cut.bytes - (direction === "up" ? up : down))
  }

  cut(): void {
    if (this.closed) return
    this.proxy.countCut()
    this.destroy()
  }

  destroy(): void {
    if (this.closed) return
    this.closed = true
    this.up.stop()
    this.down.stop()
    this.client.destroy()
    this.upstream.destroy()
  }

  pump(): void {
    this.up.pump()
    this.down.pump()
  }
}

export class FaultProxy {
  /** The port the proxy listens on (127.0.0.1). */
  readonly port: number
  stalled = false
  cutRule: Cut | undefined
  private latency = { up: 0, down: 0 }
  private bandwidth: { up: number | undefined; down: number | undefined } = { up: undefined, down: undefined }
  private refusing = false
  private readonly connections = new Set<Connection>()
  private readonly stats = { accepted: 0, refused: 0, cut: 0, closed: 0, bytesUp: 0, bytesDown: 0 }
  private readonly server: net.Server
  private readonly target: { readonly host: string; readonly port: number }
  private closing: Promise<void> | undefined

  private constructor(server: net.Server, port: number, target: { host: string; port: number }) {
    this.server = server
    this.port = port
    this.target = target
  }

  /** Starts a proxy on 127.0.0.1 (a free port) in front of `options`. */
  static start(options: FaultProxyOptions): Promise<FaultProxy> {
    const target = { host: options.host ?? "127.0.0.1", port: options.port }
    return new Promise((resolve, reject) => {
      let proxy: FaultProxy | undefined
      const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
        if (proxy === undefined) client.destroy()
        else proxy.accept(client)
      })
      server.once("error", reject)
      server.listen(0, "127.0.0.1", () => {
        server.off("error", reject)
        proxy = new FaultProxy(server, (server.address() as net.AddressInfo).port, target)
        resolve(proxy)
      })
    })
  }

  /** Added delay in milliseconds, both directions, or each one. */
  setLatency(millis: number | { readonly up?: number; readonly down?: number }): this {
    this.latency = typeof millis === "number"
      ? { up: millis, down: millis }
      : { up: millis.up ?? this.latency.up, down: millis.down ?? this.latency.down }
    this.pumpAll()
    return this
  }

  /** A cap in bytes per second, both directions or each one; `undefined` for none. */
  setBandwidth(
    bytesPerSecond: number | undefined | {
      readonly up?: number | undefined
      readonly down?: number | undefined
    }
  ): this {
    this.bandwidth = typeof bytesPerSecond === "object"
      ? { up: bytesPerSecond.up, down: bytesPerSecond.down }
      : { up: bytesPerSecond, down: bytesPerSecond }
    this.pumpAll()
    return this
  }

  /** Stops forwarding (bytes wait in the proxy, sockets stay open), until `resume()`. */
  stall(): this {
    this.stalled = true
    return this
  }

  resume(): this {
    this.stalled = false
    this.pumpAll()
    return this
  }

  /**
   * The link of every open connection dies for good, as when a route or a NAT entry is lost:
   * nothing more is forwarded either way, and when the client gives up its socket the target
   * is not told (its socket stays open until `cutNow()` or `close()`). Later connections work.
   */
  strand(): number {
    let n = 0
    for (const connection of this.connections) {
      if (!connection.closed && !connection.stranded) {
        connection.stranded = true
        n++
      }
    }
    return n
  }

  /**
   * Cuts each connection once `bytes` more have gone `direction` (both added up for "total"),
   * counted from now for open connections and from their start for later ones; the last chunk
   * is forwarded up to the limit. Stays in force until `clearCut()`.
   */
  cutAfter(bytes: number, direction: CutDirection = "total"): this {
    this.cutRule = { bytes, direction }
    for (const connection of this.connections) connection.rebase()
    this.pumpAll()
    return this
  }

  clearCut(): this {
    this.cutRule = undefined
    this.pumpAll()
    return this
  }

  /** Cuts every open connection now; returns how many. */
  cutNow(): number {
    let n = 0
    for (const connection of this.connections) {
      if (!connection.closed) {
        connection.cut()
        n++
      }
    }
    return n
  }

  /** While on, new connections are closed as soon as they are accepted. */
  refuse(on = true): this {
    this.refusing = on
    return this
  }

  /** Removes every fault. */
  reset(): this {
    this.latency = { up: 0, down: 0 }
    this.bandwidth = { up: undefined, down: undefined }
    this.refusing = false
    this.cutRule = undefined
    return this.resume()
  }

  /** Connections whose sockets are not all closed yet. */
  get openConnections(): number {
    return this.connections.size
  }

  get statistics(): FaultProxyStats {
    return { ...this.stats }
  }

  /** Resolves once `openConnections` is 0, or rejects after `timeoutMillis`. */
  async waitForNoConnections(timeoutMillis = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMillis
    while (this.connections.size > 0) {
      if (Date.now() > deadline) {
        throw new Error(`${this.connections.size} proxied connection(s) still open after ${timeoutMillis} ms`)
      }
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
  }

  /** Closes the listener and destroys every connection's sockets. */
  close(): Promise<void> {
    this.closing ??= new Promise((resolve) => {
      this.refusing = true
      for (const connection of this.connections) connection.destroy()
      this.server.close(() => resolve())
    })
    return this.closing
  }

  // -- for the connections ------------------------------------------------------------------------

  latencyOf(direction: Direction): number {
    return this.latency[direction]
  }

  bandwidthOf(direction: Direction): number | undefined {
    return this.bandwidth[direction]
  }

  count(direction: Direction, bytes: number): void {
    if (direction === "up") this.stats.bytesUp += bytes
    else this.stats.bytesDown += bytes
  }

  countCut(): void {
    this.stats.cut++
  }

  forget(connection: Connection): void {
    if (this.connections.delete(connection)) this.stats.closed++
  }

  private accept(client: net.Socket): void {
    this.stats.accepted++
    if (this.refusing || this.closing !== undefined) {
      this.stats.refused++
      client.on("error", () => {})
      client.destroy()
      return
    }
    const upstream = net.connect({ host: this.target.host, port: this.target.port, allowHalfOpen: true })
    const connection = new Connection(this, client, upstream)
    this.connections.add(connection)
    client.resume()
  }

  private pumpAll(): void {
    for (const connection of this.connections) connection.pump()
  }
}

/**
 * A TCP port that never answers a connection: SYNs go unanswered, so a client's `connect` waits
 * until its own time-out (about 2 minutes on Linux), like a host behind a firewall that drops
 * packets. Made for real, without firewall rules: a listener in a child process whose event
 * loop is blocked (it never accepts), with a backlog of 1 that this process fills, so that the
 * kernel drops every further SYN.
 *
 *   const hole = await Blackhole.start()
 *   // connect to 127.0.0.1:hole.port: it hangs
 *   await hole.close()
 */
export class Blackhole {
  /** The port (127.0.0.1) that does not answer. */
  readonly port: number
  private readonly child: ChildProcess
  private readonly fillers: ReadonlyArray<net.Socket>

  private constructor(port: number, child: ChildProcess, fillers: ReadonlyArray<net.Socket>) {
    this.port = port
    this.child = child
    this.fillers = fillers
  }

  static async start(): Promise<Blackhole> {
    const child = spawn(process.execPath, [
      "-e",
      // Blocked, it never accepts; it wakes twice a second only to exit once its parent is gone.
      `const s = require("node:net").createServer()
       const parent = Number(process.argv[1])
       s.listen({ port: 0, host: "127.0.0.1", backlog: 1 }, () =>
         process.stdout.write(s.address().port + "\\n", () => {
           for (;;) {
             Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 500)
             try { process.kill(parent, 0) } catch { process.exit(0) }
           }
         }))`,
      String(process.pid)
    ], { stdio: ["ignore", "pipe", "inherit"] })
    const port = await new Promise<number>((resolve, reject) => {
      child.once("error", reject)
      child.once("exit", (code) => reject(new Error(`the blackhole listener exited (${code})`)))
      child.stdout!.once("data", (data: Buffer) => resolve(Number(String(data).trim())))
    })
    // The accept queue holds backlog + 1 connections; once they are in, SYNs are dropped.
    const fillers: Array<net.Socket> = []
    for (let i = 0; i < 2; i++) {
      fillers.push(
        await new Promise<net.Socket>((resolve, reject) => {
          const socket = net.connect({ port, host: "127.0.0.1" }, () => resolve(socket))
          socket.once("error", reject)
        })
      )
    }
    return new Blackhole(port, child, fillers)
  }

  /** Stops the listener (the port refuses from then on) and closes the filler connections. */
  close(): Promise<void> {
    for (const socket of this.fillers) socket.destroy()
    if (this.child.exitCode !== null || this.child.signalCode !== null) return Promise.resolve()
    return new Promise((resolve) => {
      this.child.once("exit", () => resolve())
      this.child.kill("SIGKILL")
    })
  }
}
