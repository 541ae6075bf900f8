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
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ChildProcess from "effect/process/ChildProcess"
import { ChildProcessSpawner } from "effect/process/ChildProcessSpawner"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { ConnectionError, SettingsError, TransferError } from "./Errors.ts"
import { quote } from "./internal/command/shell.ts"
import { readKey } from "./internal/ssh/client.ts"
import { resolveTarget } from "./internal/ssh/target.ts"
import * as Io from "./internal/transfer/io.ts"
import * as Progress from "./internal/transfer/progress.ts"
import * as Remote from "./internal/transfer/remote.ts"
import * as Rsync from "./internal/transfer/rsync.ts"
import * as Tree from "./internal/transfer/tree.ts"
import * as Output from "./Output.ts"
import { apply, type Patch, resolveLocal, Settings } from "./Settings.ts"
import { type Connection, type SftpSession, SshConnections } from "./Ssh.ts"

export type { Progress } from "./internal/transfer/progress.ts"

/**
 * In-memory content to upload: text (written as UTF-8) or bytes.
 *
 * @since 0.1.0
 */
export interface Content {
  readonly content: string | Uint8Array
}

/**
 * What {@link upload} sends: a local path (a file or a directory; relative to `lcd`), bytes, or
 * `{ content }`.
 *
 * @since 0.1.0
 */
export type Source = string | Uint8Array | Content

/**
 * Options shared by every transfer. Each wins over the setting of the same name for this call.
 *
 * @since 0.1.0
 */
export interface TransferOptions extends
  Pick<
    Patch,
    | "host"
    | "user"
    | "port"
    | "keyFile"
    | "gateway"
    | "useSudo"
    | "sudoUser"
    | "sudoPassword"
    | "overwrite"
    | "quiet"
  >
{
  /** Called a few times a second with the bytes moved so far, and once more at the end (`done`). */
  readonly onProgress?: ((progress: Progress.Progress) => Effect.Effect<void>) | undefined
  /**
   * Draw one progress line on the terminal for a large transfer (only when standard output is a
   * terminal, and never when `quiet`). Default: `true`.
   */
  readonly showProgress?: boolean | undefined
}

/**
 * Options of {@link upload}.
 *
 * @since 0.1.0
 */
export interface UploadOptions extends TransferOptions {
  /**
   * Permission bits of the uploaded file (`0o640`). Default: those of the file replaced, else
   * those of the local file, else `0o644`. For a directory, modes come from the local tree.
   */
  readonly mode?: number | undefined
  /** Owner to give the file or tree (`"www-data"`, `"app:app"`); needs `useSudo` unless it is you. */
  readonly owner?: string | undefined
}

/**
 * Options of {@link download}.
 *
 * @since 0.1.0
 */
export interface DownloadOptions extends TransferOptions {}

/**
 * Options of {@link rsyncUpload} and {@link rsyncDownload}.
 *
 * @since 0.1.0
 */
export interface RsyncOptions
  extends Pick<Patch, "host" | "user" | "port" | "keyFile" | "gateway" | "quiet">
{
  /** Delete files at the destination that the source does not have (`--delete`). Default: `false`. */
  readonly delete?: boolean | undefined
  /** Patterns to leave out (`--exclude`). */
  readonly exclude?: ReadonlyArray<string> | undefined
  /** More rsync options, passed as they are (`["--checksum"]`). Default: `["-a"]` is always given. */
  readonly options?: ReadonlyArray<string> | undefined
  /** Run the remote rsync through `sudo -n` (root-owned destinations and sources). Default: `false`. */
  readonly useSudo?: boolean | undefined
}

// Writes: 128 requests of 64 KiB in flight, as 8 blocks of 1 MiB: measured a little faster than
// 64 in flight, and as fast as ssh2's fastPut/fastGet at their best (bench/transfer.ts), in 8 MiB
// of buffers whatever the size of the file.
const pipeline: Io.Pipeline = { chunkSize: 64 * 1024, blockSize: 1024 * 1024, blocks: 8 }

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
const readPipeline = (sftp: SftpSession): Io.Pipeline => {
  const chunkSize = Math.min(Io.maxReadLength(sftp), 256 * 1024)
  const perBlock = Math.min(32, Math.max(1, Math.round((2 * 1024 * 1024) / chunkSize)))
  return { chunkSize, blockSize: chunkSize * perBlock, blocks: 4 }
}

const nonce = Effect.sync(() => randomBytes(6).toString("hex"))

/**
 * Refuses an empty path argument before anything is touched: `""` is what an unset variable
 * gives, and every layer below would read it as somewhere real (the current directory, the
 * login user's home directory), where an upload or `delete: true` would do damage.
 */
const nonEmpty = (argument: string, value: string | undefined): Effect.Effect<void, SettingsError> =>
  value === ""
    ? Effect.fail(
      new SettingsError({
        setting: argument,
        value,
        detail: "an empty path names no file; give the path (\".\" for the current directory)"
      })
    )
    : Effect.void

/**
 * A `mode` option is permission bits, `0` to `0o7777`, a whole number: anything else (`NaN`, a
 * negative number, bits beyond the permission bits) would be cut down to bits nobody asked for,
 * with `useSudo` a root-owned setuid file, so it is refused before anything is touched.
 */
const checkMode = (mode: number | undefined): Effect.Effect<void, SettingsError> =>
  mode === undefined || (Number.isInteger(mode) && mode >= 0 && mode <= 0o7777)
    ? Effect.void
    : Effect.fail(
      new SettingsError({
        setting: "mode",
        value: String(mode),
        detail: "not permission bits; give a whole number from 0 to 0o7777, such as 0o644"
      })
    )

const withOptions = (current: Settings, options: TransferOptions | RsyncOptions): Settings => {
  const patch: Record<string, unknown> = {}
  for (
    const key of [
      "host",
      "user",
      "port",
      "keyFile",
      "gateway",
      "useSudo",
      "sudoUser",
      "sudoPassword",
      "overwrite",
      "quiet"
    ]
  ) {
    const value = (options as Record<string, unknown>)[key]
    if (value !== undefined) patch[key] = value
  }
  return apply(current, patch as Patch)
}

/** What every remote step of a transfer needs. */
interface Job {
  readonly settings: Settings
  readonly connection: Connection
  readonly label: string
  /** The remote path as the caller gave it, for messages. */
  readonly shown: string
  /** Opens the connection of the settings again, for cleanups after a drop. */
  readonly reconnect: Effect.Effect<Connection, ConnectionError | SettingsError, Scope.Scope>
}

const remotePlace = (ctx: Job, p?: string): Io.Place => ({
  host: ctx.label,
  side: "remote",
  path: p ?? ctx.shown
})

/** Turns a failure after the connection dropped into the `ConnectionError` it really is. */
const whileConnected = <A, E, R>(
  ctx: Job,
  self: Effect.Effect<A, E, R>
): Effect.Effect<A, E | ConnectionError, R> =>
  Effect.catchIf(
    self,
    (error): error is E => error instanceof TransferError && !ctx.connection.isOpen(),
    (error) =>
      Effect.fail(
        new ConnectionError({
          host: ctx.label,
          port: ctx.connection.target.port,
          user: ctx.connection.target.user,
          reason: "disconnected",
          detail: `the connection dropped during the transfer of ${(error as TransferError).path} (${
            (error as TransferError).detail
          }); the destination was left as it was`
        })
      )
  )

/**
 * Runs a cleanup command, on a fresh connection if the transfer's own one is gone. Never fails:
 * a transfer's outcome is already decided when its cleanup runs.
 */
const cleanup = (ctx: Job, line: string, input?: string): Effect.Effect<void> =>
  Remote.runCommand(ctx.connection, line, { input, reserved: true }).pipe(
    Effect.catch(() =>
      Effect.scoped(
        Effect.flatMap(ctx.reconnect, (connection) => Remote.runCommand(connection, line, { input }))
      )
    ),
    // Finalizers are uninterruptible; the time limit must be able to stop a hung cleanup.
    Effect.interruptible,
    Effect.timeoutOption(Duration.seconds(20)),
    Effect.ignore,
    Effect.withSpan("Transfer.cleanup")
  )

const sftpRename = (sftp: SftpSession, place: Io.Place, from: string, to: string) =>
  Io.sftpCall(
    place,
    // posix-rename replaces the target in one step; plain SFTP rename refuses an existing one.
    sftp.extensions["posix-rename@openssh.com"] === "1" ? sftp.posixRename(from, to) : sftp.rename(from, to)
  )

/** Opens a remote file for writing, exclusively; closed with its scope. */
const openRemoteWrite = (sftp: SftpSession, place: Io.Place, file: string) =>
  Io.openRemote(sftp, place, file, "wx", 0o600)

/** Sends `blocks` (exactly `size` bytes) into a new remote file and checks its size. */
const sendFile = Effect.fnUntraced(function*(
  sftp: SftpSession,
  place: Io.Place,
  file: string,
  blocks: Stream.Stream<Uint8Array, TransferError>,
  size: number,
  meter: Progress.Meter,
  mode: number | undefined,
  pool?: Io.BufferPool | undefined
) {
  const handle = yield* openRemoteWrite(sftp, place, file)
  // Never longer than the server takes as one request: ssh2 would send the rest after the answer.
  const chunkSize = Math.min(sftp.limits.maxWriteLength, pipeline.chunkSize)
  yield* Io.pipelinedWrite(sftp, handle, place, blocks, { ...pipeline, chunkSize }, meter.add, pool)
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

// -- upload ---------------------------------------------------------------------------------------

/** The upload source, opened: how to stream it, its size, and its mode if it has one. */
interface OpenedSource {
  readonly describe: string
  readonly size: number
  readonly mode: number | undefined
  readonly blocks: Stream.Stream<Uint8Array, TransferError>
  readonly basename: string | undefined
  /** Where the blocks' buffers come from, so that a sent block's buffer can be reused. */
  readonly pool?: Io.BufferPool | undefined
  /** Entries of a tree that are not sent (FIFOs, sockets, devices), each to be warned of. */
  readonly skipped?: ReadonlyArray<Tree.Skipped> | undefined
}

const openSource = Effect.fnUntraced(function*(settings: Settings, source: Source, label: string) {
  if (typeof source !== "string") {
    const bytes = source instanceof Uint8Array
      ? source
      : typeof source.content === "string"
      ? new TextEncoder().encode(source.content)
      : source.content
    const opened: OpenedSource = {
      describe: "<memory>",
      size: bytes.length,
      mode: undefined,
      blocks: Stream.succeed(bytes),
      basename: undefined
    }
    return { _tag: "File" as const, opened }
  }
  const local = resolveLocal(settings, source)
  const place: Io.Place = { host: label, side: "local", path: local }
  const info = yield* Io.localStat(place)
  if (info === undefined) {
    return yield* Io.transferError(place, "not-found", "no such local file or directory")
  }
  if (info.isDirectory()) {
    const tree = yield* Tree.packTree(place, local)
    const opened: OpenedSource = {
      describe: local,
      size: tree.size,
      mode: undefined,
      blocks: tree.blocks,
      basename: path.basename(local),
      skipped: tree.skipped
    }
    return { _tag: "Tree" as const, opened }
  }
  if (!info.isFile()) return yield* Io.notRegular(place, Io.kindOf(info))
  const fd = yield* Effect.acquireRelease(
    Io.openLocalRegular(place),
    (fd) => Effect.sync(() => fs.closeSync(fd))
  )
  const pool = new Io.BufferPool(pipeline.blockSize)
  const opened: OpenedSource = {
    describe: local,
    size: info.size,
    mode: info.mode & 0o7777,
    pool,
    blocks: Io.localFileBlocks(place, fd, pipeline.blockSize, pool),
    basename: path.basename(local)
  }
  return { _tag: "File" as const, opened }
})

/** A file straight over SFTP: temporary name beside the target, then one atomic rename. */
const putFileSftp = Effect.fnUntraced(function*(
  ctx: Job,
  sftp: SftpSession,
  target: string,
  source: OpenedSource,
  options: UploadOptions,
  meter: Progress.Meter
) {
  const place = remotePlace(ctx)
  let info = yield* Io.remoteStat(sftp, { ...place, path: target })
  let destination = target
  if (info?.isDirectory() === true) {
    if (source.basename === undefined) {
      return yield* Io.transferError(
        place,
        "is-directory",
        "the target is a directory; name the file to write"
      )
    }
    destination = path.posix.join(target, source.basename)
    info = yield* Io.remoteStat(sftp, { ...place, path: destination })
    if (info?.isDirectory() === true) {
      return yield* Io.transferError(
        { ...place, path: destination },
        "is-directory",
        "the target is a directory"
      )
    }
  }
  if (info !== undefined && !ctx.settings.overwrite) {
    return yield* Io.transferError(
      { ...place, path: destination },
      "exists",
      "the target exists and overwrite is off"
    )
  }
  const dir = path.posix.dirname(destination)
  yield* Io.remoteMkdirs(sftp, place, dir)
  const temp = path.posix.join(
    dir,
    `.${Remote.tempBase(path.posix.basename(destination))}.tb-${yield* nonce}.part`
  )
  let placed = false
  yield* Effect.addFinalizer(() =>
    placed ? Effect.void : cleanup(ctx, Remote.shellLine(`rm -f -- "$1"`, [temp], undefined))
  )
  const mode = options.mode ?? (info === undefined ? source.mode ?? 0o644 : info.mode & 0o7777)
  yield* sendFile(
    sftp,
    { ...place, path: destination },
    temp,
    source.blocks,
    source.size,
    meter,
    mode,
    source.pool
  )
  if (options.owner !== undefined) yield* chown(ctx, temp, options.owner, place)
  yield* sftpRename(sftp, { ...place, path: destination }, temp, destination)
  placed = true
  return destination
})

const chown = Effect.fnUntraced(function*(ctx: Job, file: string, owner: string, place: Io.Place) {
  const done = yield* Remote.runCommand(
    ctx.connection,
    Remote.shellLine(`chown -- "$1" "$2"`, [owner, file], undefined)
  )
  if (done.exitCode !== 0) {
    return yield* Io.transferError(place, "permission", `cannot give it to ${owner}: ${done.stderr.trim()}`)
  }
})

/**
 * Everything else (sudo, directories): the content goes over SFTP into a private staging
 * directory of the connecting user (mode 700, in `remoteTempDir`), and one remote script, through sudo when
 * asked, puts it in place.
 */
const putStaged = Effect.fnUntraced(function*(
  ctx: Job,
  sftp: SftpSession,
  target: string,
  kind: "File" | "Tree",
  source: OpenedSource,
  options: UploadOptions,
  meter: Progress.Meter
) {
  const place = remotePlace(ctx)
  const settings = ctx.settings
  const sudo = settings.useSudo ? Remote.sudoPrefix(settings) : undefined
  const input = settings.useSudo ? Remote.sudoInput(settings) : undefined
  const id = yield* nonce
  const stage = `${settings.remoteTempDir.replace(/\/+$/, "")}/.tb-${id}`
  let finished = false
  yield* Io.sftpCall(remotePlace(ctx, stage), sftp.mkdir(stage, 0o700))
  // The script removes the staging directory and its own temporary file when it ends; this covers
  // a transfer that never got that far (the target may be `target` or a name inside it).
  yield* Effect.addFinalizer(() =>
    finished ? Effect.void : Effect.andThen(
      cleanup(ctx, Remote.shellLine(`rm -rf -- "$1"`, [stage], undefined)),
      cleanup(
        ctx,
        Remote.shellLine(Remote.removeTreesScript, [
          Remote.tempBeside(target, id),
          ...(source.basename === undefined ? [] : [Remote.tempBeside(`${target}/${source.basename}`, id)])
        ], sudo),
        input
      )
    )
  )
  const data = `${stage}/data`
  yield* Effect.scoped(
    sendFile(sftp, remotePlace(ctx, data), data, source.blocks, source.size, meter, undefined)
  )

  const common = [target, source.basename ?? "", id, options.owner ?? "", settings.overwrite ? "1" : "0"]
  const line = Remote.feedThroughSudo(
    settings,
    stage,
    `__tb_data_${id}__`,
    kind === "File" ? Remote.putFileScript : Remote.putTreeScript,
    kind === "File"
      ? [
        ...common,
        String(source.size),
        options.mode === undefined ? "" : (options.mode & 0o7777).toString(8)
      ]
      : [...common, String(source.size)]
  )
  const done = yield* Remote.runPlacing(ctx.connection, line, input)
  finished = true
  const destination = /^into$/m.test(done.stdout) && source.basename !== undefined
    ? path.posix.join(target, source.basename)
    : target
  if (done.exitCode !== 0) {
    const failure = Remote.scriptFailure(done.stderr)
    const reason = failure?.reason === "exists" || failure?.reason === "is-directory" ||
        failure?.reason === "verify" || failure?.reason === "permission" ||
        failure?.reason === "not-a-directory"
      ? failure.reason
      : /password|sudo/i.test(done.stderr)
      ? "permission"
      : "failed"
    return yield* Io.transferError(
      { ...place, path: destination },
      reason,
      failure?.detail ??
        (done.stderr.trim() || `the remote script ended with ${done.exitCode ?? done.signal}`)
    )
  }
  return destination
})

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
  return yield* Effect.scoped(uploadWith(source, remotePath, settings, options)).pipe(
    Effect.provideService(Settings, settings)
  )
})

const hostOf = Effect.fnUntraced(function*(settings: Settings) {
  return (yield* resolveTarget(settings)).label
})

const uploadWith = Effect.fnUntraced(function*(
  source: Source,
  remotePath: string,
  settings: Settings,
  options: UploadOptions
) {
  const started = yield* Clock.currentTimeMillis
  const label = yield* hostOf(settings)
  const { _tag: kind, opened } = yield* openSource(settings, source, label)
  yield* Output.printRunning(
    label,
    settings.useSudo ? "sudo put" : "put",
    `${opened.describe} -> ${remotePath}`
  )
  for (const { kind: what, path: file } of opened.skipped ?? []) {
    yield* Io.warnSkipped({ host: label, side: "local", path: file }, what)
  }
  if (settings.dryRun) return remotePath
  const ssh = yield* SshConnections
  const connection = yield* ssh.connect(settings)
  const ctx: Job = { settings, connection, label, shown: remotePath, reconnect: ssh.connect(settings) }
  // `dir/` names a directory: the upload goes inside it under its local name.
  const given = Remote.remotePath(settings, remotePath)
  const target = given.length > 1 && given.endsWith("/")
    ? opened.basename === undefined ? given.replace(/\/+$/, "") : path.posix.join(given, opened.basename)
    : given
  const meter = yield* Progress.start({
    direction: "upload",
    host: label,
    path: remotePath,
    total: opened.size,
    terminal: options.showProgress !== false && !settings.quiet,
    onProgress: options.onProgress
  })
  const written = yield* whileConnected(
    ctx,
    Effect.gen(function*() {
      const sftp = yield* connection.sftp
      return kind === "File" && !settings.useSudo
        ? yield* putFileSftp(ctx, sftp, target, opened, options, meter)
        : yield* putStaged(ctx, sftp, target, kind, opened, options, meter)
    })
  )
  yield* meter.finish
  const millis = (yield* Clock.currentTimeMillis) - started
  yield* Effect.annotateCurrentSpan({
    host: label,
    local: opened.describe,
    remote: written,
    bytes: opened.size
  })
  yield* Effect.logDebug("upload done").pipe(
    Effect.annotateLogs({ host: label, local: opened.describe, remote: written, bytes: opened.size, millis })
  )
  return written
})

// -- download -------------------------------------------------------------------------------------

/** Where a download goes: memory, or a local path (already joined with the remote name). */
type Destination =
  | { readonly _tag: "Memory" }
  | { readonly _tag: "Local"; readonly path: string; readonly existing: fs.Stats | undefined }

/**
 * The name a remote path gives its copy inside a local directory: its last component once `.`
 * and `..` are resolved by name (`/srv/app/.` and `/srv/app/inner/..` are `app`), or `undefined`
 * when it has none (`.`, `..`, the home directory `~`, the root `/`), so that no path ever names the local
 * directory itself, or one of its parents, as the copy to replace.
 */
const remoteName = (remotePath: string): string | undefined => {
  const name = path.posix.basename(path.posix.normalize(remotePath.replace(/\/+$/, "")))
  return name === "" || name === "." || name === ".." ? undefined : name
}

const resolveDestination = Effect.fnUntraced(function*(
  settings: Settings,
  label: string,
  target: string | undefined,
  remotePath: string
) {
  if (target === undefined) return { _tag: "Memory" } as Destination
  let local = resolveLocal(settings, target)
  let existing = yield* Io.localStat({ host: label, side: "local", path: local })
  if (existing?.isDirectory() === true || target.endsWith("/")) {
    // Named after the path as it is read (`~` is the home directory, relative to `rcd`).
    const name = remoteName(Remote.remotePath(settings, remotePath))
    if (name === undefined) {
      return yield* Io.transferError(
        { host: label, side: "remote", path: remotePath },
        "not-found",
        `it has no name of its own for its copy in the local directory ${local}; name the remote ` +
          `directory (not "." or "..") or give the whole local path to write (${path.join(local, "copy")})`
      )
    }
    local = path.join(local, name)
    existing = yield* Io.localStat({ host: label, side: "local", path: local })
  }
  return { _tag: "Local", path: local, existing } as Destination
})

/** A local temporary file beside `file`, removed unless `keep` was called. */
const localTemp = Effect.fnUntraced(function*(place: Io.Place, file: string) {
  const dir = path.dirname(file)
  yield* Io.localMkdirs(place, dir)
  const temp = path.join(dir, `.${Remote.tempBase(path.basename(file))}.tb-${yield* nonce}.part`)
  let kept = false
  const fd = yield* Effect.acquireRelease(
    Io.localSync(place, () => fs.openSync(temp, "wx", 0o600)),
    (fd) =>
      Effect.sync(() => {
        fs.closeSync(fd)
        if (!kept) fs.rmSync(temp, { force: true })
      })
  )
  return {
    fd,
    temp,
    /** Checks the size, sets the mode and renames over `file`. */
    place: (size: number, mode: number) =>
      Io.localSync(place, () => {
        const written = fs.fstatSync(fd).size
        if (written !== size) {
          throw Object.assign(
            new Error(`received ${written} bytes of ${size}; the target was not replaced`),
            {
              code: "EVERIFY"
            }
          )
        }
        fs.fchmodSync(fd, mode)
        fs.renameSync(temp, file)
        kept = true
      }).pipe(
        Effect.mapError((error) =>
          error.detail.startsWith("received") ? new TransferError({ ...error, reason: "verify" }) : error
        )
      )
  }
})

const checkLocalTarget = (place: Io.Place, settings: Settings, existing: fs.Stats | undefined) =>
  existing === undefined
    ? Effect.void
    : existing.isDirectory()
    ? Effect.fail(Io.transferError(place, "is-directory", "a local directory is in the way of the file"))
    : !settings.overwrite
    ? Effect.fail(
      Io.transferError(place, "exists", "the local file exists and overwrite is off")
    )
    : Effect.void

/** What is at a remote path, found over SFTP, or through sudo when the user may not look. */
type RemoteKind =
  | { readonly _tag: "Directory" }
  | { readonly _tag: "File"; readonly size: number; readonly mode: number }

const probeRemote = Effect.fnUntraced(function*(ctx: Job, sftp: SftpSession, target: string) {
  const place = remotePlace(ctx)
  if (!ctx.settings.useSudo) {
    const info = yield* Io.remoteStat(sftp, { ...place, path: target })
    if (info === undefined) {
      return yield* Io.transferError(place, "not-found", "no such remote file or directory")
    }
    if (info.isDirectory()) return { _tag: "Directory" } as RemoteKind
    // Reading a FIFO would wait for a writer inside the server's SFTP process, for ever.
    if (!info.isFile()) return yield* Io.notRegular(place, Io.kindOf(info))
    return { _tag: "File", size: info.size, mode: info.mode & 0o7777 } as RemoteKind
  }
  const done = yield* Remote.runCommand(
    ctx.connection,
    Remote.shellLine(Remote.probeScript, [target], Remote.sudoPrefix(ctx.settings)),
    { input: Remote.sudoInput(ctx.settings) }
  )
  const found = Remote.parseProbe(done.stdout)
  if (found === undefined) {
    return yield* Io.transferError(place, "permission", `sudo refused to look at it: ${done.stderr.trim()}`)
  }
  if (found._tag === "Missing") {
    return yield* Io.transferError(place, "not-found", "no such remote file or directory")
  }
  if (found._tag === "Other") return yield* Io.notRegular(place, found.kind)
  if (found._tag === "Unreadable") {
    return yield* Io.transferError(place, "permission", `${ctx.settings.sudoUser ?? "root"} cannot read it`)
  }
  return found as RemoteKind
})

/** Streams a remote command's output (`cat`, `tar -c`) to `sink`; fails unless it exits 0. */
const streamRemote = Effect.fnUntraced(function*(
  ctx: Job,
  line: string,
  sink: (bytes: Uint8Array) => Effect.Effect<void, TransferError>
) {
  const input = ctx.settings.useSudo ? Remote.sudoInput(ctx.settings) : undefined
  const done = yield* Remote.runCommand(ctx.connection, line, { input, onStdout: sink })
  const { sockets, stderr: rest } = Remote.skippedSockets(done.stderr)
  if (done.exitCode !== 0) {
    const stderr = rest.trim()
    return yield* Io.transferError(
      remotePlace(ctx),
      /denied|not permitted|password/i.test(stderr)
        ? "permission"
        : /No such/i.test(stderr)
        ? "not-found"
        : "failed",
      stderr === "" ? `the remote command ended with ${done.exitCode ?? done.signal}` : stderr
    )
  }
  return sockets
})

/**
 * A file, to memory or to a local temporary file renamed into place. The size the server
 * reported is where the pipelined read stops; the file is then read on to its end, so that a
 * file the server gave no size (`/proc/cpuinfo`) or one that grew comes whole. With sudo, `cat`
 * streams it, and what it gives is the content.
 */
const downloadFile = Effect.fnUntraced(function*(
  ctx: Job,
  sftp: SftpSession,
  target: string,
  kind: { readonly size: number; readonly mode: number },
  destination: Destination,
  meter: Progress.Meter
) {
  const place = remotePlace(ctx)
  const memory = destination._tag === "Memory" ? new Io.GrowableBytes(kind.size) : undefined
  let received = 0
  const local = destination._tag === "Local"
    ? yield* localTemp({ host: ctx.label, side: "local", path: destination.path }, destination.path)
    : undefined
  const localPlace: Io.Place = { host: ctx.label, side: "local", path: local?.temp ?? "" }
  const count = (n: number) => {
    meter.add(n)
    received += n
  }
  const sink = (offset: number, bytes: Uint8Array) =>
    Effect.suspend(() => {
      if (memory !== undefined) {
        memory.set(offset, bytes)
        return Effect.void
      }
      return Io.localWrite(localPlace, local!.fd, bytes, offset)
    })

  if (ctx.settings.useSudo) {
    yield* streamRemote(ctx, Remote.catLine(target, Remote.sudoPrefix(ctx.settings)), (bytes) => {
      const at = received
      count(bytes.length)
      return sink(at, bytes)
    })
  } else {
    const handle = yield* Io.openRemote(sftp, place, target, "r")
    const pipeline = readPipeline(sftp)
    yield* Io.pipelinedRead(sftp, handle, place, kind.size, pipeline, count, sink)
    const end = yield* Io.readToEnd(sftp, handle, place, kind.size, pipeline.chunkSize, count, sink)
    if (received !== end) {
      return yield* Io.transferError(place, "verify", `received ${received} bytes of ${end}`)
    }
  }
  if (memory !== undefined) return memory.bytes(received)
  const existing = destination._tag === "Local" ? destination.existing : undefined
  yield* local!.place(
    received,
    existing === undefined ? kind.mode & Tree.downloadModeMask : existing.mode & 0o7777
  )
  return (destination as { readonly path: string }).path
})

const downloadTree = Effect.fnUntraced(function*(
  ctx: Job,
  target: string,
  destination: { readonly path: string; readonly existing: fs.Stats | undefined },
  meter: Progress.Meter
) {
  const localPlace: Io.Place = { host: ctx.label, side: "local", path: destination.path }
  const dir = path.dirname(destination.path)
  yield* Io.localMkdirs(localPlace, dir)
  const stage = path.join(dir, `.${Remote.tempBase(path.basename(destination.path))}.tb-${yield* nonce}`)
  yield* Effect.acquireRelease(
    Io.localSync(localPlace, () => fs.mkdirSync(stage, { mode: 0o700 })),
    () => Tree.removeTree(stage)
  )
  const writer = new Tree.TreeWriter(path.join(stage, "t"))
  yield* Effect.addFinalizer(() => Effect.sync(() => writer.abandon()))
  yield* Tree.treeStep(localPlace, () => writer.open())
  const sudo = ctx.settings.useSudo ? Remote.sudoPrefix(ctx.settings) : undefined
  const sockets = yield* streamRemote(ctx, Remote.tarCreateLine(target, sudo), (bytes) => {
    meter.add(bytes.length)
    return Tree.treeStep(localPlace, () => writer.push(bytes))
  })
  if (!writer.complete) {
    return yield* Io.transferError(
      localPlace,
      "verify",
      "the directory stream ended early; nothing was replaced"
    )
  }
  // Neither `tar` nor `find` opened them; what they are is said, and the tree goes without them.
  const inTree = (name: string) => remotePlace(ctx, path.posix.join(target, name))
  for (const { kind, name } of writer.skipped) yield* Io.warnSkipped(inTree(name), kind)
  for (const name of sockets) yield* Io.warnSkipped(inTree(name), Io.kindWords.socket)
  yield* Tree.treeStep(localPlace, () => writer.finish())
  // The old tree moves aside into the staging directory, which the finalizer removes; a user who
  // is not root may move a read-only directory only once it can write in it (its `..` changes).
  const old = destination.existing
  const aside = path.join(stage, "old")
  if (old !== undefined) {
    yield* Io.localSync(localPlace, () => {
      if ((old.mode & 0o200) === 0) fs.chmodSync(destination.path, (old.mode & 0o7777) | 0o200)
      fs.renameSync(destination.path, aside)
    })
  }
  yield* Io.localSync(localPlace, () => fs.renameSync(writer.root, destination.path)).pipe(
    // Not in place: the old tree goes back, as it was.
    Effect.tapError(() =>
      old === undefined ? Effect.void : Effect.ignore(Effect.try(() => {
        fs.renameSync(aside, destination.path)
        fs.chmodSync(destination.path, old.mode & 0o7777)
      }))
    )
  )
  yield* Io.localSync(localPlace, () => fs.chmodSync(destination.path, writer.rootMode))
  return destination.path
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
  return yield* Effect.scoped(downloadWith(remotePath, target, settings, options)).pipe(
    Effect.provideService(Settings, settings)
  )
}) as never

const downloadWith = Effect.fnUntraced(function*(
  remotePath: string,
  localTarget: string | undefined,
  settings: Settings,
  options: DownloadOptions
) {
  const started = yield* Clock.currentTimeMillis
  const label = yield* hostOf(settings)
  const destination = yield* resolveDestination(settings, label, localTarget, remotePath)
  const shownLocal = destination._tag === "Memory" ? "<memory>" : destination.path
  yield* Output.printRunning(label, settings.useSudo ? "sudo get" : "get", `${remotePath} -> ${shownLocal}`)
  if (settings.dryRun) return destination._tag === "Memory" ? new Uint8Array(0) : destination.path
  const ssh = yield* SshConnections
  const connection = yield* ssh.connect(settings)
  const ctx: Job = { settings, connection, label, shown: remotePath, reconnect: ssh.connect(settings) }
  const target = Remote.remotePath(settings, remotePath)
  const localPlace: Io.Place = { host: label, side: "local", path: shownLocal }

  const result = yield* whileConnected(
    ctx,
    Effect.gen(function*() {
      const sftp = yield* connection.sftp
      const kind = yield* probeRemote(ctx, sftp, target)
      if (kind._tag === "Directory") {
        if (destination._tag === "Memory") {
          return yield* Io.transferError(
            remotePlace(ctx),
            "is-directory",
            "it is a directory, which cannot be read into memory; give a local directory as the target"
          )
        }
        if (destination.existing !== undefined && !destination.existing.isDirectory()) {
          return yield* Io.transferError(
            remotePlace(ctx),
            "is-directory",
            `it is a directory, and the local target ${destination.path} is a file`
          )
        }
        if (destination.existing !== undefined && !settings.overwrite) {
          return yield* Io.transferError(
            localPlace,
            "exists",
            "the local directory exists and overwrite is off"
          )
        }
        const meter = yield* Progress.start({
          direction: "download",
          host: label,
          path: remotePath,
          total: undefined,
          terminal: options.showProgress !== false && !settings.quiet,
          onProgress: options.onProgress
        })
        const written = yield* downloadTree(ctx, target, destination, meter)
        yield* meter.finish
        return { written, bytes: meter.bytes() }
      }
      if (destination._tag === "Local") yield* checkLocalTarget(localPlace, settings, destination.existing)
      const meter = yield* Progress.start({
        direction: "download",
        host: label,
        path: remotePath,
        total: kind.size,
        terminal: options.showProgress !== false && !settings.quiet,
        onProgress: options.onProgress
      })
      const written = yield* downloadFile(ctx, sftp, target, kind, destination, meter)
      yield* meter.finish
      return { written, bytes: kind.size }
    })
  )
  const millis = (yield* Clock.currentTimeMillis) - started
  yield* Effect.annotateCurrentSpan({
    host: label,
    remote: remotePath,
    local: shownLocal,
    bytes: result.bytes
  })
  yield* Effect.logDebug("download done").pipe(
    Effect.annotateLogs({ host: label, remote: remotePath, local: shownLocal, bytes: result.bytes, millis })
  )
  return result.written
})

// -- rsync ----------------------------------------------------------------------------------------

const runRsync = Effect.fnUntraced(function*(
  direction: "upload" | "download",
  localPath: string,
  remotePath: string,
  options: RsyncOptions
) {
  yield* nonEmpty("localPath", localPath)
  yield* nonEmpty("remotePath", remotePath)
  const settings = withOptions(yield* Settings, options)
  const target = yield* resolveTarget(settings)
  // A bad key file is a setting error here as for every other operation, not a failed ssh login.
  yield* readKey(target)
  const label = target.label
  // A trailing slash means "the contents of" to rsync: keep it through path resolution.
  const slash = (p: string, given: string) => (given.endsWith("/") && !p.endsWith("/") ? `${p}/` : p)
  const local = slash(resolveLocal(settings, localPath), localPath)
  const remote = slash(Remote.remotePath(settings, remotePath), remotePath)
  const remoteDir = path.posix.dirname(remote.replace(/\/+$/, "")) || "."
  // rsync creates only the last directory of a destination; the parents are made here, as the
  // user the remote rsync runs as, since only root may write where a sudo upload goes.
  const sudo = options.useSudo === true ? "sudo -n " : ""
  // The remote rsync expands `*`, `?` and `[` in every path it is given, even with `-s`, and
  // keeps a pattern that matches nothing as it is: a destination `/srv/a*/` would land in an
  // existing `/srv/a-old/`. So an upload runs the remote rsync inside its destination directory
  // (entered by the shell, which takes the quoted name literally) and names the destination
  // `.` there, or the bare file name, which must then be free of patterns.
  const intoDir = remote.endsWith("/")
  const destDir = intoDir ? remote : remoteDir
  const destName = intoDir ? "." : path.posix.basename(remote)
  const rsyncPath = direction === "upload"
    ? `${sudo}mkdir -p -- ${quote(destDir)} && ${sudo}sh -c 'cd -- "$1" && shift && exec rsync "$@"' sh ${
      quote(destDir)
    }`
    : `${sudo}rsync`
  const args = [
    "-a",
    "-s", // arguments travel inside the rsync protocol, never through the remote shell
    "-e",
    Rsync.sshCommand(target, Duration.toSeconds(target.connectTimeout)),
    `--rsync-path=${rsyncPath}`,
    ...(options.delete === true ? ["--delete"] : []),
    ...(options.exclude ?? []).map((pattern) => `--exclude=${pattern}`),
    ...(options.options ?? []),
    "--",
    ...(direction === "upload"
      ? [local, Rsync.remoteSpec(target, destName)]
      : [Rsync.remoteSpec(target, Rsync.literalSource(remote)), local])
  ]
  const shown = direction === "upload" ? `${local} -> ${remotePath}` : `${remotePath} -> ${local}`
  yield* Output.printRunning(label, "rsync", shown)
  if (settings.dryRun) return
  const place: Io.Place = direction === "upload"
    ? { host: label, side: "remote", path: remotePath }
    : { host: label, side: "local", path: local }
  const unsafe = Rsync.unsafeTarget(target)
  if (unsafe !== undefined) return yield* Io.transferError(place, "rsync", unsafe)
  if (direction === "upload" && /[*?[]/.test(destName)) {
    return yield* Io.transferError(
      place,
      "rsync",
      `the remote rsync would read the name ${
        JSON.stringify(destName)
      } as a pattern (*, ? or [); end the remote path with / to copy into a directory of that name, or choose a name without them`
    )
  }
  if (direction === "download") {
    const dir = local.endsWith("/") ? local : path.dirname(local)
    yield* Io.localMkdirs(place, dir)
  }
  const started = yield* Clock.currentTimeMillis
  const spawner = yield* ChildProcessSpawner
  const outcome = yield* Effect.scoped(Effect.gen(function*() {
    const handle = yield* spawner.spawn(
      ChildProcess.make("rsync", args, { stdin: "ignore", stdout: "pipe", stderr: "pipe", detached: true })
    )
    const [stderr] = yield* Effect.all([
      Stream.mkString(Stream.decodeText(handle.stderr)),
      Stream.runDrain(handle.stdout)
    ], { concurrency: 2 })
    const code = yield* handle.exitCode
    return { code: Number(code), stderr }
  })).pipe(
    Effect.catchTag(
      "PlatformError",
      (error) =>
        Effect.fail(
          Io.transferError(place, "rsync", `cannot run rsync: ${error.message} (is rsync installed?)`)
        )
    )
  )
  if (outcome.code !== 0) {
    const said = outcome.stderr.trim().split("\n").slice(-4).join("\n")
    return yield* Io.transferError(
      place,
      "rsync",
      `rsync exited with ${outcome.code} (${Rsync.explainExit(outcome.code)})${
        said === "" ? "" : `: ${said}`
      }`
    )
  }
  const millis = (yield* Clock.currentTimeMillis) - started
  yield* Effect.annotateCurrentSpan({ host: label, local, remote: remotePath })
  yield* Effect.logDebug(`rsync ${direction} done`).pipe(
    Effect.annotateLogs({ host: label, local, remote: remotePath, millis })
  )
})

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
  return yield* runRsync("upload", localPath, remotePath, options)
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
  return yield* runRsync("download", localPath, remotePath, options)
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
