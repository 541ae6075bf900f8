/**
 * A canary rolling deploy that stops on a failing health check, and its rerun from the report.
 *
 * Six hosts in batches `[1, "50%", "100%"]`: one canary, then half of the fleet (3 hosts), then
 * the rest. One host of the second batch lacks its `app.conf`, so its service never comes up:
 * the second batch's health gate fails, the run stops, and the third batch is reported as not
 * started, with the reason. The report goes to a file (`Report.write`); after the fault is
 * fixed, a second run reads it back (`Report.read`) and deploys only what the first one left
 * unfinished (`Report.pending`): the hosts of the batch that never passed its gate, and those
 * never started.
 *
 *   THREADBARE_SSHD_STATE=... node examples/fleet-canary.ts
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Execute, Operations, Report, Settings, Shell, Ssh } from "../src/index.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import * as LoadBalancer from "./fleet-load-balancer.ts"
import { printReport, probe, release, serving, workspace } from "./fleet-tasks.ts"

const server = readServerFromEnv()
const hosts = server.hosts.slice(0, 6)
const broken = hosts[2]!

/** A local directory for the report, removed with the scope. */
const reportDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "fleet-canary-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

const main = Effect.gen(function*() {
  const root = yield* workspace(hosts, hosts.filter((host) => host !== broken))
  const context = yield* Effect.context<Ssh.SshConnections>()
  const lb = yield* LoadBalancer.serve({
    hosts,
    drainMillis: 200,
    probe: (host) => Effect.runPromiseWith(context)(probe(root)(host))
  })
  const options = {
    batches: [1, "50%", "100%"],
    input: { release: "v3", root, loadBalancer: lb },
    before: (batch: Execute.Batch) => LoadBalancer.drain(lb, batch.hosts),
    // 20 polls 100 ms apart: a service not up within about 2 s fails the gate.
    after: (batch: Execute.Batch) => LoadBalancer.restore(lb, batch.hosts, 20)
  } satisfies Execute.RollingOptions<typeof release.input.Type>

  const file = path.join(yield* reportDir, "deploy-report.json")
  const first = yield* Execute.rolling(release, hosts, options)
  yield* printReport(first)
  yield* Report.write(release, file, first)
  yield* Console.log(`report written to ${path.basename(file)} (${fs.statSync(file).size} bytes)`)

  // Later, or in another process: the report read back, with its typed outcomes.
  const last = yield* Report.read(release, file)
  const pending = Report.pending(last)
  yield* Console.log(`\nto finish: ${pending.join(", ")}`)

  yield* Console.log(`fixing ${broken}: restoring its app.conf`)
  yield* Operations.remote(Shell.sh`echo 'workers = 4' > ${root}/${broken}/app.conf`, { quiet: true })
  const second = yield* Execute.rolling(release, pending, options)
  yield* printReport(second)

  // What the program claims, checked.
  const problems: Array<string> = []
  const third = first.batches[2]
  if (first.status !== "stopped" || first.batches[1]?.after.status !== "failed") {
    problems.push("the first run should have stopped at the second batch's health gate")
  }
  if (third === undefined || third.status !== "not-started") {
    problems.push("the third batch should not have started")
  }
  for (const host of last.hosts.filter((h) => third?.hosts.includes(h.host))) {
    if (host.status !== "not-started" || host.reason === undefined) {
      problems.push(`${host.host}: no reason given`)
    }
  }
  if (pending.includes(hosts[0]!)) problems.push("the canary, done and healthy, should not run again")
  if (second.status !== "completed") problems.push(`the rerun stopped: ${second.reason}`)
  const members = yield* LoadBalancer.pool(lb)
  for (const [host, version] of yield* serving(root, hosts)) {
    if (version !== "v3") problems.push(`${host} serves ${version}, not v3`)
    if (members[host] !== "in") problems.push(`${host} is ${members[host]} in the pool`)
    const sick = yield* LoadBalancer.health(lb, host)
    if (sick !== undefined) problems.push(`${host} is not healthy: ${sick}`)
  }
  if (problems.length > 0) {
    return yield* Effect.fail(new Error(`the deploy did not do its job: ${problems.join("; ")}`))
  }
  yield* Console.log(
    `\nall ${hosts.length} hosts serve v3, are in the pool and healthy, the canary deployed once`
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
      useAgent: false,
      // The task's command lines are in the blue-green example; here the report tells the story.
      quiet: true
    })
  )),
  NodeRuntime.runMain
)
