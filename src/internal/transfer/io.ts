/**
 * SFTP requests as transfer steps (their failures as `TransferError`), and the pipelined SFTP copy that keeps many requests in flight (what makes ssh2's `fastPut`/`fastGet`
 * fast) while holding only a bounded number of chunks in memory.
 *
 * Every failure becomes a `TransferError` that names the side and path it is about.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { TransferError, type TransferErrorReason } from "../../Errors.ts"
import { type SftpError, type SftpHandle, type SftpSession, type SftpStats, SftpStatus } from "../../Ssh.ts"

/** Where an operation happens, for error messages. */
export interface Place {
  readonly host: string
  readonly side: "local" | "remote"
  readonly path: string
}

export const transferError = (place: Place, reason: TransferErrorReason, detail: string): TransferError =>
  new TransferError({ host: place.host, side: place.side, path: place.path, reason, detail })

/** The failure for `file`, found where a directory must be. */
export const notADirectory = (place: Place, file: string, what: string): TransferError =>
  transferError(
    { ...place, path: file },
    "not-a-directory",
    `${file} is not a directory (it is a file), so ${what}; remove or rename it, or choose another target`
  )

/** What a file that is not a regular file is, in words, for messages. */
/**
 * What a file that is neither a regular file nor a directory is, in words: the same whether it was
 * found by a local `lstat`, the remote `stat -c %F` or a tar header.
 */
export const kindWords = {
  fifo: "a FIFO (named pipe)",
  socket: "a socket",
  block: "a block device",
  character: "a character device"
} as const

export const kindOf = (
  info: {
    isFIFO(): boolean
    isSocket(): boolean
    isBlockDevice(): boolean
    isCharacterDevice(): boolean
    isSymbolicLink(): boolean
  }
): string =>
  info.isFIFO()
    ? kindWords.fifo
    : info.isSocket()
    ? kindWords.socket
    : info.isBlockDevice()
    ? kindWords.block
    : info.isCharacterDevice()
    ? kindWords.character
    : info.isSymbolicLink()
    ? "a symbolic link"
    : "not a regular file"

/**
 * The warning for an entry of a tree that is not transferred: a FIFO, socket or device has no
 * content to copy (reading one could wait for a writer for ever), so a tree goes without it, as
 * with rsync, and each one is named, never dropped in silence. `place.path` is the entry.
 */
export const warnSkipped = (place: Place, kind: string): Effect.Effect<void> =>
  Effect.logWarning(
    `[${place.host}] skipped ${place.side} ${JSON.stringify(place.path)}: ${kind}, not a regular file ` +
      `(not transferred: only files, directories and symbolic links of a tree are)`
  ).pipe(Effect.annotateLogs({ host: place.host, side: place.side, path: place.path, skipped: kind }))

/** The refusal of a path that is neither a regular file nor a directory. */
export const notRegular = (place: Place, kind: string): TransferError =>
  transferError(
    place,
    "not-a-file",
    `it is ${kind}, not a regular file: only regular files and directories are transferred, since ` +
      `reading one would wait for a writer or never end; copy its content to a file, or pass the bytes`
  )

/**
 * Block buffers for reuse. A transfer of hundreds of megabytes would otherwise allocate (and
 * leave the garbage collector) a fresh megabyte per block, costing as much CPU as the copy.
 * Only buffers the pool made go back into it.
 */
export class BufferPool {
  private readonly free: Array<Buffer> = []
  private readonly own = new WeakSet<ArrayBufferLike>()
  readonly size: number
  constructor(size: number) {
    this.size = size
  }
  take(): Buffer {
    const buffer = this.free.pop() ?? Buffer.allocUnsafeSlow(this.size)
    this.own.add(buffer.buffer)
    return buffer
  }
  /** Hands back a buffer (or a view of one) that nothing reads or writes any more. */
  give(bytes: Uint8Array): void {
    if (this.own.has(bytes.buffer) && this.free.length < 16) {
      this.own.delete(bytes.buffer)
      this.free.push(Buffer.from(bytes.buffer, 0, this.size))
    }
  }
}

/**
 * Bytes written at offsets into memory that grows as needed: a download into memory whose size
 * the server reported wrongly (or not at all) still gets all of it.
 */
export class GrowableBytes {
  private buffer: Buffer
  private end = 0
  constructor(expected: number) {
    this.buffer = Buffer.allocUnsafe(Math.max(expected, 0))
  }
  set(offset: number, bytes: Uint8Array): void {
    const needed = offset + bytes.length
    if (needed > this.buffer.length) {
      const grown = Buffer.allocUnsafe(Math.max(needed, this.buffer.length * 2, 64 * 1024))
      this.buffer.copy(grown, 0, 0, this.end)
      this.buffer = grown
    }
    this.buffer.set(bytes, offset)
    this.end = Math.max(this.end, needed)
  }
  /** The first `length` bytes (everything written, when every offset below it was). */
  bytes(length: number): Uint8Array {
    return new Uint8Array(this.buffer.buffer, this.buffer.byteOffset, Math.min(length, this.end))
  }
}

/**
 * Cuts blocks to at most `size` bytes and tags each with its offset in the whole: a block is the
 * unit the pipelines below keep in memory and hand to one fiber.
 */
export const withOffsets =
  (size: number) =>
  <E, R>(blocks: Stream.Stream<Uint8Array, E, R>): Stream.Stream<readonly [number, Uint8Array], E, R> =>
    Stream.mapAccum(blocks, () => 0, (offset, block) => {
      const pieces: Array<readonly [number, Uint8Array]> = []
      for (let at = 0; at < block.length; at += size) {
        pieces.push([offset + at, block.subarray(at, at + size)])
      }
      return [offset + block.length, pieces] as const
    })

/**
 * Gathers pieces of a stream (an SSH channel's 32 KiB packets) into blocks of `size` bytes, each
 * written at its offset once full (and the last by `flush`): one local write per block instead
 * of one thread-pool round trip per packet. One buffer, reused: a block is written before the
 * next piece is taken.
 */
export const gatherer = <E>(
  size: number,
  write: (offset: number, bytes: Uint8Array) => Effect.Effect<void, E>
) => {
  const buffer = Buffer.allocUnsafeSlow(size)
  let filled = 0
  let offset = 0
  const flush: Effect.Effect<void, E> = Effect.suspend(() => {
    if (filled === 0) return Effect.void
    const at = offset
    const bytes = buffer.subarray(0, filled)
    offset += filled
    filled = 0
    return write(at, bytes)
  })
  const push = (bytes: Uint8Array): Effect.Effect<void, E> =>
    Effect.suspend(() => {
      const n = Math.min(size - filled, bytes.length)
      buffer.set(n === bytes.length ? bytes : bytes.subarray(0, n), filled)
      filled += n
      if (filled < size) return Effect.void
      return n === bytes.length ? flush : Effect.andThen(flush, push(bytes.subarray(n)))
    })
  return { push, flush }
}

// -- SFTP -----------------------------------------------------------------------------------------

/** An SFTP failure as the transfer's own error, about `place`. */
export const sftpError = (place: Place, error: SftpError): TransferError =>
  transferError(
    place,
    error.code === SftpStatus.noSuchFile
      ? "not-found"
      : error.code === SftpStatus.permissionDenied
      ? "permission"
      : "failed",
    error.detail
  )

/** An SFTP request whose failure is a `TransferError` about `place`. */
export const sftpCall = <A>(
  place: Place,
  request: Effect.Effect<A, SftpError>
): Effect.Effect<A, TransferError> => Effect.mapError(request, (error) => sftpError(place, error))

/** How long a transfer that succeeded waits for the server to close a handle. */
const closeGrace = Duration.seconds(5)

/**
 * Closes a remote handle when its scope ends. After a success the answer is awaited (bounded):
 * a write may report its error only at close. After a failure or an interruption the request
 * is sent and not awaited: the session is ended right after, which closes every handle, and a
 * server that stopped answering must not hold the interruption.
 */
const closeRemoteHandle = (
  sftp: SftpSession,
  handle: SftpHandle,
  exit: Exit.Exit<unknown, unknown>
): Effect.Effect<void> =>
  Exit.isSuccess(exit)
    ? sftp.close(handle).pipe(
      // Finalizers are uninterruptible; the time limit must be able to stop the wait.
      Effect.interruptible,
      Effect.timeoutOption(closeGrace),
      Effect.ignore
    )
    : Effect.asVoid(Effect.forkDetach(Effect.ignore(sftp.close(handle))))

/**
 * Opens a remote file; the handle is closed with the scope ({@link closeRemoteHandle}). The open
 * itself can be interrupted (a server that stopped answering never answers it); a handle that
 * arrives after that is closed when the session ends, right after.
 */
export const openRemote = (
  sftp: SftpSession,
  place: Place,
  file: string,
  flags: "r" | "wx" | "w",
  mode?: number
): Effect.Effect<SftpHandle, TransferError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.interruptible(sftpCall(place, sftp.open(file, flags, mode))),
    (handle, exit) => closeRemoteHandle(sftp, handle, exit)
  )

/** `stat` (following links) of a remote path, `undefined` when it does not exist. */
export const remoteStat = (
  sftp: SftpSession,
  place: Place
): Effect.Effect<SftpStats | undefined, TransferError> =>
  sftpCall(
    place,
    sftp.stat(place.path).pipe(
      Effect.catchIf((error) => error.code === SftpStatus.noSuchFile, () => Effect.succeed(undefined))
    )
  )

/** Creates a remote directory and its missing parents (`mkdir -p`), walking up only as far as needed. */
export const remoteMkdirs = (
  sftp: SftpSession,
  place: Place,
  dir: string
): Effect.Effect<void, TransferError> =>
  Effect.gen(function*() {
    if (dir === "" || dir === "." || dir === "/") return
    const info = yield* remoteStat(sftp, { ...place, path: dir })
    if (info !== undefined) {
      if (info.isDirectory()) return
      return yield* notADirectory(place, dir, `the remote directory ${place.path} cannot be created in it`)
    }
    const parent = dir.includes("/") ? dir.slice(0, dir.lastIndexOf("/")) : ""
    yield* remoteMkdirs(sftp, place, parent === "" && dir.startsWith("/") ? "/" : parent)
    yield* sftpCall({ ...place, path: dir }, sftp.mkdir(dir)).pipe(
      // Another writer may have made it meanwhile.
      Effect.catch((error) =>
        Effect.flatMap(
          remoteStat(sftp, { ...place, path: dir }),
          (again) => again?.isDirectory() === true ? Effect.void : Effect.fail(error)
        )
      )
    )
  })

/** How the pipelines split work: requests of `chunkSize`, `blocks` blocks of `blockSize` at a time. */
export interface Pipeline {
  readonly chunkSize: number
  readonly blockSize: number
  /** Blocks in flight; requests in flight are `blocks * blockSize / chunkSize`. */
  readonly blocks: number
}

/** The offsets of the `chunkSize` pieces of `length` bytes. */
const pieces = (length: number, chunkSize: number): Array<number> => {
  const out: Array<number> = []
  for (let at = 0; at < length; at += chunkSize) out.push(at)
  return out
}

/**
 * Writes one block as `chunkSize` requests sent at once, answered in any order; the block's
 * buffer goes back to `pool` once every piece is answered.
 */
const writeBlock = (
  sftp: SftpSession,
  handle: SftpHandle,
  place: Place,
  offset: number,
  block: Uint8Array,
  chunkSize: number,
  onBytes: (n: number) => void,
  pool: BufferPool | undefined
) =>
  Effect.forEach(
    pieces(block.length, chunkSize),
    (at) => {
      const length = Math.min(chunkSize, block.length - at)
      return Effect.andThen(
        sftp.write(handle, block, at, length, offset + at),
        Effect.sync(() => onBytes(length))
      )
    },
    { concurrency: "unbounded", discard: true }
  ).pipe(
    Effect.mapError((error) => sftpError(place, error)),
    Effect.tap(() => Effect.sync(() => pool?.give(block)))
  )

/**
 * Writes `blocks` to an open remote file, several blocks at once, each as many write requests
 * in flight (what makes ssh2's `fastPut` fast). Memory stays bounded by the blocks in flight.
 */
export const pipelinedWrite = (
  sftp: SftpSession,
  handle: SftpHandle,
  place: Place,
  blocks: Stream.Stream<Uint8Array, TransferError>,
  pipeline: Pipeline,
  onBytes: (n: number) => void,
  pool?: BufferPool
): Effect.Effect<void, TransferError> =>
  blocks.pipe(
    withOffsets(pipeline.blockSize),
    Stream.mapEffect(
      ([offset, block]) => writeBlock(sftp, handle, place, offset, block, pipeline.chunkSize, onBytes, pool),
      { concurrency: pipeline.blocks, unordered: true }
    ),
    Stream.runDrain
  )

/**
 * Fills `buffer[at, end)` from the file at `offset + at`. A server may answer a read with fewer
 * bytes than asked: the rest is asked for again. The file ending first is a failure.
 */
const readRange = (
  sftp: SftpSession,
  handle: SftpHandle,
  place: Place,
  buffer: Uint8Array,
  offset: number,
  at: number,
  end: number,
  onBytes: (n: number) => void
): Effect.Effect<void, TransferError> =>
  Effect.flatMap(
    sftpCall(place, sftp.read(handle, buffer, at, end - at, offset + at)),
    (n) => {
      if (n === 0) {
        return Effect.fail(
          transferError(place, "verify", `the file ended at ${offset + at} bytes while being read`)
        )
      }
      onBytes(n)
      return at + n < end ? readRange(sftp, handle, place, buffer, offset, at + n, end, onBytes) : Effect.void
    }
  )

/**
 * Reads `length` bytes at `offset` into one buffer, as `chunkSize` requests sent at once. An
 * interrupted block's buffer never goes back to the pool: answers still to come may fill it.
 */
const readBlock = (
  sftp: SftpSession,
  handle: SftpHandle,
  place: Place,
  offset: number,
  length: number,
  chunkSize: number,
  onBytes: (n: number) => void,
  pool: BufferPool
) =>
  Effect.suspend(() => {
    const buffer = length === pool.size ? pool.take() : Buffer.allocUnsafe(length)
    return Effect.as(
      Effect.forEach(
        pieces(length, chunkSize),
        (at) => readRange(sftp, handle, place, buffer, offset, at, Math.min(at + chunkSize, length), onBytes),
        { concurrency: "unbounded", discard: true }
      ),
      buffer as Uint8Array
    )
  })

/**
 * The longest read sent as one request on this session: what the server announced (255 KiB for
 * OpenSSH). A longer read would be split into requests sent one after another.
 */
export const maxReadLength = (sftp: SftpSession): number => sftp.limits.maxReadLength

/**
 * Reads an open remote file from `offset` to its end, one request at a time, handing each piece
 * to `sink`: the rest of a file that the server said was shorter (a `/proc` file has size 0) or
 * that grew while it was read. Returns the offset where the file ended.
 */
export const readToEnd = <E>(
  sftp: SftpSession,
  handle: SftpHandle,
  place: Place,
  offset: number,
  chunkSize: number,
  onBytes: (n: number) => void,
  sink: (offset: number, bytes: Uint8Array) => Effect.Effect<void, E>
): Effect.Effect<number, TransferError | E> =>
  Effect.suspend(() => {
    const buffer = Buffer.allocUnsafe(chunkSize)
    return Effect.flatMap(
      sftpCall(place, sftp.read(handle, buffer, 0, chunkSize, offset)),
      (n) =>
        n === 0 ? Effect.succeed(offset) : sink(offset, buffer.subarray(0, n)).pipe(
          Effect.andThen(Effect.sync(() => onBytes(n))),
          Effect.andThen(readToEnd(sftp, handle, place, offset + n, chunkSize, onBytes, sink))
        )
    )
  })

/**
 * Reads `size` bytes of an open remote file, several blocks at once, and hands each block to
 * `sink` with its offset as soon as it is complete (the sink writes at that offset, so blocks
 * need no reordering, and memory holds at most the blocks in flight).
 */
export const pipelinedRead = <E>(
  sftp: SftpSession,
  handle: SftpHandle,
  place: Place,
  size: number,
  pipeline: Pipeline,
  onBytes: (n: number) => void,
  sink: (offset: number, bytes: Uint8Array) => Effect.Effect<void, E>
): Effect.Effect<void, TransferError | E> => {
  const pool = new BufferPool(pipeline.blockSize)
  return Stream.unfold(0, (offset) =>
    Effect.succeed(
      offset >= size
        ? undefined
        : [
          [offset, Math.min(pipeline.blockSize, size - offset)] as const,
          offset + pipeline.blockSize
        ] as const
    )).pipe(
      Stream.mapEffect(
        ([offset, length]) =>
          Effect.flatMap(
            readBlock(sftp, handle, place, offset, length, pipeline.chunkSize, onBytes, pool),
            // Once written out, the block's buffer serves the next one.
            (bytes) => Effect.tap(sink(offset, bytes), () => Effect.sync(() => pool.give(bytes)))
          ),
        { concurrency: pipeline.blocks, unordered: true }
      ),
      Stream.runDrain
    )
}
