/**
 * A stand-in load balancer for the fleet-* examples, and the gates a deploy calls on it.
 *
 * The service is a small HTTP server on 127.0.0.1 (a random port) that holds which hosts are in
 * its pool, as a real one does:
 *
 *   GET  /pool              {"members": {"127.0.0.1": "in" | "draining" | "out", ...}}
 *   POST /remove?host=H     H stops getting new traffic: "draining", then "out" once its open
 *                           connections had time to finish (the deregistration delay)
 *   POST /add?host=H        H is back in the pool
 *   GET  /health?host=H     the load balancer's own health check of H: 200 with the release H
 *                           serves, or 503 with why H is not healthy
 *   GET  /log               every change of membership, in order
 *
 * Its health check asks the host itself, over SSH (`probe`): a real balancer would GET a health
 * URL of the service; our "service" on the throwaway server is a file it writes when it starts.
 */
import { Data, Effect, Schedule } from "effect"
import type { Scope } from "effect"
import * as http from "node:http"

export type Membership = "in" | "draining" | "out"

/** What the health check of one host found. */
export type Probe = { readonly healthy: true; readonly release: string } | {
  readonly healthy: false
  readonly detail: string
}

export interface Change {
  readonly host: string
  readonly state: Membership
}

/** A request to the load balancer failed, or it did not reach the state a gate waits for. */
export class LoadBalancerError extends Data.TaggedError("LoadBalancerError")<{ readonly message: string }> {}

/**
 * Starts the load balancer with every host of `hosts` in its pool, for the life of the scope
 * (closing the scope stops the server and its drain timers). Gives its base URL.
 */
export const serve = (options: {
  readonly hosts: ReadonlyArray<string>
  readonly drainMillis: number
  readonly probe: (host: string) => Promise<Probe>
}): Effect.Effect<string, never, Scope.Scope> => {
  const members = new Map<string, Membership>(options.hosts.map((host) => [host, "in"]))
  const log: Array<Change> = []
  const timers = new Set<NodeJS.Timeout>()
  const set = (host: string, state: Membership) => {
    members.set(host, state)
    log.push({ host, state })
  }
  const reply = (response: http.ServerResponse, status: number, body: unknown) => {
    response.writeHead(status, { "content-type": "application/json" })
    response.end(JSON.stringify(body))
  }
  const handle = (request: http.IncomingMessage, response: http.ServerResponse) => {
    const url = new URL(request.url ?? "/", "http://lb")
    const host = url.searchParams.get("host") ?? ""
    const route = `${request.method} ${url.pathname}`
    if (route === "GET /pool") return reply(response, 200, { members: Object.fromEntries(members) })
    if (route === "GET /log") return reply(response, 200, { changes: log })
    if (!members.has(host)) {
      return reply(response, 404, { detail: `${host || "(no host)"} is not behind this balancer` })
    }
    if (route === "POST /remove") {
      if (members.get(host) === "in") {
        set(host, "draining")
        const timer = setTimeout(() => {
          timers.delete(timer)
          if (members.get(host) === "draining") set(host, "out")
        }, options.drainMillis)
        timers.add(timer)
      }
      return reply(response, 200, { host, state: members.get(host) })
    }
    if (route === "POST /add") {
      set(host, "in")
      return reply(response, 200, { host, state: "in" })
    }
    if (route === "GET /health") {
      if (members.get(host) !== "in") return reply(response, 503, { detail: `${host} is not in the pool` })
      return void options.probe(host).then(
        (probe) => reply(response, probe.healthy ? 200 : 503, probe),
        (error) => reply(response, 503, { healthy: false, detail: String(error) })
      )
    }
    return reply(response, 404, { detail: `no route ${route}` })
  }
  return Effect.acquireRelease(
    Effect.callback<http.Server>((resume) => {
      const server = http.createServer(handle)
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) =>
      Effect.callback<void>((resume) => {
        for (const timer of timers) clearTimeout(timer)
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map((server) => {
    const address = server.address() as { readonly port: number }
    return `http://127.0.0.1:${address.port}`
  }))
}

// -- the client side: what a deploy's gates do ------------------------------------------------

const request = (method: "GET" | "POST", url: string) =>
  Effect.tryPromise({
    try: async (signal) => {
      const response = await fetch(url, { method, signal })
      return { status: response.status, body: await response.json() as Record<string, any> }
    },
    catch: (cause) => new LoadBalancerError({ message: `${method} ${url}: ${String(cause)}` })
  })

/** The pool's membership, host by host. */
export const pool = (lb: string): Effect.Effect<Record<string, Membership>, LoadBalancerError> =>
  request("GET", `${lb}/pool`).pipe(Effect.map((r) => r.body.members))

/** Every change of membership since the balancer started. */
export const changes = (lb: string): Effect.Effect<ReadonlyArray<Change>, LoadBalancerError> =>
  request("GET", `${lb}/log`).pipe(Effect.map((r) => r.body.changes))

/** The balancer's health check of `host`, once: `undefined` when healthy, else why not. */
export const health = (lb: string, host: string): Effect.Effect<string | undefined, LoadBalancerError> =>
  request("GET", `${lb}/health?host=${host}`).pipe(
    Effect.map(({ body, status }) => status === 200 ? undefined : String(body.detail))
  )

// Polls `check` every 100 ms, `times` times at most: a gate never waits unbounded, and when it
// gives up its error is the last thing it saw, not a bare "timed out".
const poll = <A>(check: Effect.Effect<A, LoadBalancerError>, times: number) =>
  Effect.retry(check, { schedule: Schedule.spaced("100 millis"), times })

/** `before` gate: takes `hosts` out of the pool and waits until they are drained (at most 5 s). */
export const drain = (lb: string, hosts: ReadonlyArray<string>): Effect.Effect<void, LoadBalancerError> =>
  Effect.gen(function*() {
    for (const host of hosts) yield* request("POST", `${lb}/remove?host=${host}`)
    yield* poll(
      pool(lb).pipe(Effect.flatMap((members) => {
        const busy = hosts.filter((host) => members[host] !== "out")
        return busy.length === 0
          ? Effect.void
          : Effect.fail(new LoadBalancerError({ message: `still draining: ${busy.join(", ")}` }))
      })),
      50
    )
  })

/**
 * `after` gate: puts `hosts` back into the pool and waits until the balancer's health check
 * passes for each (polled every 100 ms, `times` times at most).
 */
export const restore = (
  lb: string,
  hosts: ReadonlyArray<string>,
  times = 50
): Effect.Effect<void, LoadBalancerError> =>
  Effect.gen(function*() {
    for (const host of hosts) yield* request("POST", `${lb}/add?host=${host}`)
    yield* Effect.forEach(hosts, (host) =>
      poll(
        health(lb, host).pipe(Effect.flatMap((detail) =>
          detail === undefined
            ? Effect.void
            : Effect.fail(new LoadBalancerError({ message: `${host} is not healthy: ${detail}` }))
        )),
        times
      ), { concurrency: "unbounded", discard: true })
  })
