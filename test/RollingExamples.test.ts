/**
 * What the fleet examples needed of `Execute.rolling` and `Report` (examples/fleet-*.ts), against
 * the throwaway server: a rerun from a report finishes a deploy whose health gate failed.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Execute from "../src/Execute.ts"
import * as Report from "../src/Report.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { serverAddress } from "./fixtures/execute-remote-tasks.ts"
import { serverConnection } from "./support.ts"

const server = readServerFromEnv()
const connection = serverConnection({ connectAttempts: 1, quiet: true })

const reportFile = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "rolling-examples-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
).pipe(Effect.map((dir) => path.join(dir, "report.json")))

describe("Report.pending after a stopped rolling run", () => {
  it.live("takes every host of the batch whose after gate failed (their runs succeeded), not the canary", () =>
    Effect.gen(function*() {
      const hosts = server.hosts.slice(0, 4)
      const gated: Array<string> = []
      const first = yield* Execute.rolling(serverAddress, hosts, {
        mode: "fibers",
        batches: [1, "100%"],
        after: (batch) =>
          batch.batch === 2 ? Effect.fail(new Error(`${batch.hosts[1]} is not healthy`)) : Effect.void
      }).pipe(connection)
      assert.strictEqual(first.status, "stopped")
      assert.deepStrictEqual(first.hosts.map((h) => h.status), [
        "succeeded",
        "succeeded",
        "succeeded",
        "succeeded"
      ])
      assert.deepStrictEqual(first.batches.map((b) => [b.status, b.after.status]), [["passed", "passed"], [
        "failed",
        "failed"
      ]])

      // Through a file, as a later process would see it.
      const file = yield* reportFile
      yield* Report.write(serverAddress, file, first)
      const pending = Report.pending(yield* Report.read(serverAddress, file))
      assert.deepStrictEqual(pending, hosts.slice(1))

      const second = yield* Execute.rolling(serverAddress, pending, {
        mode: "fibers",
        batches: [1, "100%"],
        after: (batch) => Effect.sync(() => gated.push(...batch.succeeded))
      }).pipe(connection)
      assert.strictEqual(second.status, "completed")
      assert.deepStrictEqual(second.hosts.map((h) => [h.host, h.status, h.attempts]), [
        [hosts[1], "succeeded", 1],
        [hosts[2], "succeeded", 1],
        [hosts[3], "succeeded", 1]
      ])
      // The gate that failed the first time now ran on every host it never confirmed.
      assert.deepStrictEqual(gated, hosts.slice(1))
      assert.deepStrictEqual(Report.pending(second), [])
    }).pipe(Effect.scoped))

  it.live("over budget: the whole batch is pending (its after gate never ran); within budget, only the failed host", () =>
    Effect.gen(function*() {
      // 127.0.0.200 answers nothing on the server's port: refused, a real failure. One run at a
      // time, so the hosts before it in its batch succeed before the budget is spent.
      const hosts = [server.hosts[0]!, server.hosts[1]!, server.hosts[2]!, "127.0.0.200"]
      const over = yield* Execute.rolling(serverAddress, hosts, {
        mode: "fibers",
        poolSize: 1,
        batches: [1, "100%"],
        after: () => Effect.void
      }).pipe(connection)
      assert.strictEqual(over.status, "stopped")
      assert.strictEqual(over.batches[1]!.after.status, "skipped")
      assert.deepStrictEqual(over.hosts.map((h) => h.status), [
        "succeeded",
        "succeeded",
        "succeeded",
        "failed"
      ])
      assert.deepStrictEqual(Report.pending(over), hosts.slice(1))

      const within = yield* Execute.rolling(serverAddress, hosts, {
        mode: "fibers",
        batches: [1, "100%"],
        maxFailures: 1,
        after: () => Effect.void
      }).pipe(connection)
      assert.strictEqual(within.status, "completed")
      assert.deepStrictEqual(within.batches.map((b) => b.status), ["passed", "passed"])
      assert.deepStrictEqual(Report.pending(within), ["127.0.0.200"])
    }))
})
