/**
 * The machinery of `Transfer.upload`: opening the source (bytes, a file, a tree), and putting it
 * in place over SFTP with one atomic rename, or staged and placed by a remote script (sudo, trees).
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as path from "node:path"
import { TransferError } from "../../Errors.ts"
import * as Output from "../../Output.ts"
import { resolveLocal, Settings } from "../../Settings.ts"
import { type SftpSession, SshConnections } from "../../Ssh.ts"
import * as CatFile from "./catFile.ts"
import * as Io from "./io.ts"
import { cleanup, hostOf, type Job, nonce, remotePlace, whileConnected } from "./job.ts"
import * as LocalFiles from "./localFiles.ts"
import type { Source, UploadOptions } from "./options.ts"
import * as Progress from "./progress.ts"
import * as Remote from "./remote.ts"
import { pipeline, sendFile, sftpRename } from "./sftpFile.ts"
import * as Tree from "./tree.ts"

/** The upload source, opened: how to stream it, its size, and its mode if it has one. */
export interface OpenedSource {
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

export const openSource = Effect.fnUntraced(function*(settings: Settings, source: Source, label: string) {
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
  const info = yield* LocalFiles.localStat(place)
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
    LocalFiles.openLocalRegular(place),
    LocalFiles.closeFd
  )
  const pool = new Io.BufferPool(pipeline.blockSize)
  const opened: OpenedSource = {
    describe: local,
    size: info.size,
    mode: info.mode & 0o7777,
    pool,
    blocks: LocalFiles.localFileBlocks(place, fd, pipeline.blockSize, pool),
    basename: path.basename(local)
  }
  return { _tag: "File" as const, opened }
})

/** A file straight over SFTP: temporary name beside the target, then one atomic rename. */
export const putFileSftp = Effect.fnUntraced(function*(
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
  const at = { ...place, path: destination }
  yield* source.size >= CatFile.catThreshold
    ? CatFile.sendLargeFile(
      ctx.connection,
      sftp,
      at,
      temp,
      source.blocks,
      source.size,
      meter,
      mode,
      source.pool
    )
    : sendFile(sftp, at, temp, source.blocks, source.size, meter, mode, source.pool)
  if (options.owner !== undefined) yield* chown(ctx, temp, options.owner, place)
  yield* sftpRename(sftp, { ...place, path: destination }, temp, destination)
  placed = true
  return destination
})

export const chown = Effect.fnUntraced(function*(ctx: Job, file: string, owner: string, place: Io.Place) {
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
export const putStaged = Effect.fnUntraced(function*(
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
  // The script removes the staging directory and its own temporary file when it ends; this covers
  // a transfer that never got that far (the target may be `target` or a name inside it). It is in
  // place before the directory is asked for: an interruption while that request is on its way
  // may leave the directory made on the server with no answer here.
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
  yield* Io.sftpCall(remotePlace(ctx, stage), sftp.mkdir(stage, 0o700))
  const data = `${stage}/data`
  const at = remotePlace(ctx, data)
  yield* Effect.scoped(
    source.size >= CatFile.catThreshold
      ? CatFile.sendLargeFile(
        ctx.connection,
        sftp,
        at,
        data,
        source.blocks,
        source.size,
        meter,
        undefined,
        source.pool
      )
      : sendFile(sftp, at, data, source.blocks, source.size, meter, undefined, source.pool)
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

export const uploadWith = Effect.fnUntraced(function*(
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
