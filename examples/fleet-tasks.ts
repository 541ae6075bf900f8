/**
 * The task of the fleet-* examples (a rolling release behind a load balancer), and what both
 * programs share. A worker process imports this module to find the task, so it declares and
 * runs nothing: the programs are fleet-blue-green.ts and fleet-canary.ts.
 *
 * Every "host" of the throwaway server (127.0.0.1 .. 127.0.0.8) is the same machine with one
 * home directory, so each host keeps its files under `<root>/<host>/`, `root` being a temporary
 * directory the program makes and removes.
 */
import { Console, Effect, Exit, Schema } from "effect"
import type { Scope } from "effect"
import { Errors, Execute, Operations, Report, Settings, Shell, type Ssh, Task } from "../src/index.ts"
import type { Probe } from "./fleet-load-balancer.ts"
import * as LoadBalancer from "./fleet-load-balancer.ts"

/** The task refused to touch a host that the load balancer still sends traffic to. */
export class StillInPool extends Schema.TaggedError<StillInPool>()("StillInPool", {
  host: Schema.String,
  state: Schema.String
}) {
  override get message(): string {
    return `${this.host} is ${this.state} in the load balancer's pool: refusing to restart it under traffic`
  }
}

/**
 * Installs `release` on the current host and restarts its service: checks that the load
 * balancer took the host out of its pool, unpacks the release, points `current` at it, and
 * restarts the service, which comes up (writes its `health` file) half a second later, and
 * only if the host has its `app.conf`.
 */
export const release = Task.make({
  name: "release",
  module: import.meta.url,
  input: Schema.Struct({ release: Schema.String, root: Schema.String, loadBalancer: Schema.String }),
  success: Schema.String,
  error: Schema.Union([Errors.OperationError, StillInPool])
}, ({ loadBalancer, release, root }) =>
  Effect.gen(function*() {
    const host = (yield* Settings.Settings).host ?? "?"
    const state = yield* LoadBalancer.pool(loadBalancer).pipe(
      Effect.map((members) => members[host] ?? "unknown"),
      Effect.orElseSucceed(() => "unreachable")
    )
    if (state !== "out") return yield* new StillInPool({ host, state })
    const home = `${root}/${host}`
    yield* Operations.remote(
      Shell
        .sh`mkdir -p ${home}/releases/${release} && echo ${release} > ${home}/releases/${release}/VERSION && ln -sfn releases/${release} ${home}/current`
    )
    // The service starts in the background and reports itself healthy once it is up, as a
    // daemon started by systemd would: the restart returns before the service is ready.
    yield* Operations.remote(
      Shell
        .sh`cd ${home} && rm -f health && nohup sh -c 'sleep 0.5; if test -f app.conf; then echo "ok $(cat current/VERSION)"; else echo "down: app.conf is missing"; fi > health' >/dev/null 2>&1 &`
    )
    yield* Console.log(`restarted on ${host} with ${release}`)
    return release
  }))

/**
 * A temporary directory on the server for the hosts' files, with an `app.conf` for each host
 * of `configured`, removed when the scope closes.
 */
export const workspace = (
  hosts: ReadonlyArray<string>,
  configured: ReadonlyArray<string>
): Effect.Effect<string, Errors.OperationError, Scope.Scope | Ssh.SshConnections> =>
  Effect.acquireRelease(
    Operations.remote("mktemp -d", { quiet: true }).pipe(Effect.map((r) => r.stdout.trim())),
    (root) => Operations.remote(Shell.sh`rm -rf ${root}`, { quiet: true }).pipe(Effect.ignore)
  ).pipe(Effect.tap((root) =>
    Effect.forEach(hosts, (host) =>
      Operations.remote(
        configured.includes(host)
          ? Shell.sh`mkdir -p ${root}/${host} && echo 'workers = 4' > ${root}/${host}/app.conf`
          : Shell.sh`mkdir -p ${root}/${host}`,
        { quiet: true }
      ), { discard: true })
  ))

/** The load balancer's health check of a host: reads the `health` file its service wrote, over SSH. */
export const probe = (root: string) => (host: string): Effect.Effect<Probe, never, Ssh.SshConnections> =>
  Operations.remote(Shell.sh`cat ${root}/${host}/health`, { host, quiet: true }).pipe(
    Effect.map(({ stdout }): Probe =>
      stdout.startsWith("ok ")
        ? { healthy: true, release: stdout.slice(3).trim() }
        : { healthy: false, detail: stdout.trim() }
    ),
    Effect.orElseSucceed((): Probe => ({ healthy: false, detail: "the service has not started" }))
  )

/** What each host serves now, as its `current` release says. */
export const serving = (root: string, hosts: ReadonlyArray<string>) =>
  Effect.forEach(
    hosts,
    (host) =>
      Operations.remote(Shell.sh`cat ${root}/${host}/current/VERSION 2>/dev/null || echo none`, {
        quiet: true
      }).pipe(Effect.map((r) => [host, r.stdout.trim()] as const))
  )

const describe = (error: unknown) =>
  error === undefined ? undefined : error instanceof Error ? `${error.name}: ${error.message}` : String(error)

/** Prints a report: one line per batch, then one per host. */
export const printReport = (report: Report.Report<string, unknown>) =>
  Effect.gen(function*() {
    yield* Console.log(
      `\nreport: ${report.status}${report.reason === undefined ? "" : ` (${report.reason})`}`
    )
    for (const batch of report.batches) {
      const gates = `before ${batch.before.status}, after ${batch.after.status}${
        batch.after.message === undefined ? "" : `: ${batch.after.message}`
      }`
      yield* Console.log(
        `  batch ${batch.batch} ${batch.status.padEnd(11)} [${batch.hosts.join(", ")}] ${gates}`
      )
    }
    for (const host of report.hosts) {
      const detail = host.exit !== undefined && Exit.isSuccess(host.exit)
        ? `release ${host.exit.value}, ${host.durationMillis} ms`
        : host.exit !== undefined
        ? describe(Execute.failures([{ exit: host.exit }])[0]?.error) ?? host.reason ?? "interrupted"
        : host.reason
      yield* Console.log(`  ${host.host.padEnd(11)} batch ${host.batch}  ${host.status.padEnd(11)} ${detail}`)
    }
  })
