/**
 * Single files over SFTP: the pipelines' sizes (how many reads and writes are in flight), and
 * sending a stream of blocks into a new remote file that is then checked and renamed into place.
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { TransferError } from "../../Errors.ts"
import { type SftpHandle, type SftpSession } from "../../Ssh.ts"
import * as Io from "./io.ts"
import * as Progress from "./progress.ts"

// Writes: 128 requests of 64 KiB in flight, as 8 blocks of 1 MiB: measured a little faster than
// 64 in flight, and as fast as ssh2's fastPut/fastGet at their best (bench/transfer.ts), in 8 MiB
// of buffers whatever the size of the file.
export const pipeline: Io.Pipeline = { chunkSize: 64 * 1024, blockSize: 1024 * 1024, blocks: 8 }

/**
 * Reads: requests as long as the session takes (255 KiB from OpenSSH), 4 blocks of about 2 MiB
 * in flight. A download is bound by this process's CPU (decryption, ssh2's parsing and its
 * garbage), not by the channel's window: 255 KiB requests cost a quarter of the requests,
 * callbacks and packets of 64 KiB ones, which took a 256 MiB download from ~0.95x scp to
 * ~1.3x (bench/transfer.ts). Two or three SFTP sessions reading parts of the file at once, each
 * with its own 2 MiB window, measured no faster (within noise) for a channel slot each, so one
 * session reads. With a server that takes only short reads, at most 32 requests per block
 * (128 in flight, as for writes).
 */
export const readPipeline = (sftp: SftpSession): Io.Pipeline => {
  const chunkSize = Math.min(Io.maxReadLength(sftp), 256 * 1024)
  const perBlock = Math.min(32, Math.max(1, Math.round((2 * 1024 * 1024) / chunkSize)))
  return { chunkSize, blockSize: chunkSize * perBlock, blocks: 4 }
}

export const sftpRename = (sftp: SftpSession, place: Io.Place, from: string, to: string) =>
  Io.sftpCall(
    place,
    // posix-rename replaces the target in one step; plain SFTP rename refuses an existing one.
    sftp.extensions["posix-rename@openssh.com"] === "1" ? sftp.posixRename(from, to) : sftp.rename(from, to)
  )

/**
 * Opens a remote file for writing, exclusively (`wx`, a new file of mode 600), or one of ours
 * made so before (`w`, emptied); closed with its scope.
 */
export const openRemoteWrite = (sftp: SftpSession, place: Io.Place, file: string, flags: "wx" | "w" = "wx") =>
  Io.openRemote(sftp, place, file, flags, 0o600)

/** Checks that an open remote file holds `size` bytes, and gives it `mode`. */
export const finishFile = Effect.fnUntraced(function*(
  sftp: SftpSession,
  place: Io.Place,
  handle: SftpHandle,
  size: number,
  mode: number | undefined
) {
  const written = yield* Io.sftpCall(place, sftp.fstat(handle))
  if (written.size !== size) {
    return yield* Io.transferError(
      place,
      "verify",
      `wrote ${written.size} bytes of ${size}; the target was not replaced`
    )
  }
  if (mode !== undefined) yield* Io.sftpCall(place, sftp.fchmod(handle, mode))
})

/** Sends `blocks` (exactly `size` bytes) into a new remote file and checks its size. */
export const sendFile = Effect.fnUntraced(function*(
  sftp: SftpSession,
  place: Io.Place,
  file: string,
  blocks: Stream.Stream<Uint8Array, TransferError>,
  size: number,
  meter: Progress.Meter,
  mode: number | undefined,
  pool?: Io.BufferPool | undefined,
  flags: "wx" | "w" = "wx"
) {
  const handle = yield* openRemoteWrite(sftp, place, file, flags)
  // Never longer than the server takes as one request: ssh2 would send the rest after the answer.
  const chunkSize = Math.min(sftp.limits.maxWriteLength, pipeline.chunkSize)
  yield* Io.pipelinedWrite(sftp, handle, place, blocks, { ...pipeline, chunkSize }, meter.add, pool)
  yield* finishFile(sftp, place, handle, size, mode)
})
