/**
 * Port forwards against the throwaway OpenSSH server, with real HTTP traffic: a local node:http
 * server reached through a local forward (as the server sees it) and, from the server, through a
 * remote forward. Many requests at once, bodies of tens of MiB with the reader held back, and
 * what is left once the scope that held a forward has closed or been interrupted.
 */
import { assert, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as http from "node:http"
import * as net from "node:net"
import { remote } from "../src/internal/remote/operations.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { failureOf, pollUntil, settingsLayer } from "./support.ts"

const server = readServerFromEnv()
const base = settingsLayer({ user: server.user, port: server.port, connectAttempts: 1, quiet: true })
const MiB = 1024 * 1024

/** A local HTTP server: `/hello?x` answers `hello x`, `/bytes?n` streams n bytes as the reader takes them. */
interface Web {
  readonly port: number
  /** Bytes of `/bytes` bodies the server has handed to its sockets so far. */
  readonly sent: () => number
  /** Its TCP connections still open. */
  readonly open: () => number
}

const chunk = Buffer.alloc(64 * 1024, "x")

const web = Effect.acquireRelease(
  Effect.callback<{ readonly web: Web; readonly close: () => void }>((resume) => {
    let sent = 0
    const sockets = new Set<net.Socket>()
    const httpServer = http.createServer((req, res) => {
      const [route, query = ""] = (req.url ?? "/").split("?")
      if (route === "/hello") return void res.end(`hello ${query}`)
      if (route === "/bytes") {
        let left = Number(query)
        res.writeHead(200, { "content-length": String(left) })
        // Written as the socket takes it: a reader that stops, stops the writer.
        const pump = () => {
          while (left > 0) {
            const piece = left >= chunk.length ? chunk : chunk.subarray(0, left)
            left -= piece.length
            sent += piece.length
            if (!res.write(piece)) return void res.once("drain", pump)
          }
          res.end()
        }
        return pump()
      }
      res.statusCode = 404
      res.end()
    })
    httpServer.on("connection", (socket) => {
      sockets.add(socket)
      socket.once("close", () => sockets.delete(socket))
    })
    httpServer.listen(0, "127.0.0.1", () => {
      const address = httpServer.address() as net.AddressInfo
      resume(Effect.succeed({
        web: { port: address.port, sent: () => sent, open: () => sockets.size },
        close: () => {
          httpServer.close()
          for (const socket of sockets) socket.destroy()
        }
      }))
    })
  }),
  ({ close }) => Effect.sync(close)
).pipe(Effect.map(({ web }) => web))

/** A GET on a connection of its own (no keep-alive pool), its body counted, or kept when small. */
const get = (
  port: number,
  path: string,
  options: { readonly onProgress?: (received: number, response: http.IncomingMessage) => void } = {}
) =>
  Effect.callback<{ readonly status: number; readonly received: number; readonly text: string }, Error>(
    (resume) => {
      const request = http.get({ host: "127.0.0.1", port, path, agent: false }, (response) => {
        let received = 0
        const kept: Array<Buffer> = []
        response.on("data", (data: Buffer) => {
          received += data.length
          if (received <= 4096) kept.push(data)
          options.onProgress?.(received, response)
        })
        response.on("end", () =>
          resume(Effect.succeed({
            status: response.statusCode ?? 0,
            received,
            text: Buffer.concat(kept).toString()
          })))
        response.on("error", (error) => resume(Effect.fail(error)))
      })
      request.on("error", (error) => resume(Effect.fail(error)))
      return Effect.sync(() => request.destroy())
    }
  )

/** What a TCP connect to `port` on 127.0.0.1 meets: `connected`, or the error code. */
const connectOutcome = (port: number) =>
  Effect.callback<string>((resume) => {
    const socket = net.connect({ host: "127.0.0.1", port })
    socket.once("connect", () => {
      socket.destroy()
      resume(Effect.succeed("connected"))
    })
    socket.once("error", (error: Error & { code?: string }) =>
      resume(Effect.succeed(error.code ?? error.message)))
    return Effect.sync(() =>
      socket.destroy()
    )
  })

/** The pid of the sshd process serving the connection that runs this command: equal pids, one connection. */
const sessionPid = (host: string) => remote("echo $PPID", { host }).pipe(Effect.map((r) => r.stdout.trim()))

const withLogs = <A, E, R>(self: Effect.Effect<A, E, R>) => {
  const logs: Array<string> = []
  const logger = Logger.make(({ message }) => void logs.push(String(message)))
  return self.pipe(Effect.provide(Logger.layer([logger])), Effect.map((a) => ({ value: a, logs })))
}

layer(Layer.mergeAll(Ssh.layer, base), { timeout: "180 seconds", excludeTestServices: true })(
  "tunnels",
  (it) => {
    it.effect("a local forward carries many concurrent requests and a large body, holding memory back", () => {
      const host = "127.0.0.11"
      return Effect.gen(function*() {
        const site = yield* web
        const before = yield* sessionPid(host)
        const port = yield* Effect.scoped(Effect.gen(function*() {
          const port = yield* Ssh.forwardLocal({ remoteHost: "127.0.0.1", remotePort: site.port })
          assert.notStrictEqual(port, site.port)

          const answers = yield* Effect.forEach(
            Array.from({ length: 64 }, (_, i) => i),
            (i) => get(port, `/hello?${i}`),
            { concurrency: 64 }
          )
          assert.deepStrictEqual(answers.map((a) => a.text), answers.map((_, i) => `hello ${i}`))

          // 64 MiB, the reader stopping for a second after its first MiB: the server's writes must
          // stall too, a few MiB ahead (kernel buffers, SSH's window), not run to the end.
          const size = 64 * MiB
          let sentWhilePaused = -1
          const started = Date.now()
          const big = yield* get(port, `/bytes?${size}`, {
            onProgress: (received, response) => {
              if (sentWhilePaused !== -1 || received < MiB) return
              sentWhilePaused = 0
              response.pause()
              setTimeout(() => {
                sentWhilePaused = site.sent()
                response.resume()
              }, 1000)
            }
          })
          const millis = Date.now() - started - 1000
          assert.strictEqual(big.received, size)
          assert.isAbove(sentWhilePaused, MiB)
          assert.isBelow(
            sentWhilePaused,
            32 * MiB,
            `the writer ran ${sentWhilePaused} bytes ahead of a paused reader`
          )
          console.log(
            `local forward: 64 MiB in ${millis} ms (${(size / MiB / (millis / 1000)).toFixed(0)} MiB/s); ` +
              `the writer was ${(sentWhilePaused / MiB).toFixed(1)} MiB ahead of a reader paused after 1 MiB`
          )
          return port
        }))
        // Closed with its scope: the port refuses, sshd's connections to the site are gone, and
        // the SSH connection itself goes on.
        assert.strictEqual(yield* connectOutcome(port), "ECONNREFUSED")
        assert.isTrue(yield* pollUntil(() => site.open() === 0, 5000), `${site.open()} connections left`)
        assert.strictEqual(yield* sessionPid(host), before)
      }).pipe(Settings.settings({ host }))
    })

    it.effect("a remote forward lets commands on the server reach a local HTTP server", () => {
      const host = "127.0.0.12"
      return Effect.gen(function*() {
        const site = yield* web
        const before = yield* sessionPid(host)
        const port = yield* Effect.scoped(Effect.gen(function*() {
          const port = yield* Ssh.forwardRemote({ remotePort: 0, localPort: site.port })
          assert.isAbove(port, 0)
          const url = `http://127.0.0.1:${port}`
          const hello = yield* remote(`curl -fsS ${url}/hello?server`, { host })
          assert.strictEqual(hello.stdout, "hello server")
          const many = yield* remote(
            `for i in $(seq 1 40); do curl -fsS ${url}/hello?$i & done | tr -d '\\n' | grep -o hello | wc -l; wait`,
            { host }
          )
          assert.strictEqual(many.stdout.trim(), "40")
          const size = 48 * MiB
          const started = Date.now()
          const big = yield* remote(`curl -fsS ${url}/bytes?${size} | wc -c`, { host })
          const millis = Date.now() - started
          assert.strictEqual(big.stdout.trim(), String(size))
          console.log(
            `remote forward: 48 MiB in ${millis} ms (${(size / MiB / (millis / 1000)).toFixed(0)} MiB/s)`
          )
          // A reader on the server that waits 3 s before it reads: the writer here must stall.
          const baseline = site.sent()
          const slow = yield* Effect.forkChild(
            remote(`curl -fsS ${url}/bytes?${64 * MiB} | { sleep 3; wc -c; }`, { host })
          )
          yield* Effect.sleep("2 seconds")
          const ahead = site.sent() - baseline
          assert.strictEqual((yield* Fiber.join(slow)).stdout.trim(), String(64 * MiB))
          assert.isBelow(ahead, 32 * MiB, `the writer ran ${ahead} bytes ahead of a reader that waits`)
          console.log(
            `remote forward: the writer was ${(ahead / MiB).toFixed(1)} MiB ahead of a reader that waits`
          )
          // bash's own /dev/tcp, for a server without curl
          const raw = yield* remote(
            `exec 3<>/dev/tcp/127.0.0.1/${port}; printf 'GET /hello?bash HTTP/1.0\\r\\n\\r\\n' >&3; tail -n 1 <&3`,
            { host }
          )
          assert.strictEqual(raw.stdout, "hello bash")
          return port
        }))
        // The server stopped listening (it is this machine), and nothing is left connected to the site.
        assert.strictEqual(yield* connectOutcome(port), "ECONNREFUSED")
        assert.isTrue(yield* pollUntil(() => site.open() === 0, 5000), `${site.open()} connections left`)
        assert.strictEqual(yield* sessionPid(host), before)
      }).pipe(Settings.settings({ host }))
    })

    it.effect("interrupted mid-transfer, both forwards release their ports and connections", () => {
      const host = "127.0.0.13"
      return Effect.gen(function*() {
        const site = yield* web
        const before = yield* sessionPid(host)
        let localPort = 0
        let remotePort = 0
        let received = 0
        const transfer = Effect.scoped(Effect.gen(function*() {
          localPort = yield* Ssh.forwardLocal({ remoteHost: "127.0.0.1", remotePort: site.port })
          remotePort = yield* Ssh.forwardRemote({ remotePort: 0, localPort: site.port })
          yield* Effect.all([
            // a local reader that keeps up, and a server-side one at 2 MiB/s: neither ends in time
            get(localPort, `/bytes?${1024 * MiB}`, { onProgress: (n) => void (received = n) }),
            remote(
              `curl -sS --limit-rate 2M http://127.0.0.1:${remotePort}/bytes?${1024 * MiB} -o /dev/null`,
              {
                host
              }
            )
          ], { concurrency: 2 })
        }))
        const fiber = yield* Effect.forkChild(transfer)
        assert.isTrue(yield* pollUntil(() => received > 8 * MiB && site.open() >= 2, 20000))
        yield* Fiber.interrupt(fiber)
        assert.strictEqual(yield* connectOutcome(localPort), "ECONNREFUSED")
        assert.strictEqual(yield* connectOutcome(remotePort), "ECONNREFUSED")
        assert.isTrue(yield* pollUntil(() => site.open() === 0, 5000), `${site.open()} connections left`)
        assert.strictEqual(yield* sessionPid(host), before)
      }).pipe(Settings.settings({ host }))
    })

    it.effect("a port that cannot be opened is a TunnelError naming it; an unreachable destination closes only its connection", () =>
      Effect.gen(function*() {
        const site = yield* web
        const host = "127.0.0.14"
        yield* Effect.scoped(Effect.gen(function*() {
          const taken = failureOf(
            yield* Effect.exit(
              Ssh.forwardLocal({ remoteHost: "127.0.0.1", remotePort: 80, localPort: site.port })
            )
          )
          assert.instanceOf(taken, Ssh.TunnelError)
          assert.strictEqual(taken.reason, "bind")
          assert.include(taken.message, `127.0.0.1:${site.port}`)
          assert.match(taken.message, /EADDRINUSE/)

          // sshd itself listens on the server's port there
          const remoteTaken = failureOf(
            yield* Effect.exit(Ssh.forwardRemote({ remotePort: server.port, localPort: site.port }))
          )
          assert.instanceOf(remoteTaken, Ssh.TunnelError)
          assert.strictEqual(remoteTaken.reason, "bind")
          assert.strictEqual(remoteTaken.direction, "remote")
          assert.include(remoteTaken.message, `127.0.0.1:${server.port}`)

          // A port nothing listens on, as the server sees it.
          const closedPort = yield* Effect.scoped(Effect.map(web, (w) => w.port))
          const { logs, value: port } = yield* withLogs(
            Ssh.forwardLocal({ remoteHost: "127.0.0.1", remotePort: closedPort })
          )
          const refused = yield* Effect.exit(get(port, "/hello"))
          assert.isTrue(Exit.isFailure(refused))
          assert.isTrue(
            yield* pollUntil(() => logs.some((l) => /could not open it/.test(l)), 5000),
            String(logs)
          )
          assert.include(logs.join("\n"), `127.0.0.1:${closedPort}`)
          // the forward itself is still there
          assert.strictEqual(yield* connectOutcome(port), "connected")

          // From the server side: a remote forward to a local port that refuses turns the
          // connection away, and the forward stays open.
          const remoteForward = yield* withLogs(Ssh.forwardRemote({ remotePort: 0, localPort: closedPort }))
          const curl = yield* remote(
            `curl -sS http://127.0.0.1:${remoteForward.value}/hello; echo "exit=$?"`,
            {
              host
            }
          )
          assert.notInclude(curl.stdout, "exit=0")
          assert.isTrue(
            yield* pollUntil(() => remoteForward.logs.some((l) => /ECONNREFUSED/.test(l)), 5000),
            String(remoteForward.logs)
          )
          const again = yield* remote(
            `curl -sS http://127.0.0.1:${remoteForward.value}/hello; echo "exit=$?"`,
            { host }
          )
          assert.notInclude(again.stdout, "exit=7") // 7: connection refused, i.e. no longer listening
        })).pipe(Settings.settings({ host }))
      }))

    it.effect("a port out of range is refused before anything is opened", () =>
      Effect.gen(function*() {
        const exit = yield* Effect.exit(
          Effect.scoped(Ssh.forwardLocal({ remoteHost: "127.0.0.1", remotePort: 80, localPort: 70000 })).pipe(
            Settings.settings({ host: "127.0.0.14" })
          )
        )
        const error = failureOf(exit)
        assert.instanceOf(error, Ssh.TunnelError)
        assert.strictEqual(error.reason, "bind")
      }))
  }
)
