/**
 * Every local file access of transfers, in one adapter: Node's `fs` is called here and in
 * `tree.ts` (the tar packer and unpacker, whose many small synchronous calls per entry belong to
 * its stream), nowhere else. Each failure becomes a `TransferError` naming the local path.
 *
 * Why Node's `fs` and not Effect's `FileSystem`: a transfer needs positional reads and writes
 * into reused buffers with many in flight (`FileSystem.File` reads and writes at a shared cursor),
 * `O_NONBLOCK` opens that never wait on a FIFO, `lstat`, and synchronous metadata calls for trees
 * of thousands of files (a thread-pool round trip each would cost more than the call itself).
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as fs from "node:fs"
import * as path from "node:path"
import { TransferError, type TransferErrorReason } from "../../Errors.ts"
import { type BufferPool, kindOf, notADirectory, notRegular, type Place, transferError } from "./io.ts"

/** What `stat` says about a local file. */
export type LocalStats = fs.Stats

// -- local files ----------------------------------------------------------------------------------

const localReason = (code: unknown): TransferErrorReason => {
  switch (code) {
    case "ENOENT":
    case "ENOTDIR":
      return "not-found"
    case "EACCES":
    case "EPERM":
    case "EROFS":
      return "permission"
    case "EISDIR":
      return "is-directory"
    case "EEXIST":
    case "ENOTEMPTY":
      return "exists"
    default:
      return "failed"
  }
}

export const localError = (place: Place, error: unknown): TransferError => {
  const e = error as { code?: unknown; message?: unknown }
  return transferError(place, localReason(e.code), String(e.message ?? error))
}

/**
 * A small local file-system call, run synchronously: metadata calls and small writes take
 * microseconds, and a thousand files of a tree would otherwise cost a thread-pool round trip each.
 */
export const localSync = <A>(place: Place, f: () => A): Effect.Effect<A, TransferError> =>
  Effect.try({ try: f, catch: (error) => localError(place, error) })

/**
 * Creates a local directory and its missing parents. A parent that is a file is named as such
 * (not `exists`, which is what `mkdir` says).
 */
export const localMkdirs = (place: Place, dir: string): Effect.Effect<void, TransferError> =>
  localSync({ ...place, path: dir }, () => void fs.mkdirSync(dir, { recursive: true })).pipe(
    Effect.catch((error) =>
      Effect.suspend(() => {
        for (let p = dir; p !== path.dirname(p); p = path.dirname(p)) {
          // `undefined` for a missing path, and for one below a file (ENOTDIR) alike.
          const info = fs.statSync(p, { throwIfNoEntry: false })
          if (info !== undefined) {
            return info.isDirectory()
              ? Effect.fail(error)
              : Effect.fail(notADirectory(place, p, `the local directory ${dir} cannot be created`))
          }
        }
        return Effect.fail(error)
      })
    )
  )

/** `lstat` or `stat` of a local path, `undefined` when it does not exist. */
export const localStat = (place: Place, follow = true): Effect.Effect<fs.Stats | undefined, TransferError> =>
  localSync(place, () => (follow ? fs.statSync : fs.lstatSync)(place.path, { throwIfNoEntry: false }))

/**
 * Opens a local regular file for reading, off the event loop and without waiting: `O_NONBLOCK`
 * makes the open of a FIFO return at once (a plain open waits for a writer, inside a thread
 * of the pool or, synchronously, with the whole process), and anything but a regular file is
 * refused. Interruptible: a descriptor that arrives after an interruption is closed.
 */
export const openLocalRegular = (place: Place): Effect.Effect<number, TransferError> =>
  Effect.flatMap(
    Effect.callback<number, TransferError>((resume) => {
      let abandoned = false
      fs.open(place.path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK, (error, fd) => {
        if (abandoned) {
          if (error === null) fs.close(fd, () => {})
          return
        }
        if (error !== null) resume(Effect.fail(localError(place, error)))
        else resume(Effect.succeed(fd))
      })
      return Effect.sync(() => {
        abandoned = true
      })
    }),
    (fd) =>
      Effect.callback<number, TransferError>((resume) => {
        let abandoned = false
        fs.fstat(fd, (error, info) => {
          if (!abandoned && error === null && info.isFile()) return resume(Effect.succeed(fd))
          fs.close(fd, () => {})
          if (abandoned) return
          resume(Effect.fail(error === null ? notRegular(place, kindOf(info)) : localError(place, error)))
        })
        return Effect.sync(() => {
          abandoned = true
        })
      })
  )

/** Reads up to `length` bytes at `position` into a buffer (from `pool` if given), off the event loop. */
export const localRead = (place: Place, fd: number, position: number, length: number, pool?: BufferPool) =>
  Effect.callback<Uint8Array, TransferError>((resume) => {
    const buffer = pool !== undefined && pool.size === length ? pool.take() : Buffer.allocUnsafe(length)
    fs.read(fd, buffer, 0, length, position, (error, bytesRead) => {
      if (error !== null) resume(Effect.fail(localError(place, error)))
      else resume(Effect.succeed(buffer.subarray(0, bytesRead)))
    })
  })

/** Writes all of `bytes` at `position`. */
export const localWrite = (place: Place, fd: number, bytes: Uint8Array, position: number) =>
  Effect.callback<void, TransferError>((resume) => {
    const step = (offset: number): void => {
      fs.write(fd, bytes, offset, bytes.length - offset, position + offset, (error, written) => {
        if (error !== null) return resume(Effect.fail(localError(place, error)))
        if (offset + written < bytes.length) return step(offset + written)
        resume(Effect.void)
      })
    }
    step(0)
  })

/** Blocks of a local file, read one at a time as the consumer pulls. */
export const localFileBlocks = (
  place: Place,
  fd: number,
  blockSize: number,
  pool?: BufferPool
): Stream.Stream<Uint8Array, TransferError> =>
  Stream.unfold(0, (position) =>
    Effect.map(
      localRead(place, fd, position, blockSize, pool),
      (bytes) => bytes.length === 0 ? undefined : [bytes, position + bytes.length] as const
    ))

/** Closes a descriptor; a close that fails has nothing left to report. */
export const closeFd = (fd: number): Effect.Effect<void> => Effect.sync(() => fs.closeSync(fd))

/**
 * A new local file `temp` (mode 600, never an existing one), removed when its scope closes unless
 * `place` put it in place as `file`: there it is checked to hold `size` bytes, given `mode` and
 * renamed over `file` in one step.
 */
export const tempFile = Effect.fnUntraced(function*(place: Place, temp: string, file: string) {
  let kept = false
  const fd = yield* Effect.acquireRelease(
    localSync(place, () => fs.openSync(temp, "wx", 0o600)),
    (fd) =>
      Effect.sync(() => {
        fs.closeSync(fd)
        if (!kept) fs.rmSync(temp, { force: true })
      })
  )
  return {
    fd,
    place: (size: number, mode: number) =>
      Effect.gen(function*() {
        const written = yield* localSync(place, () => fs.fstatSync(fd).size)
        if (written !== size) {
          return yield* transferError(
            place,
            "verify",
            `received ${written} bytes of ${size}; the target was not replaced`
          )
        }
        yield* localSync(place, () => {
          fs.fchmodSync(fd, mode)
          fs.renameSync(temp, file)
          kept = true
        })
      })
  }
})

/** A new private directory (mode 700). */
export const mkdirPrivate = (place: Place, dir: string): Effect.Effect<void, TransferError> =>
  localSync(place, () => fs.mkdirSync(dir, { mode: 0o700 }))

/** Renames `from` to `to`, replacing a file (or an empty directory) there. */
export const rename = (place: Place, from: string, to: string): Effect.Effect<void, TransferError> =>
  localSync(place, () => fs.renameSync(from, to))

export const chmod = (place: Place, file: string, mode: number): Effect.Effect<void, TransferError> =>
  localSync(place, () => fs.chmodSync(file, mode))
