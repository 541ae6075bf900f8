/**
 * A worker process that dies in the middle of a host's run (SIGKILL, as the out-of-memory
 * killer does): that host fails with a typed WorkerCrashed naming the signal, the other hosts
 * finish, the pool starts a new worker for what is left, and the program does not hang. The
 * host that shared the dead worker (2 workers for 3 runs at once) is run again alone
 * (`isolateCrashes`), so it ends with its own outcome, after 2 attempts.
 *
 *   THREADBARE_SSHD_STATE=... node examples/execute-crash.ts
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Exit } from "effect"
import { Execute, Settings } from "../src/index.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { deployOrCrash } from "./execute-tasks.ts"

const server = readServerFromEnv()
const hosts = server.hosts.slice(0, 6)

const main = Effect.gen(function*() {
  const results = yield* Execute.withHosts(deployOrCrash, hosts, {
    poolSize: 3,
    workers: 2,
    input: { crashHost: hosts[1]! }
  })
  for (const { attempts, exit, host } of results) {
    yield* Console.log(
      `${host.padEnd(12)} ${Exit.isSuccess(exit) ? exit.value : "FAILED"} (${attempts} attempt${
        attempts === 1 ? "" : "s"
      })`
    )
  }
  for (const { error, host } of Execute.failures(results)) {
    if (error._tag === "WorkerCrashed") {
      yield* Console.log(
        `\n${host}: worker died (signal ${error.signal}, exit code ${error.exitCode}, ` +
          `${error.runsInFlight} runs in flight)\n${error.message}`
      )
    }
  }
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
