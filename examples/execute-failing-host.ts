/**
 * A deploy where one host cannot be reached: its failure comes back typed, with its host, while
 * the others succeed. Connection failures are retried per host by a Schedule; a failed command
 * would not be. The program then acts on the set of failures: here it reports the hosts to
 * retry later.
 *
 *   THREADBARE_SSHD_STATE=... node examples/execute-failing-host.ts
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Exit, Schedule } from "effect"
import { Execute, Settings } from "../src/index.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { deploy } from "./execute-tasks.ts"

const server = readServerFromEnv()
// 127.0.0.200 answers nothing on the server's port: the connection is refused.
const hosts = [server.hosts[0]!, "127.0.0.200", server.hosts[1]!, server.hosts[2]!]

const main = Effect.gen(function*() {
  const results = yield* Execute.withHosts(deploy, hosts, {
    poolSize: 4,
    input: { release: "v43" },
    retry: Schedule.spaced("500 millis").pipe(Schedule.upTo({ times: 2 }))
  })
  for (const { attempts, exit, host } of results) {
    yield* Console.log(
      `${host.padEnd(12)} ${Exit.isSuccess(exit) ? "ok" : "FAILED"} after ${attempts} attempt(s)`
    )
  }
  const unreachable = Execute.failures(results).filter((f) => f.error._tag === "ConnectionError")
  for (const { error } of unreachable) yield* Console.log(`\n${error.message}`)
  yield* Console.log(`\nto retry later: ${unreachable.map((f) => f.host).join(", ")}`)
})

main.pipe(
  Effect.provide(Settings.layer({
    port: server.port,
    user: server.user,
    keyFile: server.keyPath,
    knownHostsFile: server.knownHostsPath,
    sshConfigFile: false,
    useAgent: false,
    // One quick connection attempt per run: the Schedule above does the retrying here.
    connectAttempts: 1
  })),
  NodeRuntime.runMain
)
