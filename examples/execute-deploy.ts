/**
 * A deploy on several hosts at once: one task per host in a pool of worker processes, output
 * live with each line prefixed by its host, then a summary per host.
 *
 *   THREADBARE_SSHD_STATE=... node examples/execute-deploy.ts
 *
 * (start a server with tests-remote/sshd-server.sh; its state dir goes in THREADBARE_SSHD_STATE)
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Exit } from "effect"
import { Execute, Settings } from "../src/index.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { deploy } from "./execute-tasks.ts"

const server = readServerFromEnv()
const hosts = server.hosts.slice(0, 8)

const main = Effect.gen(function*() {
  const started = Date.now()
  const results = yield* Execute.withHosts(deploy, hosts, { poolSize: 4, input: { release: "v42" } })
  yield* Console.log(`\nsummary (${hosts.length} hosts, pool of 4, ${Date.now() - started} ms):`)
  for (const { exit, host } of results) {
    yield* Console.log(
      Exit.isSuccess(exit)
        ? `  ${
          host.padEnd(12)
        } ok      release ${exit.value.release}, kernel ${exit.value.kernel}, worker ${exit.value.pid}`
        : `  ${host.padEnd(12)} FAILED  ${Execute.failures([{ exit }])[0]?.error.message ?? "interrupted"}`
    )
  }
  const workers = new Set(Execute.successes(results).map((s) => s.value.pid))
  yield* Console.log(`${workers.size} worker processes served ${hosts.length} hosts`)
})

main.pipe(
  Effect.provide(Settings.layer({
    port: server.port,
    user: server.user,
    keyFile: server.keyPath,
    knownHostsFile: server.knownHostsPath,
    sshConfigFile: false,
    useAgent: false
  })),
  NodeRuntime.runMain
)
