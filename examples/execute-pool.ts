/**
 * Three ways to run one task on many hosts, with the same per-host results: worker processes
 * started for the call (the default), worker processes started once and shared by every call
 * (`Execute.layerPool`), and fibers in this process (`mode: "fibers"`).
 *
 *   THREADBARE_SSHD_STATE=... node examples/execute-pool.ts
 *
 * (start a server with tests-remote/sshd-server.sh; its state dir goes in THREADBARE_SSHD_STATE)
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect } from "effect"
import { Execute, Settings } from "../src/index.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { deploy } from "./execute-tasks.ts"

const server = readServerFromEnv()
const hosts = server.hosts.slice(0, 8)

const timed = <A, E, R>(label: string, effect: Effect.Effect<ReadonlyArray<A>, E, R>) =>
  Effect.gen(function*() {
    const started = Date.now()
    const results = yield* effect
    yield* Console.log(`${label}: ${results.length} hosts in ${Date.now() - started} ms`)
    return results
  })

const main = Effect.gen(function*() {
  const input = { release: "v42" }
  // 8 hosts, 4 at a time, on 2 worker processes started for this call (2 runs each at once).
  yield* timed("fresh workers", Execute.withHosts(deploy, hosts, { poolSize: 4, workers: 2, input }))
  // The same on workers started once by the layer below: only the first call waited for them.
  const pool = Effect.gen(function*() {
    yield* timed("started pool, 1st call", Execute.withHosts(deploy, hosts, { input }))
    const results = yield* timed("started pool, 2nd call", Execute.withHosts(deploy, hosts, { input }))
    const pids = new Set(Execute.successes(results).map((s) => s.value.pid))
    yield* Console.log(`  served by ${pids.size} worker processes`)
  })
  yield* pool.pipe(Effect.provide(Execute.layerPool({ poolSize: 4, workers: 2 })))
  // In this process, on fibers: nothing to start, for tasks that neither block nor crash.
  const results = yield* timed(
    "fibers",
    Execute.withHosts(deploy, hosts, { mode: "fibers", poolSize: 4, input })
  )
  yield* Console.log(`  ${Execute.failures(results).length} failures, pid ${process.pid} ran them all`)
})

main.pipe(
  Effect.provide(Settings.layer({
    port: server.port,
    user: server.user,
    keyFile: server.keyPath,
    knownHostsFile: server.knownHostsPath,
    sshConfigFile: false,
    useAgent: false,
    quiet: true
  })),
  NodeRuntime.runMain
)
