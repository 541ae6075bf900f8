/**
 * Moving files to and from the current host: {@link upload}, {@link download}, and
 * {@link rsyncUpload} / {@link rsyncDownload} through the system `rsync`.
 *
 * Transfers are atomic: content goes to a temporary name beside the destination and is renamed
 * over it only when complete and of the right size, so a destination is always either the old
 * file (or tree) or the whole new one; the temporary file is removed however the transfer ends,
 * interruption and a dropped connection included. Files move over SFTP with many requests in
 * flight; a directory moves as one tar stream. With `useSudo`, files reach places the connecting
 * user cannot write and leave places it cannot read, without a copy readable by anyone else.
 *
 * These operations are defined here once; `Operations` re-exports the same functions
 * (`Operations.upload === Transfer.upload`), so a program may import them from either.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Settings, Transfer } from "effect-threadbare"
 *
 * const program = Effect.gen(function*() {
 *   yield* Transfer.upload({ content: "worker_processes 4;\n" }, "/etc/nginx/conf.d/workers.conf", {
 *     useSudo: true,
 *     mode: 0o644
 *   })
 *   const log = yield* Transfer.download("/var/log/syslog", undefined, { useSudo: true })
 * }).pipe(Settings.settings({ host: "deploy@web-1" }))
 * ```
 *
 * @since 0.1.0
 * @module
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import type { ConnectionError, SettingsError, TransferError } from "./Errors.ts"
import * as Intercept from "./internal/testing/transfers.ts"
import * as Download from "./internal/transfer/download.ts"
import { checkMode, nonEmpty, withOptions } from "./internal/transfer/job.ts"
import type * as Progress from "./internal/transfer/progress.ts"
import * as RsyncRun from "./internal/transfer/rsyncRun.ts"
import * as Upload from "./internal/transfer/upload.ts"
import { Settings } from "./Settings.ts"
import type { SshConnections } from "./Ssh.ts"

export type { Progress } from "./internal/transfer/progress.ts"

export type {
  /** @since 0.1.0 */
  Content,
  /** @since 0.1.0 */
  DownloadOptions,
  /** @since 0.1.0 */
  RsyncOptions,
  /** @since 0.1.0 */
  Source,
  /** @since 0.1.0 */
  TransferOptions,
  /** @since 0.1.0 */
  UploadOptions
} from "./internal/transfer/options.ts"
import type { DownloadOptions, RsyncOptions, Source, UploadOptions } from "./internal/transfer/options.ts"

/**
 * Uploads a local file, a local directory tree, or in-memory content to `remotePath` on the
 * current host (the original's `put`/`upload`), and returns the remote path written.
 *
 * - Missing remote parent directories are created; an existing remote directory receives the
 *   file (or tree) under its local name.
 * - Atomic: the content is written under a temporary name beside the target, its size checked,
 *   then renamed over the target; on failure or interruption the temporary file is removed and
 *   the target is untouched.
 * - `useSudo` writes where the connecting user cannot (as root, or `sudoUser`): the content is
 *   staged in a private mode-700 directory and moved into place by `sudo`.
 * - A directory travels as one tar stream, unpacked beside the target and renamed into place
 *   (replacing an older tree of that name), modes kept, read-only directories included. Names
 *   go as bytes (a name that is not UTF-8 arrives unchanged); hard-linked files go as copies.
 * - An empty `source` path or `remotePath` is refused with a `SettingsError` naming it, before
 *   anything connects.
 * - Only regular files and directories: a local FIFO, socket or device is refused up front
 *   (`not-a-file`), never opened in a way that waits. Inside a tree, one is skipped (never
 *   opened), with a warning naming it (`Effect.logWarning`), and the rest goes up. Interruption ends an upload at once; a sudo or
 *   directory upload interrupted before its move into place never replaces the target later,
 *   and one interrupted during the move waits for it (at most 10 s).
 *
 * Reads the connection settings, `overwrite`, `useSudo`, `sudoUser`, `sudoPassword`,
 * `localWorkingDir` (for a relative local path), `remoteWorkingDir` (for a relative remote
 * one), `quiet` and `dryRun`. Fails with `TransferError` (`exists`, `not-found`, `not-a-directory`
 * (a parent that is a file), `not-a-file` (a FIFO, socket or device), `permission`, `is-directory`, `verify`, `failed`),
 * `ConnectionError` and `SettingsError`.
 *
 * @example
 * ```ts
 * yield* Transfer.upload("dist/app.tar.gz", "/srv/releases/")
 * yield* Transfer.upload({ content: "PORT=8080\n" }, "/etc/app.env", { useSudo: true, mode: 0o600, owner: "app" })
 * ```
 *
 * @since 0.1.0
 */
export const upload = Effect.fn("Transfer.upload")(function*(
  source: Source,
  remotePath: string,
  options: UploadOptions = {}
) {
  if (typeof source === "string") yield* nonEmpty("localPath", source)
  yield* nonEmpty("remotePath", remotePath)
  yield* checkMode(options.mode)
  const settings = withOptions(yield* Settings, options)
  // Under `Testing.layer` the transfer is recorded and answered from its script instead.
  const faked = yield* Intercept.interceptUpload(source, remotePath, settings)
  if (Option.isSome(faked)) return faked.value
  return yield* Effect.scoped(Upload.uploadWith(source, remotePath, settings, options)).pipe(
    Effect.provideService(Settings, settings)
  )
})

/**
 * Downloads `remotePath` from the current host (the original's `get`/`download`).
 *
 * - With a local `target` it returns the local path written: a file, or under an existing local
 *   directory (or a `target` ending in `/`) the remote name inside it. Relative paths are
 *   taken from `lcd`; missing local directories are created.
 * - Without a `target` it returns the file's bytes.
 * - A remote directory is fetched as a tree (one `tar` stream), into a local directory only:
 *   into memory, or over a local file, it is refused with `is-directory`. Names come as bytes
 *   (a name that is not UTF-8 arrives unchanged), read-only directories too, and files that are
 *   hard links of each other are linked again (a link naming anything but a file earlier in the
 *   tree fails the download).
 * - An empty `remotePath` or `target` is refused with a `SettingsError` naming it
 *   (`remotePath`, `localPath`), before anything connects.
 * - Atomic on the local side: written to a temporary file beside the target and renamed into
 *   place when complete and of the right size; removed otherwise.
 * - `useSudo` reads what the connecting user cannot: the content is streamed out by
 *   `sudo cat` (or `sudo tar`), so no copy of it is ever made on the server.
 * - A file or tree keeps at most `0o755` of its remote modes (no setuid, setgid, sticky, group
 *   or world write). A file is read to its end, even past the size the server reported
 *   (`/proc` files report 0).
 * - Into a local directory, the copy is named after the remote path's last component once `.`
 *   and `..` are resolved by name; a path with none (`.`, `..`, `~`, `/`) is refused there
 *   (`not-found`), so the named directory itself is never replaced.
 * - Only regular files and directories: a FIFO, socket or device is refused up front (`not-a-file`).
 *   Inside a tree, one is skipped (never opened), with a warning naming it (`Effect.logWarning`),
 *   and the rest comes down.
 *   Interruption ends a download at once, even when the server's SFTP process stopped answering.
 *
 * Reads the connection settings, `overwrite`, `useSudo`, `sudoUser`, `sudoPassword`,
 * `localWorkingDir`, `remoteWorkingDir`, `quiet` and `dryRun`. Fails with `TransferError`,
 * `ConnectionError` and `SettingsError`.
 *
 * @example
 * ```ts
 * const saved = yield* Transfer.download("/etc/hosts", "backup/")          // "…/backup/hosts"
 * const bytes = yield* Transfer.download("/root/.bash_history", undefined, { useSudo: true })
 * ```
 *
 * @since 0.1.0
 */
export const download: {
  (remotePath: string, target: string, options?: DownloadOptions): Effect.Effect<
    string,
    TransferError | ConnectionError | SettingsError,
    SshConnections
  >
  (remotePath: string, target?: undefined, options?: DownloadOptions): Effect.Effect<
    Uint8Array,
    TransferError | ConnectionError | SettingsError,
    SshConnections
  >
} = Effect.fn("Transfer.download")(function*(
  remotePath: string,
  target?: string | undefined,
  options: DownloadOptions = {}
) {
  yield* nonEmpty("remotePath", remotePath)
  yield* nonEmpty("localPath", target)
  const settings = withOptions(yield* Settings, options)
  const faked = yield* Intercept.interceptDownload(remotePath, target, settings)
  if (Option.isSome(faked)) return faked.value
  return yield* Effect.scoped(Download.downloadWith(remotePath, target, settings, options)).pipe(
    Effect.provideService(Settings, settings)
  )
}) as never

/**
 * Copies a local file or tree to the current host with the system `rsync` over `ssh` (the
 * original's `rsync_upload`): only what changed is sent. The connection settings (user, host,
 * port, key, known_hosts and host key policy, gateway) become `ssh` options; `BatchMode` is on,
 * so a missing key fails rather than asks. Missing remote parent directories are created (through
 * `sudo -n` with `useSudo`). As with rsync itself, a trailing `/` on `localPath` copies a
 * directory's contents, not the directory. An empty `localPath` or `remotePath` is refused
 * (`SettingsError`) before anything runs: rsync would take `""` for the home directory, where
 * `delete: true` deletes.
 *
 * Fails with `TransferError` (reason `rsync`, with rsync's own explanation of its exit code and
 * its last words), `SettingsError`. Needs a `ChildProcessSpawner` (`NodeServices.layer`).
 *
 * @example
 * ```ts
 * yield* Transfer.rsyncUpload("build/", "/srv/app/current/", { delete: true, exclude: [".git"] })
 * ```
 *
 * @since 0.1.0
 */
export const rsyncUpload = Effect.fn("Transfer.rsyncUpload")(function*(
  localPath: string,
  remotePath: string,
  options: RsyncOptions = {}
) {
  return yield* RsyncRun.runRsync("upload", localPath, remotePath, options)
})

/**
 * Copies a remote file or tree from the current host with the system `rsync` over `ssh` (the
 * original's `rsync_download`). Missing local directories are created; relative local paths
 * are taken from `lcd`. See {@link rsyncUpload} for the settings read and the errors.
 *
 * @example
 * ```ts
 * yield* Transfer.rsyncDownload("/var/log/app/", "logs/web-1/")
 * ```
 *
 * @since 0.1.0
 */
export const rsyncDownload = Effect.fn("Transfer.rsyncDownload")(function*(
  remotePath: string,
  localPath: string,
  options: RsyncOptions = {}
) {
  return yield* RsyncRun.runRsync("download", localPath, remotePath, options)
})

/**
 * The progress reports of a transfer as a `Stream`, for programs that would rather read them
 * than pass `onProgress`: `run` receives the callback to hand to the transfer; the stream ends
 * when the transfer does, and fails with its error.
 *
 * @example
 * ```ts
 * yield* Transfer.progressStream((onProgress) => Transfer.upload("big.iso", "/srv/", { onProgress })).pipe(
 *   Stream.runForEach((p) => Effect.log(`${p.bytes} / ${p.total}`))
 * )
 * ```
 *
 * @since 0.1.0
 */
export const progressStream = <A, E, R>(
  run: (onProgress: (progress: Progress.Progress) => Effect.Effect<void>) => Effect.Effect<A, E, R>
): Stream.Stream<Progress.Progress, E, R> =>
  Stream.callback<Progress.Progress, E, R>((queue) =>
    run((progress) => Effect.asVoid(Queue.offer(queue, progress))).pipe(
      Effect.matchEffect({
        onFailure: (error) => Queue.fail(queue, error),
        onSuccess: () => Queue.end(queue)
      })
    )
  )
