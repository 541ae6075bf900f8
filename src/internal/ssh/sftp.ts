/**
 * ssh2's SFTP client as the Effect-native {@link SftpSession} of `Ssh`: the one place that
 * touches ssh2's SFTP object. Each request becomes an Effect once, here; the limits and extensions
 * the server announced are read once, here, from fields ssh2 keeps private.
 *
 * Requests are plain `Effect.callback`s with no queue or lock between them, so that a transfer
 * running a hundred of them at once has a hundred in flight on the channel.
 */
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import type { SFTPWrapper } from "ssh2"
import { closeAndAwait, quietly } from "./channel.ts"
import type { SftpHandle, SftpOpenFlags, SftpSession, SftpStats } from "./port.ts"
import { SftpError, SftpStatus } from "./sftpError.ts"

/** The handle bytes ssh2 needs, kept out of the public shape. */
class Handle implements SftpHandle {
  readonly path: string
  readonly raw: Buffer
  constructor(path: string, raw: Buffer) {
    this.path = path
    this.raw = raw
  }
}

const rawOf = (handle: SftpHandle): Buffer => (handle as Handle).raw

// ssh2 insists on Buffers; a view over the same memory costs nothing.
const asBuffer = (bytes: Uint8Array): Buffer =>
  Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)

/** What ssh2 keeps private about a session: the limits and extensions the server announced. */
interface Internals {
  readonly _maxReadLen?: unknown
  readonly _maxWriteLen?: unknown
  readonly _extensions?: Record<string, string>
  readonly outgoing?: { readonly state?: string }
  readonly incoming?: { readonly state?: string }
}

// ssh2's own fallback when a server announces no limits (34000 bytes of packet less overhead).
const fallbackLength = 32 * 1024

const positive = (value: unknown): number => typeof value === "number" && value > 0 ? value : fallbackLength

/**
 * Ends a session. With `awaitClose`, also waits until the server has closed its channel (at most
 * 2 s, and only while the connection is open), so that the session's slot is given back only
 * once the server's SFTP process has gone: a server that must not open a channel while another
 * one's process ends (see serverQuirks.ts) would otherwise refuse the next session.
 */
export const end = (
  sftp: SFTPWrapper,
  awaitClose: boolean,
  connection: { readonly open: boolean }
): Effect.Effect<void> => {
  const internals = sftp as unknown as Internals
  if (!awaitClose || !connection.open || internals.incoming?.state === "closed") {
    return Effect.sync(() => void quietly(() => sftp.end()))
  }
  return closeAndAwait(sftp, () => sftp.end())
}

/**
 * Wraps an SFTP session that ssh2 has opened (and announced ready). The session itself is ended
 * by whoever opened it; requests made after that fail at once with `connectionLost`.
 */
export const make = (sftp: SFTPWrapper): SftpSession => {
  const internals = sftp as unknown as Internals
  const limits = {
    maxReadLength: positive(internals._maxReadLen),
    maxWriteLength: positive(internals._maxWriteLen)
  }
  const extensions: Readonly<Record<string, string>> = { ...internals._extensions }
  // ssh2 answers every pending request with an error when the channel closes, but a request
  // made after that is never answered at all: such a request must fail here instead.
  let ended = false
  sftp.once("end", () => void (ended = true))
  sftp.once("close", () => void (ended = true))
  const isOpen = () =>
    !ended && internals.outgoing?.state === "open" && internals.incoming?.state !== "closed"

  const failure = (request: string, path: string, error: unknown): SftpError => {
    const e = error as { code?: unknown; message?: unknown }
    return new SftpError({
      request,
      path,
      // ssh2 puts the status on errors the server answered; any other error means the session
      // went away under the request ("No response from server").
      code: typeof e.code === "number" ? e.code : SftpStatus.connectionLost,
      detail: String(e.message ?? error)
    })
  }

  /**
   * One request. Interruptible whether or not the server answers: the fiber goes at once, and a
   * late answer is dropped (a stopped SFTP process still lets its connection answer keepalives,
   * so the connection looks alive while no request is ever answered).
   */
  const call = <A>(
    request: string,
    path: string,
    send: (callback: (error: Error | null | undefined, value: A) => void) => void
  ): Effect.Effect<A, SftpError> =>
    Effect.callback<A, SftpError>((resume) => {
      if (!isOpen()) {
        return resume(Effect.fail(
          new SftpError({
            request,
            path,
            code: SftpStatus.connectionLost,
            detail: "the SFTP session is closed"
          })
        ))
      }
      const sent = Result.try({
        try: () =>
          send((error, value) => {
            if (error !== undefined && error !== null) resume(Effect.fail(failure(request, path, error)))
            else resume(Effect.succeed(value))
          }),
        catch: (error) => error
      })
      // ssh2 throws for what it refuses to send (an extension the server lacks, a bad argument).
      if (Result.isFailure(sent)) {
        resume(Effect.fail(
          new SftpError({
            request,
            path,
            code: SftpStatus.opUnsupported,
            detail: String((sent.failure as { message?: unknown }).message ?? sent.failure)
          })
        ))
      }
      // resume is ignored once the fiber has gone; nothing else holds it.
    })

  const unit = (request: string, path: string, send: (callback: (error?: Error | null) => void) => void) =>
    call<void>(request, path, (callback) => send((error) => callback(error, undefined)))

  return {
    limits,
    extensions,
    isOpen,
    stat: (path) => call<SftpStats>("stat", path, (cb) => sftp.stat(path, cb)),
    fstat: (handle) => call<SftpStats>("fstat", handle.path, (cb) => sftp.fstat(rawOf(handle), cb)),
    open: (path: string, flags: SftpOpenFlags, mode?: number) =>
      call<Buffer>(
        "open",
        path,
        (cb) => mode === undefined ? sftp.open(path, flags, cb) : sftp.open(path, flags, { mode }, cb)
      ).pipe(Effect.map((raw): SftpHandle => new Handle(path, raw))),
    read: (handle, buffer, offset, length, position) =>
      call<number>(
        "read",
        handle.path,
        (cb) =>
          sftp.read(rawOf(handle), asBuffer(buffer), offset, length, position, (error, bytesRead) =>
            // The end of the file is an answer, not a failure.
            (error as { code?: unknown } | null | undefined)?.code === SftpStatus.eof
              ? cb(undefined, 0)
              : cb(error, bytesRead))
      ),
    write: (handle, buffer, offset, length, position) =>
      unit(
        "write",
        handle.path,
        (cb) => sftp.write(rawOf(handle), asBuffer(buffer), offset, length, position, cb)
      ),
    fchmod: (handle, mode) => unit("fchmod", handle.path, (cb) => sftp.fchmod(rawOf(handle), mode, cb)),
    mkdir: (path, mode) =>
      unit("mkdir", path, (cb) => mode === undefined ? sftp.mkdir(path, cb) : sftp.mkdir(path, { mode }, cb)),
    rename: (from, to) => unit("rename", from, (cb) => sftp.rename(from, to, cb)),
    posixRename: (from, to) => unit("posix-rename", from, (cb) => sftp.ext_openssh_rename(from, to, cb)),
    close: (handle) => unit("close", handle.path, (cb) => sftp.close(rawOf(handle), cb))
  }
}
