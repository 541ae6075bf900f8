/**
 * The local-files adapter (`src/internal/local/files.ts`) on real files: a FIFO neither stops the
 * process nor a fiber that is interrupted, and a failure says which call, which path and Node's
 * code, and maps to a transfer's reason.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import * as Files from "../src/internal/local/files.ts"
import { localError } from "../src/internal/transfer/localFiles.ts"

const temp = fs.mkdtempSync(path.join(tmpdir(), "tb-local-files-"))

const fifo = (name: string): string => {
  const file = path.join(temp, name)
  execFileSync("mkfifo", [file])
  return file
}

/** A directory this process may not create anything in, even as root (sysfs refuses `mkdir`). */
const forbidden = (): string => {
  if (process.getuid?.() === 0) return "/sys/kernel/tb-local-files-test"
  const dir = path.join(temp, "read-only")
  fs.mkdirSync(dir, { mode: 0o555 })
  return path.join(dir, "child")
}

describe("LocalFiles", () => {
  it.effect("opens a FIFO without a writer at once, and fstat says what it is", () =>
    Effect.gen(function*() {
      const file = fifo("no-writer")
      const fd = yield* Files.openReadNonBlocking(file)
      const info = yield* Files.fstat(fd)
      yield* Files.close(fd)
      assert.isTrue(info.isFIFO())
    }))

  it.live("a whole-file read of a FIFO waiting for a writer is interrupted at once", () =>
    Effect.gen(function*() {
      const file = fifo("waiting")
      const fiber = yield* Effect.forkChild(Files.readFile(file))
      yield* Effect.sleep("50 millis")
      assert.isUndefined(fiber.pollUnsafe())
      yield* Fiber.interrupt(fiber).pipe(Effect.timeout("2 seconds"))
      const exit = yield* Fiber.await(fiber)
      assert.isTrue(Exit.hasInterrupts(exit))
      // The open still waits in a thread of Node's pool: a writer that comes and goes frees it.
      const writer = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK)
      fs.closeSync(writer)
    }))

  it.effect("a missing file: undefined from stat, ENOENT with its path from a read", () =>
    Effect.gen(function*() {
      const file = path.join(temp, "missing")
      assert.isUndefined(yield* Files.stat(file))
      assert.isUndefined(yield* Files.stat(path.join(temp, "missing", "below")))
      assert.isFalse(yield* Files.exists(file))
      const error = yield* Effect.flip(Files.readFile(file))
      assert.strictEqual(error._tag, "LocalFileError")
      assert.strictEqual(error.operation, "readFile")
      assert.strictEqual(error.code, "ENOENT")
      assert.strictEqual(error.path, file)
      assert.include(error.message, file)
      assert.strictEqual(localError({ host: "h", side: "local", path: file }, error).reason, "not-found")
    }))

  it.effect("a permission error keeps its code and path, and a transfer names it as such", () =>
    Effect.gen(function*() {
      const dir = forbidden()
      const error = yield* Effect.flip(Files.makeDirectory(dir))
      assert.include(["EACCES", "EPERM"], error.code)
      assert.strictEqual(error.operation, "mkdir")
      assert.strictEqual(error.path, dir)
      const mapped = localError({ host: "h", side: "local", path: dir }, error)
      assert.strictEqual(mapped.reason, "permission")
      assert.strictEqual(mapped.path, dir)
      assert.strictEqual(mapped.detail, error.message)
    }))

  it.effect("Sync calls throw Node's error, which maps like the Effect ones", () =>
    Effect.gen(function*() {
      const file = path.join(temp, "missing-sync")
      const error = yield* Effect.flip(
        Effect.try({ try: () => Files.Sync.lstat(file), catch: (e) => Files.fromNode("lstat", file, e) })
      )
      assert.strictEqual(error.code, "ENOENT")
      assert.strictEqual(error.path, file)
      assert.isUndefined(Files.Sync.statIfExists(file))
    }))
})
