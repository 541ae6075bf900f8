/** Checks for remote files, e.g. to wait until a host has finished booting. */
import { Effect, Schedule } from "effect"
import { Operations } from "../src/index.ts"
import { exampleLayer } from "./example-server.ts"

const program = Effect.gen(function*() {
  yield* Effect.log(`/etc/passwd exists: ${yield* Operations.remoteFileExists("/etc/passwd")}`)
  yield* Effect.log(`/no/such/file exists: ${yield* Operations.remoteFileExists("/no/such/file")}`)
  // Poll for a file that appears a little later.
  const flag = `/tmp/threadbare-example-ready-${process.pid}`
  // Without a pty (combineStderr: false), so the background job does not get SIGHUP when the
  // command's session ends.
  yield* Operations.remote(`(sleep 1; touch ${flag}) </dev/null >/dev/null 2>&1 &`, { combineStderr: false })
  yield* Operations.remoteFileExists(flag).pipe(
    Effect.repeat({ schedule: Schedule.spaced("200 millis"), until: (exists) => exists }),
    Effect.timeout("30 seconds")
  )
  yield* Effect.log(`${flag} appeared`)
  yield* Operations.remote(["rm", "-f", flag])
})

Effect.runPromise(program.pipe(Effect.provide(exampleLayer)))
