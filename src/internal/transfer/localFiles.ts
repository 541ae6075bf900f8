/**
 * The local file access of transfers, on the local-files adapter (`internal/local/files.ts`, which
 * says why it is built on Node's `fs` and where it calls it synchronously). Each failure becomes a
 * `TransferError` naming the local path.
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as path from "node:path"
import { TransferError, type TransferErrorReason } from "../../Errors.ts"
import * as Files from "../local/files.ts"
import { type BufferPool, kindOf, notADirectory, notRegular, type Place, transferError } from "./io.ts"

/** What `stat` says about a local file. */
export type LocalStats = Files.Stats

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

/** `error`: a {@link Files.LocalFileError}, or what a call of `Files.Sync` threw. */
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
  localSync({ ...place, path: dir }, () => Files.Sync.mkdir(dir, { recursive: true })).pipe(
    Effect.catch((error) =>
      Effect.suspend(() => {
        for (let p = dir; p !== path.dirname(p); p = path.dirname(p)) {
          // `undefined` for a missing path, and for one below a file (ENOTDIR) alike.
          const info = Files.Sync.statIfExists(p)
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
export const localStat = (
  place: Place,
  follow = true
): Effect.Effect<Files.Stats | undefined, TransferError> =>
  localSync(place, () => Files.Sync.statIfExists(place.path, follow))

/**
 * Opens a local regular file for reading, off the event loop and without waiting: `O_NONBLOCK`
 * makes the open of a FIFO return at once (a plain open waits for a writer, inside a thread
 * of the pool or, synchronously, with the whole process), and anything but a regular file is
 * refused. Interruptible: a descriptor that arrives after an interruption is closed.
 */
export const openLocalRegular = (place: Place): Effect.Effect<number, TransferError> =>
  Effect.flatMap(
    Effect.mapError(Files.openReadNonBlocking(place.path), (error) => localError(place, error)),
    (fd) =>
      Files.fstat(fd).pipe(
        Effect.mapError((error) => localError(place, error)),
        Effect.flatMap((info) =>
          info.isFile() ? Effect.succeed(fd) : Effect.fail(notRegular(place, kindOf(info)))
        ),
        Effect.onError(() => Files.close(fd))
      )
  )

/** Reads up to `length` bytes at `position` into a buffer (from `pool` if given), off the event loop. */
export const localRead = (place: Place, fd: number, position: number, length: number, pool?: BufferPool) =>
  Effect.suspend(() => {
    const buffer = pool !== undefined && pool.size === length ? pool.take() : Buffer.allocUnsafe(length)
    return Effect.mapBoth(Files.read(fd, buffer, 0, length, position), {
      onFailure: (error) => localError(place, error),
      onSuccess: (bytesRead): Uint8Array => buffer.subarray(0, bytesRead)
    })
  })

/** Writes all of `bytes` at `position`. */
export const localWrite = (place: Place, fd: number, bytes: Uint8Array, position: number) =>
  Effect.mapError(Files.writeAll(fd, bytes, position), (error) => localError(place, error))

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
export const closeFd = (fd: number): Effect.Effect<void> => Files.close(fd)

/**
 * A new local file `temp` (mode 600, never an existing one), removed when its scope closes unless
 * `place` put it in place as `file`: there it is checked to hold `size` bytes, given `mode` and
 * renamed over `file` in one step.
 */
export const tempFile = Effect.fnUntraced(function*(place: Place, temp: string, file: string) {
  let kept = false
  const fd = yield* Effect.acquireRelease(
    localSync(place, () => Files.Sync.openExclusive(temp, 0o600)),
    (fd) =>
      Effect.sync(() => {
        Files.Sync.close(fd)
        if (!kept) Files.Sync.rm(temp, { force: true })
      })
  )
  return {
    fd,
    place: (size: number, mode: number) =>
      Effect.gen(function*() {
        const written = yield* localSync(place, () => Files.Sync.fstat(fd).size)
        if (written !== size) {
          return yield* transferError(
            place,
            "verify",
            `received ${written} bytes of ${size}; the target was not replaced`
          )
        }
        yield* localSync(place, () => {
          Files.Sync.fchmod(fd, mode)
          Files.Sync.rename(temp, file)
          kept = true
        })
      })
  }
})

/** A new private directory (mode 700). */
export const mkdirPrivate = (place: Place, dir: string): Effect.Effect<void, TransferError> =>
  localSync(place, () => Files.Sync.mkdir(dir, { mode: 0o700 }))

/** Renames `from` to `to`, replacing a file (or an empty directory) there. */
export const rename = (place: Place, from: string, to: string): Effect.Effect<void, TransferError> =>
  localSync(place, () => Files.Sync.rename(from, to))

export const chmod = (place: Place, file: string, mode: number): Effect.Effect<void, TransferError> =>
  localSync(place, () => Files.Sync.chmod(file, mode))
