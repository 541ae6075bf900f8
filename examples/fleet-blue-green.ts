/**
 * A blue-green deploy behind a load balancer, as the original library's deploy tool ran it by
 * hand: split the hosts in two groups; for each group, take it out of the load balancer, wait
 * until it is drained, run the release on the group in parallel, put it back, wait until it is
 * healthy; stop if a group fails. Here that is one `Execute.rolling` call with two groups and
 * two gates.
 *
 * The load balancer is a small HTTP service this program starts (fleet-load-balancer.ts); its
 * health check reads, over SSH, the file each host's service writes when it is up. At the end
 * the program checks what it claims: every host serves the release, is back in the pool, and
 * the pool never went empty.
 *
 *   THREADBARE_SSHD_STATE=... node examples/fleet-blue-green.ts
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Layer } from "effect"
import { Execute, Settings, Ssh } from "../src/index.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import * as LoadBalancer from "./fleet-load-balancer.ts"
import { printReport, probe, release, serving, workspace } from "./fleet-tasks.ts"

const server = readServerFromEnv()
const hosts = server.hosts.slice(0, 6)
const blue = hosts.slice(0, 3)
const green = hosts.slice(3)

const main = Effect.gen(function*() {
  const root = yield* workspace(hosts, hosts)
  const context = yield* Effect.context<Ssh.SshConnections>()
  const lb = yield* LoadBalancer.serve({
    hosts,
    drainMillis: 300,
    probe: (host) => Effect.runPromiseWith(context)(probe(root)(host))
  })

  const report = yield* Execute.rolling(release, [blue, green], {
    input: { release: "v2", root, loadBalancer: lb },
    before: (batch) =>
      LoadBalancer.drain(lb, batch.hosts).pipe(
        Effect.tap(() => Console.log(`load balancer: ${batch.hosts.join(", ")} drained and out of the pool`))
      ),
    after: (batch) =>
      LoadBalancer.restore(lb, batch.hosts).pipe(
        Effect.tap(() => Console.log(`load balancer: ${batch.hosts.join(", ")} back in the pool and healthy`))
      )
  })
  yield* printReport(report)

  // The deploy's claims, checked against the balancer and the hosts themselves.
  const problems: Array<string> = []
  if (report.status !== "completed") problems.push(`the run stopped: ${report.reason}`)
  const members = yield* LoadBalancer.pool(lb)
  for (const [host, version] of yield* serving(root, hosts)) {
    if (version !== "v2") problems.push(`${host} serves ${version}, not v2`)
    if (members[host] !== "in") problems.push(`${host} is ${members[host]} in the pool`)
    const sick = yield* LoadBalancer.health(lb, host)
    if (sick !== undefined) problems.push(`${host} is not healthy: ${sick}`)
  }
  let inService = hosts.length
  let fewest = inService
  for (const change of yield* LoadBalancer.changes(lb)) {
    if (change.state === "draining") fewest = Math.min(fewest, --inService)
    if (change.state === "in") inService++
  }
  if (fewest === 0) problems.push("the pool went empty")
  if (problems.length > 0) {
    return yield* Effect.fail(new Error(`the deploy did not do its job: ${problems.join("; ")}`))
  }
  yield* Console.log(
    `\nall ${hosts.length} hosts serve v2, are in the pool and healthy; at least ${fewest} hosts served throughout`
  )
})

main.pipe(
  Effect.scoped,
  Effect.provide(Layer.mergeAll(
    Ssh.layer,
    Settings.layer({
      host: hosts[0]!,
      port: server.port,
      user: server.user,
      keyFile: server.keyPath,
      knownHostsFile: server.knownHostsPath,
      sshConfigFile: false,
      useAgent: false
    })
  )),
  NodeRuntime.runMain
)
