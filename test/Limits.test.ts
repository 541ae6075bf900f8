/**
 * Limits of this machine, met for real: a program run under a low open-file limit
 * (`prlimit --nofile`) that connects to every host of the throwaway server at once. A connection
 * the limit refuses must fail alone, typed, saying that the limit is this machine's and what to
 * change; the others must succeed.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { execFile } from "node:child_process"
import * as path from "node:path"

interface Outcome {
  readonly host: string
  readonly tag: string
  readonly reason: string
  readonly message: string
}

const runUnderLimit = (files: number) =>
  Effect.promise(() =>
    new Promise<ReadonlyArray<Outcome>>((resolve, reject) =>
      execFile(
        "prlimit",
        [
          `--nofile=${files}`,
          process.execPath,
          path.join(import.meta.dirname, "fixtures", "few-descriptors.ts")
        ],
        { timeout: 60_000 },
        (error, stdout, stderr) =>
          error === null
            ? resolve(stdout.trim().split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Outcome))
            : reject(new Error(`${error.message}\n${stderr}`))
      )
    )
  )

describe("limits of this machine", () => {
  it.live(
    "out of file descriptors: the connections refused are typed, say why and what to do",
    () =>
      Effect.gen(function*() {
        const outcomes = yield* runUnderLimit(24)
        assert.isAbove(outcomes.length, 1)
        const refused = outcomes.filter((o) => o.tag !== "ok")
        assert.isAbove(refused.length, 0, "the limit refused nothing: the test proved nothing")
        for (const o of refused) {
          assert.strictEqual(o.tag, "ConnectionError", o.message)
          assert.include(o.message, "EMFILE")
          assert.include(o.message, "ran out of file descriptors")
          assert.include(o.message, "ulimit -n")
          assert.include(o.message, o.host.split("@")[1]!.split(":")[0]!)
        }
      }),
    { timeout: 90_000 }
  )
})
